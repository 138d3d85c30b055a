"""Tests of the CUDA C++ tensor-product kernels (csrc/cuda/tp_kernels.cuh) against the reference.

They call the raw bindings ``equiops._C.tensor_product*_cuda`` and compare with
:mod:`equiops.reference.tensor_product` evaluated on the CPU in float64 (the double
backward through ``torch.autograd`` with ``create_graph=True``). Errors are measured
relative to the largest magnitude of the expected tensor. Skipped when no GPU is visible
or the extension was built without CUDA.
"""

from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("CUDA is not available", allow_module_level=True)

_C = pytest.importorskip("equiops._C")
if not hasattr(_C, "tensor_product_cuda"):
    pytest.skip(
        "equiops._C was built without the CUDA tensor-product kernels",
        allow_module_level=True,
    )

from equiops.reference.tensor_product import tensor_product as ref
from equiops.tp_problem import build_problem
from tp_cases import ALL_MODES, FULLY_CONNECTED

DEV = torch.device("cuda")

# Relative error bound (max |error| / max |expected|) by dtype and derivative order.
REL = {
    (torch.float64, 0): 1e-10,
    (torch.float64, 1): 1e-10,
    (torch.float64, 2): 1e-10,
    (torch.float32, 0): 2e-5,
    (torch.float32, 1): 2e-5,
    (torch.float32, 2): 5e-5,
}


def _problems():
    return {
        # Channel-wise (NequIP / MACE style): uvu, per-row weights, one unweighted path
        # writing the same block as a weighted one.
        "uvu": build_problem(
            "4x0e+3x1o+2x2e",
            "0e+1o+2e",
            "4x0e+4x1o+3x1o+3x0e+3x1e+3x2e+3x3o+2x2e+2x3o+2x4e",
            [
                (0, 0, 0, "uvu", True),
                (0, 1, 1, "uvu", True),
                (1, 0, 2, "uvu", True),
                (1, 1, 3, "uvu", True),
                (1, 1, 4, "uvu", True),
                (1, 1, 5, "uvu", True),
                (1, 2, 6, "uvu", True),
                (1, 2, 2, "uvu", False),
                (2, 0, 7, "uvu", True),
                (2, 1, 8, "uvu", True),
                (2, 2, 9, "uvu", True),
            ],
        ),
        # Fully connected (uvw); used with shared weights.
        "uvw": build_problem(*FULLY_CONNECTED),
        # Every mode, weighted and unweighted, several paths per output block, a path weight.
        "mixed": build_problem(*ALL_MODES),
        # Many channel pairs: the pairs of one row no longer fit shared memory at once
        # (several chunks per path, in the backward and double backward).
        "big": build_problem(
            "40x1o+3x2e",
            "40x1o+3x0e",
            "5x2e+3x2e",
            [(0, 0, 0, "uvw", True), (1, 1, 1, "uvv", True), (1, 1, 1, "uvu", True)],
        ),
        # Higher degrees.
        "high_l": build_problem(
            "2x3o+2x5e",
            "1x4e+1x2e",
            "2x7o+2x1o+2x6e+2x7e",
            [
                (0, 0, 0, "uvu", True),
                (1, 1, 3, "uvu", True),
                (0, 1, 1, "uvu", True),
                (1, 0, 2, "uvu", False),
                (1, 1, 2, "uvu", True),
            ],
        ),
    }


PROBLEMS = _problems()


def _rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if expected.numel() == 0:
        return 0.0
    err = (actual.detach().double().cpu() - expected.double()).abs().max()
    return float(err / expected.abs().max().clamp_min(1e-30))


def _assert_rel(actual, expected, dtype, order, what=""):
    assert not torch.isnan(actual).any(), f"{what}: NaN"
    e = _rel_err(actual, expected)
    assert e <= REL[(dtype, order)], (
        f"{what}: relative error {e:.3g} > {REL[(dtype, order)]:.3g}"
    )


def _inputs(p, N, rows, seed=0):
    """float64 CPU inputs; rows = (N1, N2, Nw)."""
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(rows[0], p.dim1, dtype=torch.float64, generator=g)
    x2 = torch.randn(rows[1], p.dim2, dtype=torch.float64, generator=g)
    w = torch.randn(rows[2], p.dim_w, dtype=torch.float64, generator=g)
    go = torch.randn(N, p.dim_out, dtype=torch.float64, generator=g)
    gg1, gg2, ggw = (
        torch.randn(t.shape, dtype=torch.float64, generator=g) for t in (x1, x2, w)
    )
    return x1, x2, w, go, gg1, gg2, ggw


def _reference(s, x1, x2, w, go, gg1=None, gg2=None, ggw=None):
    """(out, (g1, g2, gw), (g_grad_out, g1', g2', gw')) of the reference, float64 on the CPU."""
    x1, x2, w, go = (t.detach().clone().requires_grad_(True) for t in (x1, x2, w, go))
    out = ref(x1, x2, w, s)
    grads = torch.autograd.grad(out, (x1, x2, w), go, create_graph=True)
    total = sum(
        (g * gg).sum() for g, gg in zip(grads, (gg1, gg2, ggw)) if gg is not None
    )
    if isinstance(total, int):  # no gg at all
        dd = [torch.zeros_like(t) for t in (go, x1, x2, w)]
    else:
        dd = torch.autograd.grad(total, (go, x1, x2, w), allow_unused=True)
        dd = [
            torch.zeros_like(t) if d is None else d for d, t in zip(dd, (go, x1, x2, w))
        ]
    return out.detach(), tuple(g.detach() for g in grads), tuple(d.detach() for d in dd)


