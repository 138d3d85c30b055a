"""Triton segment/scatter kernels (kernels/segment.py) against the plain-PyTorch reference.

On a machine without a GPU the kernels run on CPU tensors through Triton's interpreter:
tests/conftest.py sets ``TRITON_INTERPRET=1`` before anything imports triton (the
variable is read when functions, triton.language's own included, are decorated).
Sizes are tiny because the interpreter is slow. On a GPU machine,
``EQUIOPS_TRITON_TEST_DEVICE=cuda`` runs the same tests compiled on CUDA tensors.
"""


import pytest
import torch


from conftest import triton_test_device  # noqa: E402

DEV = triton_test_device()  # skips this module when Triton cannot run here

from equiops.kernels import segment as K  # noqa: E402
from equiops.reference import segment as ref  # noqa: E402


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _random_indptr(num_positions, S, g, partial=True):
    """(S + 1,) nondecreasing int64 in [0, num_positions], with segment 1 forced empty."""
    lo = int(torch.randint(0, min(2, num_positions) + 1, (1,), generator=g)) if partial else 0
    hi = num_positions - (int(torch.randint(0, min(2, num_positions - lo) + 1, (1,), generator=g)) if partial else 0)
    cuts = torch.sort(torch.randint(lo, hi + 1, (max(S - 1, 0),), generator=g)).values
    indptr = torch.cat([torch.tensor([lo]), cuts, torch.tensor([hi])]).long()
    if S >= 3:
        indptr[2] = indptr[1]
    return indptr


def _case(B, N, S, C, Bi, with_perm, dtype, seed, P=None, partial=True):
    g = _gen(seed)
    src = torch.randn(B, N, C, generator=g, dtype=torch.float64).to(dtype)
    perm = None
    if with_perm:
        if P is None or P == N:
            key = torch.randint(0, max(S, 1), (N,), generator=g)
            perm = torch.argsort(key, stable=True)
        else:
            perm = torch.randperm(N, generator=g)[:P]
    positions = N if perm is None else perm.numel()
    indptr = torch.stack([_random_indptr(positions, S, g, partial) for _ in range(Bi)])
    return src.to(DEV), indptr.to(DEV), None if perm is None else perm.to(DEV)


def _max_seg_len(indptr):
    return max(int((indptr[:, 1:] - indptr[:, :-1]).max()), 1) if indptr.size(1) > 1 else 1


def _sum_tols(dtype, k):
    if dtype == torch.float64:
        return dict(rtol=1e-12, atol=1e-12)
    return dict(rtol=1e-6 * k, atol=1e-6 * k)


def _bits(t):
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _assert_minmax_equal(got, want):
    v, a = got
    rv, ra = want
    assert v.dtype == rv.dtype and a.dtype == torch.int64
    assert torch.equal(a, ra), (a, ra)
    # Values are read back from src at arg: bitwise the reference (zero signs, NaN payloads).
    assert torch.equal(_bits(v), _bits(rv))


SHAPE_PARAMS = [
    pytest.param(dtype, C, bi, with_perm, id=f"{str(dtype)[6:]}-C{C}-Bi{bi}-{'perm' if with_perm else 'noperm'}")
    for dtype in (torch.float32, torch.float64)
    for C in (1, 3, 16, 33)
    for bi in ("1", "B")
    for with_perm in (False, True)
]


# --------------------------------------------------------------------------------------
# Against the reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,C,bi,with_perm", SHAPE_PARAMS)
def test_segment_ops_match_reference(dtype, C, bi, with_perm):
    B, N, S = 2, 19, 6
    seed = 1000 * (dtype == torch.float64) + 100 * C + 10 * (bi == "B") + int(with_perm)
    src, indptr, perm = _case(B, N, S, C, 1 if bi == "1" else B, with_perm, dtype, seed)

    out = K.segment_sum(src, indptr, perm)
    want = ref.segment_sum(src, indptr, perm)
    assert out.shape == (B, S, C) and out.dtype == dtype
    torch.testing.assert_close(out, want, **_sum_tols(dtype, _max_seg_len(indptr)))

    for is_max in (True, False):
        got = K.segment_minmax(src, indptr, perm, is_max)
        _assert_minmax_equal(got, ref.segment_minmax(src, indptr, perm, "max" if is_max else "min"))

    seg_src = torch.randn(B, S, C, generator=_gen(seed + 1), dtype=torch.float64).to(dtype).to(DEV)
    out = K.segment_gather(seg_src, indptr, perm, N)
    assert torch.equal(out, ref.segment_gather(seg_src, indptr, perm, N))


