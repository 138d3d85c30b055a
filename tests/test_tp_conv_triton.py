"""Triton tensor-product convolution kernels (kernels/tp_conv.py) against the plain-PyTorch
reference (equiops.reference.tp_conv, in float64; gradients by torch.autograd through it).

Forward and backward (grad_x, grad_edge_attr, grad_weight), the deterministic (CSR)
and the atomic variants, on a channel-wise uvu problem with per-edge weights (NequIP /
MACE), a uvw problem with shared weights (Ew = 1, the weight gradient summed over edges
with fewer reducing programs than edge blocks) and a problem mixing every mode
(tests/tp_cases.py, with a broadcast edge_attr as well); random graphs with isolated
receivers and senders, duplicate edges and self-loops; edges already sorted with
perm=None; E == 0, num_nodes == 0, no paths; bitwise reproducibility of the CSR variant.

Without a GPU the kernels run on CPU tensors under ``TRITON_INTERPRET=1`` (slow: tiny
graphs, small blocks). ``EQUIOPS_TRITON_TEST_DEVICE=cuda`` runs the same tests on CUDA.
"""

import os
import sys

import torch

import pytest  # noqa: E402

from conftest import triton_test_device  # noqa: E402

DEV = triton_test_device()  # skips this module when Triton cannot run here

sys.path.insert(0, os.path.dirname(__file__))

from tp_cases import ALL_MODES, CHANNELWISE_SMALL, FULLY_CONNECTED  # noqa: E402

from equiops.kernels import _codecache  # noqa: E402
from equiops.kernels import tp_conv as C  # noqa: E402
from equiops.reference.tp_conv import tp_conv as reference  # noqa: E402
from equiops.tp_problem import build_problem  # noqa: E402


# Max |error| allowed, relative to max(1, the expected result's largest magnitude), by
# dtype and derivative order (0 forward, 1 backward).
TOL = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (4e-3, 4e-3),
    torch.bfloat16: (3e-2, 3e-2),
}


# Generated modules go to a temporary cache directory (conftest.kernel_cache_dir).
pytestmark = pytest.mark.usefixtures("kernel_cache_dir")


# --------------------------------------------------------------------------------------
# Problems and graphs
# --------------------------------------------------------------------------------------

# Channel-wise, per-edge weights (node features 4x0e+4x1o, edge harmonics 0e+1o+2e).
UVU = build_problem(*CHANNELWISE_SMALL)
UVW = build_problem(*FULLY_CONNECTED)
MIXED = build_problem(*ALL_MODES)
PROBLEMS = {"uvu": UVU, "uvw": UVW, "mixed": MIXED}

# (problem, nodes, edges, edge_attr rows ("E" or 1), weight rows, block_rows, reducing programs)
CASES = {
    "uvu": ("uvu", 7, 13, "E", "E", 2, None),
    "uvw-shared": ("uvw", 6, 11, "E", 1, 2, 2),  # two reducing programs over six edge blocks
    "mixed": ("mixed", 5, 9, "E", "E", 2, None),
    "mixed-bcast": ("mixed", 5, 9, 1, 1, 4, None),
}
VARIANTS = ("csr", "atomic")


def test_every_mode_covered():
    assert {p.mode for p in MIXED.paths} == {"uvw", "uvu", "uvv", "uuw", "uuu", "uvuv", "uvu<v", "u<vw"}
    assert {p.weighted for p in MIXED.paths} == {True, False}


