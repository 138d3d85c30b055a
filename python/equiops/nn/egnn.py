"""Drop-in EGNN modules on the fused message kernel.

``E_GCL`` / ``EGNN`` are the layers of ``egnn_clean`` (Satorras, Hoogeboom, Welling,
ICML 2021; semantics in :mod:`equiops.reference.egnn`) and ``E_GCL_vel`` / ``EGNN_vel``
the N-body velocity variant (:mod:`equiops.reference.egnn_vel`). They subclass the
references, so they have the same constructor arguments, forward signatures, submodules
and ``state_dict`` keys: the original's weights load with ``load_state_dict(strict=True)``
and give the same outputs.

What changes is the edge part of each layer. The first edge-MLP layer is linear in the
concatenation ``[h_i, h_j, r_ij, a_ij]``, so it is applied per node (``h @ W_i.T + b``,
``h @ W_j.T``) and gathered, instead of per edge on an ``(E, 2F + 1 + D)`` matrix; the
rest of the edge MLP, the attention gate, the coordinate MLP and both aggregations run
in one kernel (:func:`equiops.ops.egnn.egnn_message`) that never writes an ``(E, H)``
tensor, and whose backward recomputes the edge quantities instead of storing them.

Differences to know:

* Each forward builds an :class:`equiops.Graph` of ``(row, col)`` once (the model's
  layers share it); pass ``graph=`` to reuse one across calls. Sums are deterministic.
* The kernels implement ``nn.SiLU`` and ``nn.ReLU``. Another ``act_fn`` runs the
  plain-PyTorch reference of the message block (same results, no fusion); a warning
  says so once.
* The fused backward is first-order: a double backward (say forces from an energy
  computed with EGNN) needs ``backend="torch"``.
"""

from __future__ import annotations

import warnings
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .. import backend as _backend
from ..graph import Graph
from ._checks import check_like, first_parameter
from ..ops import egnn as _ops
from ..reference import egnn as _ref
from ..reference import egnn_vel as _ref_vel

__all__ = ["E_GCL", "EGNN", "E_GCL_vel", "EGNN_vel"]

_warned = set()


def _act_name(act_fn: nn.Module):
    # isinstance plus the forward's identity, not `type(...) is`: torch.export swaps a
    # module's class for a generated subclass while it traces; a user subclass that
    # overrides forward is not SiLU/ReLU any more.
    for cls, name in ((nn.SiLU, "silu"), (nn.ReLU, "relu")):
        if isinstance(act_fn, cls) and type(act_fn).forward is cls.forward:
            return name
    name = type(act_fn).__name__
    if name not in _warned:
        _warned.add(name)
        warnings.warn(
            f"equiops EGNN: the fused kernels implement SiLU and ReLU, not {name}; this layer runs the "
            "plain-PyTorch message block instead",
            stacklevel=3,
        )
    return act_fn


def _graph_of(row: Tensor, col: Tensor, n: int, graph: Optional[Graph]) -> Graph:
    """The graph of messages col -> row; a given one must describe exactly these edges."""
    if graph is None:
        return Graph(col, row, n, validate=False)  # _check_inputs has checked the ranges
    if not isinstance(graph, Graph):
        raise TypeError(f"graph: expected an equiops.Graph, got {type(graph).__name__}")
    if graph.num_nodes != n or graph.num_edges != row.numel():
        raise ValueError(
            f"graph: expected {n} nodes and {row.numel()} edges (as h and edge_index), "
            f"got {graph.num_nodes} and {graph.num_edges}"
        )
    # The model passes its layers the graph's own tensors; anything else is compared
    # (not while compiling: data-dependent; the kernels check the views against the
    # indices themselves, so a stale graph is an error either way).
    if (graph.src is not col or graph.dst is not row) and not _backend.tracing():
        if not torch.equal(graph.src, col):
            raise ValueError("graph: its src must equal edge_index's col (the senders)")
        if not torch.equal(graph.dst, row):
            raise ValueError("graph: its dst must equal edge_index's row (the receivers)")
    return graph