@pytest.mark.parametrize("with_perm", [False, True])
def test_long_segments_and_column_blocks(with_perm):
    # One long segment (several BLOCK_R iterations) and C wider than BLOCK_C (two column blocks).
    B, N, S, C = 1, 40, 3, 150
    g = _gen(7)
    src = torch.randn(B, N, C, generator=g).to(DEV)
    perm = torch.randperm(N, generator=g).to(DEV) if with_perm else None
    indptr = torch.tensor([[0, 2, 39, 40]], device=DEV)
    torch.testing.assert_close(K.segment_sum(src, indptr, perm), ref.segment_sum(src, indptr, perm), **_sum_tols(src.dtype, 37))
    for is_max in (True, False):
        _assert_minmax_equal(
            K.segment_minmax(src, indptr, perm, is_max), ref.segment_minmax(src, indptr, perm, "max" if is_max else "min")
        )
    seg_src = torch.randn(B, S, C, generator=g).to(DEV)
    assert torch.equal(K.segment_gather(seg_src, indptr, perm, N), ref.segment_gather(seg_src, indptr, perm, N))


@pytest.mark.parametrize("with_perm", [False, True])
def test_many_short_segments(with_perm):
    # Several segments per program (BLOCK_S > 1) and several segment blocks, the last partial.
    B, N, S, C = 1, 300, 150, 1
    src, indptr, perm = _case(B, N, S, C, 1, with_perm, torch.float64, 41)
    torch.testing.assert_close(K.segment_sum(src, indptr, perm), ref.segment_sum(src, indptr, perm), rtol=1e-12, atol=1e-12)
    _assert_minmax_equal(K.segment_minmax(src, indptr, perm, False), ref.segment_minmax(src, indptr, perm, "min"))
    seg_src = torch.randn(B, S, C, dtype=torch.float64, generator=_gen(42)).to(DEV)
    assert torch.equal(K.segment_gather(seg_src, indptr, perm, N), ref.segment_gather(seg_src, indptr, perm, N))


def test_perm_shorter_than_rows():
    # perm selects a subset of the rows (P < N): uncovered rows of segment_gather are 0.
    B, N, S, C, P = 2, 16, 4, 3, 9
    src, indptr, perm = _case(B, N, S, C, B, True, torch.float64, 11, P=P)
    torch.testing.assert_close(K.segment_sum(src, indptr, perm), ref.segment_sum(src, indptr, perm), rtol=1e-12, atol=1e-12)
    _assert_minmax_equal(K.segment_minmax(src, indptr, perm, True), ref.segment_minmax(src, indptr, perm, "max"))
    seg_src = torch.randn(B, S, C, dtype=torch.float64, generator=_gen(12)).to(DEV)
    assert torch.equal(K.segment_gather(seg_src, indptr, perm, N), ref.segment_gather(seg_src, indptr, perm, N))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_perm", [False, True])