def _graph(n, E, seed):
    """Random edges (unsorted) with an isolated receiver (n - 1), an isolated sender (0),
    a duplicate edge and a self-loop."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(1, n, (E,), generator=g)
    dst = torch.randint(0, n - 1, (E,), generator=g)
    src[3], dst[3] = src[0], dst[0]  # duplicate of edge 0
    src[5], dst[5] = 2, 2  # self-loop
    return src, dst


def _csr(keys, n):
    perm = torch.sort(keys, stable=True).indices
    indptr = torch.searchsorted(keys[perm], torch.arange(n + 1))
    return perm, indptr


def _inputs(case, dtype, seed=0):
    """float64 CPU tensors (rounded to ``dtype``): x, edge_attr, weight, src, dst, grad_out."""
    name, n, E, n2, nw, bn, red = CASES[case]
    prob = PROBLEMS[name]
    g = torch.Generator().manual_seed(seed + 1)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).double()

    src, dst = _graph(n, E, seed)
    x = r(n, prob.dim1)
    ea = r(E if n2 == "E" else n2, prob.dim2)
    w = r(E if nw == "E" else nw, prob.dim_w)
    return prob.encode(), n, bn, red, (x, ea, w, src, dst, r(n, prob.dim_out))


def _dev(ts, dtype=None):
    out = []
    for t in ts:
        if t is None:
            out.append(None)
        elif t.is_floating_point():
            out.append(t.to(DEV, dtype).contiguous())
        else:
            out.append(t.to(DEV).contiguous())
    return out


def _ref_backward(go, x, ea, w, src, dst, n, problem):
    xs = [t.clone().requires_grad_() for t in (x, ea, w)]
    out = reference(*xs, src, dst, n, problem)
    if not out.requires_grad:  # no paths: every gradient is zero
        return [torch.zeros_like(t) for t in xs]
    return torch.autograd.grad(out, xs, go, allow_unused=True, materialize_grads=True)


def _check(got, want, dtype, order, what=""):
    assert got.dtype == dtype and got.device == DEV and got.shape == want.shape, (what, got.dtype, got.shape, want.shape)
    got = got.cpu().double()
    scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
    err = (got - want).abs().max().item() if want.numel() else 0.0
    assert err <= TOL[dtype][order] * scale, f"{what}: max error {err:.3g} at scale {scale:.3g}"


def _forward(variant, x, ea, w, src, dst, n, problem, dtype, bn):
    perm, indptr = _csr(dst, n) if variant == "csr" else (None, None)
    return C.conv_forward(*_dev((x, ea, w), dtype), *_dev((src, dst, perm, indptr)), n, problem, block_rows=bn)


def _backward(variant, go, x, ea, w, src, dst, n, problem, dtype, bn, need=(True, True, True)):
    perm, indptr = _csr(src, n) if variant == "csr" else (None, None)
    args = _dev((go, x, ea, w), dtype) + _dev((src, dst, perm, indptr))
    return C.conv_backward(*args, need, problem, block_rows=bn)


variants = pytest.mark.parametrize("variant", VARIANTS)


def _params():
    """(case, dtype, variant): every case in float64, all but the broadcast mixed one in
    float32 (interpreter time), the mixed float32 one with the CSR only."""
    out = []
    for case in CASES:
        for dtype, dname in ((torch.float64, "float64"), (torch.float32, "float32")):
            for variant in VARIANTS:
                if dtype == torch.float32 and (case == "mixed-bcast" or (case == "mixed" and variant == "atomic")):
                    continue
                out.append(pytest.param(case, dtype, variant, id=f"{case}-{dname}-{variant}"))
    return out


# --------------------------------------------------------------------------------------
# Against the reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case,dtype,variant", _params())
def test_forward(case, dtype, variant):
    problem, n, bn, _, (x, ea, w, src, dst, _) = _inputs(case, dtype)
    out = _forward(variant, x, ea, w, src, dst, n, problem, dtype, bn)
    _check(out, reference(x, ea, w, src, dst, n, problem), dtype, 0, "out")


@pytest.mark.parametrize("case,dtype,variant", _params())
def test_backward(case, dtype, variant, monkeypatch):
    problem, n, bn, red, (x, ea, w, src, dst, go) = _inputs(case, dtype)
    if red is not None:
        monkeypatch.setattr(C, "REDUCE_PROGRAMS", red)
    got = _backward(variant, go, x, ea, w, src, dst, n, problem, dtype, bn)
    for a, e, what in zip(got, _ref_backward(go, x, ea, w, src, dst, n, problem), ("grad_x", "grad_edge_attr", "grad_weight")):
        _check(a, e, dtype, 1, what)


def test_sorted_edges_without_perm():
    """Edges already in receiver (forward) / sender (backward) order: perm=None."""
    problem, n, bn, _, (x, ea, w, src, dst, go) = _inputs("uvu", torch.float64)
    dt = torch.float64
    order = torch.sort(dst, stable=True).indices
    s, d, a, ww = src[order], dst[order], ea[order], w[order]
    indptr = torch.searchsorted(d, torch.arange(n + 1))
    out = C.conv_forward(*_dev((x, a, ww), dt), *_dev((s, d, None, indptr)), n, problem, block_rows=bn)
    _check(out, reference(x, ea, w, src, dst, n, problem), dt, 0, "out")
    # Sender order for the backward.
    order = torch.sort(src, stable=True).indices
    s, d, a, ww = src[order], dst[order], ea[order], w[order]
    indptr = torch.searchsorted(s, torch.arange(n + 1))
    got = C.conv_backward(*_dev((go, x, a, ww), dt), *_dev((s, d, None, indptr)), (True, True, True), problem, block_rows=bn)
    for a_, e, what in zip(got, _ref_backward(go, x, a, ww, s, d, n, problem), ("grad_x", "grad_edge_attr", "grad_weight")):
        _check(a_, e, dt, 1, what)


def test_backward_need_subsets(monkeypatch):
    problem, n, bn, red, (x, ea, w, src, dst, go) = _inputs("uvw-shared", torch.float64)
    monkeypatch.setattr(C, "REDUCE_PROGRAMS", red)
    want = _ref_backward(go, x, ea, w, src, dst, n, problem)
    for variant in VARIANTS:
        for need in [(True, False, False), (False, True, False), (False, False, True)]:
            got = _backward(variant, go, x, ea, w, src, dst, n, problem, torch.float64, bn, need)
            for wanted, a, e in zip(need, got, want):
                if wanted:
                    _check(a, e, torch.float64, 1)
                else:
                    assert a.shape == (0,) and a.device == DEV


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half(dtype):
    """Half inputs accumulate in float32 and return their own dtype (both variants)."""
    problem, n, bn, _, (x, ea, w, src, dst, go) = _inputs("uvu", dtype)
    want = reference(x, ea, w, src, dst, n, problem)
    for variant in VARIANTS:
        _check(_forward(variant, x, ea, w, src, dst, n, problem, dtype, bn), want, dtype, 0, variant)
    got = _backward("atomic", go, x, ea, w, src, dst, n, problem, dtype, bn)
    for a, e in zip(got, _ref_backward(go, x, ea, w, src, dst, n, problem)):
        _check(a, e, dtype, 1)


# --------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------


def test_csr_bitwise_reproducible():
    problem, n, bn, _, (x, ea, w, src, dst, go) = _inputs("uvw-shared", torch.float32)
    dt = torch.float32
    a = _forward("csr", x, ea, w, src, dst, n, problem, dt, bn)
    b = _forward("csr", x, ea, w, src, dst, n, problem, dt, bn)
    assert torch.equal(a, b)
    ga = _backward("csr", go, x, ea, w, src, dst, n, problem, dt, bn)
    gb = _backward("csr", go, x, ea, w, src, dst, n, problem, dt, bn)
    for u, v in zip(ga, gb):
        assert torch.equal(u, v)


@pytest.mark.skipif(DEV.type != "cpu", reason="compiled code may contract differently per block size")
def test_csr_order_independent_of_block_size():
    """Each node's edges are added in CSR order whatever the block: bitwise equal."""
    problem, n, _, _, (x, ea, w, src, dst, go) = _inputs("uvu", torch.float32)
    dt = torch.float32
    a = _forward("csr", x, ea, w, src, dst, n, problem, dt, 2)
    b = _forward("csr", x, ea, w, src, dst, n, problem, dt, 8)
    assert torch.equal(a, b)
    ga = _backward("csr", go, x, ea, w, src, dst, n, problem, dt, 2, (True, False, False))[0]
    gb = _backward("csr", go, x, ea, w, src, dst, n, problem, dt, 8, (True, False, False))[0]
    assert torch.equal(ga, gb)


