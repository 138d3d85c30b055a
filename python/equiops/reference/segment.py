"""Plain-PyTorch reference for the scatter/segment kernels, in their canonical form.

These functions define what every backend (C++ CPU, CUDA C++, Triton) must compute.
They work on the canonical 3-D layout that the public API reduces every call to:

* ``src``: ``(B, N, C)`` float tensor; ``N`` is the reduced ("row") dimension.
* ``indptr``: ``(Bi, S + 1)`` int64 with ``Bi`` in ``{1, B}``; batch ``b`` uses
  ``indptr[b]`` (or ``indptr[0]`` when ``Bi == 1``). Segment ``s`` covers the
  positions ``e`` in ``[indptr[s], indptr[s + 1])``.
* ``perm``: ``None`` or ``(P,)`` int64. Position ``e`` stands for row ``perm[e]``
  (``row(e) = perm[e]``) or, without ``perm``, for row ``e``. This is how a
  receiver-sorted :class:`equiops.Graph` reduces edge data in its original order.
* ``index``: ``(B, N, C)`` int64, any strides (an expanded 1-D index is fine).

Conventions shared by all backends:

* max/min: the result is NaN if the segment holds a NaN (the arg is then the
  smallest row holding a NaN); otherwise ties go to the smallest row index.
  ``arg`` is the row index ``n`` in ``[0, N)``; an empty segment gives value 0
  and arg ``N`` (torch_scatter's convention).
* sum of an empty segment is 0.

The references favour obviousness over speed; they are the ground truth in tests
and the ``backend="torch"`` implementation.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch


def _positions_rows_segments(indptr_b: torch.Tensor, perm: Optional[torch.Tensor]):
    """For one batch: (rows, segment ids) of every covered position, in order."""
    num_segments = indptr_b.numel() - 1
    counts = indptr_b[1:] - indptr_b[:-1]
    seg = torch.repeat_interleave(torch.arange(num_segments, device=indptr_b.device), counts)
    positions = torch.arange(int(indptr_b[0]), int(indptr_b[-1]), device=indptr_b.device)
    rows = positions if perm is None else perm[positions]
    return rows, seg


def _batch_indptr(indptr: torch.Tensor, b: int) -> torch.Tensor:
    return indptr[b] if indptr.size(0) > 1 else indptr[0]


def segment_sum(src: torch.Tensor, indptr: torch.Tensor, perm: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``out[b, s, c] = sum_{e in segment s} src[b, row(e), c]``; returns ``(B, S, C)``."""
    B, _, C = src.shape
    S = indptr.size(1) - 1
    out = src.new_zeros(B, S, C)
    for b in range(B):
        rows, seg = _positions_rows_segments(_batch_indptr(indptr, b), perm)
        out[b].index_add_(0, seg, src[b, rows])
    return out


def segment_minmax(
    src: torch.Tensor, indptr: torch.Tensor, perm: Optional[torch.Tensor], reduce: str
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Max or min over each segment; returns ``(values, arg)``, both ``(B, S, C)``."""
    B, N, C = src.shape
    S = indptr.size(1) - 1
    values, args = [], []
    for b in range(B):
        rows, seg = _positions_rows_segments(_batch_indptr(indptr, b), perm)
        picked = src[b, rows][None]  # (1, k, C) in position order
        slot = seg[None, :, None].expand_as(picked)
        v, a = _scatter_extreme(picked, slot, S, reduce, row_ids=rows, empty=N)
        values.append(v)
        args.append(a)
    if B == 0:
        return src.new_zeros(0, S, C), torch.zeros(0, S, C, dtype=torch.long, device=src.device)
    return torch.cat(values), torch.cat(args)


def _scatter_extreme(src, slot, S, reduce, row_ids=None, empty=None):
    """Max/min of the rows of ``src (B, K, C)`` sent to ``slot (B, K, C)`` in ``[0, S)``.

    Returns ``(values, arg)``: ``arg`` is the winning row id (``row_ids[k]``, or the
    position ``k`` without ``row_ids``), ``empty`` (default ``K``) for empty slots.
    NaN wins (the smallest NaN row), then the extreme, ties to the smallest row id.
    ``values`` is gathered from ``src`` at the winner, so its gradient goes there only.
    """
    B, K, C = src.shape
    device = src.device
    ids = (torch.arange(K, device=device) if row_ids is None else row_ids)[None, :, None].expand(B, K, C)
    fill = float("-inf") if reduce == "max" else float("inf")
    nan = torch.isnan(src)
    clean = src.masked_fill(nan, fill)
    extreme = clean.new_full((B, S, C), fill).scatter_reduce(
        1, slot, clean, "amax" if reduce == "max" else "amin", include_self=True
    )
    has_nan = torch.zeros(B, S, C, dtype=torch.long, device=device).scatter_reduce(
        1, slot, nan.long(), "amax", include_self=True
    )
    hit = torch.where(has_nan.gather(1, slot).bool(), nan, clean == extreme.gather(1, slot))
    none = torch.iinfo(torch.long).max

    def first(candidates):
        init = torch.full((B, S, C), none, dtype=torch.long, device=device)
        return init.scatter_reduce(1, slot, candidates, "amin", include_self=True)

    arg = first(torch.where(hit, ids, none))
    found = arg != none
    # The position of the winning row, to gather its value (and route its gradient).
    positions = torch.arange(K, device=device)[None, :, None].expand(B, K, C)
    position = first(torch.where(hit & (ids == arg.gather(1, slot)), positions, none))
    values = src.gather(1, position.clamp(max=max(K - 1, 0))) if K > 0 else src.new_zeros(B, S, C)
    values = torch.where(found, values, 0)
    arg = torch.where(found, arg, K if empty is None else empty)
    return values, arg


def segment_gather(
    src: torch.Tensor, indptr: torch.Tensor, perm: Optional[torch.Tensor], num_rows: int
) -> torch.Tensor:
    """Transpose of :func:`segment_sum`: ``out[b, row(e), c] = src[b, s, c]`` for ``e`` in segment ``s``.

    Returns ``(B, num_rows, C)``; rows that no segment covers are 0.
    """
    B, _, C = src.shape
    out = src.new_zeros(B, num_rows, C)
    for b in range(B):
        rows, seg = _positions_rows_segments(_batch_indptr(indptr, b), perm)
        out[b, rows] = src[b, seg]
    return out


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """``out[b, index[b, n, c], c] += src[b, n, c]``; returns ``(B, dim_size, C)``."""
    B, _, C = src.shape
    out = src.new_zeros(B, dim_size, C)
    return out.scatter_add_(1, index.contiguous(), src)


def scatter_minmax(
    src: torch.Tensor, index: torch.Tensor, dim_size: int, reduce: str
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Max or min of the rows sent to each slot; returns ``(values, arg)``, both ``(B, dim_size, C)``."""
    return _scatter_extreme(src, index.contiguous(), dim_size, reduce)