def _check_like_params(module: nn.Module, where: str, **tensors) -> None:
    """Floating tensors (``None`` skipped) in the dtype and on the device of ``module``'s
    parameters: a clear error instead of PyTorch's matmul dtype/device message."""
    check_like(where, first_parameter(module), **tensors)


def _named(where: str, fn, *args):
    """``fn(*args)`` with the layer's name put in front of a ``ValueError`` / ``TypeError`` /
    ``IndexError`` message of the reference's checks."""
    try:
        return fn(*args)
    except (ValueError, TypeError, IndexError) as e:
        if type(e) in (ValueError, TypeError, IndexError):
            raise type(e)(f"{where}: {e}") from None
        raise


def _check_index_device(edge_index, device, where: str) -> None:
    parts = [edge_index] if isinstance(edge_index, Tensor) else edge_index if isinstance(edge_index, (list, tuple)) else []
    for t in parts:
        if isinstance(t, Tensor) and t.device != device:
            raise ValueError(f"{where}: edge_index must be on h's device {device}, got {t.device}")


class _FusedMessage:
    """Mixin: the fused edge part of an E_GCL (edge_mlp, att_mlp, coord_mlp)."""

    def _message(self, h: Tensor, coord: Tensor, row: Tensor, col: Tensor, edge_attr: Optional[Tensor],
                 graph: Graph, config: _ops.MessageConfig) -> Tuple[Tensor, Tensor]:
        F = self.input_nf
        first, second = self.edge_mlp[0], self.edge_mlp[2]
        W = first.weight
        node_i = nn.functional.linear(h, W[:, :F], first.bias)
        node_j = nn.functional.linear(h, W[:, F : 2 * F])
        if edge_attr is None:
            edge_attr = h.new_zeros(row.numel(), 0)
        att = self.att_mlp[0] if self.attention else None
        params = _ops.MessageParams(
            w_radial=W[:, 2 * F],
            w_edge=W[:, 2 * F + 1 :],
            w2=second.weight,
            b2=second.bias,
            w_att=att.weight[0] if att is not None else None,
            b_att=att.bias if att is not None else None,
            wc1=self.coord_mlp[0].weight,
            bc1=self.coord_mlp[0].bias,
            wc2=self.coord_mlp[2].weight[0],
            bc2=None,
        )
        return _ops.egnn_message(node_i, node_j, coord, edge_attr, col, row, params, config, graph=graph,
                                 backend=self.backend)

    def _config(self, coord_norm: str, trans_clamp: float = 0.0) -> _ops.MessageConfig:
        return _ops.MessageConfig(act=_act_name(self.edge_mlp[1]), coord_norm=coord_norm, tanh=self.tanh,
                                  trans_clamp=trans_clamp)

    def _node_update(self, h: Tensor, m_sum: Tensor, node_attr: Optional[Tensor]) -> Tensor:
        parts = [h, m_sum] if node_attr is None else [h, m_sum, node_attr]
        out = self.node_mlp(torch.cat(parts, dim=1))
        return h + out if self.residual else out


def _mean(t_sum: Tensor, graph: Graph) -> Tensor:
    return t_sum / graph.in_degree.clamp(min=1).unsqueeze(1).to(t_sum.dtype)


