"""Scatter and segment reductions with torch_scatter's semantics.

``scatter(src, index, dim, out, dim_size, reduce)`` reduces the slices of ``src``
along ``dim`` into the slots named by ``index``; ``segment_csr(src, indptr, out,
reduce)`` reduces the contiguous segments that ``indptr`` delimits. Both follow
torch_scatter exactly (index broadcasting, empty slots give 0 and arg
``src.size(dim)``, ``mean`` divides by the count clamped to 1, ``out`` accumulates for
scatter sums and is overwritten for segments) and add:

* every backend of the operator contract (``backend=`` per call, see
  :mod:`equiops.backend`), gradients, double backward, ``torch.compile``/``export``;
* determinism: the CPU kernels and all segment kernels are deterministic; on CUDA the
  scatter sum is atomic unless determinism is asked for (then it sorts the index);
* NaN propagates through max/min (the arg is the first NaN row); ties go to the
  smallest row.

Where indices are checked: on CPU the C++ kernels check every index while they
reduce (no extra pass). On CUDA the eager call checks the range once with one host
synchronisation (``index.min()/max()``, ``indptr`` monotonicity); inside
``torch.compile`` that check is skipped, so build an :class:`equiops.Graph` (checked
once when built) for the hot path. ``dim_size=None`` reads ``index.max()`` (a
synchronisation on CUDA, and a graph break under compile): pass it explicitly there.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .. import backend as _backend
from ..reference import segment as _ref
from . import segment as _ops

__all__ = [
    "scatter",
    "scatter_sum",
    "scatter_add",
    "scatter_mean",
    "scatter_max",
    "scatter_min",
    "segment_csr",
    "segment_sum_csr",
    "segment_add_csr",
    "segment_mean_csr",
    "segment_max_csr",
    "segment_min_csr",
    "gather_csr",
]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_REDUCES = ("sum", "add", "mean", "max", "min")


# ---------------------------------------------------------------------------- checks
def _check_src(src, fn: str) -> None:
    if not isinstance(src, Tensor):
        raise TypeError(f"{fn}: src must be a torch.Tensor, got {type(src).__name__}")
    if src.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{fn}: src must be float16, bfloat16, float32 or float64, got {src.dtype}")


def _check_index_tensor(index, src: Tensor, fn: str, name: str = "index") -> Tensor:
    if not isinstance(index, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(index).__name__}")
    if index.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{fn}: {name} must be an int64 (or int32) tensor, got {index.dtype}")
    if index.device != src.device:
        raise ValueError(f"{fn}: {name} must be on {src.device} like src, got {index.device}")
    return index.long()


def _normalize_dim(dim, ndim: int, fn: str) -> int:
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"{fn}: dim must be an int, got {type(dim).__name__}")
    if not -ndim <= dim < ndim:
        raise IndexError(f"{fn}: dim must be in [{-ndim}, {ndim - 1}] for src with {ndim} dims, got {dim}")
    return dim % ndim


def _check_reduce(reduce, fn: str) -> str:
    if reduce not in _REDUCES:
        raise ValueError(f"{fn}: reduce must be one of {_REDUCES}, got {reduce!r}")
    return "sum" if reduce == "add" else reduce


def _broadcast_index(index: Tensor, src: Tensor, dim: int, fn: str) -> Tensor:
    """torch_scatter's broadcast: a 1-D index lies along ``dim``; otherwise missing
    trailing dims are appended; then it expands to ``src``'s shape (a view)."""
    if src.dim() == 0:
        raise ValueError(f"{fn}: src must have at least one dimension, got a scalar")
    if index.dim() == 1:
        if index.numel() != src.size(dim):
            raise ValueError(
                f"{fn}: a 1-D index must have src.size(dim) = {src.size(dim)} entries "
                f"(dim = {dim}), got {index.numel()}"
            )
        view = [1] * src.dim()
        view[dim] = index.numel()
        return index.view(view).expand(src.shape)
    if index.dim() > src.dim():
        raise ValueError(f"{fn}: index has {index.dim()} dims, more than src's {src.dim()} (shape {tuple(src.shape)})")
    expanded = index.reshape(tuple(index.shape) + (1,) * (src.dim() - index.dim()))
    for d, (i, s) in enumerate(zip(expanded.shape, src.shape)):
        if i != s and i != 1:
            raise ValueError(
                f"{fn}: index of shape {tuple(index.shape)} does not broadcast to src's shape "
                f"{tuple(src.shape)} (dim {d}: {i} vs {s})"
            )
    return expanded.expand(src.shape)


