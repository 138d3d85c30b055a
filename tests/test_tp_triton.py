"""Triton tensor-product kernels (kernels/tensor_product.py) against the plain-PyTorch
reference (equiops.reference.tensor_product), and the generated-code cache
(kernels/_codecache.py).

Forward, backward (against torch.autograd.grad through the reference) and double
backward (the reference's gradients taken with create_graph=True, contracted with random
gg vectors and differentiated again), in float64 (to ~1e-10 of the output scale) and
float32 (against the float64 reference), on a channel-wise uvu problem, a uvw problem
with shared weights, and a problem mixing every mode, weighted and unweighted, with row
broadcasting. Gradients of broadcast inputs exercise the partial-sum reduction, with
fewer reducing programs than row blocks.

On a machine without a GPU the kernels run on CPU tensors through Triton's interpreter:
``TRITON_INTERPRET=1`` must be set before anything imports triton (tests/conftest.py sets
it, and so does this module when run alone). Sizes are tiny and blocks small because the
interpreter is slow. On a GPU machine, ``EQUIOPS_TRITON_TEST_DEVICE=cuda`` runs the same
tests compiled on CUDA tensors.
"""

import os
import subprocess
import sys
import textwrap

import torch

import pytest  # noqa: E402

from conftest import triton_test_device  # noqa: E402

DEV = triton_test_device()  # skips this module when Triton cannot run here

from equiops.kernels import _codecache  # noqa: E402
from equiops.kernels import tensor_product as K  # noqa: E402
from equiops.reference.tensor_product import tensor_product as reference  # noqa: E402
from equiops.tp_problem import build_problem  # noqa: E402
from tp_cases import CHANNELWISE_SMALL  # noqa: E402


# Max |error| allowed, relative to max(1, the expected result's largest magnitude), by
# dtype and derivative order (0 forward, 1 backward, 2 double backward).
TOL = {
    torch.float64: (1e-10, 1e-10, 1e-10),
    torch.float32: (1e-5, 2e-5, 5e-5),
    torch.float16: (4e-3,),
    torch.bfloat16: (3e-2,),
}


# Generated modules go to a temporary cache directory (conftest.kernel_cache_dir).
pytestmark = pytest.mark.usefixtures("kernel_cache_dir")


# --------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------

UVU = build_problem(*CHANNELWISE_SMALL)

# Fully connected (a linear-like layer), for shared weights: several paths per output.
UVW = build_problem(
    "2x0e+3x1o",
    "2x0e+1x1o",
    "3x0e+2x1o+1x2e",
    [(0, 0, 0, "uvw", True), (1, 1, 0, "uvw", True), (0, 1, 1, "uvw", True), (1, 0, 1, "uvw", True),
     (1, 1, 2, "uvw", True)],
)  # fmt: skip

# Every mode, weighted and unweighted, several paths per output block and per input
# block, multiplicities that differ, an input block no path reads (1x2o) and an output
# block no path writes (2x3o).
MIXED = build_problem(
    "3x0e+3x1o",
    "3x0e+3x1o+2x1e+1x2o",
    "3x0e+3x1o+9x1o+2x1o+1x0e+3x1e+2x2e+2x3o",
    [(0, 1, 1, "uvw", True), (1, 1, 6, "uvw", True), (1, 2, 3, "uvw", True), (1, 1, 0, "uvu", True),
     (0, 1, 1, "uvu", False), (1, 2, 3, "uvv", True), (1, 0, 1, "uvv", False), (1, 1, 5, "uuw", True),
     (0, 0, 4, "uuw", False), (1, 1, 5, "uuu", False), (0, 0, 0, "uuu", True), (1, 0, 2, "uvuv", True),
     (0, 1, 2, "uvuv", False), (1, 1, 5, "uvu<v", True), (0, 0, 0, "uvu<v", False), (1, 1, 6, "u<vw", True),
     (0, 1, 1, "u<vw", True)],
)  # fmt: skip

PROBLEMS = {"uvu": UVU, "uvw": UVW, "mixed": MIXED}