# --------------------------------------------------------------------------------------
# Empty inputs
# --------------------------------------------------------------------------------------


@variants
def test_no_edges(variant):
    """E == 0 (per-edge and broadcast edge inputs) and num_nodes == 0."""
    prob = UVW
    problem = prob.encode()
    dt = torch.float64
    n = 3
    x = torch.randn(n, prob.dim1, dtype=dt, device=DEV)
    e = torch.zeros(0, dtype=torch.int64, device=DEV)
    perm, indptr = (None, torch.zeros(n + 1, dtype=torch.int64, device=DEV)) if variant == "csr" else (None, None)
    go = torch.randn(n, prob.dim_out, dtype=dt, device=DEV)
    for rows in (0, 1):
        ea = torch.randn(rows, prob.dim2, dtype=dt, device=DEV)
        w = torch.randn(rows, prob.dim_w, dtype=dt, device=DEV)
        out = C.conv_forward(x, ea, w, e, e, perm, indptr, n, problem)
        assert out.shape == (n, prob.dim_out) and out.device == DEV and not out.any()
        gx, ge, gw = C.conv_backward(go, x, ea, w, e, e, perm, indptr, (True, True, True), problem)
        assert gx.shape == (n, prob.dim1) and not gx.any()
        assert ge.shape == (rows, prob.dim2) and not ge.any()
        assert gw.shape == (rows, prob.dim_w) and not gw.any()
    # No nodes at all.
    x0 = x[:0]
    ea, w = x.new_zeros(0, prob.dim2), x.new_zeros(0, prob.dim_w)
    i0 = torch.zeros(1, dtype=torch.int64, device=DEV) if variant == "csr" else None
    assert C.conv_forward(x0, ea, w, e, e, None, i0, 0, problem).shape == (0, prob.dim_out)
    got = C.conv_backward(x.new_zeros(0, prob.dim_out), x0, ea, w, e, e, None, i0, (True, True, True), problem)
    assert [t.shape for t in got] == [(0, prob.dim1), (0, prob.dim2), (0, prob.dim_w)]