def _prod(sizes: Sequence[int]) -> int:
    out = 1
    for s in sizes:
        out *= s
    return out


def _as_3d(t: Tensor, dim: int) -> Tensor:
    """View ``t`` as ``(B, N, C)`` around ``dim`` (copies only if the view is impossible)."""
    return t.reshape(_prod(t.shape[:dim]), t.shape[dim], _prod(t.shape[dim + 1:]))


def _compiling() -> bool:
    return _backend.tracing()


def _check_index_range_on_device(index: Tensor, dim_size: int, fn: str) -> None:
    """Eager range check for non-CPU devices (one host synchronisation)."""
    if index.numel() == 0 or index.device.type == "cpu" or _compiling():
        return
    lo, hi = int(index.min()), int(index.max())
    if lo < 0 or hi >= dim_size:
        bad = lo if lo < 0 else hi
        raise IndexError(f"{fn}: index holds {bad}, expected values in [0, {dim_size}) (dim_size = {dim_size})")


def _check_out(out: Optional[Tensor], src: Tensor, shape: Sequence[int], fn: str) -> None:
    if out is None:
        return
    if not isinstance(out, Tensor):
        raise TypeError(f"{fn}: out must be a torch.Tensor or None, got {type(out).__name__}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{fn}: out must have shape {tuple(shape)}, got {tuple(out.shape)}")
    if out.dtype != src.dtype:
        raise TypeError(f"{fn}: out must have src's dtype {src.dtype}, got {out.dtype}")
    if out.device != src.device:
        raise ValueError(f"{fn}: out must be on {src.device} like src, got {out.device}")


# --------------------------------------------------------------------------- scatter
def _prepare_scatter(src, index, dim, out, dim_size, fn):
    _check_src(src, fn)
    index = _check_index_tensor(index, src, fn)
    dim = _normalize_dim(dim, max(src.dim(), 1), fn)
    index = _broadcast_index(index, src, dim, fn)
    if dim_size is None:
        if out is not None and isinstance(out, Tensor) and out.dim() == src.dim():
            dim_size = out.size(dim)
        else:
            dim_size = int(index.max()) + 1 if index.numel() > 0 else 0
    if not isinstance(dim_size, (int, torch.SymInt)) or isinstance(dim_size, bool):
        raise TypeError(f"{fn}: dim_size must be an int or None, got {type(dim_size).__name__}")
    if dim_size < 0:
        raise ValueError(f"{fn}: dim_size must be >= 0, got {dim_size}")
    out_shape = list(src.shape)
    out_shape[dim] = dim_size
    _check_out(out, src, out_shape, fn)
    return index, dim, dim_size, out_shape


def _scatter_3d(src3: Tensor, index3: Tensor, dim_size: int, reduce: str, backend: Optional[str], fn: str):
    """Dispatch one canonical call; ``reduce`` is sum/max/min. Returns out or (out, arg)."""
    name = _backend.resolve(backend, src3.device, "scatter")
    if name == "torch":
        if reduce == "sum":
            return _ref.scatter_sum(src3, index3, dim_size)
        return _ref.scatter_minmax(src3, index3, dim_size, reduce)
    _check_index_range_on_device(index3, dim_size, fn)
    if reduce == "sum":
        return _ops.scatter_sum(src3.contiguous(), index3, dim_size, name)
    return _ops.scatter_minmax(src3.contiguous(), index3, dim_size, reduce, name)


def _count(index3: Tensor, dim_size: int, dtype: torch.dtype) -> Tensor:
    """How many rows land in each slot, ``(B or 1, dim_size, C or 1)`` in ``dtype``."""
    B, N, C = index3.shape
    if index3.numel() == 0:
        return torch.zeros(B, dim_size, C, dtype=dtype, device=index3.device)
    row = _ops.row_index(index3)
    if row is not None:
        counts = torch.zeros(dim_size, dtype=dtype, device=index3.device)
        return counts.index_add_(0, row, torch.ones_like(row, dtype=dtype))[None, :, None]
    ones = torch.ones(index3.shape, dtype=dtype, device=index3.device)
    return torch.zeros(B, dim_size, C, dtype=dtype, device=index3.device).scatter_add_(1, index3, ones)