# (problem, rows of x1, x2, weight, rows per program, reducing programs).
CASES = {
    "uvu": ("uvu", 5, 5, 5, 2, None),  # three programs, the last one partial
    "uvu-bcast2": ("uvu", 5, 1, 5, 4, None),
    "uvw-shared": ("uvw", 7, 7, 1, 2, 2),  # two reducing programs over four row blocks
    "mixed": ("mixed", 4, 4, 4, 4, None),
    "mixed-bcast": ("mixed", 1, 5, 1, 2, 2),
}


def test_every_mode_covered():
    modes = {(p.mode, p.weighted) for p in MIXED.paths}
    assert {m for m, _ in modes} == {"uvw", "uvu", "uvv", "uuw", "uuu", "uvuv", "uvu<v", "u<vw"}
    assert {w for _, w in modes} == {True, False}


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _inputs(prob, n1, n2, nw, seed=0):
    """float64 CPU tensors x1, x2, weight, grad_out and gg1, gg2, ggw."""
    g = torch.Generator().manual_seed(seed)
    N = max(n1, n2, nw)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    x1, x2, w = r(n1, prob.dim1), r(n2, prob.dim2), r(nw, prob.dim_w)
    return (x1, x2, w, r(N, prob.dim_out)), (r(n1, prob.dim1), r(n2, prob.dim2), r(nw, prob.dim_w))


def _ref_forward(x1, x2, w, problem):
    return reference(x1, x2, w, problem)


def _ref_backward(go, x1, x2, w, problem):
    xs = [t.clone().requires_grad_() for t in (x1, x2, w)]
    out = reference(*xs, problem)
    return torch.autograd.grad(out, xs, go, allow_unused=True, materialize_grads=True)


def _ref_double_backward(gg, go, x1, x2, w, problem):
    go = go.clone().requires_grad_()
    xs = [t.clone().requires_grad_() for t in (x1, x2, w)]
    grads = torch.autograd.grad(reference(*xs, problem), xs, go, create_graph=True, materialize_grads=True)
    total = sum((a * b).sum() for a, b in zip(grads, gg) if b is not None and a.requires_grad)
    return torch.autograd.grad(total, [go] + xs, allow_unused=True, materialize_grads=True)


def _check(got, want, dtype, order, what=""):
    assert got.dtype == dtype and got.device == DEV and got.shape == want.shape, (what, got.shape, want.shape)
    got = got.cpu().double()
    scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
    err = (got - want).abs().max().item() if want.numel() else 0.0
    assert err <= TOL[dtype][order] * scale, f"{what}: max error {err:.3g} at scale {scale:.3g}"


def _dev(ts, dtype):
    return [t.to(DEV, dtype).contiguous() if t is not None else None for t in ts]


def _setup(case, dtype, monkeypatch):
    name, n1, n2, nw, bn, red = CASES[case]
    prob = PROBLEMS[name]
    if red is not None:
        monkeypatch.setattr(K, "REDUCE_PROGRAMS", red)
    (x1, x2, w, go), gg = _inputs(prob, n1, n2, nw)
    # The float64 reference sees the inputs rounded to ``dtype``.
    x1, x2, w, go = (t.to(dtype).double() for t in (x1, x2, w, go))
    gg = tuple(t.to(dtype).double() for t in gg)
    return prob.encode(), bn, (x1, x2, w, go), gg


case = pytest.mark.parametrize("case", list(CASES))
dtypes = pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])


# --------------------------------------------------------------------------------------
# Against the reference
# --------------------------------------------------------------------------------------


@dtypes
@case
def test_forward(case, dtype, monkeypatch):
    problem, bn, (x1, x2, w, _), _ = _setup(case, dtype, monkeypatch)
    out = K.forward(*_dev((x1, x2, w), dtype), problem, block_rows=bn)
    _check(out, _ref_forward(x1, x2, w, problem), dtype, 0, "out")


@dtypes
@case
def test_backward(case, dtype, monkeypatch):
    problem, bn, (x1, x2, w, go), _ = _setup(case, dtype, monkeypatch)
    got = K.backward(*_dev((go, x1, x2, w), dtype), problem, (True, True, True), block_rows=bn)
    for a, e, what in zip(got, _ref_backward(go, x1, x2, w, problem), ("g1", "g2", "gw")):
        _check(a, e, dtype, 1, what)


