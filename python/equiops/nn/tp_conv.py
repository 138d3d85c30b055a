r"""``TensorProductConv``: the fused gather / tensor product / scatter-sum of message passing.

::

    out = zeros(num_nodes, irreps_out.dim).index_add_(0, edge_dst, tp(x[edge_src], edge_attr, edge_weight))

computed without the ``(E, irreps_out.dim)`` messages (see :mod:`equiops.ops.tp_conv`).
The constructor, the instructions and the weight layout are :class:`TensorProduct`'s (so
e3nn's), and ``weight`` / ``edge_weight`` are its ``weight`` argument with one row per edge.
"""

from __future__ import annotations

from typing import List, Optional, Union

import torch
from torch import Tensor

from .. import backend as _backend
from ..graph import Graph, _csr
from ..ops import tp_conv as _ops
from ..reference import tp_conv as _reference
from .tensor_product import TensorProduct, _cpu_kernel_dtype

__all__ = ["TensorProductConv", "tensor_product_conv"]


def _index(t, name: str, where: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{where}: {name} must be a tensor, got {type(t).__name__}")
    if t.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{where}: {name} must be an int64 (or int32) tensor, got {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{where}: {name} must be 1-D (E,), got shape {tuple(t.shape)}")
    # contiguous: the C++ op's index check reads a strided or expand()-ed index as if dense
    return t.long().contiguous()


def _check_range(t: Tensor, n: int, name: str, what: str, where: str) -> None:
    if t.numel() == 0:
        return
    lo, hi = int(t.min()), int(t.max())  # one synchronisation on GPU (a Graph checks once instead)
    if lo < 0 or hi >= n:
        raise IndexError(f"{where}: {name} holds {lo if lo < 0 else hi}, expected {what} ids in [0, {n})")


def tensor_product_conv(
    x: Tensor,
    edge_attr: Tensor,
    weight: Tensor,
    edge_src: Optional[Tensor],
    edge_dst: Optional[Tensor],
    problem: str,
    num_nodes: Optional[int] = None,
    *,
    graph: Optional[Graph] = None,
    backend: Optional[str] = None,
    validate: bool = True,
) -> Tensor:
    """The fused convolution on canonical operands.

    Args:
        x: ``(num_senders, dim1)`` node features (read at ``edge_src``).
        edge_attr: ``(E, dim2)`` or ``(1, dim2)`` (the same row for every edge).
        weight: ``(E, dim_w)`` per-edge weights or ``(1, dim_w)`` shared ones.
        edge_src, edge_dst: ``(E,)`` int64/int32: edge ``e`` sends from ``edge_src[e]`` to
            ``edge_dst[e]``. Optional when ``graph`` is given (then its ``src``/``dst``).
        problem: the tensor-product problem string (``TensorProduct.problem``).
        num_nodes: receivers (output rows); default ``x.shape[0]`` (or ``graph.num_nodes``).
        graph: an :class:`equiops.Graph` of the same edges: its sorted views make the
            forward and backward deterministic on every backend and are built once for
            all layers. Without it, the CPU sorts the edges per call (cheap, and still
            deterministic); CUDA sums with atomics unless deterministic mode is on
            (:func:`equiops.set_deterministic`), in which case the views are built here.
        backend: as :class:`TensorProduct`.
        validate: check the indices (one synchronisation on GPU; a Graph is checked once
            when built, so passing one skips this).

    Returns:
        ``(num_nodes, dim_out)``.
    """
    where = "equiops.TensorProductConv"
    if graph is not None:
        if not isinstance(graph, Graph):
            raise TypeError(f"{where}: graph must be an equiops.Graph, got {type(graph).__name__}")
        if edge_src is None:
            edge_src = graph.src
        if edge_dst is None:
            edge_dst = graph.dst
        if num_nodes is None:
            num_nodes = graph.num_nodes
        if num_nodes != graph.num_nodes or x.shape[0] != graph.num_nodes:
            raise ValueError(
                f"{where}: with a graph of {graph.num_nodes} nodes, x must have {graph.num_nodes} rows and "
                f"num_nodes must be {graph.num_nodes}; got x with {x.shape[0]} rows and num_nodes={num_nodes}"
            )
    if edge_src is None or edge_dst is None:
        raise ValueError(f"{where}: give edge_src and edge_dst, or a graph")
    src, dst = _index(edge_src, "edge_src", where), _index(edge_dst, "edge_dst", where)
    if src.numel() != dst.numel():
        raise ValueError(f"{where}: edge_src and edge_dst must have the same length, got {src.numel()} and {dst.numel()}")
    if graph is not None and graph.num_edges != src.numel():
        raise ValueError(f"{where}: the graph has {graph.num_edges} edges but edge_src has {src.numel()}")
    if num_nodes is None:
        num_nodes = x.shape[0]
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, (int, torch.SymInt)) or num_nodes < 0:
        raise ValueError(f"{where}: num_nodes must be an int >= 0, got {num_nodes!r}")
    E = src.numel()
    for name, t in (("edge_attr", edge_attr), ("weight", weight)):
        if t.dim() != 2 or t.shape[0] not in (E, 1):
            raise ValueError(
                f"{where}: {name} must have one row per edge (E = {E}) or a single row, got shape {tuple(t.shape)}"
            )
    for name, t in (("edge_src", src), ("edge_dst", dst)):
        if t.device != x.device:
            raise ValueError(f"{where}: {name} must be on {x.device} like x, got {t.device}")
    if validate and graph is None and not _backend.tracing():
        _check_range(src, x.shape[0], "edge_src", "sender (row of x)", where)
        _check_range(dst, num_nodes, "edge_dst", "receiver node", where)

    requested = backend if backend is not None else _backend.get_backend()
    name = _backend.resolve(requested, x.device, "tp_conv")
    if name == "cpu" and not _cpu_kernel_dtype(x):
        if requested != "auto":
            raise TypeError(f"{where}: the CPU kernels take float32 or float64, got {x.dtype}")
        name = "torch"
    if name == "torch":
        return _reference.tp_conv(x, edge_attr, weight, src, dst, num_nodes, problem)
    if graph is None and x.device.type == "cuda" and _backend.is_deterministic():
        # The sorted views a Graph would hold (the senders' over x's rows).
        dst_perm, dst_indptr = _csr(dst, num_nodes)
        src_perm, src_indptr = _csr(src, x.shape[0])
        views = (dst_perm, dst_indptr, src_perm, src_indptr)
    else:
        views = _ops.graph_args(graph)
    return _ops.tp_conv(x, edge_attr, weight, src, dst, *views, num_nodes, problem, name)


class TensorProductConv(TensorProduct):
    r"""A tensor product on every edge, summed into the receivers, fused.

    Same constructor and weight layout as :class:`equiops.TensorProduct` (so e3nn's
    ``o3.TensorProduct``). ``forward(x, edge_attr, edge_weight, edge_src, edge_dst,
    num_nodes=None, graph=None)`` returns exactly::

        torch.zeros(num_nodes, irreps_out.dim).index_add_(0, edge_dst, tp(x[edge_src], edge_attr, edge_weight))

    Edge direction is always the caller's explicit ``(edge_src, edge_dst)``: ``e`` sends
    from ``edge_src[e]`` (the row of ``x`` read) to ``edge_dst[e]`` (the row of the
    output written). With an :class:`equiops.Graph` of the same edges (``graph=``; build
    it with the receiving end as ``dst``) the sums are deterministic on every backend and
    the sorted views are reused by the backward pass and by every layer.

    Shapes: ``x (num_senders, irreps_in1.dim)``; ``edge_attr (E, irreps_in2.dim)`` (or one
    row for all edges); ``edge_weight``: with ``shared_weights`` the ``(weight_numel,)``
    weights (default: the internal ones), else ``(E, weight_numel)`` per edge (e.g. a
    radial MLP's output) or a list of per-path tensors as e3nn accepts. Output
    ``(num_nodes, irreps_out.dim)``, ``num_nodes`` defaulting to ``x.shape[0]``.
    """

    def forward(  # type: ignore[override]
        self,
        x: Tensor,
        edge_attr: Tensor,
        edge_weight: Optional[Union[Tensor, List[Tensor]]] = None,
        edge_src: Optional[Tensor] = None,
        edge_dst: Optional[Tensor] = None,
        num_nodes: Optional[int] = None,
        graph: Optional[Graph] = None,
    ) -> Tensor:
        name = type(self).__name__
        for arg, t, irreps in (("x", x, self.irreps_in1), ("edge_attr", edge_attr, self.irreps_in2)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name}: {arg} must be a tensor, got {type(t).__name__}")
            if t.dim() != 2 or t.shape[-1] != irreps.dim:
                raise ValueError(f"{name}: {arg} must have shape (rows, {irreps.dim}) for {irreps}, got {tuple(t.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name}: x must be a floating-point tensor, got {x.dtype}")
        w = self._prep_weights(edge_weight)
        for arg, t in (("edge_attr", edge_attr), ("edge_weight", w)):
            if arg == "edge_weight" and self.weight_numel == 0:  # static: no data-dependent size test
                continue
            if t.dtype != x.dtype:
                raise TypeError(f"{name}: {arg} must have dtype {x.dtype} like x, got {t.dtype}")
            if t.device != x.device:
                raise ValueError(f"{name}: {arg} must be on {x.device} like x, got {t.device}")
        if self.weight_numel == 0:
            w2d = x.new_zeros(1, 0)
        elif self.shared_weights:
            w2d = w.reshape(1, -1)
        else:
            if w.dim() != 2:
                raise ValueError(f"{name}: per-edge weights must have shape (E, {self.weight_numel}), got {tuple(w.shape)}")
            w2d = w
        return tensor_product_conv(
            x, edge_attr, w2d, edge_src, edge_dst, self._problem, num_nodes, graph=graph, backend=self.backend
        )