def scatter(
    src: Tensor,
    index: Tensor,
    dim: int = -1,
    out: Optional[Tensor] = None,
    dim_size: Optional[int] = None,
    reduce: str = "sum",
    *,
    backend: Optional[str] = None,
) -> Tensor:
    """Reduce ``src`` into the slots that ``index`` names along ``dim`` (torch_scatter's ``scatter``).

    Args:
        src: float tensor of any shape.
        index: int64 tensor; 1-D along ``dim``, or with ``src``'s leading dims (trailing
            dims broadcast). Values in ``[0, dim_size)``.
        dim: the dimension of ``src`` that is reduced.
        out: optional tensor of the output shape; sums accumulate into it, ``mean``
            gives ``(out + sum) / count``, max/min keep ``out``'s entries that no row beats.
        dim_size: the output size along ``dim`` (default ``index.max() + 1``).
        reduce: ``"sum"`` (or ``"add"``), ``"mean"``, ``"max"`` or ``"min"``.
        backend: see :mod:`equiops.backend`.

    Returns:
        ``src``'s shape with ``dim`` resized to ``dim_size``; empty slots are 0.
    """
    reduce = _check_reduce(reduce, "equiops.scatter")
    if reduce in ("max", "min"):
        return _scatter_arg(src, index, dim, out, dim_size, reduce, backend, "equiops.scatter")[0]
    return _scatter_sum_mean(src, index, dim, out, dim_size, reduce, backend)


def _scatter_sum_mean(src, index, dim, out, dim_size, reduce, backend):
    fn = f"equiops.scatter_{reduce}"
    index, dim, dim_size, out_shape = _prepare_scatter(src, index, dim, out, dim_size, fn)
    index3 = _as_3d(index, dim)
    total = _scatter_3d(_as_3d(src, dim), index3, dim_size, "sum", backend, fn).reshape(out_shape)
    if out is not None:
        total = out.add_(total)
    if reduce == "mean":
        count = _count(index3, dim_size, src.dtype).clamp_(min=1)
        shape = [1] * len(out_shape)
        shape[dim] = dim_size
        mean = total / (count.reshape(shape) if count.shape[0] == 1 and count.shape[2] == 1 else count.reshape(out_shape))
        return out.copy_(mean) if out is not None else mean
    return total


def _scatter_arg(src, index, dim, out, dim_size, reduce, backend, fn) -> Tuple[Tensor, Tensor]:
    index, dim, dim_size, out_shape = _prepare_scatter(src, index, dim, out, dim_size, fn)
    values, arg = _scatter_3d(_as_3d(src, dim), _as_3d(index, dim), dim_size, reduce, backend, fn)
    values, arg = values.reshape(out_shape), arg.reshape(out_shape)
    if out is not None:
        values, arg = _merge_with_out(values, arg, out, src.size(dim), reduce)
    return values, arg


def _merge_with_out(values: Tensor, arg: Tensor, out: Tensor, num_rows: int, reduce: str):
    """torch_scatter's max/min with ``out``: ``out``'s entries are initial values that
    a row must beat (strictly); where none does, ``out`` stays and arg is ``num_rows``."""
    found = arg < num_rows
    beats = (values > out) if reduce == "max" else (values < out)
    take = found & (beats | torch.isnan(values)) & ~torch.isnan(out)
    merged = torch.where(take, values, out)
    arg = torch.where(take, arg, num_rows)
    return out.copy_(merged), arg


def scatter_sum(src, index, dim=-1, out=None, dim_size=None, *, backend=None) -> Tensor:
    """``scatter(..., reduce="sum")``."""
    return _scatter_sum_mean(src, index, dim, out, dim_size, "sum", backend)


scatter_add = scatter_sum


