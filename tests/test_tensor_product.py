"""Clebsch-Gordan tensor products: the plain-PyTorch reference and the C++ CPU kernels
against ``e3nn.o3.TensorProduct`` (outputs, first and second derivatives, float64 to
1e-10 of the scale) on the benchmark problems and on hypothesis-generated problems mixing
every connection mode; float32 against float64; the baseline-ISA kernels; broadcasting and
list weights; equivariance with reflections; the operator contract (opcheck, compile,
export); gradcheck; determinism across runs and thread counts; e3nn interop (from_e3nn,
replace_e3nn_tensor_products), pickling and state_dict; edge cases (no rows, no paths, no
weights, multiplicity 0). Bad input: tests/test_tp_bad_input.py."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import equiops
from equiops.reference.tensor_product import tensor_product as reference_tp
from equiops.tp_problem import MODES, build_problem

from conftest import default_dtype, assert_equivariant, check_compiled_matches_eager, random_o3

BACKENDS = ("torch", "cpu")  # the reference and the C++ CPU kernels
F64_TOL = 1e-10

SETTINGS = settings(
    max_examples=int(os.environ.get("EQUIOPS_TP_FUZZ_EXAMPLES", "90")),
    deadline=None,
    derandomize=True,  # the same examples in every CI run; raise the count to explore
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------- helpers
def _o3():
    return pytest.importorskip("e3nn.o3")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64).to(dtype)


def _e3nn(*args, **kwargs):
    """An e3nn TensorProduct (or subclass, ``cls=``) built with float64 constants."""
    cls = kwargs.pop("cls", None) or _o3().TensorProduct
    with default_dtype(torch.float64):
        return cls(*args, **kwargs)


def _assert_rel(actual, expected, tol=F64_TOL, what=""):
    """max |actual - expected| <= tol * max |expected| (+ a tiny floor for all-zero results)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if tol <= 1e-9:  # float64 comparisons: same dtype (float32 results are compared to float64 ones)
        assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if expected.numel() == 0:
        return
    a, e = actual.detach().double(), expected.detach().double()
    err = (a - e).abs().max().item()
    scale = e.abs().max().item()
    assert err <= tol * scale + 1e-14, f"{what}: max error {err:.3e}, scale {scale:.3e} (tol {tol:g} relative)"


def _zeros_for_none(grads, like):
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, like)]


def _derivatives(fn, x, y, w, seed=0):
    """Outputs and derivatives of ``fn(x, y, w)`` (``w`` may be None, or a list), by name:

    * ``out``;
    * ``d/dx, d/dy, d/dw`` of ``<out, g>`` (first derivatives, g random);
    * ``dd/d*`` : the gradient w.r.t. ``x, y, w, g`` of ``sum_i <d/d_i, v_i>`` built with
      ``create_graph=True`` (every term of the double backward);
    * ``force/d*``: the force-training pattern: ``F = d<out, g>/dx`` with create_graph,
      ``loss = <F, v>``, gradient of the loss w.r.t. ``x, y, w``.
    """
    g0 = _gen(seed)
    leaves = [x.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()]
    names = ["x", "y"]
    if isinstance(w, (list, tuple)):
        wl = [t.detach().clone().requires_grad_() for t in w]
        leaves += wl
        names += [f"w{k}" for k in range(len(wl))]
        warg = wl
    elif w is not None:
        leaves.append(w.detach().clone().requires_grad_())
        names.append("w")
        warg = leaves[-1]
    else:
        warg = None
    res = {}
    out = fn(leaves[0], leaves[1], warg)
    res["out"] = out.detach()
    go = torch.randn(out.shape, generator=g0, dtype=torch.float64).to(out.dtype).requires_grad_()
    vs = [torch.randn(t.shape, generator=g0, dtype=torch.float64).to(t.dtype) for t in leaves]
    # (e3nn's output does not require grad when no path writes anything: zeros then)
    first = _grad(out, leaves, go, create_graph=True)
    for n, d in zip(names, first):
        res[f"d/d{n}"] = d.detach()
    s = sum((d * v).sum() for d, v in zip(first, vs))
    for n, d in zip(names + ["g"], _grad(s, leaves + [go])):
        res[f"dd/d{n}"] = d
    # the force pattern: only x differentiated first
    out = fn(leaves[0], leaves[1], warg)
    (force,) = _grad(out, leaves[:1], go.detach(), create_graph=True)
    loss = (force * vs[0]).sum()
    for n, d in zip(names, _grad(loss, leaves)):
        res[f"force/d{n}"] = d
    return res


def _grad(out, inputs, grad_out=None, create_graph=False):
    """torch.autograd.grad with zeros for inputs ``out`` does not depend on."""
    if not out.requires_grad:
        return [torch.zeros_like(t) for t in inputs]
    grads = torch.autograd.grad(out, inputs, grad_out, create_graph=create_graph, allow_unused=True)
    return _zeros_for_none(grads, inputs)


def _compare(actual, expected, tol=F64_TOL, what=""):
    assert actual.keys() == expected.keys(), f"{what}: {sorted(actual)} != {sorted(expected)}"
    for k in expected:
        _assert_rel(actual[k], expected[k], tol, f"{what} {k}")


def _same_instructions(ours, theirs):
    assert str(ours.irreps_in1) == str(theirs.irreps_in1)
    assert str(ours.irreps_in2) == str(theirs.irreps_in2)
    assert str(ours.irreps_out) == str(theirs.irreps_out)
    assert ours.weight_numel == theirs.weight_numel
    assert len(ours.instructions) == len(theirs.instructions)
    for a, b in zip(ours.instructions, theirs.instructions):
        assert (a.i_in1, a.i_in2, a.i_out, a.connection_mode, a.has_weight) == (
            b.i_in1, b.i_in2, b.i_out, b.connection_mode, b.has_weight)
        assert tuple(a.path_shape) == tuple(b.path_shape)
        assert a.path_weight == pytest.approx(b.path_weight, rel=1e-14, abs=1e-300)
    assert torch.equal(ours.output_mask.double(), theirs.output_mask.double())


# ------------------------------------------------------------------ problems
def _mace_channelwise(irreps1, irreps2, target):
    """MACE's ``tp_out_irreps_with_instructions``, written with e3nn's own Irreps (an
    independent construction of the channel-wise instruction list and sorted outputs)."""
    o3 = _o3()
    irreps1, irreps2, target = o3.Irreps(irreps1), o3.Irreps(irreps2), o3.Irreps(target)
    out, instructions = [], []
    for i, (mul, ir_in) in enumerate(irreps1):
        for j, (_, ir_edge) in enumerate(irreps2):
            for ir_out in ir_in * ir_edge:
                if ir_out in target:
                    instructions.append((i, j, len(out), "uvu", True))
                    out.append((mul, ir_out))
    out, perm, _ = o3.Irreps(out).sort()
    instructions = sorted([(a, b, perm[c], m, t) for a, b, c, m, t in instructions], key=lambda ins: ins[2])
    return out, instructions


# ../shared/design/BENCHMARKS.md
CHANNELWISE = {
    "mace-large": ("128x0e+128x1o+128x2e", "1x0e+1x1o+1x2e+1x3o", "128x0e+128x1o+128x2e+128x3o"),
    "mace-medium": ("128x0e+128x1o", "1x0e+1x1o+1x2e+1x3o", "128x0e+128x1o+128x2e"),
    "nequip-lips": ("32x0o+32x0e+32x1o+32x1e+32x2o+32x2e", "0e+1o+2e", "32x0o+32x0e+32x1o+32x1e+32x2o+32x2e"),
    "nequip-benzene": (
        "64x0o+64x0e+64x1o+64x1e+64x2o+64x2e+64x3o+64x3e",
        "0e+1o+2e+3o",
        "64x0o+64x0e+64x1o+64x1e+64x2o+64x2e+64x3o+64x3e",
    ),
    "nequip-water": ("32x0o+32x0e+32x1o+32x1e", "0e+1o", "32x0o+32x0e+32x1o+32x1e"),
    "sevennet-first": ("128x0e", "1x0e+1x1e+1x2e+1x3e", "128x0e+128x1e+128x2e+128x3e"),
}
FULLY_CONNECTED = {
    "diffdock-l2": ("10x1o+10x1e+48x0e+48x0o", "1x0e+1x1o+1x2e", "10x1o+10x1e+48x0e+48x0o", False),
    "tetris-poly-1": ("1x0e+1x1o+1x2e+1x3o", "1x0e+1x1o+1x2e+1x3o", "64x0e+24x1e+24x1o+16x2e+16x2o", True),
}