def test_minmax_nan_ties_inf_signed_zero(dtype, with_perm):
    B, N, S, C = 2, 24, 5, 4
    g = _gen(3)
    # Few distinct values: many ties; -0.0/+0.0; infinities; NaNs in some segments/columns.
    pool = torch.tensor([0.0, -0.0, 1.0, 1.0, -1.0, 2.0, float("inf"), float("-inf")], dtype=torch.float64)
    src = pool[torch.randint(0, len(pool), (B, N, C), generator=g)]
    nan_mask = torch.rand(B, N, C, generator=g) < 0.12
    src[nan_mask] = float("nan")
    src[:, :, 0] = 1.0  # column of pure ties
    src[:, :, 1] = float("-inf")  # ties at the identity of max
    src[:, :, 2] = float("inf")  # ties at the identity of min
    src = src.to(dtype).to(DEV)
    perm = torch.argsort(torch.randint(0, S, (N,), generator=g), stable=True).to(DEV) if with_perm else None
    indptr = torch.stack([_random_indptr(N, S, g) for _ in range(B)]).to(DEV)
    for is_max in (True, False):
        got = K.segment_minmax(src, indptr, perm, is_max)
        want = ref.segment_minmax(src, indptr, perm, "max" if is_max else "min")
        _assert_minmax_equal(got, want)
        empty = (indptr[:, 1:] == indptr[:, :-1])[..., None].expand(B, S, C)
        assert bool((got[1][empty] == N).all()) and bool((got[0][empty] == 0).all())


@pytest.mark.parametrize("with_perm", [False, True])
def test_minmax_int64_row_ids(monkeypatch, with_perm):
    # The int64 row-id path (used when N >= 2**31) on a small input.
    monkeypatch.setattr(K, "_ARG_I32_LIMIT", 0)
    src, indptr, perm = _case(2, 20, 5, 3, 2, with_perm, torch.float32, 51)
    src[0, 3, 1] = float("nan")
    for is_max in (True, False):
        _assert_minmax_equal(
            K.segment_minmax(src, indptr, perm, is_max), ref.segment_minmax(src, indptr, perm, "max" if is_max else "min")
        )


def test_minmax_all_nan_segment_picks_smallest_row():
    src = torch.full((1, 6, 2), float("nan"), device=DEV)
    src[0, 0, 1] = 5.0
    perm = torch.tensor([5, 3, 1, 4, 0, 2], device=DEV)
    indptr = torch.tensor([[0, 3, 6]], device=DEV)
    v, a = K.segment_minmax(src, indptr, perm, True)
    assert a.tolist() == [[[1, 1], [0, 2]]]
    assert torch.isnan(v).all()


# --------------------------------------------------------------------------------------
# scatter_sum
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("C", [1, 3, 16, 33])
def test_scatter_sum_matches_reference(dtype, C):
    B, N, D = 2, 21, 5
    g = _gen(C)
    src = torch.randn(B, N, C, generator=g, dtype=torch.float64).to(dtype).to(DEV)
    index = torch.randint(0, D, (B, N, C), generator=g).to(DEV)
    out = K.scatter_sum(src, index, D)
    assert out.shape == (B, D, C) and out.dtype == dtype
    torch.testing.assert_close(out, ref.scatter_sum(src, index, D), **_sum_tols(dtype, N))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scatter_sum_expanded_and_strided_index(dtype):
    B, N, C, D = 3, 17, 5, 7
    g = _gen(5)
    src = torch.randn(B, N, C, generator=g, dtype=torch.float64).to(dtype).to(DEV)
    idx1d = torch.randint(0, D, (N,), generator=g).to(DEV)
    expanded = idx1d.view(1, N, 1).expand(B, N, C)
    assert expanded.stride() == (0, 1, 0)
    torch.testing.assert_close(K.scatter_sum(src, expanded, D), ref.scatter_sum(src, expanded, D), **_sum_tols(dtype, N))
    strided = torch.randint(0, D, (C, N, B), generator=g).to(DEV).permute(2, 1, 0)
    assert not strided.is_contiguous()
    torch.testing.assert_close(K.scatter_sum(src, strided, D), ref.scatter_sum(src, strided, D), **_sum_tols(dtype, N))