def scatter_mean(src, index, dim=-1, out=None, dim_size=None, *, backend=None) -> Tensor:
    """``scatter(..., reduce="mean")``: the sum divided by the count clamped to at least 1."""
    return _scatter_sum_mean(src, index, dim, out, dim_size, "mean", backend)


def scatter_max(src, index, dim=-1, out=None, dim_size=None, *, backend=None) -> Tuple[Tensor, Tensor]:
    """``(values, argmax)``; argmax is the row along ``dim``, ``src.size(dim)`` for empty slots."""
    return _scatter_arg(src, index, dim, out, dim_size, "max", backend, "equiops.scatter_max")


def scatter_min(src, index, dim=-1, out=None, dim_size=None, *, backend=None) -> Tuple[Tensor, Tensor]:
    """``(values, argmin)``; argmin is the row along ``dim``, ``src.size(dim)`` for empty slots."""
    return _scatter_arg(src, index, dim, out, dim_size, "min", backend, "equiops.scatter_min")


# --------------------------------------------------------------------------- segment
def _prepare_segment(src, indptr, fn):
    """Canonical ``(src3, indptr2, dim)`` for torch_scatter's CSR convention: the
    reduced dim is ``indptr.dim() - 1``, indptr's leading dims broadcast over src's."""
    _check_src(src, fn)
    indptr = _check_index_tensor(indptr, src, fn, "indptr")
    if indptr.dim() == 0 or indptr.size(-1) < 1:
        raise ValueError(f"{fn}: indptr must have at least one dimension of size >= 1, got shape {tuple(indptr.shape)}")
    dim = indptr.dim() - 1
    if dim >= src.dim():
        raise ValueError(
            f"{fn}: indptr of shape {tuple(indptr.shape)} reduces dim {dim}, but src has shape {tuple(src.shape)}"
        )
    lead = indptr.shape[:-1]
    for d, (i, s) in enumerate(zip(lead, src.shape[:dim])):
        if i != s and i != 1:
            raise ValueError(
                f"{fn}: indptr's leading shape {tuple(lead)} does not broadcast to src's {tuple(src.shape[:dim])} (dim {d})"
            )
    B = _prod(src.shape[:dim])
    if all(i == 1 for i in lead):
        indptr2 = indptr.reshape(1, indptr.size(-1))
    else:
        indptr2 = indptr.expand(tuple(src.shape[:dim]) + (indptr.size(-1),)).reshape(B, indptr.size(-1))
    return _as_3d(src, dim), indptr2, dim


def _check_indptr_on_device(indptr2: Tensor, limit: int, fn: str) -> None:
    """Eager indptr check for non-CPU devices (one host synchronisation)."""
    if indptr2.device.type == "cpu" or _compiling():
        return
    if bool((indptr2[:, 0] < 0).any()) or bool((indptr2[:, 1:] < indptr2[:, :-1]).any()):
        raise ValueError(f"{fn}: indptr must start at >= 0 and be non-decreasing")
    last = int(indptr2[:, -1].max())
    if last > limit:
        raise IndexError(f"{fn}: indptr[..., -1] = {last} exceeds the number of rows N = {limit}")


def _segment_3d(src3, indptr2, reduce, backend, fn):
    name = _backend.resolve(backend, src3.device, "segment")
    if name == "torch":
        if reduce == "sum":
            return _ref.segment_sum(src3, indptr2)
        return _ref.segment_minmax(src3, indptr2, None, reduce)
    _check_indptr_on_device(indptr2, src3.size(1), fn)
    if reduce == "sum":
        return _ops.segment_sum(src3.contiguous(), indptr2.contiguous(), None, name)
    return _ops.segment_minmax(src3.contiguous(), indptr2.contiguous(), None, reduce, name)


def _segment(src, indptr, out, reduce, backend, fn):
    src3, indptr2, dim = _prepare_segment(src, indptr, fn)
    out_shape = list(src.shape)
    out_shape[dim] = indptr.size(-1) - 1
    _check_out(out, src, out_shape, fn)
    result = _segment_3d(src3, indptr2, "sum" if reduce == "mean" else reduce, backend, fn)
    if reduce in ("max", "min"):
        values, arg = result[0].reshape(out_shape), result[1].reshape(out_shape)
    else:
        values, arg = result.reshape(out_shape), None
        if reduce == "mean":
            count = (indptr2[:, 1:] - indptr2[:, :-1]).clamp(min=1).to(src.dtype)
            count_shape = [1] * len(out_shape)
            count_shape[dim] = out_shape[dim]
            if count.shape[0] > 1:
                count_shape[:dim] = out_shape[:dim]
            values = values / count.reshape(count_shape)
    if out is not None:
        values = out.copy_(values)
    return values, arg


