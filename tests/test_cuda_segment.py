"""Tests of the CUDA C++ segment / scatter kernels (csrc/cuda/) against the reference.

They call the raw bindings ``equiops._C.*_cuda`` on the canonical (B, N, C) layout and
compare with :mod:`equiops.reference.segment`, evaluated on the CPU (in float64 for the
sums). Skipped when no GPU is visible or the extension was built without CUDA.
"""

from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("CUDA is not available", allow_module_level=True)

_C = pytest.importorskip("equiops._C")
if not hasattr(_C, "segment_sum_cuda"):
    pytest.skip("equiops._C was built without CUDA kernels", allow_module_level=True)

from equiops.reference import segment as ref  # noqa: E402

DEV = torch.device("cuda")

# (B, N, S, C). Chosen to reach every launch shape of the kernels: C <= 4 (a lane group
# per segment), C = 16 / 64 (threads over 16-byte columns, warp-shuffle or shared-memory
# lane reduction), C = 130 (8-byte columns, 96 column threads), short and very long
# segments (few segments: up to 256 lanes per segment).
CASES = [
    (1, 1000, 100, 1),
    (2, 777, 50, 3),
    (3, 500, 40, 16),
    (1, 20000, 2000, 16),
    (1, 3000, 7, 64),
    (2, 300, 20, 130),
    (1, 6000, 3, 1),
    (2, 4000, 1, 4),
]
# min/max's reference loops over segments in Python: keep S small there.
MINMAX_CASES = [c for c in CASES if c[2] <= 100]