def test_no_paths_and_unwritten_columns():
    """A problem without paths gives zeros; an output block no path writes stays zero
    (also for nodes that do receive edges) in both variants."""
    empty = build_problem("2x0e", "0e", "2x0e", [])
    partial = build_problem("2x0e+1x1o", "0e", "2x0e+1x1e", [(0, 0, 0, "uvu", True)])  # 1x1o unread, 1x1e unwritten
    src, dst = _graph(4, 6, 3)
    for prob in (empty, partial):
        problem = prob.encode()
        g = torch.Generator().manual_seed(7)
        x = torch.randn(4, prob.dim1, dtype=torch.float64, generator=g)
        ea = torch.randn(6, prob.dim2, dtype=torch.float64, generator=g)
        w = torch.randn(6, prob.dim_w, dtype=torch.float64, generator=g)
        go = torch.randn(4, prob.dim_out, dtype=torch.float64, generator=g)
        want = reference(x, ea, w, src, dst, 4, problem)
        wgrad = _ref_backward(go, x, ea, w, src, dst, 4, problem)
        for variant in VARIANTS:
            _check(_forward(variant, x, ea, w, src, dst, 4, problem, torch.float64, 2), want, torch.float64, 0)
            got = _backward(variant, go, x, ea, w, src, dst, 4, problem, torch.float64, 2)
            for a, e in zip(got, wgrad):
                _check(a, e, torch.float64, 1)


def test_bad_arguments():
    problem = UVU.encode()
    dt = torch.float64
    x = torch.zeros(3, UVU.dim1, dtype=dt, device=DEV)
    ea = torch.zeros(4, UVU.dim2, dtype=dt, device=DEV)
    w = torch.zeros(4, UVU.dim_w, dtype=dt, device=DEV)
    i = torch.zeros(4, dtype=torch.int64, device=DEV)
    with pytest.raises(ValueError, match="edge_attr has 2 rows"):
        C.conv_forward(x, ea[:2], w, i, i, None, None, 3, problem)
    with pytest.raises(ValueError, match="indptr must be"):
        C.conv_forward(x, ea, w, i, i, None, i[:2], 3, problem)
    with pytest.raises(ValueError, match="dst must be"):
        C.conv_forward(x, ea, w, i, i.int(), None, None, 3, problem)
    with pytest.raises(ValueError, match="perm is given without indptr"):
        C.conv_forward(x, ea, w, i, i, i, None, 3, problem)


# --------------------------------------------------------------------------------------
# Generated code and its cache
# --------------------------------------------------------------------------------------


def test_generated_source_and_cache():
    problem = MIXED.encode()
    for kind in ("forward", "backward"):
        src = C.generate(problem, kind)
        assert src == C.generate(problem, kind)
        compile(src, "<generated>", "exec")
    k1 = C._kernel(UVU.encode(), "forward", DEV)
    assert C._kernel(UVU.encode(), "forward", DEV) is k1
    assert list(_codecache.cache_dir("triton_tp_conv").glob("*.py"))