def _dev(t, dtype):
    return None if t is None else t.to(device=DEV, dtype=dtype)


def _run_all(s, dtype, x1, x2, w, go, gg1, gg2, ggw):
    d = lambda t: _dev(t, dtype)
    out = _C.tensor_product_cuda(d(x1), d(x2), d(w), s)
    bwd = _C.tensor_product_backward_cuda(
        d(go), d(x1), d(x2), d(w), s, True, True, True
    )
    dbl = _C.tensor_product_double_backward_cuda(
        d(gg1), d(gg2), d(ggw), d(go), d(x1), d(x2), d(w), s
    )
    torch.cuda.synchronize()
    return out, bwd, dbl


def _check_all(name, s, dtype, x1, x2, w, go, gg1, gg2, ggw):
    r_out, r_g, r_dd = _reference(s, x1, x2, w, go, gg1, gg2, ggw)
    out, bwd, dbl = _run_all(s, dtype, x1, x2, w, go, gg1, gg2, ggw)
    assert out.dtype == dtype and out.device.type == "cuda"
    _assert_rel(out, r_out, dtype, 0, f"{name} forward")
    for k, what in enumerate(("x1", "x2", "weight")):
        _assert_rel(bwd[k], r_g[k], dtype, 1, f"{name} grad {what}")
    for k, what in enumerate(("grad_out", "x1", "x2", "weight")):
        _assert_rel(dbl[k], r_dd[k], dtype, 2, f"{name} double backward d/d{what}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_against_reference(name, dtype):
    p = PROBLEMS[name]
    s = p.encode()
    N = 37 if name != "big" else 9  # not a multiple of the rows per tile
    # uvw: e3nn's shared weights; the others: one weight row per row.
    rows = (N, N, 1 if name == "uvw" else N)
    _check_all(name, s, dtype, *_inputs(p, N, rows))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "pattern", [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1), (1, 0, 1)]
)
@pytest.mark.parametrize("name", ["mixed", "uvu", "big"])
def test_row_broadcasting(name, pattern, dtype):
    """Inputs with one row broadcast; their gradients are sums over rows."""
    p = PROBLEMS[name]
    N = 53 if name != "big" else 11
    rows = tuple(1 if b else N for b in pattern)
    _check_all(
        f"{name} {pattern}", p.encode(), dtype, *_inputs(p, N, rows, seed=sum(pattern))
    )


def test_many_rows_broadcast():
    """Enough rows for many blocks, each adding its rows to its own workspace row."""
    p = PROBLEMS["mixed"]
    N = 5000
    _check_all(
        "mixed N=5000", p.encode(), torch.float64, *_inputs(p, N, (N, 1, 1), seed=7)
    )


@pytest.mark.parametrize(
    "absent", [(0,), (1,), (2,), (0, 1), (1, 2), (0, 2), (0, 1, 2)]
)
def test_double_backward_absent(absent):
    """gg_x1 / gg_x2 / gg_weight may be None (zero)."""
    p = PROBLEMS["mixed"]
    s = p.encode()
    N = 23
    x1, x2, w, go, *ggs = _inputs(p, N, (N, 1, N), seed=3)
    ggs = [None if i in absent else g for i, g in enumerate(ggs)]
    _, _, r_dd = _reference(s, x1, x2, w, go, *ggs)
    d = lambda t: _dev(t, torch.float64)
    dbl = _C.tensor_product_double_backward_cuda(
        *(d(g) for g in ggs), d(go), d(x1), d(x2), d(w), s
    )
    for k in range(4):
        _assert_rel(dbl[k], r_dd[k], torch.float64, 2, f"absent={absent} output {k}")


@pytest.mark.parametrize(
    "need",
    [
        (True, False, False),
        (False, True, False),
        (False, False, True),
        (False, False, False),
    ],
)
def test_backward_need(need):
    p = PROBLEMS["mixed"]
    s = p.encode()
    N = 19
    x1, x2, w, go, *_ = _inputs(p, N, (N, N, 1), seed=5)
    _, r_g, _ = _reference(s, x1, x2, w, go)
    d = lambda t: _dev(t, torch.float64)
    res = _C.tensor_product_backward_cuda(d(go), d(x1), d(x2), d(w), s, *need)
    for k in range(3):
        if need[k]:
            _assert_rel(res[k], r_g[k], torch.float64, 1, f"need={need} grad {k}")
        else:
            assert res[k].shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["uvu", "mixed"])