class E_GCL(_FusedMessage, _ref.E_GCL):
    """``egnn_clean``'s E_GCL on the fused kernel (see the module docstring).

    Args: those of :class:`equiops.reference.egnn.E_GCL`, plus ``backend`` (keyword;
    :mod:`equiops.backend`). ``forward(h, edge_index, coord, edge_attr=None,
    node_attr=None, graph=None) -> (h, coord, edge_attr)``.
    """

    def __init__(self, *args, backend: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = backend

    def forward(self, h: Tensor, edge_index, coord: Tensor, edge_attr: Optional[Tensor] = None,
                node_attr: Optional[Tensor] = None, graph: Optional[Graph] = None):
        _check_like_params(self, "E_GCL", h=h, coord=coord, edge_attr=edge_attr, node_attr=node_attr)
        _check_index_device(edge_index, h.device, "E_GCL")
        row, col = _named(type(self).__name__, _ref._check_inputs, h, coord, edge_index, edge_attr, node_attr,
                          self.input_nf, self.edges_in_d, self.nodes_att_dim)
        graph = _graph_of(row, col, h.size(0), graph)
        m_sum, t_sum = self._message(h, coord, row, col, edge_attr, graph,
                                     self._config("detached" if self.normalize else "none"))
        agg = t_sum if self.coords_agg == "sum" else _mean(t_sum, graph)
        return self._node_update(h, m_sum, node_attr), coord + agg, edge_attr


class EGNN(_ref.EGNN):
    """``egnn_clean``'s EGNN with :class:`E_GCL` layers on the fused kernel.

    Args: those of :class:`equiops.reference.egnn.EGNN`, plus ``backend`` (keyword).
    ``forward(h, x, edges, edge_attr=None, graph=None) -> (h, x)``; ``edges`` is
    ``[row, col]`` or a ``(2, E)`` tensor whose row 0 receives.
    """

    def __init__(self, in_node_nf: int, hidden_nf: int, out_node_nf: int, in_edge_nf: int = 0, device="cpu",
                 act_fn: nn.Module = nn.SiLU(), n_layers: int = 4, residual: bool = True, attention: bool = False,
                 normalize: bool = False, tanh: bool = False, *, backend: Optional[str] = None):
        _ref._check_sizes("EGNN", in_node_nf=in_node_nf, hidden_nf=hidden_nf, out_node_nf=out_node_nf,
                          in_edge_nf=in_edge_nf, n_layers=n_layers)
        super().__init__(in_node_nf, hidden_nf, out_node_nf, in_edge_nf, device, act_fn, n_layers, residual,
                         attention, normalize, tanh)
        for i in range(n_layers):
            old = self._modules[f"gcl_{i}"]
            layer = E_GCL(hidden_nf, hidden_nf, hidden_nf, edges_in_d=in_edge_nf, act_fn=act_fn, residual=residual,
                          attention=attention, normalize=normalize, tanh=tanh, backend=backend)
            layer.load_state_dict(old.state_dict())  # keep the reference's initialisation draw
            self._modules[f"gcl_{i}"] = layer
        self.to(device)

    def forward(self, h: Tensor, x: Tensor, edges, edge_attr: Optional[Tensor] = None,
                graph: Optional[Graph] = None) -> Tuple[Tensor, Tensor]:
        _check_like_params(self, "EGNN", h=h, x=x, edge_attr=edge_attr)
        _check_index_device(edges, h.device, "EGNN")
        if h.dim() != 2 or h.size(1) != self.in_node_nf:
            raise ValueError(f"EGNN: h: expected shape (n, {self.in_node_nf}), got {tuple(h.shape)}")
        if x.dim() != 2 or x.size(1) != _ref.COORD_DIM:
            raise ValueError(f"EGNN: x: expected shape (n, {_ref.COORD_DIM}), got {tuple(x.shape)}")
        if x.size(0) != h.size(0):
            raise ValueError(f"EGNN: x: expected {h.size(0)} rows (as h), got {x.size(0)}")
        row, col = _named(type(self).__name__, _ref._split_edge_index, edges, h.size(0))
        graph = _graph_of(row, col, h.size(0), graph)
        h = self.embedding_in(h)
        for i in range(self.n_layers):
            h, x, _ = self._modules[f"gcl_{i}"](h, (graph.dst, graph.src), x, edge_attr=edge_attr, graph=graph)
        return self.embedding_out(h), x


class E_GCL_vel(_FusedMessage, _ref_vel.E_GCL_vel):
    """The N-body velocity layer (:class:`equiops.reference.egnn_vel.E_GCL_vel`) on the
    fused kernel. ``forward(h, edge_index, coord, vel, edge_attr=None, node_attr=None,
    graph=None) -> (h, coord, edge_attr)``."""

    def __init__(self, *args, backend: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = backend

    def forward(self, h: Tensor, edge_index, coord: Tensor, vel: Tensor, edge_attr: Optional[Tensor] = None,
                node_attr: Optional[Tensor] = None, graph: Optional[Graph] = None):
        _check_like_params(self, "E_GCL_vel", h=h, coord=coord, vel=vel, edge_attr=edge_attr, node_attr=node_attr)
        _check_index_device(edge_index, h.device, "E_GCL_vel")
        row, col = _named(type(self).__name__, _ref._check_inputs, h, coord, edge_index, edge_attr, node_attr,
                          self.input_nf, self.edges_in_d, self.nodes_att_dim)
        if vel.shape != coord.shape:
            raise ValueError(f"E_GCL_vel: vel: expected shape {tuple(coord.shape)} (as coord), got {tuple(vel.shape)}")
        graph = _graph_of(row, col, h.size(0), graph)
        config = self._config("plus_one" if self.norm_diff else "none", trans_clamp=_ref_vel.TRANS_CLAMP)
        m_sum, t_sum = self._message(h, coord, row, col, edge_attr, graph, config)
        new_coord = coord + _mean(t_sum, graph) * self.coords_weight + self.coord_mlp_vel(h) * vel
        return self._node_update(h, m_sum, node_attr), new_coord, edge_attr


class EGNN_vel(_ref_vel.EGNN_vel):
    """The N-body EGNN (:class:`equiops.reference.egnn_vel.EGNN_vel`) with fused layers.
    ``forward(h, x, edges, vel, edge_attr=None, graph=None) -> x``."""

    def __init__(self, in_node_nf: int, in_edge_nf: int, hidden_nf: int, device="cpu", act_fn: nn.Module = nn.SiLU(),
                 n_layers: int = 4, coords_weight: float = 1.0, recurrent: bool = False, norm_diff: bool = False,
                 tanh: bool = False, *, backend: Optional[str] = None):
        _ref._check_sizes("EGNN_vel", in_node_nf=in_node_nf, in_edge_nf=in_edge_nf, hidden_nf=hidden_nf, n_layers=n_layers)
        super().__init__(in_node_nf, in_edge_nf, hidden_nf, device, act_fn, n_layers, coords_weight, recurrent,
                         norm_diff, tanh)
        for i in range(n_layers):
            old = self._modules["gcl_%d" % i]
            layer = E_GCL_vel(hidden_nf, hidden_nf, hidden_nf, edges_in_d=in_edge_nf, act_fn=act_fn,
                              coords_weight=coords_weight, recurrent=recurrent, norm_diff=norm_diff, tanh=tanh,
                              backend=backend)
            layer.load_state_dict(old.state_dict())
            self._modules["gcl_%d" % i] = layer
        self.to(device)

    def forward(self, h: Tensor, x: Tensor, edges, vel: Tensor, edge_attr: Optional[Tensor] = None,
                graph: Optional[Graph] = None) -> Tensor:
        _check_like_params(self, "EGNN_vel", h=h, x=x, vel=vel, edge_attr=edge_attr)
        _check_index_device(edges, h.device, "EGNN_vel")
        if h.dim() != 2 or h.size(1) != self.in_node_nf:
            raise ValueError(f"EGNN_vel: h: expected shape (n, {self.in_node_nf}), got {tuple(h.shape)}")
        if x.dim() != 2 or x.size(1) != _ref.COORD_DIM or x.size(0) != h.size(0):
            raise ValueError(f"EGNN_vel: x: expected shape ({h.size(0)}, {_ref.COORD_DIM}), got {tuple(x.shape)}")
        row, col = _named(type(self).__name__, _ref._split_edge_index, edges, h.size(0))
        graph = _graph_of(row, col, h.size(0), graph)
        h = self.embedding(h)
        for i in range(self.n_layers):
            h, x, _ = self._modules["gcl_%d" % i](h, (graph.dst, graph.src), x, vel, edge_attr=edge_attr, graph=graph)
        return x
