"""Triton kernels for the segment / scatter operators, in their canonical form.

The semantics are those of :mod:`equiops.reference.segment` (the plain-PyTorch
reference); this module only adds fast GPU kernels and thin launchers:

* :func:`segment_sum`, :func:`segment_minmax`, :func:`segment_gather` are
  deterministic: every output element is produced by exactly one program, in a
  fixed reduction order, without atomics.
* :func:`scatter_sum` uses atomic adds (not bitwise deterministic).

Canonical layout: ``src`` is ``(B, N, C)`` contiguous; ``indptr`` is
``(Bi, S + 1)`` int64 with ``Bi`` in ``{1, B}`` (broadcast over the batch);
``perm`` is ``None`` or ``(P,)`` int64 and maps position ``e`` to row
``perm[e]``. Index *values* are not checked (that would need a host
synchronisation); out-of-range values are undefined behaviour, as in the CUDA
backend.

Kernel design (segment ops). A program owns ``BLOCK_S`` consecutive segments of
one batch and ``BLOCK_C`` columns. It loops over the positions of its segments
in steps of ``BLOCK_R``, loading a ``[BLOCK_S, BLOCK_R, BLOCK_C]`` tile (rows
through ``perm`` when given) and folding it element-wise into a register
accumulator of the same shape; the ``BLOCK_R`` axis is reduced once at the end.
Several segments per program keep the tiles full when segments are short and
``C`` is small (typical GNN degrees); long segments or wide ``C`` get
``BLOCK_S = 1``. The launchers run on the tensors' device: CUDA tensors, or CPU
tensors under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

__all__ = ["segment_sum", "segment_minmax", "segment_gather", "scatter_sum"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_MAX_GRID = 2**31 - 1

# Bytes of src per register tile (one loop iteration of one program): enough loads in
# flight per program, while the accumulators stay in registers.
# Measured on an H100 (2M rows, 100k segments, C in {3, 16, 128}, fp32/fp16): 4 KiB
# tiles, 2 KiB for rows of >= 256 bytes, with 2 warps per program were best or close
# to it; 8 warps was 2-3x slower.
_TILE_BYTES_SUM = 4096
_TILE_BYTES_MINMAX = 4096
_TILE_BYTES_GATHER = 4096
_TILE_BYTES_WIDE_ROWS = 2048
_TILE_SCATTER = 1024  # elements
_MAX_BLOCK_S = 64
_ARG_I32_LIMIT = 2**31 - 1  # segment_minmax tracks row ids in int32 when N is below this


# --------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------


@triton.jit
def _program_coords(num_sblocks, num_cblocks):
    # 1-D grid, column blocks fastest (programs sharing segments run together and
    # share indptr/perm/row lines in L2), then segment blocks, then the batch.
    pid = tl.program_id(0)
    cb = pid % num_cblocks
    t = pid // num_cblocks
    sb = t % num_sblocks
    b = (t // num_sblocks).to(tl.int64)
    return b, sb, cb


@triton.jit
def _segment_bounds(indptr_b, offs_s, s_mask):
    """Start and length of each of the program's segments, and the longest length."""
    lo = tl.load(indptr_b + offs_s, mask=s_mask, other=0)
    hi = tl.load(indptr_b + offs_s + 1, mask=s_mask, other=0)
    length = hi - lo
    return lo, length, tl.max(length, axis=0)


