"""A reusable view of a directed graph for message passing.

Edges are given explicitly as ``(src, dst)``: edge ``e`` sends from node ``src[e]``
to node ``dst[e]``. Which end aggregates is the caller's choice (MACE aggregates at
``edge_index[1]``, NequIP at ``edge_index[0]``, the EGNN original at row 0): build
the graph with the receiving end as ``dst``.

Built once per graph and reused by every layer and by the backward passes, it holds

* the receiver-sorted CSR: ``dst_perm`` (edges ordered by receiver, stably, so edges
  keep their input order within a receiver) and ``dst_indptr`` (``num_nodes + 1``);
* the sender-sorted CSR ``src_perm`` / ``src_indptr``, which transposed message
  passing (gradients w.r.t. sender features) reduces over;
* ``in_degree`` and ``out_degree``.

All reductions through a Graph are deterministic (fixed order per receiver) on every
backend, and the indices are checked once here (one host synchronisation on GPU), not
in every layer.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from . import backend as _backend
from .ops import segment as _ops
from .reference import segment as _ref

__all__ = ["Graph"]

# Row width from which Graph.aggregate's sum on CPU scatters edges in order instead of
# gathering them through the receiver perm. `python -m equiops bench` shows both: its
# "scatter (unsorted index)" rows are the in-order path. Over five runs (E = 1e6, 2 cores)
# that path was faster in 4 of 5 at D = 16 (12-15 vs 15-21 ms) and slower or equal at
# D <= 3; from D = 64 the two were within noise of each other and of index_add_.
_CPU_DIRECT_MIN_WIDTH = 16


def _csr(keys: Tensor, num_nodes: int) -> Tuple[Tensor, Tensor]:
    sorted_keys, perm = torch.sort(keys, stable=True)
    indptr = torch.searchsorted(sorted_keys, torch.arange(num_nodes + 1, device=keys.device))
    return perm, indptr


class Graph:
    """Receiver- and sender-sorted CSR views of the edges ``src[e] -> dst[e]``.

    Args:
        src: ``(E,)`` int64 (or int32) sender of each edge.
        dst: ``(E,)`` int64 (or int32) receiver of each edge.
        num_nodes: number of nodes (default ``max(src.max(), dst.max()) + 1``).
        validate: check that every index is in ``[0, num_nodes)`` (one synchronisation
            on GPU). Skip only for indices already known to be valid.

    Attributes:
        src, dst: ``(E,)`` int64, as given.
        dst_perm, src_perm: ``(E,)`` int64 edge ids sorted by receiver / sender (stable).
        dst_indptr, src_indptr: ``(num_nodes + 1,)`` int64 CSR offsets into the perms.
        in_degree, out_degree: ``(num_nodes,)`` int64.
        dst_sorted, src_sorted: whether the edges are already in that order (then the
            reductions skip the perm and read edge rows sequentially).
    """

    def __init__(self, src: Tensor, dst: Tensor, num_nodes: Optional[int] = None, *, validate: bool = True):
        fn = "equiops.Graph"
        for name, t in (("src", src), ("dst", dst)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dtype not in (torch.int64, torch.int32):
                raise TypeError(f"{fn}: {name} must be an int64 (or int32) tensor, got {t.dtype}")
            if t.dim() != 1:
                raise ValueError(f"{fn}: {name} must be 1-D (E,), got shape {tuple(t.shape)}")
        if src.numel() != dst.numel():
            raise ValueError(f"{fn}: src and dst must have the same length, got {src.numel()} and {dst.numel()}")
        if src.device != dst.device:
            raise ValueError(f"{fn}: src and dst must be on one device, got {src.device} and {dst.device}")
        src, dst = src.long(), dst.long()
        if num_nodes is None:
            num_nodes = int(torch.maximum(src.max(), dst.max())) + 1 if src.numel() > 0 else 0
        # A SymInt while torch.export / make_fx trace with symbolic sizes.
        if not isinstance(num_nodes, (int, torch.SymInt)) or isinstance(num_nodes, bool) or num_nodes < 0:
            raise ValueError(f"{fn}: num_nodes must be an int >= 0, got {num_nodes!r}")
        if validate and not _backend.tracing() and src.numel() > 0:
            for name, t in (("src", src), ("dst", dst)):
                lo, hi = int(t.min()), int(t.max())
                if lo < 0 or hi >= num_nodes:
                    bad = lo if lo < 0 else hi
                    raise IndexError(f"{fn}: {name} holds {bad}, expected node ids in [0, {num_nodes}) (num_nodes = {num_nodes})")
        self.src, self.dst, self.num_nodes = src, dst, num_nodes
        self.dst_perm, self.dst_indptr = _csr(dst, num_nodes)
        self.src_perm, self.src_indptr = _csr(src, num_nodes)
        self.in_degree = self.dst_indptr[1:] - self.dst_indptr[:-1]
        self.out_degree = self.src_indptr[1:] - self.src_indptr[:-1]
        # Edges already in receiver (sender) order need no gather through the perm:
        # the reductions then read rows sequentially, several times faster on CPU.
        # A Graph built inside a compiled region keeps the perms (the check is
        # data-dependent, and the perms are right either way).
        if _backend.tracing():
            self.dst_sorted = self.src_sorted = False
        else:
            self.dst_sorted = bool((dst[1:] >= dst[:-1]).all()) if dst.numel() > 1 else True
            self.src_sorted = bool((src[1:] >= src[:-1]).all()) if src.numel() > 1 else True

    @property
    def num_edges(self) -> int:
        return self.src.numel()

    @property
    def device(self) -> torch.device:
        return self.src.device

    def to(self, device) -> "Graph":
        """A copy on ``device`` (no re-sorting, no re-validation)."""
        new = Graph.__new__(Graph)
        for key, value in self.__dict__.items():
            new.__dict__[key] = value.to(device) if isinstance(value, Tensor) else value
        return new

    def __repr__(self) -> str:
        return f"Graph(num_nodes={self.num_nodes}, num_edges={self.num_edges}, device={self.device})"

    def _view(self, at: str):
        """(perm or None when already sorted, indptr, degree, node id of each edge)."""
        if at == "dst":
            return None if self.dst_sorted else self.dst_perm, self.dst_indptr, self.in_degree, self.dst
        if at == "src":
            return None if self.src_sorted else self.src_perm, self.src_indptr, self.out_degree, self.src
        raise ValueError(f"equiops.Graph: at must be 'dst' or 'src', got {at!r}")

    def _edge_values(self, values: Tensor, fn: str) -> Tensor:
        if not isinstance(values, Tensor):
            raise TypeError(f"{fn}: values must be a torch.Tensor, got {type(values).__name__}")
        if values.dim() == 0 or values.size(0) != self.num_edges:
            raise ValueError(f"{fn}: values must have shape (E={self.num_edges}, ...), got {tuple(values.shape)}")
        if values.device != self.device:
            raise ValueError(f"{fn}: values must be on the graph's device {self.device}, got {values.device}")
        if not values.is_floating_point():
            raise TypeError(f"{fn}: values must be a float tensor, got {values.dtype}")
        # the width explicitly: -1 is ambiguous for a graph without edges
        return values.reshape(1, self.num_edges, values.shape[1:].numel())

    def aggregate(self, values: Tensor, reduce: str = "sum", at: str = "dst", *, backend: Optional[str] = None) -> Tensor:
        """Reduce per-edge ``values (E, ...)`` at each edge's ``at`` node -> ``(num_nodes, ...)``.

        ``reduce`` is ``"sum"``, ``"mean"`` (divided by the degree clamped to 1), ``"max"``
        or ``"min"``; nodes without edges get 0. Deterministic on every backend.
        """
        fn = "equiops.Graph.aggregate"
        if reduce in ("max", "min"):
            return self.aggregate_arg(values, reduce, at, backend=backend)[0]
        if reduce not in ("sum", "add", "mean"):
            raise ValueError(f"{fn}: reduce must be 'sum', 'mean', 'max' or 'min', got {reduce!r}")
        perm, indptr, degree, node = self._view(at)
        v3 = self._edge_values(values, fn).contiguous()
        name = _backend.resolve(backend, v3.device, "segment")
        if name == "torch":
            out = _ref.segment_sum(v3, indptr[None], perm)
        elif name == "cpu" and perm is not None and v3.size(2) >= _CPU_DIRECT_MIN_WIDTH:
            # Wide rows on CPU: reading edges in order and adding into the (cache-sized)
            # node rows beats gathering rows through the perm (see _CPU_DIRECT_MIN_WIDTH);
            # both add each node's edges in edge order, so the result is bitwise the same.
            index = node.view(1, -1, 1).expand(v3.shape)
            out = _ops.scatter_sum(v3, index, self.num_nodes, name)
        else:
            out = _ops.segment_sum(v3, indptr[None], perm, name)
        out = out.reshape((self.num_nodes,) + tuple(values.shape[1:]))
        if reduce == "mean":
            out = out / degree.clamp(min=1).to(out.dtype).reshape((-1,) + (1,) * (values.dim() - 1))
        return out

    def aggregate_arg(self, values: Tensor, reduce: str = "max", at: str = "dst", *, backend: Optional[str] = None):
        """``(values, arg)`` of the max or min over each node's edges; arg is an edge id,
        ``E`` for nodes without edges."""
        fn = "equiops.Graph.aggregate_arg"
        if reduce not in ("max", "min"):
            raise ValueError(f"{fn}: reduce must be 'max' or 'min', got {reduce!r}")
        perm, indptr, _, _ = self._view(at)
        v3 = self._edge_values(values, fn)
        name = _backend.resolve(backend, v3.device, "segment")
        if name == "torch":
            out, arg = _ref.segment_minmax(v3, indptr[None], perm, reduce)
        else:
            out, arg = _ops.segment_minmax(v3.contiguous(), indptr[None], perm, reduce, name)
        shape = (self.num_nodes,) + tuple(values.shape[1:])
        return out.reshape(shape), arg.reshape(shape)