# A small problem with every mode, weighted and unweighted paths, several instructions
# into one output (2 and 3), a path weight and an output irrep (1x2o) nothing writes.
MIXED_IN1, MIXED_IN2 = "2x0e+2x1o", "2x1o+2x0e"
MIXED_OUT = "3x1o+2x1o+2x0e+1x1e+4x2e+1x2o"
MIXED_INS = [
    (0, 0, 0, "uvw", True),
    (1, 1, 1, "uvu", True),
    (1, 0, 2, "uvv", False),
    (1, 0, 3, "uuw", False),
    (0, 1, 2, "uuu", True),
    (1, 0, 4, "uvuv", True),
    (1, 0, 3, "uvu<v", True),
    (0, 1, 2, "u<vw", True, 0.5),
]


def _mixed(backend="cpu", shared=True, **kwargs):
    return equiops.TensorProduct(
        MIXED_IN1, MIXED_IN2, MIXED_OUT, MIXED_INS, shared_weights=shared, internal_weights=False, backend=backend,
        **kwargs,
    )


def _bench_pair(label, backend):
    """(e3nn module, our module, weight shape) for a benchmark label."""
    if label in CHANNELWISE:
        in1, in2, target = CHANNELWISE[label]
        out, ins = _mace_channelwise(in1, in2, target)
        theirs = _e3nn(in1, in2, out, ins, shared_weights=False, internal_weights=False)
        ours = equiops.ChannelWiseTensorProduct(in1, in2, target, backend=backend)
        return theirs, ours, False
    in1, in2, out, shared = FULLY_CONNECTED[label]
    o3 = _o3()
    theirs = _e3nn(in1, in2, out, shared_weights=shared, internal_weights=False, cls=o3.FullyConnectedTensorProduct)
    ours = equiops.FullyConnectedTensorProduct(in1, in2, out, shared_weights=shared, internal_weights=False,
                                               backend=backend)
    return theirs, ours, shared


# ------------------------------------------------------------- benchmark problems
@pytest.mark.parametrize("label", list(CHANNELWISE) + list(FULLY_CONNECTED))
def test_benchmark_problems_match_e3nn(label):
    """Reference and CPU kernels against e3nn (weights copied): outputs, first derivatives
    w.r.t. x, y, weight, and second derivatives, float64, 5 rows (one full 4-row chunk of
    the float64 kernels and a partial one)."""
    N = 5
    results = {}
    for backend in BACKENDS:
        theirs, ours, shared = _bench_pair(label, backend)
        _same_instructions(ours, theirs)
        assert ours.shared_weights == shared and not ours.internal_weights
        x = _randn(N, ours.irreps_in1.dim, seed=1)
        y = _randn(N, ours.irreps_in2.dim, seed=2)
        w = _randn(*(() if shared else (N,)), ours.weight_numel, seed=3)
        if "e3nn" not in results:
            results["e3nn"] = _derivatives(theirs, x, y, w)
        results[backend] = _derivatives(ours, x, y, w)
        _compare(results[backend], results["e3nn"], what=f"{label} {backend}")


def test_high_degrees_and_many_pairs_match_e3nn():
    """Degrees up to 11 (fully connected, shared weights), and the pair modes with 8
    channels (28 pairs u < v), per-row weights."""
    o3 = _o3()
    cases = [
        (("1x4e+2x5o", "1x3o+1x6e", "1x1e+1x7o+2x8e+1x9o+1x2o+1x11e"), dict(cls=o3.FullyConnectedTensorProduct), True),
        (("8x1o", "8x1o+2x2e", "28x1e+5x2e+16x3o+8x0e+3x2e",
          [(0, 0, 0, "uvu<v", True), (0, 0, 1, "u<vw", True), (0, 1, 2, "uvuv", False), (0, 0, 3, "uuu", True),
           (0, 0, 4, "uuw", True), (0, 0, 0, "uvu<v", False, 3.0)]), {}, False),
    ]
    for args, kwargs, shared in cases:
        theirs = _e3nn(*args, internal_weights=False, shared_weights=shared, **kwargs)
        x, y = _randn(3, theirs.irreps_in1.dim, seed=1), _randn(3, theirs.irreps_in2.dim, seed=2)
        w = _randn(*(() if shared else (3,)), theirs.weight_numel, seed=3)
        expected = _derivatives(theirs, x, y, w)
        for backend in BACKENDS:
            ours = equiops.from_e3nn(theirs, backend=backend)
            _compare(_derivatives(ours, x, y, w), expected, what=f"{args[:3]} {backend}")


# ----------------------------------------------------------- random problems
_MUL_CHOICES = [2, 1, 3, 2, 1, 3, 2, 0]  # multiplicity 0 now and then


@st.composite
def tp_problem(draw):
    """Random irreps and instructions: every mode (its multiplicity rule respected),
    random parities and degrees <= 2, multiplicities 0..3, weighted and unweighted paths,
    path weights, several instructions into one output, outputs nothing writes, in a
    shuffled order; optional variances. (Normalizations: parametrized by the test.)"""

    def irrep():
        return (draw(st.sampled_from(_MUL_CHOICES)), draw(st.integers(0, 2)), draw(st.sampled_from([1, -1])))

    in1 = [irrep() for _ in range(draw(st.integers(1, 3)))]
    in2 = [irrep() for _ in range(draw(st.integers(1, 3)))]
    out, instructions = [], []
    offset = draw(st.integers(0, len(MODES) - 1))
    for k in range(draw(st.integers(1, 5))):
        # mostly cycle through the modes (every mode equally often), sometimes repeat one
        mode = draw(st.sampled_from([MODES[(offset + k) % len(MODES)], None])) or draw(st.sampled_from(MODES))
        a = draw(st.integers(0, len(in1) - 1))
        m1, l1, p1 = in1[a]
        if mode in ("uuw", "uuu", "uvu<v", "u<vw"):
            same = [j for j, t in enumerate(in2) if t[0] == m1]
            if not same:  # make one
                in2.append((m1, draw(st.integers(0, 2)), draw(st.sampled_from([1, -1]))))
                same = [len(in2) - 1]
            b = draw(st.sampled_from(same))
        else:
            b = draw(st.integers(0, len(in2) - 1))
        m2, l2, p2 = in2[b]
        has_w = True if mode in ("uvw", "u<vw") else draw(st.booleans())
        lo = draw(st.integers(abs(l1 - l2), l1 + l2))
        free = draw(st.sampled_from([1, 2, 3]))
        mo = {
            "uvw": free, "uvu": m1, "uvv": m2, "uuw": free if has_w else 1, "uuu": m1,
            "uvuv": m1 * m2, "uvu<v": m1 * (m1 - 1) // 2, "u<vw": free,
        }[mode]
        key = (mo, lo, p1 * p2)
        reuse = [c for c, t in enumerate(out) if t == key]
        if reuse and draw(st.sampled_from([True, True, False])):
            c = draw(st.sampled_from(reuse))
        else:
            out.append(key)
            c = len(out) - 1
        ins = (a, b, c, mode, has_w)
        pw = draw(st.sampled_from([None, None, 0.25, 2.0]))
        instructions.append(ins if pw is None else ins + (pw,))
    for _ in range(draw(st.integers(0, 2))):  # outputs no instruction writes
        out.append((draw(st.integers(1, 2)), draw(st.integers(0, 2)), draw(st.sampled_from([1, -1]))))
    perm = draw(st.permutations(range(len(out))))
    new_index = {old: new for new, old in enumerate(perm)}
    out = [out[old] for old in perm]
    instructions = [(a, b, new_index[c]) + tuple(rest) for a, b, c, *rest in instructions]

    def text(irreps):
        return "+".join(f"{m}x{lv}{'e' if p == 1 else 'o'}" for m, lv, p in irreps)

    kwargs = {}
    if draw(st.booleans()):
        kwargs["in1_var"] = [draw(st.sampled_from([0.5, 1.0, 3.0])) for _ in in1]
        kwargs["in2_var"] = [draw(st.sampled_from([0.5, 1.0, 3.0])) for _ in in2]
        kwargs["out_var"] = [draw(st.sampled_from([0.5, 1.0, 3.0])) for _ in out]
    return text(in1), text(in2), text(out), instructions, kwargs