def test_half_types(name, dtype):
    """16-bit inputs, accumulated in float32: against the reference on the same (rounded)
    values; what is left is the final rounding of the results to the 16-bit type."""
    p = PROBLEMS[name]
    s = p.encode()
    N = 29
    x1, x2, w, go, gg1, gg2, ggw = (
        t.to(dtype) for t in _inputs(p, N, (N, 1, N), seed=11)
    )
    r_out, r_g, r_dd = _reference(
        s, *(t.double() for t in (x1, x2, w, go, gg1, gg2, ggw))
    )
    out, bwd, dbl = _run_all(s, dtype, x1, x2, w, go, gg1, gg2, ggw)
    rel = 4e-3 if dtype == torch.float16 else 3e-2
    results = [out, *bwd, *dbl]
    expected = [r_out, *r_g, *r_dd]
    for k, (a, e) in enumerate(zip(results, expected)):
        assert a.dtype == dtype
        assert _rel_err(a, e) <= rel, f"{dtype} output {k}: {_rel_err(a, e):.3g}"


def test_deterministic():
    p = PROBLEMS["uvw"]
    s = p.encode()
    N = 3000
    x1, x2, w, go, gg1, gg2, ggw = (
        t.float().to(DEV) for t in _inputs(p, N, (N, 1, 1), seed=2)
    )
    a = _C.tensor_product_backward_cuda(go, x1, x2, w, s, True, True, True)
    b = _C.tensor_product_backward_cuda(go, x1, x2, w, s, True, True, True)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    a = _C.tensor_product_double_backward_cuda(gg1, gg2, ggw, go, x1, x2, w, s)
    b = _C.tensor_product_double_backward_cuda(gg1, gg2, ggw, go, x1, x2, w, s)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_zero_rows_and_no_paths():
    p = PROBLEMS["mixed"]
    s = p.encode()
    x1 = torch.randn(0, p.dim1, device=DEV, dtype=torch.float64)
    x2 = torch.randn(1, p.dim2, device=DEV, dtype=torch.float64)
    w = torch.randn(1, p.dim_w, device=DEV, dtype=torch.float64)
    out = _C.tensor_product_cuda(x1, x2, w, s)
    assert out.shape == (0, p.dim_out)
    go = torch.zeros(0, p.dim_out, device=DEV, dtype=torch.float64)
    g1, g2, gw = _C.tensor_product_backward_cuda(go, x1, x2, w, s, True, True, True)
    assert g1.shape == x1.shape and g2.shape == x2.shape and gw.shape == w.shape
    assert not g2.any() and not gw.any()
    # A problem without paths: zeros.
    empty = build_problem("2x0e", "1x0e", "3x1o", [])
    y = _C.tensor_product_cuda(
        torch.randn(4, 2, device=DEV),
        torch.randn(4, 1, device=DEV),
        torch.randn(1, 0, device=DEV),
        empty.encode(),
    )
    assert y.shape == (4, 9) and not y.any()


def test_bad_input():
    p = PROBLEMS["uvu"]
    s = p.encode()
    N = 4
    x1 = torch.randn(N, p.dim1, device=DEV)
    x2 = torch.randn(N, p.dim2, device=DEV)
    w = torch.randn(N, p.dim_w, device=DEV)
    with pytest.raises(ValueError, match="x1"):
        _C.tensor_product_cuda(x1[:, 1:], x2, w, s)
    with pytest.raises(ValueError, match="broadcast"):
        _C.tensor_product_cuda(x1, x2[:3], w, s)
    with pytest.raises(TypeError, match="dtype"):
        _C.tensor_product_cuda(x1, x2.double(), w, s)
    with pytest.raises(RuntimeError, match="CUDA"):
        _C.tensor_product_cuda(x1, x2.cpu(), w, s)
    with pytest.raises(ValueError, match="problem"):
        _C.tensor_product_cuda(x1, x2, w, "not a problem")
    with pytest.raises(ValueError, match="grad_out"):
        _C.tensor_product_backward_cuda(
            torch.randn(N + 1, p.dim_out, device=DEV), x1, x2, w, s, True, True, True
        )
    with pytest.raises(ValueError, match="gg_x2"):
        _C.tensor_product_double_backward_cuda(
            None, x2[:1], None, torch.randn(N, p.dim_out, device=DEV), x1, x2, w, s
        )
    # A hand-made string that breaks a mode's multiplicity rule (uvu with mul_out != mul_in1):
    # the shared parser (tp_problem.h) rejects it before the CUDA tables are built.
    bad = s.replace("\nuvu 0 0 0 4 1 4 ", "\nuvu 0 0 0 4 1 3 ", 1)
    assert bad != s
    with pytest.raises(ValueError, match="do not fit mode 'uvu'"):
        _C.tensor_product_cuda(x1, x2, w, bad)


def test_non_contiguous_inputs():
    p = PROBLEMS["mixed"]
    s = p.encode()
    N = 12
    x1, x2, w, *_ = _inputs(p, N, (N, N, N), seed=9)
    r_out = ref(x1, x2, w, s)
    # Column-major copies: same values, other strides.
    nc = lambda t: t.to(DEV).t().contiguous().t()
    out = _C.tensor_product_cuda(nc(x1), nc(x2), nc(w), s)
    _assert_rel(out, r_out, torch.float64, 0, "non-contiguous")