@triton.jit
def _segment_sum_kernel(
    src_ptr,
    indptr_ptr,
    perm_ptr,
    out_ptr,
    N,
    S,
    C,
    indptr_bstride,
    num_sblocks,
    num_cblocks,
    HAS_PERM: tl.constexpr,
    IS_FP64: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    b, sb, cb = _program_coords(num_sblocks, num_cblocks)
    offs_s = sb * BLOCK_S + tl.arange(0, BLOCK_S)
    offs_c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_r = tl.arange(0, BLOCK_R)
    s_mask = offs_s < S
    c_mask = offs_c < C

    lo, length, max_len = _segment_bounds(indptr_ptr + b * indptr_bstride, offs_s, s_mask)
    src_base = src_ptr + b * N * C

    if IS_FP64:
        acc = tl.zeros([BLOCK_S, BLOCK_R, BLOCK_C], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK_S, BLOCK_R, BLOCK_C], dtype=tl.float32)
    for start in range(0, max_len, BLOCK_R):
        r_in = start + offs_r
        r_mask = r_in[None, :] < length[:, None]  # [BS, BR]
        pos = lo[:, None] + r_in[None, :]
        if HAS_PERM:
            row = tl.load(perm_ptr + pos, mask=r_mask, other=0)
        else:
            row = pos
        m = r_mask[:, :, None] & c_mask[None, None, :]
        x = tl.load(src_base + row[:, :, None] * C + offs_c[None, None, :], mask=m, other=0.0)
        acc += x.to(acc.dtype)
    total = tl.sum(acc, axis=1)  # [BS, BC]

    out_offs = (b * S + offs_s[:, None]) * C + offs_c[None, :]
    out_mask = s_mask[:, None] & c_mask[None, :]
    tl.store(out_ptr + out_offs, total.to(out_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _segment_minmax_kernel(
    src_ptr,
    indptr_ptr,
    perm_ptr,
    val_ptr,
    arg_ptr,
    N,
    S,
    C,
    indptr_bstride,
    num_sblocks,
    num_cblocks,
    HAS_PERM: tl.constexpr,
    IS_MAX: tl.constexpr,
    IS_FP64: tl.constexpr,
    ARG_I32: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    b, sb, cb = _program_coords(num_sblocks, num_cblocks)
    offs_s = sb * BLOCK_S + tl.arange(0, BLOCK_S)
    offs_c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_r = tl.arange(0, BLOCK_R)
    s_mask = offs_s < S
    c_mask = offs_c < C

    lo, length, max_len = _segment_bounds(indptr_ptr + b * indptr_bstride, offs_s, s_mask)
    src_base = src_ptr + b * N * C

    # Per-lane running best (value, row). The order "NaN first (smallest row among
    # NaNs), then the extreme value, then the smallest row" is a strict total order,
    # so the fold is independent of the visiting order (perm rows are unsorted).
    # Lanes that saw nothing hold (identity, N); N is also the "empty" arg.
    if IS_FP64:
        best_v = tl.zeros([BLOCK_S, BLOCK_R, BLOCK_C], dtype=tl.float64)
    else:
        best_v = tl.zeros([BLOCK_S, BLOCK_R, BLOCK_C], dtype=tl.float32)
    if IS_MAX:
        best_v = best_v - float("inf")
    else:
        best_v = best_v + float("inf")
    if ARG_I32:  # N < 2**31: 32-bit row ids (fewer registers and integer ops)
        best_a = tl.zeros([BLOCK_S, BLOCK_R, BLOCK_C], dtype=tl.int32) + N
    else:
        best_a = tl.zeros([BLOCK_S, BLOCK_R, BLOCK_C], dtype=tl.int64) + N

    for start in range(0, max_len, BLOCK_R):
        r_in = start + offs_r
        r_mask = r_in[None, :] < length[:, None]
        pos = lo[:, None] + r_in[None, :]
        if HAS_PERM:
            row = tl.load(perm_ptr + pos, mask=r_mask, other=0)
        else:
            row = pos
        m = r_mask[:, :, None] & c_mask[None, None, :]
        x = tl.load(src_base + row[:, :, None] * C + offs_c[None, None, :], mask=m, other=0.0)
        x = x.to(best_v.dtype)
        if IS_MAX:
            x = tl.where(m, x, -float("inf"))
        else:
            x = tl.where(m, x, float("inf"))
        x_nan = x != x
        b_nan = best_v != best_v
        if IS_MAX:
            better = x > best_v  # false when either is NaN
        else:
            better = x < best_v
        r3 = tl.where(m, row[:, :, None], N).to(best_a.dtype)
        # Ties (and NaN vs NaN) go to the smaller row; rows may come in any order (perm).
        # A real element equal to the identity (+-inf) beats the (identity, N) start.
        smaller_row = r3 < best_a
        take = tl.where(x_nan, (~b_nan) | smaller_row, better | ((x == best_v) & smaller_row))
        best_v = tl.where(take, x, best_v)
        best_a = tl.where(take, r3, best_a)

    # Combine the BLOCK_R lanes with the same rule.
    b_nan = best_v != best_v
    any_nan = tl.max(b_nan.to(tl.int32), axis=1) > 0  # [BS, BC]
    if IS_MAX:
        clean = tl.where(b_nan, -float("inf"), best_v)
        ext = tl.max(clean, axis=1)
    else:
        clean = tl.where(b_nan, float("inf"), best_v)
        ext = tl.min(clean, axis=1)
    hit = tl.where(any_nan[:, None, :], b_nan, clean == ext[:, None, :])
    arg = tl.min(tl.where(hit, best_a, N), axis=1).to(tl.int64)  # [BS, BC]; N when empty

    out_mask = s_mask[:, None] & c_mask[None, :]
    # Read the value back from src at arg: bitwise the reference's src[b, arg, c]
    # (sign of zeros, NaN payloads), and 0 for empty segments.
    val = tl.load(src_base + arg * C + offs_c[None, :], mask=out_mask & (arg < N), other=0.0)
    out_offs = (b * S + offs_s[:, None]) * C + offs_c[None, :]
    tl.store(val_ptr + out_offs, val, mask=out_mask)
    tl.store(arg_ptr + out_offs, arg, mask=out_mask)


@triton.jit
def _segment_gather_kernel(
    src_ptr,
    indptr_ptr,
    perm_ptr,
    out_ptr,
    R,
    S,
    C,
    indptr_bstride,
    num_sblocks,
    num_cblocks,
    HAS_PERM: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    b, sb, cb = _program_coords(num_sblocks, num_cblocks)
    offs_s = sb * BLOCK_S + tl.arange(0, BLOCK_S)
    offs_c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_r = tl.arange(0, BLOCK_R)
    s_mask = offs_s < S
    c_mask = offs_c < C

    lo, length, max_len = _segment_bounds(indptr_ptr + b * indptr_bstride, offs_s, s_mask)

    in_offs = (b * S + offs_s[:, None]) * C + offs_c[None, :]
    vals = tl.load(src_ptr + in_offs, mask=s_mask[:, None] & c_mask[None, :], other=0.0)
    vals3 = tl.broadcast_to(vals[:, None, :], [BLOCK_S, BLOCK_R, BLOCK_C])
    out_base = out_ptr + b * R * C

    for start in range(0, max_len, BLOCK_R):
        r_in = start + offs_r
        r_mask = r_in[None, :] < length[:, None]
        pos = lo[:, None] + r_in[None, :]
        if HAS_PERM:
            row = tl.load(perm_ptr + pos, mask=r_mask, other=0)
        else:
            row = pos
        m = r_mask[:, :, None] & c_mask[None, None, :]
        tl.store(out_base + row[:, :, None] * C + offs_c[None, None, :], vals3, mask=m)


@triton.jit
def _gather_fill_uncovered_kernel(
    out_ptr,
    indptr_ptr,
    R,
    S,
    C,
    indptr_bstride,
    num_rblocks,
    num_cblocks,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # Without perm, the rows covered by batch b are exactly [indptr[b, 0], indptr[b, S]);
    # zero the others (usually none: the whole grid then stores nothing).
    b, rb, cb = _program_coords(num_rblocks, num_cblocks)
    rows = rb.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    lo = tl.load(indptr_ptr + b * indptr_bstride)
    hi = tl.load(indptr_ptr + b * indptr_bstride + S)
    r_mask = (rows < R) & ((rows < lo) | (rows >= hi))
    m = r_mask[:, None] & (offs_c < C)[None, :]
    zeros = tl.zeros([BLOCK_R, BLOCK_C], dtype=out_ptr.dtype.element_ty)
    tl.store(out_ptr + (b * R + rows[:, None]) * C + offs_c[None, :], zeros, mask=m)


@triton.jit
def _scatter_sum_kernel(
    src_ptr,
    index_ptr,
    out_ptr,
    N,
    C,
    dim_size,
    stride_ib,
    stride_in,
    stride_ic,
    num_nblocks,
    num_cblocks,
    BLOCK_N: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    b, nb, cb = _program_coords(num_nblocks, num_cblocks)
    offs_n = nb.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    m = (offs_n < N)[:, None] & (offs_c < C)[None, :]
    x = tl.load(src_ptr + (b * N + offs_n[:, None]) * C + offs_c[None, :], mask=m, other=0.0)
    idx = tl.load(
        index_ptr + b * stride_ib + offs_n[:, None] * stride_in + offs_c[None, :].to(tl.int64) * stride_ic,
        mask=m,
        other=0,
    )
    dst = out_ptr + (b * dim_size + idx) * C + offs_c[None, :]
    tl.atomic_add(dst, x.to(out_ptr.dtype.element_ty), mask=m, sem="relaxed")


# --------------------------------------------------------------------------------------
# Launch configuration
# --------------------------------------------------------------------------------------


def _next_pow2(x: int) -> int:
    return 1 if x <= 1 else 1 << (int(x) - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@functools.lru_cache(maxsize=None)
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _min_programs(device: torch.device) -> int:
    """Programs we want at least, so that every SM gets a few (1 under the interpreter)."""
    if device.type != "cuda":
        return 1
    index = device.index if device.index is not None else torch.cuda.current_device()
    return 4 * _num_sms(index)


def _num_warps(tile_elems: int) -> int:
    if tile_elems <= 128:
        return 1
    if tile_elems <= 512:
        return 2
    if tile_elems <= 2048:
        return 4
    return 8


def _segment_num_warps(tile_elems: int) -> int:
    # The reductions keep a register accumulator per tile element; few warps with
    # several vectors each in flight beat many warps (see the measurements above).
    return 1 if tile_elems <= 64 else 2


def _segment_config(
    B: int, S: int, C: int, positions: int, elem_size: int, tile_bytes: int, device: torch.device, warps_fn=None
):
    """Block sizes for the segment kernels.

    The tile holds ``tile_bytes`` of src (BLOCK_S * BLOCK_R * BLOCK_C elements), at
    most _TILE_BYTES_WIDE_ROWS when a tile row is >= 256 bytes.
    BLOCK_C: next power of two of C, capped at 512 bytes of a row (128 fp32 columns).
    BLOCK_R: next power of two of the average segment length, estimated as
    positions / S without reading indptr (no host sync), capped so that the tile fits.
    BLOCK_S: as many segments as fill the tile (<= 64), reduced while the grid would
    leave SMs idle.
    """
    block_c = min(_next_pow2(C), max(1, 512 // elem_size))
    if block_c * elem_size >= 256:
        tile_bytes = min(tile_bytes, _TILE_BYTES_WIDE_ROWS)
    tile = max(1, tile_bytes // elem_size)
    avg = _cdiv(max(positions, 1), max(S, 1))
    block_r = min(_next_pow2(avg), max(1, tile // block_c))
    block_s = min(_MAX_BLOCK_S, max(1, tile // (block_r * block_c)), _next_pow2(S))
    num_cblocks = _cdiv(C, block_c)
    want = _min_programs(device)
    while block_s > 1 and B * _cdiv(S, block_s) * num_cblocks < want:
        block_s //= 2
    num_sblocks = _cdiv(S, block_s)
    grid = B * num_sblocks * num_cblocks
    if grid > _MAX_GRID:
        raise ValueError(f"segment kernel grid too large ({grid} programs)")
    num_warps = (warps_fn or _segment_num_warps)(block_s * block_r * block_c)
    return block_s, block_r, block_c, num_sblocks, num_cblocks, grid, num_warps


class _on_device:
    """Make the tensors' CUDA device current while launching (no-op elsewhere)."""

    def __init__(self, device: torch.device):
        self._ctx = torch.cuda.device(device) if device.type == "cuda" else None

    def __enter__(self):
        if self._ctx is not None:
            self._ctx.__enter__()

    def __exit__(self, *exc):
        if self._ctx is not None:
            return self._ctx.__exit__(*exc)
        return False


# --------------------------------------------------------------------------------------
# Argument checks (shapes, dtypes, devices; never index values)
# --------------------------------------------------------------------------------------


def _check_float(name: str, t: torch.Tensor, dims: int) -> None:
    if t.dim() != dims:
        raise ValueError(f"{name} must be {dims}-D, got shape {tuple(t.shape)}")
    if t.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16/bfloat16/float32/float64, got {t.dtype}")


def _check_segments(src: torch.Tensor, indptr: torch.Tensor, perm: Optional[torch.Tensor]):
    _check_float("src", src, 3)
    if indptr.dim() != 2 or indptr.dtype != torch.int64:
        raise ValueError(f"indptr must be a 2-D int64 tensor, got {indptr.dtype} {tuple(indptr.shape)}")
    if indptr.size(0) not in (1, src.size(0)) or indptr.size(1) < 1:
        raise ValueError(f"indptr shape {tuple(indptr.shape)} does not fit src {tuple(src.shape)}")
    if indptr.device != src.device:
        raise ValueError("indptr and src must be on the same device")
    if perm is not None:
        if perm.dim() != 1 or perm.dtype != torch.int64:
            raise ValueError(f"perm must be a 1-D int64 tensor, got {perm.dtype} {tuple(perm.shape)}")
        if perm.device != src.device:
            raise ValueError("perm and src must be on the same device")
        perm = perm.contiguous()
    src = src.contiguous()
    indptr = indptr.contiguous()
    # Batch stride of indptr: Bi == 1 broadcasts.
    bstride = indptr.size(1) if indptr.size(0) > 1 else 0
    return src, indptr, perm, bstride


# --------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------


def segment_sum(src: torch.Tensor, indptr: torch.Tensor, perm: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``out[b, s, c] = sum_{e in segment s} src[b, row(e), c]``; returns ``(B, S, C)``.

    Deterministic; half types accumulate in float32.
    """
    src, indptr, perm, bstride = _check_segments(src, indptr, perm)
    B, N, C = src.shape
    S = indptr.size(1) - 1
    if B == 0 or S == 0 or C == 0 or N == 0 or (perm is not None and perm.numel() == 0):
        return src.new_zeros(B, S, C)
    out = torch.empty(B, S, C, dtype=src.dtype, device=src.device)
    positions = N if perm is None else perm.numel()
    bs, br, bc, nsb, ncb, grid, warps = _segment_config(
        B, S, C, positions, src.element_size(), _TILE_BYTES_SUM, src.device
    )
    with _on_device(src.device):
        _segment_sum_kernel[(grid,)](
            src, indptr, indptr if perm is None else perm, out,
            N, S, C, bstride, nsb, ncb,
            HAS_PERM=perm is not None,
            IS_FP64=src.dtype == torch.float64,
            BLOCK_S=bs, BLOCK_R=br, BLOCK_C=bc,
            num_warps=warps,
        )
    return out


def segment_minmax(
    src: torch.Tensor, indptr: torch.Tensor, perm: Optional[torch.Tensor], is_max: bool
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Max (``is_max``) or min over each segment; returns ``(values, arg)``, both ``(B, S, C)``.

    NaN wins (arg: smallest row holding a NaN); ties go to the smallest row; an empty
    segment gives value 0 and arg N. Deterministic.
    """
    src, indptr, perm, bstride = _check_segments(src, indptr, perm)
    B, N, C = src.shape
    S = indptr.size(1) - 1
    if B == 0 or S == 0 or C == 0 or N == 0 or (perm is not None and perm.numel() == 0):
        values = src.new_zeros(B, S, C)
        arg = torch.full((B, S, C), N, dtype=torch.int64, device=src.device)
        return values, arg
    values = torch.empty(B, S, C, dtype=src.dtype, device=src.device)
    arg = torch.empty(B, S, C, dtype=torch.int64, device=src.device)
    positions = N if perm is None else perm.numel()
    bs, br, bc, nsb, ncb, grid, warps = _segment_config(
        B, S, C, positions, src.element_size(), _TILE_BYTES_MINMAX, src.device
    )
    with _on_device(src.device):
        _segment_minmax_kernel[(grid,)](
            src, indptr, indptr if perm is None else perm, values, arg,
            N, S, C, bstride, nsb, ncb,
            HAS_PERM=perm is not None,
            IS_MAX=bool(is_max),
            IS_FP64=src.dtype == torch.float64,
            ARG_I32=N < _ARG_I32_LIMIT,
            BLOCK_S=bs, BLOCK_R=br, BLOCK_C=bc,
            num_warps=warps,
        )
    return values, arg


def segment_gather(
    src: torch.Tensor, indptr: torch.Tensor, perm: Optional[torch.Tensor], num_rows: int
) -> torch.Tensor:
    """Transpose of :func:`segment_sum`: ``out[b, row(e), c] = src[b, s, c]`` for ``e`` in segment ``s``.

    ``src`` is ``(B, S, C)``; returns ``(B, num_rows, C)`` with 0 in rows no segment
    covers. With ``perm``, rows should be distinct (else which value lands is undefined).
    """
    src, indptr, perm, bstride = _check_segments(src, indptr, perm)
    B, S, C = src.shape
    if indptr.size(1) - 1 != S:
        raise ValueError(f"indptr has {indptr.size(1) - 1} segments but src has {S}")
    R = int(num_rows)
    if R < 0:
        raise ValueError("num_rows must be non-negative")
    if B == 0 or R == 0 or C == 0:
        return src.new_zeros(B, R, C)
    if S == 0 or (perm is not None and perm.numel() == 0):
        return src.new_zeros(B, R, C)
    if perm is None:
        # Covered rows are the contiguous range [indptr[b, 0], indptr[b, S]): the fill
        # kernel zeroes the rest, no full memset.
        out = torch.empty(B, R, C, dtype=src.dtype, device=src.device)
        positions = R
    else:
        out = torch.zeros(B, R, C, dtype=src.dtype, device=src.device)
        positions = perm.numel()
    bs, br, bc, nsb, ncb, grid, warps = _segment_config(
        B, S, C, positions, src.element_size(), _TILE_BYTES_GATHER, src.device, warps_fn=_num_warps
    )
    with _on_device(src.device):
        _segment_gather_kernel[(grid,)](
            src, indptr, indptr if perm is None else perm, out,
            R, S, C, bstride, nsb, ncb,
            HAS_PERM=perm is not None,
            BLOCK_S=bs, BLOCK_R=br, BLOCK_C=bc,
            num_warps=warps,
        )
        if perm is None:
            fc = min(_next_pow2(C), max(1, 512 // src.element_size()))
            fr = max(1, min(_next_pow2(R), 2048 // fc))
            nrb, ncb2 = _cdiv(R, fr), _cdiv(C, fc)
            fgrid = B * nrb * ncb2
            if fgrid > _MAX_GRID:
                raise ValueError(f"segment_gather fill grid too large ({fgrid} programs)")
            _gather_fill_uncovered_kernel[(fgrid,)](
                out, indptr, R, S, C, bstride, nrb, ncb2,
                BLOCK_R=fr, BLOCK_C=fc, num_warps=_num_warps(fr * fc),
            )
    return out


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """``out[b, index[b, n, c], c] += src[b, n, c]``; returns ``(B, dim_size, C)``.

    ``index`` is ``(B, N, C)`` int64 with any strides (an expanded view is read in
    place). Uses atomic adds (float32 accumulation for half types): not bitwise
    deterministic.
    """
    _check_float("src", src, 3)
    if index.dtype != torch.int64 or tuple(index.shape) != tuple(src.shape):
        raise ValueError(f"index must be int64 with src's shape {tuple(src.shape)}, got {index.dtype} {tuple(index.shape)}")
    if index.device != src.device:
        raise ValueError("index and src must be on the same device")
    D = int(dim_size)
    if D < 0:
        raise ValueError("dim_size must be non-negative")
    src = src.contiguous()
    B, N, C = src.shape
    if B == 0 or N == 0 or C == 0 or D == 0:
        return src.new_zeros(B, D, C)
    acc_dtype = torch.float32 if src.dtype in (torch.float16, torch.bfloat16) else src.dtype
    out = torch.zeros(B, D, C, dtype=acc_dtype, device=src.device)
    block_c = min(_next_pow2(C), 128)
    block_n = max(1, min(_next_pow2(N), _TILE_SCATTER // block_c))
    nnb, ncb = _cdiv(N, block_n), _cdiv(C, block_c)
    grid = B * nnb * ncb
    if grid > _MAX_GRID:
        raise ValueError(f"scatter_sum grid too large ({grid} programs)")
    sb, sn, sc = index.stride()
    with _on_device(src.device):
        _scatter_sum_kernel[(grid,)](
            src, index, out, N, C, D, sb, sn, sc, nnb, ncb,
            BLOCK_N=block_n, BLOCK_C=block_c, num_warps=_num_warps(block_n * block_c),
        )
    return out if out.dtype == src.dtype else out.to(src.dtype)