@dtypes
@case
def test_double_backward(case, dtype, monkeypatch):
    if dtype == torch.float32 and "bcast" in case:
        pytest.skip("the broadcast cases run in float64 only (interpreter time)")
    problem, bn, (x1, x2, w, go), gg = _setup(case, dtype, monkeypatch)
    got = K.double_backward(*_dev(gg, dtype), *_dev((go, x1, x2, w), dtype), problem, block_rows=bn)
    want = _ref_double_backward(gg, go, x1, x2, w, problem)
    for a, e, what in zip(got, want, ("g_grad_out", "g1", "g2", "gw")):
        _check(a, e, dtype, 2, what)


def test_backward_need_subsets(monkeypatch):
    problem, bn, (x1, x2, w, go), _ = _setup("uvw-shared", torch.float64, monkeypatch)
    want = _ref_backward(go, x1, x2, w, problem)
    args = _dev((go, x1, x2, w), torch.float64)
    for need in [(True, False, False), (False, True, False), (False, False, True)]:
        got = K.backward(*args, problem, need, block_rows=bn)
        for n, a, e in zip(need, got, want):
            if n:
                _check(a, e, torch.float64, 1)
            else:
                assert a is None


def test_double_backward_missing_gg(monkeypatch):
    """A None gg is zero; each of gg1, gg2, ggw alone."""
    problem, bn, (x1, x2, w, go), gg = _setup("uvu", torch.float64, monkeypatch)
    for keep in range(3):
        part = tuple(t if i == keep else None for i, t in enumerate(gg))
        got = K.double_backward(*_dev(part, torch.float64), *_dev((go, x1, x2, w), torch.float64), problem, block_rows=bn)
        want = _ref_double_backward(part, go, x1, x2, w, problem)
        for a, e in zip(got, want):
            _check(a, e, torch.float64, 2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_forward(dtype, monkeypatch):
    """Half inputs accumulate in float32 and return their own dtype."""
    problem, bn, (x1, x2, w, _), _ = _setup("uvu", dtype, monkeypatch)
    out = K.forward(*_dev((x1, x2, w), dtype), problem, block_rows=bn)
    _check(out, _ref_forward(x1, x2, w, problem), dtype, 0)


def test_unweighted_only_and_empty():
    """dim_w == 0 (every path unweighted), and N == 0."""
    prob = build_problem("2x0e+2x1o", "0e+1o", "2x0e+2x1o", [(0, 0, 0, "uvu", False), (1, 1, 0, "uvu", False),
                                                          (1, 0, 1, "uvu", False)])  # fmt: skip
    problem = prob.encode()
    assert prob.dim_w == 0
    (x1, x2, w, go), gg = _inputs(prob, 3, 3, 1)
    args = _dev((x1, x2, w), torch.float64)
    _check(K.forward(*args, problem), _ref_forward(x1, x2, w, problem), torch.float64, 0)
    g1, g2, gw = K.backward(*_dev([go], torch.float64), *args, problem, (True, True, True))
    e1, e2, _ = _ref_backward(go, x1, x2, w, problem)
    _check(g1, e1, torch.float64, 1)
    _check(g2, e2, torch.float64, 1)
    assert gw.shape == (1, 0)
    # N == 0
    e = [t[:0] for t in _dev((x1, x2, go), torch.float64)]
    w0 = torch.zeros(0, 0, dtype=torch.float64, device=DEV)
    assert K.forward(e[0], e[1], w0, problem).shape == (0, prob.dim_out)
    assert [t.shape for t in K.backward(e[2], e[0], e[1], w0, problem)] == [(0, prob.dim1), (0, prob.dim2), (0, 0)]
    got = K.double_backward(e[0], e[1], None, e[2], e[0], e[1], w0, problem)
    assert [t.shape for t in got] == [(0, prob.dim_out), (0, prob.dim1), (0, prob.dim2), (0, 0)]
    # An empty batch with a broadcast input (shared weights, one x2 row) has N = 0.
    w1 = torch.zeros(1, prob.dim_w, dtype=torch.float64, device=DEV)
    assert K.forward(e[0], e[1], w1, problem).shape == (0, prob.dim_out)
    assert K.forward(e[0], e[1][:1].new_zeros(1, prob.dim2), w1, problem).shape == (0, prob.dim_out)
    g1, g2, gw = K.backward(e[2], e[0], e[1], w1, problem, (True, True, True))
    assert g1.shape == (0, prob.dim1) and gw.shape == (1, prob.dim_w) and not gw.any()


def test_reduction_deterministic(monkeypatch):
    """Gradients of broadcast inputs are bitwise reproducible."""
    problem, bn, (x1, x2, w, go), _ = _setup("uvw-shared", torch.float32, monkeypatch)
    args = _dev((go, x1, x2, w), torch.float32)
    a = K.backward(*args, problem, (False, False, True), block_rows=bn)[2]
    b = K.backward(*args, problem, (False, False, True), block_rows=bn)[2]
    assert torch.equal(a, b)


def test_bad_shapes():
    problem = UVU.encode()
    x1 = torch.zeros(3, UVU.dim1, dtype=torch.float64, device=DEV)
    x2 = torch.zeros(2, UVU.dim2, dtype=torch.float64, device=DEV)
    w = torch.zeros(3, UVU.dim_w, dtype=torch.float64, device=DEV)
    with pytest.raises(ValueError, match="x2 has 2 rows"):
        K.forward(x1, x2, w, problem)
    with pytest.raises(ValueError, match="weight must be"):
        K.forward(x1, x2[:1], w[:, 1:], problem)


# --------------------------------------------------------------------------------------
# Generated code and its cache
# --------------------------------------------------------------------------------------


def test_generated_source_is_stable():
    problem = MIXED.encode()
    for kind in ("forward", "backward", "double_backward"):
        src = K.generate(problem, kind)
        assert src == K.generate(problem, kind)
        compile(src, "<generated>", "exec")


def test_kernel_cache_memory_and_disk():
    problem = UVU.encode()
    k1 = K._kernel(problem, "forward", DEV)
    assert K._kernel(problem, "forward", DEV) is k1
    files = list(_codecache.cache_dir("triton_tp").glob("*.py"))
    assert files and not list(_codecache.cache_dir("triton_tp").glob("*.tmp"))


def test_codecache_regenerates_bad_file(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUIOPS_CACHE_DIR", str(tmp_path))
    parts = ("a problem", "kind", "device", "1")
    path = _codecache.file_for("ns", parts, lambda: "VALUE = 1\n")
    path.write_text(path.read_text()[:-5])  # truncated: fails the end check
    assert _codecache.load("ns", parts, lambda: "VALUE = 2\n").VALUE == 2
    assert _codecache.load("ns", parts, lambda: "VALUE = 3\n").VALUE == 2  # memory
    assert _codecache.key_digest(["ab", "c"]) != _codecache.key_digest(["a", "bc"])


_WRITER = textwrap.dedent(
    """
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("cc", sys.argv[1])
    cc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cc)
    big = "X = 1\\n" + "".join(f"Y{i} = {i}\\n" for i in range(20000))
    digest = cc.key_digest(("same key",))
    path = cc.cache_dir("race") / (digest + ".py")
    text = cc._head(digest) + big + cc._tail(digest)
    for i in range(40):
        cc.write_atomic(path, text)  # every process rewrites the same file, racing the others
        assert cc._valid(path, digest), "torn or missing file"
        assert cc.file_for("race", ("same key",), lambda: big) == path
    m = cc.load("race", ("same key",), lambda: big)
    assert m.X == 1 and m.Y19999 == 19999
    print("ok")
    """
)


def test_codecache_concurrent_processes(tmp_path):
    """Four processes generating the same key at once never see a torn or missing file."""
    env = dict(os.environ, EQUIOPS_CACHE_DIR=str(tmp_path))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, _codecache.__file__],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err
    files = list((tmp_path / "race").iterdir())
    assert len(files) == 1 and files[0].suffix == ".py", files  # no temporary files left