@pytest.mark.parametrize("path_normalization", ["element", "path", "none"])
@pytest.mark.parametrize("irrep_normalization", ["component", "norm", "none"])
@settings(SETTINGS, max_examples=max(1, SETTINGS.max_examples // 9))
@given(
    problem=tp_problem(),
    shared=st.booleans(),
    rows=st.tuples(st.integers(1, 4), st.booleans(), st.booleans(), st.booleans()),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_problems_match_e3nn(irrep_normalization, path_normalization, problem, shared, rows, seed):
    in1, in2, out, instructions, kwargs = problem
    kwargs = dict(kwargs, irrep_normalization=irrep_normalization, path_normalization=path_normalization)
    N, x_one, y_one, w_one = rows
    theirs = _e3nn(in1, in2, out, instructions, shared_weights=shared, internal_weights=False, **kwargs)
    x = _randn(1 if x_one else N, theirs.irreps_in1.dim, seed=seed)
    y = _randn(1 if y_one else N, theirs.irreps_in2.dim, seed=seed + 1)
    if theirs.weight_numel == 0:
        w = None
    else:
        w = _randn(*(() if shared else (1 if w_one else N,)), theirs.weight_numel, seed=seed + 2)
    expected = _derivatives(theirs, x, y, w, seed=seed)
    for backend in BACKENDS:
        ours = equiops.TensorProduct(in1, in2, out, instructions, shared_weights=shared, internal_weights=False,
                                     backend=backend, **kwargs)
        _same_instructions(ours, theirs)
        actual = _derivatives(ours, x, y, w, seed=seed)
        _compare(actual, expected, what=backend)
        # columns no path writes are exactly zero
        assert torch.all(actual["out"][..., ours.output_mask == 0] == 0)


# ----------------------------------------------------------------- float32
@pytest.mark.parametrize("label", ["mace-medium", "nequip-water", "diffdock-l2", "tetris-poly-1", "mixed"])
def test_float32_matches_float64(label):
    """float32 (kernels and reference) against the float64 reference, relative to each
    result's largest magnitude: outputs, first and second derivatives."""
    N = 19  # two full 8-row float32 chunks and a partial one
    if label == "mixed":
        make, shared = (lambda b: _mixed(b, shared=False)), False
    else:
        _, _, shared = _bench_pair(label, "torch")
        make = lambda b: _bench_pair(label, b)[1]  # noqa: E731
    ref = make("torch")
    x = _randn(N, ref.irreps_in1.dim, seed=4)
    y = _randn(N, ref.irreps_in2.dim, seed=5)
    w = _randn(*(() if shared else (N,)), ref.weight_numel, seed=6)
    expected = _derivatives(ref, x, y, w)
    tol = {"out": 1e-5, "d/": 2e-5, "dd/": 5e-5, "force/": 5e-5}
    for backend in BACKENDS:
        actual = _derivatives(make(backend), x.float(), y.float(), w.float())
        assert actual["out"].dtype == torch.float32
        for k in expected:
            t = next(v for p, v in tol.items() if k.startswith(p))
            _assert_rel(actual[k], expected[k], t, f"{label} {backend} {k}")


# ------------------------------------------------------------- baseline ISA
_ISA_SCRIPT = r"""
import sys, torch, equiops
from equiops.tp_problem import build_problem
from equiops.nn.tensor_product import channelwise_instructions
problems = {
    "mixed": build_problem(%(mixed)r),
    "channelwise": build_problem("8x0e+8x1o+8x2e", "1x0e+1x1o+1x2e+1x3o",
                                 *channelwise_instructions("8x0e+8x1o+8x2e", "1x0e+1x1o+1x2e+1x3o",
                                                           "8x0e+8x1o+8x2e+8x3o")),
}
ops = torch.ops.equiops
g = torch.Generator().manual_seed(7)
res = {}
for name, p in problems.items():
    s = p.encode()
    for dtype in (torch.float32, torch.float64):
        r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
        for w_rows in (1, 37):  # shared and per-row weights; 37 rows: a partial chunk
            x1, x2, w = r(37, p.dim1), r(37, p.dim2), r(w_rows, p.dim_w)
            go, gg1, gg2, ggw = r(37, p.dim_out), r(37, p.dim1), r(37, p.dim2), r(w_rows, p.dim_w)
            res[(name, str(dtype), w_rows)] = (
                ops.tensor_product(x1, x2, w, s, "cpu"),
                *ops.tensor_product_backward(go, x1, x2, w, s, [True, True, True], "cpu"),
                *ops.tensor_product_double_backward(gg1, gg2, ggw, go, x1, x2, w, s, "cpu"),
            )
torch.save(res, sys.argv[1])
"""


def test_generic_and_default_isa_kernels_agree(tmp_path):
    """EQUIOPS_CPU_ISA=generic (the baseline kernels; the ISA is chosen once per process,
    hence subprocesses) gives what the default (AVX2 on this machine) gives."""
    script = _ISA_SCRIPT % {"mixed": (MIXED_IN1, MIXED_IN2, MIXED_OUT, MIXED_INS)}
    script = script.replace("build_problem((", "build_problem(*(")
    results = {}
    procs = {}
    for isa in ("generic", "native"):
        path = tmp_path / f"{isa}.pt"
        env = dict(os.environ, EQUIOPS_CPU_ISA=isa, OMP_NUM_THREADS="1")
        procs[isa] = (path, subprocess.Popen([sys.executable, "-c", script, str(path)], env=env,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for isa, (path, proc) in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results[isa] = torch.load(path)
    assert len(results["generic"]) == 8
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        # the variable took effect: the builds round differently (FMA), so some result differs
        assert any(not torch.equal(a, b) for key, generic in results["generic"].items()
                   for a, b in zip(generic, results["native"][key]))
    for key, generic in results["generic"].items():
        for k, (a, b) in enumerate(zip(generic, results["native"][key])):
            tol = 2e-6 if a.dtype == torch.float32 else 1e-13
            _assert_rel(a, b, tol, f"{key} output {k}")


# ------------------------------------------------------------- broadcasting
@pytest.mark.parametrize("backend", BACKENDS)
def test_broadcasting_matches_e3nn(backend):
    """Leading dimensions broadcast as in e3nn, with shared and with per-row weights
    (the weight's own leading dimensions broadcast too); gradients of broadcast inputs
    are summed."""
    B, E = 3, 4
    for shared in (True, False):
        theirs = _e3nn(MIXED_IN1, MIXED_IN2, MIXED_OUT, MIXED_INS, shared_weights=shared, internal_weights=False)
        ours = _mixed(backend, shared=shared)
        d1, d2, W = ours.irreps_in1.dim, ours.irreps_in2.dim, ours.weight_numel
        cases = [((B, 1, d1), (1, E, d2), (B, E, W)), ((B, E, d1), (B, E, d2), (B, 1, W)),
                 ((d1,), (B, E, d2), (1, W)), ((B, E, d1), (E, d2), (E, W)), ((2, 1, 1, d1), (B, 1, d2), (1, E, W))]
        for k, (sx, sy, sw) in enumerate(cases):
            x, y = _randn(*sx, seed=k), _randn(*sy, seed=k + 10)
            w = _randn(W, seed=k + 20) if shared else _randn(*sw, seed=k + 20)
            expected = _derivatives(theirs, x, y, w, seed=k)
            actual = _derivatives(ours, x, y, w, seed=k)
            _compare(actual, expected, what=f"shared={shared} {sx} {sy} {sw}")


@pytest.mark.parametrize("shared", [True, False])
def test_list_of_weight_tensors(shared):
    """Weights as one tensor per weighted instruction (e3nn's weight_views shapes) give
    the flat weights' results (bitwise), and gradients of both orders reach each list
    element as the matching view of the flat weight's gradient."""
    ours = _mixed("cpu", shared=shared)
    theirs = _e3nn(MIXED_IN1, MIXED_IN2, MIXED_OUT, MIXED_INS, shared_weights=shared, internal_weights=False)
    N = 3
    lead = () if shared else (N,)
    flat = _randn(*lead, ours.weight_numel, seed=1).requires_grad_()
    views = [v.detach().clone().requires_grad_() for v in ours.weight_views(flat)]
    shapes = [ins.path_shape for ins in ours.instructions if ins.has_weight]
    assert [tuple(v.shape) for v in views] == [lead + tuple(s) for s in shapes]
    x = _randn(N, ours.irreps_in1.dim, seed=2).requires_grad_()
    y = _randn(N, ours.irreps_in2.dim, seed=3)
    go, v_x = _randn(N, ours.irreps_out.dim, seed=4), _randn(N, ours.irreps_in1.dim, seed=5)
    v_w = _randn(*lead, ours.weight_numel, seed=6)

    def run(w, ws):
        out = ours(x, y, w)
        gx, *gws = torch.autograd.grad(out, [x] + ws, go, create_graph=True)
        s = (gx * v_x).sum() + sum((g * v).sum() for g, v in zip(gws, ours.weight_views(v_w) if len(ws) > 1 else [v_w]))
        second = torch.autograd.grad(s, [x] + ws)
        return out, gx, gws, second

    out_f, gx_f, gw_f, sec_f = run(flat, [flat])
    out_l, gx_l, gw_l, sec_l = run(views, views)
    assert torch.equal(out_f, out_l) and torch.equal(gx_f, gx_l) and torch.equal(sec_f[0], sec_l[0])
    for k, (a, b) in enumerate(zip(ours.weight_views(gw_f[0]), gw_l)):
        assert torch.equal(a, b), k
    for k, (a, b) in enumerate(zip(ours.weight_views(sec_f[1]), sec_l[1:])):
        assert torch.equal(a, b), k
    # e3nn's views, and e3nn takes the list too
    for k, (a, b) in enumerate(zip(ours.weight_views(flat), theirs.weight_views(flat), strict=True)):
        assert torch.equal(a, b)
    # (not e3nn 0.6.0's weight_view_for_instruction: its offset also counts the shapes of
    # unweighted instructions before it, so it disagrees with its own weight_views here)
    their_views = {k: v for k, _, v in theirs.weight_views(flat, yield_instruction=True)}
    assert sorted(their_views) == [k for k, ins in enumerate(ours.instructions) if ins.has_weight]
    for k, v in their_views.items():
        assert torch.equal(ours.weight_view_for_instruction(k, flat), v)
    _assert_rel(ours(x, y, views), theirs(x, y, [v.detach() for v in views]))
    _assert_rel(ours(x, y, views), theirs(x, y, flat))


@pytest.mark.parametrize("shared", [True, False])
def test_partial_requires_grad_and_strided_inputs(shared):
    """Only some inputs requiring grad (the ops' need masks), first and second order, and
    non-contiguous / expanded inputs: the kernels give the reference's results."""
    cpu, ref = _mixed("cpu", shared=shared), _mixed("torch", shared=shared)
    N = 4
    big = _randn(N, 3 * cpu.irreps_in1.dim, seed=1)
    x = big[:, 1::3]  # non-contiguous columns
    y = _randn(cpu.irreps_in2.dim, N, seed=2).t()  # transposed
    w = _randn(*(() if shared else (N,)), cpu.weight_numel, seed=3)
    assert not x.is_contiguous() and not y.is_contiguous()
    _assert_rel(cpu(x, y, w), ref(x, y, w))
    _assert_rel(cpu(x[:1].expand(N, -1), y, w), ref(x[:1].contiguous(), y, w))
    go = _randn(N, cpu.irreps_out.dim, seed=4)
    for mask in ((True, False, False), (False, True, False), (False, False, True), (False, True, True)):
        results = []
        for m in (cpu, ref):
            leaves = [t.detach().clone().requires_grad_(r) for t, r in zip((x, y, w), mask)]
            wanted = [t for t in leaves if t.requires_grad]
            first = torch.autograd.grad(m(*leaves), wanted, go, create_graph=True)
            s = sum((g ** 2).sum() for g in first)
            results.append(list(first) + list(_grad(s, wanted)))
        for a, e in zip(*results):
            _assert_rel(a, e, what=str(mask))


def test_explicit_weight_overrides_internal_weight():
    ours = equiops.TensorProduct(MIXED_IN1, MIXED_IN2, MIXED_OUT, MIXED_INS, backend="cpu").double()
    x, y = _randn(3, ours.irreps_in1.dim, seed=1), _randn(3, ours.irreps_in2.dim, seed=2)
    w = _randn(ours.weight_numel, seed=3)
    theirs = _e3nn(MIXED_IN1, MIXED_IN2, MIXED_OUT, MIXED_INS)
    _assert_rel(ours(x, y, w), theirs(x, y, w))
    with torch.no_grad():
        ours.weight.copy_(w)
    assert torch.equal(ours(x, y), ours(x, y, w))


# --------------------------------------------------------------- equivariance
@pytest.mark.parametrize("backend", BACKENDS)
def test_equivariance_with_reflections(backend):
    """out(D1(R) x, D2(R) y) == D_out(R) out(x, y) for random rotations and reflections."""
    for ours, shared in ((_mixed(backend, shared=False), False),
                         (equiops.ChannelWiseTensorProduct("4x0o+4x0e+4x1o+4x1e", "0e+1o+2e", "4x0o+4x0e+4x1o+4x1e",
                                                           backend=backend), False),
                         (equiops.FullyConnectedTensorProduct("2x0e+1x1o+1x2e", "1x0o+1x1e", "2x0o+2x1o+1x1e+1x2o+1x3e",
                                                              internal_weights=False, backend=backend), True)):
        N = 5
        w = _randn(*(() if shared else (N,)), ours.weight_numel, seed=9)
        x = _randn(N, ours.irreps_in1.dim, seed=7)
        y = _randn(N, ours.irreps_in2.dim, seed=8)
        assert_equivariant(lambda a, b: ours(a, b, w), [ours.irreps_in1.D_from_matrix, ours.irreps_in2.D_from_matrix],
                           ours.irreps_out.D_from_matrix, [x, y])
        # the gradient w.r.t. x is equivariant too: grad_x(D x, D y; D_out g) = D1 grad_x(x, y; g)
        g = _randn(N, ours.irreps_out.dim, seed=10)

        def grad_x(a, b, cot):
            a = a.clone().requires_grad_()
            return torch.autograd.grad(ours(a, b, w), a, cot)[0]

        base = grad_x(x, y, g)
        for R in _o3_matrices():
            D1, D2, Do = (ir.D_from_matrix(R) for ir in (ours.irreps_in1, ours.irreps_in2, ours.irreps_out))
            _assert_rel(grad_x(x @ D1.T, y @ D2.T, g @ Do.T), base @ D1.T, 1e-12, "grad_x")


def _o3_matrices():
    mats = random_o3(4, seed=3)
    assert (torch.det(mats) < 0).any() and (torch.det(mats) > 0).any()
    return mats


# ------------------------------------------------------------- operator contract
def _raw_inputs(shared=True, N=4, seed=0, dtype=torch.float64):
    p = build_problem(MIXED_IN1, MIXED_IN2, MIXED_OUT, MIXED_INS)
    s = p.encode()
    x1, x2 = _randn(N, p.dim1, seed=seed, dtype=dtype), _randn(N, p.dim2, seed=seed + 1, dtype=dtype)
    w = _randn(1 if shared else N, p.dim_w, seed=seed + 2, dtype=dtype)
    return p, s, x1, x2, w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_opcheck(dtype):
    ops = torch.ops.equiops
    for shared in ((True, False) if dtype == torch.float64 else (False,)):
        p, s, x1, x2, w = _raw_inputs(shared, dtype=dtype)
        x2b = x2[:1].clone()  # one row broadcast to all
        go = _randn(4, p.dim_out, seed=3, dtype=dtype)
        gg1, gg2, ggw = _randn(*x1.shape, seed=4, dtype=dtype), _randn(*x2.shape, seed=5, dtype=dtype), \
            _randn(*w.shape, seed=6, dtype=dtype)
        rg = [t.clone().requires_grad_() for t in (x1, x2, w, go)]
        torch.library.opcheck(ops.tensor_product.default, (rg[0], rg[1], rg[2], s, "cpu"))
        torch.library.opcheck(ops.tensor_product.default, (rg[0], x2b.requires_grad_(), rg[2], s, "cpu"))
        torch.library.opcheck(ops.tensor_product.default, (x1, x2, w, s, "cpu"))
        torch.library.opcheck(ops.tensor_product_backward.default, (rg[3], rg[0], rg[1], rg[2], s, [True, True, True], "cpu"))
        torch.library.opcheck(ops.tensor_product_backward.default, (go, x1, x2, w, s, [True, False, True], "cpu"))
        torch.library.opcheck(ops.tensor_product_backward.default, (go, x1, x2, w, s, [False, True, False], "cpu"))
        # no requires_grad: the double backward's derivative (third order) raises
        torch.library.opcheck(ops.tensor_product_double_backward.default, (gg1, gg2, ggw, go, x1, x2, w, s, "cpu"))
        torch.library.opcheck(ops.tensor_product_double_backward.default, (None, gg2, None, go, x1, x2, w, s, "cpu"))
        torch.library.opcheck(ops.tensor_product_double_backward.default, (None, None, None, go, x1, x2, w, s, "cpu"))


def test_raw_ops_match_reference():
    """The raw ops (need masks, None gg's, broadcast rows) against the reference's autograd."""
    ops = torch.ops.equiops
    for shared in (True, False):
        p, s, x1, x2, w = _raw_inputs(shared, N=5)
        x2 = x2[:1].clone()
        go, gg1, gg2, ggw = (_randn(5, p.dim_out, seed=3), _randn(*x1.shape, seed=4), _randn(*x2.shape, seed=5),
                             _randn(*w.shape, seed=6))
        _assert_rel(ops.tensor_product(x1, x2, w, s, "cpu"), reference_tp(x1, x2, w, s))
        leaves = [t.clone().requires_grad_() for t in (x1, x2, w)]
        go_l = go.clone().requires_grad_()
        first = torch.autograd.grad(reference_tp(*leaves, s), leaves, go_l, create_graph=True)
        for need in ([True, True, True], [True, False, False], [False, True, True], [False, False, False]):
            got = ops.tensor_product_backward(go, x1, x2, w, s, need, "cpu")
            for g, e, n, t in zip(got, first, need, (x1, x2, w)):
                if n:
                    _assert_rel(g, e.detach())
                else:
                    assert g.shape == (0,)
        for ggs in ((gg1, gg2, ggw), (None, gg2, None), (gg1, None, None), (None, None, ggw)):
            got = ops.tensor_product_double_backward(*ggs, go, x1, x2, w, s, "cpu")
            sval = sum((f * g).sum() for f, g in zip(first, ggs) if g is not None)
            exp = torch.autograd.grad(sval, [go_l] + leaves, allow_unused=True, retain_graph=True)
            exp = _zeros_for_none(exp, [go_l] + leaves)
            for g, e in zip(got, exp):
                _assert_rel(g, e)


def test_third_derivative_raises():
    ours = _mixed("cpu")
    p = [t.requires_grad_() for t in (_randn(3, ours.irreps_in1.dim), _randn(3, ours.irreps_in2.dim),
                                      _randn(ours.weight_numel))]
    (gx,) = torch.autograd.grad(ours(*p).pow(2).sum(), p[0], create_graph=True)
    (gxx,) = torch.autograd.grad(gx.pow(2).sum(), p[0], create_graph=True)
    with pytest.raises(NotImplementedError, match=r"beyond the second order"):
        torch.autograd.grad(gxx.pow(2).sum(), p[0])


def test_compiled_forward_matches_eager():
    ours = _mixed("cpu")
    w = _randn(ours.weight_numel, seed=1)
    x, y = _randn(2, 3, ours.irreps_in1.dim, seed=2), _randn(2, 3, ours.irreps_in2.dim, seed=3)
    check_compiled_matches_eager(lambda a, b: ours(a, b, w), x, y)
    cw = equiops.ChannelWiseTensorProduct("4x0e+4x1o", "0e+1o+2e", "4x0e+4x1o+4x2e", backend="cpu")
    wc = _randn(6, cw.weight_numel, seed=4)
    check_compiled_matches_eager(cw, _randn(6, cw.irreps_in1.dim, seed=5).float(),
                                 _randn(6, cw.irreps_in2.dim, seed=6).float(), wc.float())


def test_compiled_backward_matches_eager():
    """Module forward compiled with fullgraph=True; first derivatives through the compiled
    graph (x, y and the internal weight) equal eager's."""
    torch.manual_seed(0)
    ours = equiops.TensorProduct(MIXED_IN1, MIXED_IN2, MIXED_OUT, MIXED_INS, backend="cpu").double()
    x0, y0 = _randn(5, ours.irreps_in1.dim, seed=2), _randn(5, ours.irreps_in2.dim, seed=3)
    g = _randn(5, ours.irreps_out.dim, seed=4)

    def run(f):
        x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        out = f(x, y)
        grads = torch.autograd.grad(out, (x, y, ours.weight), g)
        return (out.detach(),) + grads

    torch._dynamo.reset()
    eager = run(ours)
    compiled = run(torch.compile(ours, fullgraph=True))
    for a, e in zip(compiled, eager):
        _assert_rel(a, e, 1e-12)


@pytest.mark.xfail(strict=True, raises=RuntimeError,
                   reason="PyTorch: aot_autograd does not support double backward through a compiled region "
                          "(ARCHITECTURE.md, Known limits)")
def test_compiled_double_backward():
    ours = _mixed("cpu")
    w = _randn(ours.weight_numel, seed=1)
    x, y = _randn(3, ours.irreps_in1.dim, seed=2).requires_grad_(), _randn(3, ours.irreps_in2.dim, seed=3)
    torch._dynamo.reset()
    f = torch.compile(lambda a, b: ours(a, b, w), fullgraph=True)
    (gx,) = torch.autograd.grad(f(x, y).pow(2).sum(), x, create_graph=True)
    torch.autograd.grad(gx.pow(2).sum(), x)


def test_compiled_force_computation_with_traced_autograd():
    """The force-training pattern compiled as one region (forward and the create_graph
    first derivative inside, trace_autograd_ops=True), then differentiated again outside:
    what the compiled-double-backward limit leaves open. Matches eager."""
    import torch._dynamo.testing

    ours = _mixed("cpu")
    w = _randn(ours.weight_numel, seed=1).requires_grad_()
    x, y = _randn(3, ours.irreps_in1.dim, seed=2).requires_grad_(), _randn(3, ours.irreps_in2.dim, seed=3)
    v = _randn(3, ours.irreps_in1.dim, seed=4)

    def force(a, b, c):
        out = ours(a, b, c)
        return torch.autograd.grad(out.pow(2).sum(), a, create_graph=True)[0]

    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled = torch.compile(force, backend=counter, fullgraph=True)(x, y, w)
    assert counter.frame_count == 1
    eager = force(x, y, w)
    _assert_rel(compiled, eager, 1e-12)
    for a, e in zip(torch.autograd.grad((compiled * v).sum(), (x, w)), torch.autograd.grad((eager * v).sum(), (x, w))):
        _assert_rel(a, e, 1e-12)


def test_compiled_dynamic_rows_do_not_recompile():
    import torch._dynamo.testing

    ours = _mixed("cpu")
    w = _randn(ours.weight_numel, seed=1)
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounter()
    fn = torch.compile(lambda a, b: ours(a, b, w), backend=counter, fullgraph=True, dynamic=True)
    for n in (5, 9, 13):
        x, y = _randn(n, ours.irreps_in1.dim, seed=n), _randn(n, ours.irreps_in2.dim, seed=n + 1)
        _assert_rel(fn(x, y), ours(x, y, w), 1e-12)
    assert counter.frame_count == 1


class _ExportModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.cw = equiops.ChannelWiseTensorProduct("4x0e+4x1o", "0e+1o+2e", "4x0e+4x1o+4x2e", backend="cpu")
        self.radial = torch.nn.Linear(3, self.cw.weight_numel)
        self.fc = equiops.FullyConnectedTensorProduct(self.cw.irreps_out, "0e+1o", "2x0e+2x1o", backend="cpu")

    def forward(self, x, sh, r):
        h = self.cw(x, sh, self.radial(r))
        return self.fc(h, sh[:, :4])


def test_export():
    torch.manual_seed(0)
    model = _ExportModel()
    n = torch.export.Dim("n")
    x, sh, r = torch.randn(7, 16), torch.randn(7, 9), torch.randn(7, 3)
    program = torch.export.export(model, (x, sh, r), dynamic_shapes=({0: n}, {0: n}, {0: n}))
    _assert_rel(program.module()(x, sh, r), model(x, sh, r), 1e-6)
    _assert_rel(program.module()(x[:3], sh[:3], r[:3]), model(x[:3], sh[:3], r[:3]), 1e-6)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    buf.seek(0)
    loaded = torch.export.load(buf)
    _assert_rel(loaded.module()(x, sh, r), model(x, sh, r), 1e-6)


# ------------------------------------------------------------------ gradcheck
@pytest.mark.parametrize("shared", [True, False])
def test_gradcheck_and_gradgradcheck(shared):
    ours = _mixed("cpu", shared=shared)
    N = 3
    x = _randn(N, ours.irreps_in1.dim, seed=1).requires_grad_()
    y = _randn(1, ours.irreps_in2.dim, seed=2).requires_grad_()  # broadcast row
    w = _randn(*(() if shared else (N,)), ours.weight_numel, seed=3).requires_grad_()
    assert torch.autograd.gradcheck(ours, (x, y, w))
    assert torch.autograd.gradgradcheck(ours, (x, y, w))


# ---------------------------------------------------------------- determinism
def test_cpu_results_are_deterministic_across_runs_and_threads():
    """Outputs, gradients (shared weights: a reduction over rows) and second derivatives
    are bitwise equal across runs and thread counts."""
    ours = equiops.FullyConnectedTensorProduct("8x0e+8x1o+4x2e", "0e+1o+2e", "8x0e+8x1o+8x2e",
                                               internal_weights=False, backend="cpu")
    cw = equiops.ChannelWiseTensorProduct("8x0e+8x1o", "0e+1o+2e", "8x0e+8x1o+8x2e", backend="cpu")
    N = 3000
    inputs = {
        "fc": (ours, _randn(N, ours.irreps_in1.dim, seed=1), _randn(N, ours.irreps_in2.dim, seed=2),
               _randn(ours.weight_numel, seed=3)),
        # y broadcast from one row: its gradient is a reduction too
        "cw": (cw, _randn(N, cw.irreps_in1.dim, seed=4), _randn(1, cw.irreps_in2.dim, seed=5),
               _randn(N, cw.weight_numel, seed=6)),
    }
    old = torch.get_num_threads()
    runs = []
    try:
        for threads in (2, 2, 1):
            torch.set_num_threads(threads)
            runs.append({name: _derivatives(m, x, y, w) for name, (m, x, y, w) in inputs.items()})
    finally:
        torch.set_num_threads(old)
    for run in runs[1:]:
        for name in inputs:
            for k, v in runs[0][name].items():
                assert torch.equal(v, run[name][k]), (name, k)


# ----------------------------------------------------------------- e3nn interop
def _e3nn_modules():
    o3 = _o3()
    uvu_out, uvu_ins = _mace_channelwise("4x0e+4x1o", "0e+1o+2e", "4x0e+4x1o+4x2e")
    return {
        "fully_connected": _e3nn("2x0e+1x1o+1x2e", "1x0e+1x1o", "3x0e+2x1o+1x1e+1x2e",
                                 cls=o3.FullyConnectedTensorProduct),
        "fully_connected_unshared": _e3nn("2x0e+1x1o", "1x0e+1x1o", "3x0e+2x1o", shared_weights=False,
                                          cls=o3.FullyConnectedTensorProduct),
        "elementwise": _e3nn("2x0e+3x1o+1x2e", "1x0e+2x1o+2x1e+1x0o", cls=o3.ElementwiseTensorProduct),
        "elementwise_filtered": _e3nn("2x0e+2x1o", "2x1o+2x1e", ["1o", "0e", "2e"], cls=o3.ElementwiseTensorProduct),
        "full": _e3nn("2x0e+1x1o+1x2e", "1x1o+2x0e", cls=o3.FullTensorProduct),
        "full_filtered": _e3nn("2x0e+1x1o", "1x1o+1x2e", ["1o", "2e"], cls=o3.FullTensorProduct),
        "internal": _e3nn(MIXED_IN1, MIXED_IN2, MIXED_OUT, MIXED_INS, irrep_normalization="norm",
                          path_normalization="path"),
        "external_shared": _e3nn(MIXED_IN1, MIXED_IN2, MIXED_OUT, MIXED_INS, internal_weights=False),
        "external_unshared": _e3nn("4x0e+4x1o", "0e+1o+2e", uvu_out, uvu_ins, shared_weights=False,
                                   internal_weights=False),
    }


@pytest.mark.parametrize("name", ["fully_connected", "fully_connected_unshared", "elementwise", "elementwise_filtered",
                                  "full", "full_filtered", "internal", "external_shared", "external_unshared"])
def test_from_e3nn(name):
    theirs = _e3nn_modules()[name]
    for backend in BACKENDS:
        ours = equiops.from_e3nn(theirs, backend=backend)
        assert isinstance(ours, equiops.TensorProduct) and ours.backend == backend
        _same_instructions(ours, theirs)
        for a, b in zip(ours.instructions, theirs.instructions):
            assert a.path_weight == b.path_weight  # taken as they are, not recomputed
        assert ours.shared_weights == theirs.shared_weights and ours.internal_weights == theirs.internal_weights
        N = 3
        x, y = _randn(N, ours.irreps_in1.dim, seed=1), _randn(N, ours.irreps_in2.dim, seed=2)
        if theirs.internal_weights:
            assert isinstance(ours.weight, torch.nn.Parameter) and ours.weight.requires_grad
            assert torch.equal(ours.weight, theirs.weight) and ours.weight.dtype == torch.float64
            assert ours.weight.data_ptr() != theirs.weight.data_ptr()  # a copy
            w = None
            # the internal weight's gradient
            go = _randn(N, ours.irreps_out.dim, seed=4)
            (ga,) = torch.autograd.grad(ours(x, y), ours.weight, go)
            (gb,) = torch.autograd.grad(theirs(x, y), theirs.weight, go)
            _assert_rel(ga, gb)
        elif theirs.weight_numel > 0:
            w = _randn(*(() if theirs.shared_weights else (N,)), theirs.weight_numel, seed=3)
        else:
            w = None
        _compare(_derivatives(ours, x, y, w), _derivatives(theirs, x, y, w), what=f"{name} {backend}")


def test_our_subclasses_build_e3nn_instructions():
    """Our FullyConnected / Elementwise / Full / ChannelWise constructors give e3nn's
    irreps, instructions and coefficients."""
    o3 = _o3()
    cases = [
        (equiops.FullyConnectedTensorProduct, o3.FullyConnectedTensorProduct, ("2x0e+1x1o+1x2e", "1x0e+1x1o", "3x0e+2x1o+1x1e+1x2e"), {}),
        (equiops.FullyConnectedTensorProduct, o3.FullyConnectedTensorProduct, ("2x0e+1x1o", "1x0e+1x1o", "3x0e+2x1o"),
         dict(irrep_normalization="norm", path_normalization="path")),
        (equiops.ElementwiseTensorProduct, o3.ElementwiseTensorProduct, ("2x0e+3x1o+1x2e", "1x0e+2x1o+2x1e+1x0o"), {}),
        (equiops.ElementwiseTensorProduct, o3.ElementwiseTensorProduct, ("2x0e+2x1o", "2x1o+2x1e", ["1o", "0e"]), {}),
        (equiops.FullTensorProduct, o3.FullTensorProduct, ("2x0e+1x1o+1x2e", "1x1o+2x0e"), {}),
        (equiops.FullTensorProduct, o3.FullTensorProduct, ("2x0e+1x1o", "1x1o+1x2e", ["1o", "2e"]),
         dict(irrep_normalization="norm")),
    ]
    for ours_cls, their_cls, args, kwargs in cases:
        ours = ours_cls(*args, backend="cpu", **kwargs)
        theirs = _e3nn(*args, cls=their_cls, **kwargs)
        _same_instructions(ours, theirs)
        assert ours.internal_weights == theirs.internal_weights and ours.shared_weights == theirs.shared_weights
        x, y = _randn(3, ours.irreps_in1.dim, seed=1), _randn(3, ours.irreps_in2.dim, seed=2)
        w = _randn(ours.weight_numel, seed=3) if ours.weight_numel else None
        _assert_rel(ours(x, y, w), theirs(x, y, w))
    # ChannelWise, creation order (sort_outputs=False): neither outputs nor instructions sorted
    ours = equiops.ChannelWiseTensorProduct("4x0e+4x1o", "0e+1o", "4x0e+4x1o+4x1e", sort_outputs=False)
    assert str(ours.irreps_out) == "4x0e+4x1o+4x1o+4x0e+4x1e"
    assert [i[:4] for i in ours.instructions] == [(0, 0, 0, "uvu"), (0, 1, 1, "uvu"), (1, 0, 2, "uvu"),
                                                  (1, 1, 3, "uvu"), (1, 1, 4, "uvu")]
    assert not ours.shared_weights and not ours.internal_weights
    # NequIP's layout, written out as nequip.nn.InteractionBlock builds it with e3nn's
    # Irreps: outputs sorted, instructions (and so the weights) in creation order.
    o3 = _o3()
    in1, in2, keep = o3.Irreps("4x0e+4x1o+2x2e"), o3.Irreps("0e+1o+2e"), o3.Irreps("4x0e+4x1o+4x1e+2x2e")
    mid, ins = [], []
    for i, (mul, ir_in) in enumerate(in1):
        for j, (_, ir_edge) in enumerate(in2):
            for ir_out in ir_in * ir_edge:
                if ir_out in keep:
                    ins.append((i, j, len(mid), "uvu", True))
                    mid.append((mul, ir_out))
    mid, p, _ = o3.Irreps(mid).sort()
    ins = [(a, b, p[c], m, t) for a, b, c, m, t in ins]
    ours = equiops.ChannelWiseTensorProduct(in1, in2, keep, layout="nequip", backend="cpu")
    assert ours.irreps_out == mid and [tuple(i[:5]) for i in ours.instructions] == ins
    assert [tuple(i[:5]) for i in ours.instructions] != [
        tuple(i[:5]) for i in equiops.ChannelWiseTensorProduct(in1, in2, keep).instructions
    ]  # this case tells the two layouts apart
    theirs = _e3nn(in1, in2, mid, ins, shared_weights=False, internal_weights=False)
    x, y, w = _randn(5, in1.dim, seed=1), _randn(5, in2.dim, seed=2), _randn(5, ours.weight_numel, seed=3)
    _assert_rel(ours(x, y, w), theirs(x, y, w))
    with pytest.raises(ValueError, match="layout must be one of"):
        equiops.ChannelWiseTensorProduct(in1, in2, keep, layout="allegro")


class _SelfTP(torch.nn.Module):
    def __init__(self, tp):
        super().__init__()
        self.tp = tp

    def forward(self, x):
        return self.tp(x, x)


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        o3 = _o3()
        with default_dtype(torch.float64):
            self.fc = o3.FullyConnectedTensorProduct("2x0e+1x1o", "0e+1o", "2x0e+1x1o")
            self.layers = torch.nn.ModuleList([
                o3.ElementwiseTensorProduct("2x0e+1x1o", "2x0e+1x1o", ["0e", "1e"]),  # -> 2x0e+1x0e+1x1e
                torch.nn.Sequential(_SelfTP(o3.FullyConnectedTensorProduct("2x0e+1x0e+1x1e", "2x0e+1x0e+1x1e",
                                                                           "3x0e+1x1e+1x2e"))),
            ])
            self.lin = torch.nn.Linear(11, 5)

    def forward(self, x, sh):
        h = self.fc(x, sh)
        h = self.layers[0](h, x)
        return self.lin(self.layers[1](h))


def test_replace_e3nn_tensor_products():
    o3 = _o3()
    torch.manual_seed(0)
    net = _Net().double()
    x, sh = _randn(4, 5, seed=1), _randn(4, 4, seed=2)
    expected = net(x, sh)
    model, count = equiops.replace_e3nn_tensor_products(net, backend="cpu")
    assert model is net and count == 3
    assert not any(isinstance(m, o3.TensorProduct) for m in net.modules())
    assert sum(isinstance(m, equiops.TensorProduct) for m in net.modules()) == 3
    _assert_rel(net(x, sh), expected)
    # parameters are still trainable
    assert {n for n, p in net.named_parameters()} >= {"fc.weight", "layers.1.0.tp.weight"}
    # a Sequential of e3nn products behind wrappers
    with default_dtype(torch.float64):
        seq = torch.nn.Sequential(_SelfTP(o3.FullyConnectedTensorProduct("1x0e+1x1o", "1x0e+1x1o", "1x0e+1x1o")),
                                  _SelfTP(o3.FullTensorProduct("1x0e+1x1o", "1x0e+1x1o", ["0e", "1o"])))
    z = _randn(3, 4, seed=3)
    expected = seq(z)
    assert equiops.replace_e3nn_tensor_products(seq)[1] == 2
    _assert_rel(seq(z), expected)
    # a model that is itself an e3nn product
    tp = _e3nn("1x0e+1x1o", "1x1o", "1x1e+1x0e", cls=o3.FullyConnectedTensorProduct)
    converted, n = equiops.replace_e3nn_tensor_products(tp)
    assert n == 1 and isinstance(converted, equiops.TensorProduct)
    _assert_rel(converted(z, z[:, 1:]), tp(z, z[:, 1:]))
    # nothing to replace
    lin = torch.nn.Linear(2, 2)
    assert equiops.replace_e3nn_tensor_products(lin) == (lin, 0)


def test_pickle_and_state_dict():
    torch.manual_seed(0)
    N = 3
    modules = [
        (equiops.TensorProduct(MIXED_IN1, MIXED_IN2, MIXED_OUT, MIXED_INS, backend="cpu").double(), None),
        (equiops.ChannelWiseTensorProduct("4x0e+4x1o", "0e+1o+2e", "4x0e+4x1o+4x2e"), "unshared"),
        (equiops.from_e3nn(_e3nn_modules()["internal"]), None),
        (equiops.FullTensorProduct("2x0e+1x1o", "1x1o"), None),
    ]
    for m, wkind in modules:
        x, y = _randn(N, m.irreps_in1.dim, seed=1), _randn(N, m.irreps_in2.dim, seed=2)
        w = _randn(N, m.weight_numel, seed=3) if wkind else None
        expected = m(x, y, w)
        clone = pickle.loads(pickle.dumps(m))
        assert type(clone) is type(m) and clone.problem == m.problem and clone.backend == m.backend
        assert torch.equal(clone(x, y, w), expected)
        # state_dict into a module with other weights
        other = pickle.loads(pickle.dumps(m))
        if m.internal_weights:
            with torch.no_grad():
                other.weight.normal_()
            assert not torch.equal(other(x, y, w), expected)
        other.load_state_dict(m.state_dict())
        assert torch.equal(other(x, y, w), expected)
    # e3nn's state_dict loads strictly into our module: same keys (weight, output_mask);
    # e3nn's compiled-graph constants (_compiled_main_*._w3j_*, ...) are dropped on load
    theirs = _e3nn_modules()["internal"]
    assert any(k.startswith("_compiled_main") for k in theirs.state_dict())
    ours = equiops.TensorProduct(MIXED_IN1, MIXED_IN2, MIXED_OUT, MIXED_INS, irrep_normalization="norm",
                                 path_normalization="path").double()
    ours.load_state_dict(theirs.state_dict())
    x, y = _randn(N, ours.irreps_in1.dim, seed=1), _randn(N, ours.irreps_in2.dim, seed=2)
    _assert_rel(ours(x, y), theirs(x, y))


# ------------------------------------------------------------------ edge cases
@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_rows(backend):
    for shared in (True, False):
        ours = _mixed(backend, shared=shared)
        theirs = _e3nn(MIXED_IN1, MIXED_IN2, MIXED_OUT, MIXED_INS, shared_weights=shared, internal_weights=False)
        x, y = _randn(0, ours.irreps_in1.dim), _randn(0, ours.irreps_in2.dim)
        w = _randn(ours.weight_numel) if shared else _randn(0, ours.weight_numel)
        out = ours(x, y, w)
        assert out.shape == (0, ours.irreps_out.dim) == theirs(x, y, w).shape
        # broadcast against an empty batch, gradients of every order are empty / zero
        xs = _randn(2, 0, ours.irreps_in1.dim).requires_grad_()
        ys = _randn(1, ours.irreps_in2.dim).requires_grad_()
        ws = (_randn(ours.weight_numel) if shared else _randn(2, 1, ours.weight_numel)).requires_grad_()
        out = ours(xs, ys, ws)
        assert out.shape == (2, 0, ours.irreps_out.dim)
        gx, gy, gw = torch.autograd.grad(out.sum(), (xs, ys, ws), create_graph=True)
        assert gx.shape == xs.shape and torch.all(gy == 0) and torch.all(gw == 0)
        assert gy.shape == ys.shape and gw.shape == ws.shape
        second = torch.autograd.grad((gy.sum() + gw.sum() + gx.sum()), (xs, ys, ws), allow_unused=True)
        for g, t in zip(second, (xs, ys, ws)):
            assert g is None or (g.shape == t.shape and torch.all(g == 0))


def test_nan_row_stays_in_its_row():
    """A NaN in one row of x reaches that row's outputs and x-gradient only (per-row
    kernels), and the shared weight's gradient (a sum over rows)."""
    ours, ref = _mixed("cpu"), _mixed("torch")
    N = 40
    x, y = _randn(N, ours.irreps_in1.dim, seed=1), _randn(N, ours.irreps_in2.dim, seed=2)
    w = _randn(ours.weight_numel, seed=3)
    x[7, 0] = float("nan")
    out = ours(x, y, w)
    others = torch.arange(N) != 7
    assert torch.isfinite(out[others]).all() and out[7].isnan().any()
    _assert_rel(out[others], ref(x, y, w)[others])
    xl, yl = x.clone().requires_grad_(), y.clone().requires_grad_()
    gx, gy = torch.autograd.grad(ours(xl, yl, w).sum(), (xl, yl))
    assert torch.isfinite(gx[others]).all() and torch.isfinite(gy[others]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_paths_and_no_weights(backend):
    o3 = _o3()
    # no instructions at all: zeros, weight_numel 0
    ours = equiops.TensorProduct("2x0e+1x1o", "1x1o", "3x0e+1x2e", [], backend=backend)
    theirs = _e3nn("2x0e+1x1o", "1x1o", "3x0e+1x2e", [])
    assert ours.weight_numel == 0 == theirs.weight_numel and not ours.internal_weights
    x = _randn(4, 5, seed=1).requires_grad_()
    y = _randn(4, 3, seed=2).requires_grad_()
    out = ours(x, y)
    assert torch.equal(out, theirs(x, y)) and torch.all(out == 0) and out.shape == (4, 8)
    assert torch.all(ours.output_mask == 0)
    if out.requires_grad:
        grads = torch.autograd.grad(out.sum(), (x, y), allow_unused=True)
        assert all(g is None or torch.all(g == 0) for g in grads)
    # products without weights (Elementwise, Full, unweighted modes) vs e3nn, all derivatives
    for ours, theirs in (
        (equiops.ElementwiseTensorProduct("2x0e+2x1o", "2x1o+2x2e", backend=backend),
         _e3nn("2x0e+2x1o", "2x1o+2x2e", cls=o3.ElementwiseTensorProduct)),
        (equiops.FullTensorProduct("2x0e+1x1o", "1x1o+1x0e", backend=backend),
         _e3nn("2x0e+1x1o", "1x1o+1x0e", cls=o3.FullTensorProduct)),
    ):
        assert ours.weight_numel == 0 and ours.weight.numel() == 0
        x, y = _randn(3, ours.irreps_in1.dim, seed=3), _randn(3, ours.irreps_in2.dim, seed=4)
        _compare(_derivatives(ours, x, y, None), _derivatives(theirs, x, y, None), what=type(ours).__name__)


@pytest.mark.parametrize("backend", BACKENDS)
def test_multiplicity_zero(backend):
    """Irreps of multiplicity 0 (in inputs and outputs) and paths they make empty."""
    in1, in2, out = "0x0e+2x1o+0x2e", "1x1o+0x0e", "0x0e+2x1e+2x0e+0x1o+1x2e+2x1o+1x3o"
    ins = [(0, 0, 3, "uvw", True), (1, 0, 1, "uvu", True), (1, 0, 2, "uvw", True), (1, 1, 5, "uvu", False),
           (2, 0, 6, "uvw", True), (1, 0, 0, "uvw", True), (1, 0, 4, "uvw", True, 2.0)]
    for shared in (True, False):
        theirs = _e3nn(in1, in2, out, ins, shared_weights=shared, internal_weights=False)
        ours = equiops.TensorProduct(in1, in2, out, ins, shared_weights=shared, internal_weights=False, backend=backend)
        _same_instructions(ours, theirs)
        x, y = _randn(3, ours.irreps_in1.dim, seed=1), _randn(3, ours.irreps_in2.dim, seed=2)
        w = _randn(*(() if shared else (3,)), ours.weight_numel, seed=3)
        _compare(_derivatives(ours, x, y, w), _derivatives(theirs, x, y, w), what=f"shared={shared}")


# ------------------------------------------------------------------ pooled outputs
def test_large_outputs_from_the_pool_are_fully_written():
    """Outputs of >= 4 MB come from a pool of reused blocks (csrc/cpu/host_pool.h): a
    reused block holds the previous call's values, so every element (unwritten output
    columns, every gradient) must be written again."""
    # One output block no path writes ("4x2o"), so its zeros must be stored explicitly.
    m = equiops.TensorProduct(
        "8x0e+8x1o", "0e+1o", "8x0e+8x1o+4x2o", [(0, 0, 0, "uvu", True), (1, 1, 0, "uvu", True), (1, 0, 1, "uvu", True)],
        shared_weights=False, internal_weights=False, backend="cpu",
    )
    N = 40000  # out: 40000 x 52 float32 = 8.3 MB; x1: 5.1 MB
    ref = equiops.TensorProduct(m.irreps_in1, m.irreps_in2, m.irreps_out, [i[:5] for i in m.instructions],
                                shared_weights=False, internal_weights=False, backend="torch")
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        x, y, w, go = (torch.randn(N, d, generator=g) * (seed + 1) for d in (m.irreps_in1.dim, 4, m.weight_numel,
                                                                            m.irreps_out.dim))
        xs, ys, ws = (t.clone().requires_grad_() for t in (x, y, w))
        out = m(xs, ys, ws)
        expected = ref(x, y, w)
        assert torch.allclose(out, expected, rtol=1e-5, atol=1e-5 * (seed + 1) ** 3)
        assert torch.all(out[:, -20:] == 0)
        grads = torch.autograd.grad(out, (xs, ys, ws), go)
        xr, yr, wr = (t.clone().requires_grad_() for t in (x, y, w))
        grads_ref = torch.autograd.grad(ref(xr, yr, wr), (xr, yr, wr), go)
        for a, b in zip(grads, grads_ref):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())
        del out, grads  # their blocks go back to the pool for the next seed


def test_right_matches_e3nn():
    o3 = _o3()
    for shared in (True, False):
        theirs = _e3nn("2x0e+2x1o", "0e+1o", "2x0e+1x1o+1x1e", [(0, 1, 1, "uvw", True), (1, 1, 0, "uvu", True),
                                                                (1, 1, 2, "uvv", False)],
                       shared_weights=shared, internal_weights=False, compile_right=True)
        assert isinstance(theirs, o3.TensorProduct)
        ours = equiops.from_e3nn(theirs, backend="cpu")
        y = _randn(5, 4, seed=1)
        w = _randn(theirs.weight_numel, seed=2) if shared else _randn(5, theirs.weight_numel, seed=2)
        _assert_rel(ours.right(y, w), theirs.right(y, w))
        x = _randn(5, ours.irreps_in1.dim, seed=3)
        _assert_rel(torch.einsum("nik,ni->nk", ours.right(y, w), x), ours(x, y, w))


def test_replace_keeps_shared_modules_tied_and_from_e3nn_keeps_dtype():
    with default_dtype(torch.float64):
        shared = _o3().FullyConnectedTensorProduct("2x0e+1x1o", "0e+1o", "2x0e+1x1o")
    model = torch.nn.ModuleDict({"a": torch.nn.ModuleList([shared]), "b": torch.nn.Sequential(shared)})
    model, n = equiops.replace_e3nn_tensor_products(model)
    assert n == 1 and model["a"][0] is model["b"][0]
    assert model["a"][0].weight.dtype == torch.float64 and model["a"][0].output_mask.dtype == torch.float64