def _make_indexing(B, N, S, Bi, use_perm, gen):
    """indptr (Bi, S+1) on the CPU, with empty segments, and perm (P,) or None.

    With perm: P = N - N // 10 positions; perm is a stable argsort of a random segment
    index (a receiver-sorted graph) over a random subset of the rows, so some rows are
    not covered. Without perm: batch b's segments cover rows [lo, N - hi) with small
    random lo, hi (rows outside are not covered).
    """
    P = N - N // 10 if use_perm else N
    indptrs, first_seg = [], None
    for _ in range(Bi):
        seg = torch.randint(0, S, (P,), generator=gen)
        if S > 2:
            seg[seg == S // 2] = S - 1  # an empty segment in the middle
        if first_seg is None:
            first_seg = seg
        counts = torch.bincount(seg, minlength=S)
        lo = hi = 0
        if not use_perm:
            lo, hi = (int(v) for v in torch.randint(0, 3, (2,), generator=gen))
            if counts.max() >= lo + hi:
                counts[counts.argmax()] -= lo + hi
            else:
                lo = hi = 0
        indptr = torch.zeros(S + 1, dtype=torch.long)
        indptr[1:] = torch.cumsum(counts, 0)
        indptrs.append(indptr + lo)
    indptr = torch.stack(indptrs)
    if not use_perm:
        return indptr, None
    rows = torch.randperm(N, generator=gen)[:P]
    return indptr, rows[torch.argsort(first_seg, stable=True)]


def _cuda(*ts):
    return [None if t is None else t.to(DEV) for t in ts]


def _tol(dtype):
    # relative to the sum of |x| over the segment: float64 ~ 1e-12; float32 sums of up to a
    # few hundred terms per lane plus a <= 8-level tree stay well inside 2e-5.
    return {torch.float64: 1e-12, torch.float32: 2e-5}[dtype]


def _check_sum(out, src_cpu, indptr, perm, dtype):
    exp = ref.segment_sum(src_cpu.double(), indptr, perm)
    scale = ref.segment_sum(src_cpu.double().abs(), indptr, perm) + 1e-30
    err = (out.cpu().double() - exp).abs()
    assert out.dtype == dtype and out.shape == exp.shape
    assert bool((err <= _tol(dtype) * scale).all()), float((err / scale).max())


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bcast", [True, False])
@pytest.mark.parametrize("use_perm", [False, True])
def test_segment_sum(case, dtype, bcast, use_perm):
    B, N, S, C = case
    gen = torch.Generator().manual_seed(hash((case, bcast, use_perm)) % 2**31)
    Bi = 1 if bcast else B
    indptr, perm = _make_indexing(B, N, S, Bi, use_perm, gen)
    src = torch.randn(B, N, C, generator=gen, dtype=dtype)
    out = _C.segment_sum_cuda(*_cuda(src, indptr, perm))
    _check_sum(out, src, indptr, perm, dtype)


def _minmax_src(B, N, C, dtype, gen):
    # small integers: many ties; some NaNs; zeros of both signs
    src = torch.randint(-3, 4, (B, N, C), generator=gen).to(dtype)
    sign = torch.rand(B, N, C, generator=gen) < 0.5
    src = torch.where(sign & (src == 0), -src, src)
    src[torch.rand(B, N, C, generator=gen) < 0.01] = float("nan")
    return src


@pytest.mark.parametrize("case", MINMAX_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bcast", [True, False])
@pytest.mark.parametrize("use_perm", [False, True])
@pytest.mark.parametrize("reduce", ["max", "min"])
def test_segment_minmax(case, dtype, bcast, use_perm, reduce):
    B, N, S, C = case
    gen = torch.Generator().manual_seed(hash((case, bcast, use_perm, reduce)) % 2**31)
    Bi = 1 if bcast else B
    indptr, perm = _make_indexing(B, N, S, Bi, use_perm, gen)
    src = _minmax_src(B, N, C, dtype, gen)
    val, arg = _C.segment_minmax_cuda(*_cuda(src, indptr, perm), reduce == "max")
    ev, ea = ref.segment_minmax(src, indptr, perm, reduce)
    assert val.dtype == dtype and arg.dtype == torch.long
    torch.testing.assert_close(val.cpu(), ev, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(arg.cpu(), ea)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bcast", [True, False])
@pytest.mark.parametrize("use_perm", [False, True])
def test_segment_gather(case, dtype, bcast, use_perm):
    B, N, S, C = case
    gen = torch.Generator().manual_seed(hash((case, bcast, use_perm, "g")) % 2**31)
    Bi = 1 if bcast else B
    indptr, perm = _make_indexing(B, N, S, Bi, use_perm, gen)
    src = torch.randn(B, S, C, generator=gen, dtype=dtype)
    out = _C.segment_gather_cuda(*_cuda(src, indptr, perm), N)
    exp = ref.segment_gather(src, indptr, perm, N)
    assert out.shape == exp.shape and torch.equal(out.cpu(), exp)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("C", [1, 3, 64])
@pytest.mark.parametrize("expanded", [True, False])
def test_scatter_sum(dtype, C, expanded):
    B, N, dim = 3, 2000, 300
    gen = torch.Generator().manual_seed(C * 2 + int(expanded))
    src = torch.randn(B, N, C, generator=gen, dtype=dtype)
    if expanded:
        index = torch.randint(0, dim, (N,), generator=gen).view(1, N, 1).expand(B, N, C)
    else:
        index = torch.randint(0, dim, (B, N, C), generator=gen)
    idx_dev = index.to(DEV) if not expanded else index[0, :, 0].to(DEV).view(1, N, 1).expand(B, N, C)
    assert idx_dev.stride(0) == (0 if expanded else N * C)  # read through its strides, not copied
    out = _C.scatter_sum_cuda(src.to(DEV), idx_dev, dim + 5)
    exp = ref.scatter_sum(src.double(), index, dim + 5)
    scale = ref.scatter_sum(src.double().abs(), index, dim + 5) + 1e-30
    assert out.shape == exp.shape and out.dtype == dtype
    assert bool(((out.cpu().double() - exp).abs() <= _tol(dtype) * scale).all())


def test_misaligned_src():
    # src whose data pointer is only 4-byte aligned: the kernels fall back to narrower loads
    gen = torch.Generator().manual_seed(7)
    for C in (2, 4, 8):
        B, N, S = 2, 500, 30
        flat = torch.randn(B * N * C + 1, generator=gen).to(DEV)
        src = flat[1:].view(B, N, C)
        indptr, perm = _make_indexing(B, N, S, 1, False, gen)
        out = _C.segment_sum_cuda(src, indptr.to(DEV), None)
        _check_sum(out, src.cpu(), indptr, None, torch.float32)
        val, arg = _C.segment_minmax_cuda(src, indptr.to(DEV), None, True)
        ev, ea = ref.segment_minmax(src.cpu(), indptr, None, "max")
        assert torch.equal(val.cpu(), ev) and torch.equal(arg.cpu(), ea)
        s2 = flat[1 : 1 + B * S * C].view(B, S, C)
        assert torch.equal(_C.segment_gather_cuda(s2, indptr.to(DEV), None, N).cpu(),
                           ref.segment_gather(s2.cpu(), indptr, None, N))


@pytest.mark.parametrize("C", [1, 64])
@pytest.mark.parametrize("use_perm", [False, True])
def test_deterministic(C, use_perm):
    # long segments (multi-lane reductions) and many short ones; two runs must agree bitwise
    gen = torch.Generator().manual_seed(11 + C)
    for B, N, S in ((1, 200_000, 5), (2, 100_000, 3000)):
        indptr, perm = _make_indexing(B, N, S, 1, use_perm, gen)
        src = torch.randn(B, N, C, generator=gen).to(DEV)
        indptr, perm = _cuda(indptr, perm)
        a = _C.segment_sum_cuda(src, indptr, perm)
        b = _C.segment_sum_cuda(src, indptr, perm)
        assert torch.equal(a, b)
        v1, a1 = _C.segment_minmax_cuda(src, indptr, perm, True)
        v2, a2 = _C.segment_minmax_cuda(src, indptr, perm, True)
        assert torch.equal(v1, v2) and torch.equal(a1, a2)
        g = torch.randn(B, S, C, generator=gen).to(DEV)
        assert torch.equal(_C.segment_gather_cuda(g, indptr, perm, N), _C.segment_gather_cuda(g, indptr, perm, N))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_smoke(dtype):
    # Sums accumulate in float32 and round once to the output type: the error is at most
    # one rounding of the result (2^-11 for float16, 2^-8 for bfloat16, relative) plus the
    # float32 accumulation error (~1e-6 of sum |x| here). scatter_sum uses 16-bit atomics,
    # which round after every addition: allow one rounding of sum |x| per addition to a slot.
    eps = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}[dtype]
    gen = torch.Generator().manual_seed(3)
    B, N, S = 2, 3000, 100
    for C in (1, 3, 16, 130):
        indptr, perm = _make_indexing(B, N, S, B, True, gen)
        src = torch.randn(B, N, C, generator=gen).to(dtype)
        d_src, d_ip, d_perm = _cuda(src, indptr, perm)
        out = _C.segment_sum_cuda(d_src, d_ip, d_perm)
        assert out.dtype == dtype
        exp = ref.segment_sum(src.double(), indptr, perm)
        scale = ref.segment_sum(src.double().abs(), indptr, perm)
        assert bool(((out.cpu().double() - exp).abs() <= eps * exp.abs() + 1e-5 * scale + 1e-30).all())
        val, arg = _C.segment_minmax_cuda(d_src, d_ip, d_perm, False)
        ev, ea = ref.segment_minmax(src.float(), indptr, perm, "min")
        assert torch.equal(val.cpu().float(), ev) and torch.equal(arg.cpu(), ea)
        g = torch.randn(B, S, C, generator=gen).to(dtype)
        assert torch.equal(_C.segment_gather_cuda(g.to(DEV), d_ip, d_perm, N).cpu(),
                           ref.segment_gather(g, indptr, perm, N))
        index = torch.randint(0, N // 8, (B, N, C), generator=gen)
        sc = _C.scatter_sum_cuda(d_src, index.to(DEV), N // 8)
        exp = ref.scatter_sum(src.double(), index, N // 8)
        scale = ref.scatter_sum(src.double().abs(), index, N // 8)
        count = ref.scatter_sum(torch.ones(B, N, C, dtype=torch.float64), index, N // 8)
        assert sc.dtype == dtype
        assert bool(((sc.cpu().double() - exp).abs() <= count * eps * scale + 1e-5 * scale + 1e-30).all())


def test_empty():
    f = torch.float32
    z = lambda *s: torch.zeros(*s, dtype=torch.long, device=DEV)  # noqa: E731
    # N = 0: every segment is empty (sum 0; min/max value 0 and arg N = 0)
    src = torch.randn(2, 0, 3, device=DEV)
    assert torch.equal(_C.segment_sum_cuda(src, z(1, 5), None), torch.zeros(2, 4, 3, device=DEV))
    v, a = _C.segment_minmax_cuda(src, z(2, 5), None, True)
    assert torch.equal(v, torch.zeros(2, 4, 3, device=DEV)) and torch.equal(a, z(2, 4, 3))
    # empty perm over N > 0 rows
    src = torch.randn(2, 6, 3, device=DEV)
    v, a = _C.segment_minmax_cuda(src, z(1, 3), z(0), False)
    assert torch.equal(v, torch.zeros(2, 2, 3, device=DEV)) and torch.equal(a, torch.full_like(a, 6))
    assert torch.equal(_C.segment_gather_cuda(torch.randn(2, 2, 3, device=DEV), z(1, 3), z(0), 6),
                       torch.zeros(2, 6, 3, device=DEV))
    # S = 0
    assert _C.segment_sum_cuda(src, z(1, 1), None).shape == (2, 0, 3)
    v, a = _C.segment_minmax_cuda(src, z(2, 1), None, True)
    assert v.shape == a.shape == (2, 0, 3)
    assert torch.equal(_C.segment_gather_cuda(torch.randn(2, 0, 3, device=DEV), z(1, 1), None, 4),
                       torch.zeros(2, 4, 3, device=DEV))
    # C = 0, B = 0
    ip = torch.tensor([[0, 2, 5]], device=DEV)
    assert _C.segment_sum_cuda(torch.randn(2, 5, 0, device=DEV), ip, None).shape == (2, 2, 0)
    assert _C.segment_sum_cuda(torch.randn(0, 5, 3, device=DEV), ip, None).shape == (0, 2, 3)
    v, a = _C.segment_minmax_cuda(torch.randn(0, 5, 3, device=DEV), ip, None, False)
    assert v.shape == a.shape == (0, 2, 3)
    assert _C.segment_gather_cuda(torch.randn(2, 2, 0, device=DEV), ip, None, 5).shape == (2, 5, 0)
    assert _C.segment_gather_cuda(torch.randn(2, 2, 3, device=DEV), ip, None, 0).shape == (2, 0, 3)
    # scatter: N = 0, dim_size = 0, C = 0
    assert torch.equal(_C.scatter_sum_cuda(torch.randn(2, 0, 3, device=DEV), z(2, 0, 3), 4),
                       torch.zeros(2, 4, 3, device=DEV))
    assert _C.scatter_sum_cuda(torch.randn(2, 5, 3, device=DEV), z(2, 5, 3), 0).shape == (2, 0, 3)
    assert _C.scatter_sum_cuda(torch.randn(2, 5, 0, device=DEV), z(2, 5, 0), 4).shape == (2, 4, 0)
    assert f == torch.float32


def test_argument_checks():
    src = torch.randn(2, 5, 3, device=DEV)
    ip = torch.tensor([[0, 2, 5]], device=DEV)
    with pytest.raises(RuntimeError):
        _C.segment_sum_cuda(src.cpu(), ip, None)  # device
    with pytest.raises(RuntimeError):
        _C.segment_sum_cuda(src, ip.int(), None)  # dtype
    with pytest.raises(RuntimeError):
        _C.segment_sum_cuda(src.long(), ip, None)  # src dtype
    with pytest.raises(RuntimeError):
        _C.segment_sum_cuda(src, ip.expand(3, 3).contiguous(), None)  # Bi not in {1, B}
    with pytest.raises(RuntimeError):
        _C.segment_gather_cuda(torch.randn(2, 3, 3, device=DEV), ip, None, 5)  # src.size(1) != S
    with pytest.raises(RuntimeError):
        _C.scatter_sum_cuda(src, torch.zeros(2, 5, 2, dtype=torch.long, device=DEV), 4)  # index shape