# --------------------------------------------------------------------------------------
# Half types, empty tensors, determinism
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_smoke(dtype):
    B, N, S, C = 2, 18, 4, 5
    src, indptr, perm = _case(B, N, S, C, B, True, dtype, 21)
    want = ref.segment_sum(src.float(), indptr, perm).to(dtype)  # float32 accumulation
    out = K.segment_sum(src, indptr, perm)
    assert out.dtype == dtype
    torch.testing.assert_close(out, want, rtol=1e-2, atol=1e-2)
    for is_max in (True, False):
        _assert_minmax_equal(
            K.segment_minmax(src, indptr, perm, is_max), ref.segment_minmax(src, indptr, perm, "max" if is_max else "min")
        )
    seg_src = torch.randn(B, S, C, generator=_gen(22)).to(dtype).to(DEV)
    assert torch.equal(K.segment_gather(seg_src, indptr, perm, N), ref.segment_gather(seg_src, indptr, perm, N))
    index = torch.randint(0, 4, (B, N, C), generator=_gen(23)).to(DEV)
    out = K.scatter_sum(src, index, 4)
    assert out.dtype == dtype
    torch.testing.assert_close(out, ref.scatter_sum(src.float(), index, 4).to(dtype), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize(
    "B,N,S,C,with_perm",
    [(0, 5, 3, 2, False), (2, 0, 3, 2, False), (2, 5, 0, 2, False), (2, 5, 3, 0, False), (2, 0, 3, 2, True), (2, 5, 3, 2, True)],
)
def test_empty(B, N, S, C, with_perm):
    src = torch.randn(B, N, C, device=DEV)
    # All segments empty (N == 0, or an empty perm for the last case).
    ends = 0 if (N == 0 or with_perm) else min(N, 2)
    indptr = torch.zeros(1, S + 1, dtype=torch.long, device=DEV)
    if S > 0:
        indptr[0, -1] = ends
    perm = torch.zeros(0, dtype=torch.long, device=DEV) if with_perm else None
    torch.testing.assert_close(K.segment_sum(src, indptr, perm), ref.segment_sum(src, indptr, perm))
    _assert_minmax_equal(K.segment_minmax(src, indptr, perm, True), ref.segment_minmax(src, indptr, perm, "max"))
    seg_src = torch.randn(B, S, C, device=DEV)
    assert torch.equal(K.segment_gather(seg_src, indptr, perm, N), ref.segment_gather(seg_src, indptr, perm, N))
    assert K.segment_gather(seg_src, indptr, perm, 0).shape == (B, 0, C)
    index = torch.zeros(B, N, C, dtype=torch.long, device=DEV)
    assert torch.equal(K.scatter_sum(src, index, 3), ref.scatter_sum(src, index, 3))
    assert K.scatter_sum(src, index, 0).shape == (B, 0, C)


@pytest.mark.parametrize("with_perm", [False, True])
def test_segment_ops_bitwise_deterministic(with_perm):
    B, N, S, C = 2, 30, 4, 3
    src, indptr, perm = _case(B, N, S, C, B, with_perm, torch.float32, 31)
    a = K.segment_sum(src, indptr, perm)
    b = K.segment_sum(src.clone(), indptr.clone(), None if perm is None else perm.clone())
    assert torch.equal(_bits(a), _bits(b))
    for is_max in (True, False):
        v1, a1 = K.segment_minmax(src, indptr, perm, is_max)
        v2, a2 = K.segment_minmax(src, indptr, perm, is_max)
        assert torch.equal(_bits(v1), _bits(v2)) and torch.equal(a1, a2)
    seg_src = torch.randn(B, S, C, device=DEV)
    assert torch.equal(K.segment_gather(seg_src, indptr, perm, N), K.segment_gather(seg_src, indptr, perm, N))


def test_argument_checks():
    src = torch.randn(2, 5, 3, device=DEV)
    with pytest.raises((ValueError, TypeError)):
        K.segment_sum(src, torch.zeros(3, 4, dtype=torch.long, device=DEV), None)  # Bi not in {1, B}
    with pytest.raises((ValueError, TypeError)):
        K.segment_sum(src, torch.zeros(1, 4, dtype=torch.int32, device=DEV), None)
    with pytest.raises((ValueError, TypeError)):
        K.scatter_sum(src, torch.zeros(2, 5, 2, dtype=torch.long, device=DEV), 4)