def segment_csr(src: Tensor, indptr: Tensor, out: Optional[Tensor] = None, reduce: str = "sum", *, backend: Optional[str] = None) -> Tensor:
    """Reduce the segments ``[indptr[i], indptr[i+1])`` of ``src`` (torch_scatter's ``segment_csr``).

    Args:
        src: float tensor; the reduced dim is ``indptr.dim() - 1``.
        indptr: int64 ``(..., S + 1)``, non-decreasing, starting at >= 0 and ending at
            <= ``src.size(dim)``; its leading dims broadcast over ``src``'s.
        out: optional output tensor, overwritten.
        reduce: ``"sum"``/``"add"``, ``"mean"``, ``"max"`` or ``"min"``.

    Returns:
        ``src``'s shape with the reduced dim resized to ``S``. Deterministic on every
        backend (fixed summation order).
    """
    reduce = _check_reduce(reduce, "equiops.segment_csr")
    return _segment(src, indptr, out, reduce, backend, "equiops.segment_csr")[0]


def segment_sum_csr(src, indptr, out=None, *, backend=None) -> Tensor:
    return _segment(src, indptr, out, "sum", backend, "equiops.segment_sum_csr")[0]


segment_add_csr = segment_sum_csr


def segment_mean_csr(src, indptr, out=None, *, backend=None) -> Tensor:
    return _segment(src, indptr, out, "mean", backend, "equiops.segment_mean_csr")[0]


def segment_max_csr(src, indptr, out=None, *, backend=None) -> Tuple[Tensor, Tensor]:
    """``(values, argmax)``; argmax indexes ``src`` along the reduced dim, ``src.size(dim)`` when empty."""
    return _segment(src, indptr, out, "max", backend, "equiops.segment_max_csr")


def segment_min_csr(src, indptr, out=None, *, backend=None) -> Tuple[Tensor, Tensor]:
    """``(values, argmin)``; argmin indexes ``src`` along the reduced dim, ``src.size(dim)`` when empty."""
    return _segment(src, indptr, out, "min", backend, "equiops.segment_min_csr")


def gather_csr(src: Tensor, indptr: Tensor, out: Optional[Tensor] = None, *, backend: Optional[str] = None) -> Tensor:
    """Repeat each segment's value over its rows (torch_scatter's ``gather_csr``, the
    transpose of ``segment_csr`` sum).

    ``src`` has ``S`` entries along ``dim = indptr.dim() - 1``; the output has
    ``out.size(dim)`` rows if ``out`` is given, else ``indptr[..., -1]`` rows (read on
    the host). Rows that no segment covers are 0.
    """
    fn = "equiops.gather_csr"
    src3, indptr2, dim = _prepare_segment(src, indptr, fn)
    if src.size(dim) != indptr.size(-1) - 1:
        raise ValueError(
            f"{fn}: src must have indptr.size(-1) - 1 = {indptr.size(-1) - 1} entries along dim "
            f"{dim}, got shape {tuple(src.shape)}"
        )
    if out is not None and isinstance(out, Tensor) and out.dim() == src.dim():
        num_rows = out.size(dim)
    else:
        num_rows = int(indptr.max()) if indptr.numel() > 0 else 0
    out_shape = list(src.shape)
    out_shape[dim] = num_rows
    _check_out(out, src, out_shape, fn)
    name = _backend.resolve(backend, src.device, "segment")
    if name == "torch":
        result = _ref.segment_gather(src3, indptr2, None, num_rows)
    else:
        _check_indptr_on_device(indptr2, num_rows, fn)
        result = _ops.segment_gather(src3.contiguous(), indptr2.contiguous(), None, num_rows, name)
    result = result.reshape(out_shape)
    return out.copy_(result) if out is not None else result
