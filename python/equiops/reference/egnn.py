"""Plain-PyTorch reference of the E(n)-equivariant graph network (EGNN).

EGNN is the model of Satorras, Hoogeboom and Welling, "E(n) Equivariant Graph Neural
Networks" (ICML 2021), in the form of its authors' ``egnn_clean`` implementation. This
module defines the semantics that the fused EGNN kernels must reproduce; tests check
those kernels against it. It loads the ``state_dict`` of the original modules as is
(same submodule names and shapes) and reproduces the recorded outputs and gradients of
the original to about 1e-10 in float64 (``tests/test_egnn_reference.py``).

Shapes (``n`` nodes, ``E`` edges, ``F`` node features, ``D`` edge features):

* ``h``: ``(n, F)`` node features; ``coord``/``x``: ``(n, 3)`` coordinates.
* ``edge_index``: ``(row, col)``, a list/tuple of two ``(E,)`` integer tensors or a
  ``(2, E)`` tensor. Edge ``e`` carries a message from the sender ``j = col[e]`` to
  the receiver ``i = row[e]``: messages aggregate at ``row`` (row 0 receives). Self
  loops and duplicate edges are allowed and counted as ordinary edges.
* ``edge_attr``: ``None`` or ``(E, D)``.

One layer (:class:`E_GCL`), for an edge ``e = (i, j)``::

    d_ij   = x_i - x_j
    r_ij   = |d_ij|^2                                     # squared distance, not the norm
    m_ij   = phi_e([h_i, h_j, r_ij, a_ij])                # Linear, act, Linear, act
    m_ij   = m_ij * sigmoid(Linear(m_ij))                 # only with attention=True
    d_ij   = d_ij / (sqrt(r_ij).detach() + 1e-8)          # only with normalize=True
    x_i'   = x_i + AGG_{e: row[e] = i} d_ij * phi_x(m_ij)  # phi_x: Linear, act, Linear(no bias)[, Tanh]
    h_i'   = [h_i +] phi_h([h_i, sum_{e: row[e] = i} m_ij[, node_attr_i]])

Facts of the original that this reference keeps (and the kernels must keep):

* The radial feature is the *squared* distance, concatenated after ``h_i, h_j`` and
  before ``edge_attr``: the edge MLP input is ``[h[row], h[col], radial, edge_attr]``.
* ``normalize`` divides the coordinate difference by ``sqrt(radial).detach() + 1e-8``;
  the ``detach`` means no gradient flows through the norm. The radial feature fed to the
  edge MLP stays the unnormalised squared distance. A self loop gives ``d = 0`` and a
  zero update, and no NaN in the gradients (``sqrt`` is detached, ``|d|^2`` is smooth).
* The attention gate is ``Sigmoid(Linear(hidden, 1))`` of the message; the gated message
  feeds both the coordinate MLP and the feature aggregation.
* The coordinate update is computed from the *input* coordinates and the gated messages;
  the features are updated from the same messages (the order of the two updates does not
  matter).
* Coordinate aggregation: ``coords_agg="mean"`` (default) is the sum over incoming edges
  divided by the number of incoming edges clamped to at least 1, so a node without
  incoming edges keeps its coordinates; ``"sum"`` is the plain sum. Feature aggregation
  is always a sum.
* The last Linear of the coordinate MLP has no bias and is initialised with
  ``xavier_uniform_(gain=0.001)``. With ``tanh=True`` a ``Tanh`` follows it and nothing
  scales it afterwards: ``egnn_clean`` has no ``coords_range`` factor (other EGNN variants
  do; the recorded tanh cases match only without one).
* ``residual=True`` adds ``h`` to the node-MLP output (needs ``input_nf == output_nf``).
* ``node_attr`` (optional, ``(n, nodes_att_dim)``) is concatenated after the aggregate
  in the node-MLP input, whose first Linear then takes ``hidden + input_nf +
  nodes_att_dim`` inputs. ``edge_attr`` is returned unchanged.

:class:`EGNN` is ``embedding_in`` (Linear), ``n_layers`` layers ``gcl_0 ..`` with
``hidden_nf`` features in and out and the same ``edge_attr`` in each, then
``embedding_out`` (Linear); the coordinates go through every layer.

The aggregations use plain ``index_add`` (deterministic, exact to float64 rounding on
the CPU). Invalid inputs raise ``ValueError`` (shapes) or ``IndexError`` (node indices out
of range) naming the argument with the expected and actual values.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .. import backend as _backend

EdgeIndex = Union[torch.Tensor, Sequence[torch.Tensor]]

COORD_DIM = 3
EPSILON = 1e-8


def _split_edge_index(edge_index: EdgeIndex, num_nodes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validates ``edge_index`` and returns ``(row, col)`` as int64 ``(E,)`` tensors."""
    if isinstance(edge_index, torch.Tensor):
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(f"edge_index: expected a (2, E) tensor, got shape {tuple(edge_index.shape)}")
        row, col = edge_index[0], edge_index[1]
    elif isinstance(edge_index, (list, tuple)):
        if len(edge_index) != 2:
            raise ValueError(f"edge_index: expected (row, col), a pair of (E,) tensors, got {len(edge_index)} items")
        row, col = edge_index
        if not (isinstance(row, torch.Tensor) and isinstance(col, torch.Tensor)):
            raise ValueError(
                f"edge_index: expected (row, col) as tensors, got ({type(row).__name__}, {type(col).__name__})"
            )
        if row.dim() != 1 or col.dim() != 1 or row.numel() != col.numel():
            raise ValueError(
                f"edge_index: expected row and col of the same shape (E,), got {tuple(row.shape)} and {tuple(col.shape)}"
            )
    else:
        raise ValueError(f"edge_index: expected a (2, E) tensor or (row, col), got {type(edge_index).__name__}")
    for name, idx in (("row", row), ("col", col)):
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise ValueError(f"edge_index: expected an integer dtype for {name}, got {idx.dtype}")
        # Not while compiling: data-dependent (the fused kernels check ranges themselves).
        if not _backend.tracing() and idx.numel() > 0:
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= num_nodes:
                raise IndexError(
                    f"edge_index: expected {name} indices in [0, {num_nodes}) (the number of nodes), "
                    f"got values in [{lo}, {hi}]"
                )
    return row.long(), col.long()


def _check_node_tensor(name: str, t: torch.Tensor, num_nodes: int, width: int) -> None:
    if t.dim() != 2 or t.size(0) != num_nodes or t.size(1) != width:
        raise ValueError(f"{name}: expected shape ({num_nodes}, {width}), got {tuple(t.shape)}")


def _check_sizes(where: str, **sizes) -> None:
    """Layer widths: ints, >= 0 for the optional inputs (edges_in_d, in_edge_nf, nodes_att_dim), else >= 1."""
    for name, v in sizes.items():
        low = 0 if name in ("edges_in_d", "in_edge_nf", "nodes_att_dim", "n_layers") else 1
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"{where}: {name} must be an int >= {low}, got {v!r}")


def _check_inputs(h, coord, edge_index, edge_attr, node_attr, input_nf, edges_in_d, nodes_att_dim):
    if h.dim() != 2:
        raise ValueError(f"h: expected shape (n, {input_nf}), got {tuple(h.shape)}")
    n = h.size(0)
    if coord.dim() != 2 or coord.size(1) != COORD_DIM:
        raise ValueError(f"coord: expected shape (n, {COORD_DIM}), got {tuple(coord.shape)}")
    if coord.size(0) != n:
        raise ValueError(f"coord: expected {n} rows (as h), got {coord.size(0)}; h has shape {tuple(h.shape)}")
    _check_node_tensor("h", h, n, input_nf)
    row, col = _split_edge_index(edge_index, n)
    num_edges = row.numel()
    if edge_attr is None:
        if edges_in_d != 0:
            raise ValueError(f"edge_attr: expected shape ({num_edges}, {edges_in_d}), got None")
    elif edge_attr.dim() != 2 or edge_attr.size(0) != num_edges or edge_attr.size(1) != edges_in_d:
        raise ValueError(f"edge_attr: expected shape ({num_edges}, {edges_in_d}), got {tuple(edge_attr.shape)}")
    if node_attr is None:
        if nodes_att_dim != 0:
            raise ValueError(f"node_attr: expected shape ({n}, {nodes_att_dim}), got None")
    else:
        _check_node_tensor("node_attr", node_attr, n, nodes_att_dim)
    return row, col


def segment_sum_rows(data: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """``out[s] = sum_{e: index[e] = s} data[e]``; ``(E, C) -> (num_segments, C)``."""
    return data.new_zeros(num_segments, data.size(1)).index_add(0, index, data)


def segment_mean_rows(data: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Sum over each segment divided by its size clamped to at least 1 (empty segments give 0)."""
    total = segment_sum_rows(data, index, num_segments)
    count = data.new_zeros(num_segments, 1).index_add(0, index, data.new_ones(index.numel(), 1))
    return total / count.clamp(min=1)


class E_GCL(nn.Module):
    """One E(n)-equivariant graph convolution layer (``egnn_clean``'s ``E_GCL``)."""

    def __init__(
        self,
        input_nf: int,
        output_nf: int,
        hidden_nf: int,
        edges_in_d: int = 0,
        act_fn: nn.Module = nn.SiLU(),
        residual: bool = True,
        attention: bool = False,
        normalize: bool = False,
        coords_agg: str = "mean",
        tanh: bool = False,
        nodes_att_dim: int = 0,
    ):
        super().__init__()
        if coords_agg not in ("mean", "sum"):
            raise ValueError(f"coords_agg: expected 'mean' or 'sum', got {coords_agg!r}")
        if residual and input_nf != output_nf:
            raise ValueError(f"residual=True needs input_nf == output_nf, got {input_nf} and {output_nf}")
        _check_sizes(type(self).__name__, input_nf=input_nf, output_nf=output_nf, hidden_nf=hidden_nf,
                     edges_in_d=edges_in_d, nodes_att_dim=nodes_att_dim)
        self.input_nf = input_nf
        self.output_nf = output_nf
        self.hidden_nf = hidden_nf
        self.edges_in_d = edges_in_d
        self.nodes_att_dim = nodes_att_dim
        self.residual = residual
        self.attention = attention
        self.normalize = normalize
        self.coords_agg = coords_agg
        self.tanh = tanh
        self.epsilon = EPSILON

        self.edge_mlp = nn.Sequential(
            nn.Linear(2 * input_nf + 1 + edges_in_d, hidden_nf),
            act_fn,
            nn.Linear(hidden_nf, hidden_nf),
            act_fn,
        )
        self.node_mlp = nn.Sequential(
            nn.Linear(hidden_nf + input_nf + nodes_att_dim, hidden_nf),
            act_fn,
            nn.Linear(hidden_nf, output_nf),
        )
        last = nn.Linear(hidden_nf, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)
        coord_layers = [nn.Linear(hidden_nf, hidden_nf), act_fn, last]
        if tanh:
            coord_layers.append(nn.Tanh())
        self.coord_mlp = nn.Sequential(*coord_layers)
        if attention:
            self.att_mlp = nn.Sequential(nn.Linear(hidden_nf, 1), nn.Sigmoid())

    def coord2radial(self, row: torch.Tensor, col: torch.Tensor, coord: torch.Tensor):
        """``(radial (E, 1), coord_diff (E, 3))``; radial is the squared distance."""
        coord_diff = coord[row] - coord[col]
        radial = (coord_diff**2).sum(dim=1, keepdim=True)
        if self.normalize:
            norm = torch.sqrt(radial).detach()
            coord_diff = coord_diff / (norm + self.epsilon)
        return radial, coord_diff

    def edge_model(self, source, target, radial, edge_attr):
        """The gated message ``(E, hidden)``; ``source = h[row]`` (receiver), ``target = h[col]``."""
        parts = [source, target, radial] if edge_attr is None else [source, target, radial, edge_attr]
        out = self.edge_mlp(torch.cat(parts, dim=1))
        if self.attention:
            out = out * self.att_mlp(out)
        return out

    def coord_model(self, coord, row, coord_diff, edge_feat):
        trans = coord_diff * self.coord_mlp(edge_feat)
        if self.coords_agg == "sum":
            agg = segment_sum_rows(trans, row, coord.size(0))
        else:
            agg = segment_mean_rows(trans, row, coord.size(0))
        return coord + agg

    def node_model(self, h, row, edge_feat, node_attr):
        agg = segment_sum_rows(edge_feat, row, h.size(0))
        parts = [h, agg] if node_attr is None else [h, agg, node_attr]
        out = self.node_mlp(torch.cat(parts, dim=1))
        if self.residual:
            out = h + out
        return out

    def forward(
        self,
        h: torch.Tensor,
        edge_index: EdgeIndex,
        coord: torch.Tensor,
        edge_attr: Optional[torch.Tensor] = None,
        node_attr: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """``(h (n, output_nf), coord (n, 3), edge_attr)``; see the module docstring."""
        row, col = _check_inputs(
            h, coord, edge_index, edge_attr, node_attr, self.input_nf, self.edges_in_d, self.nodes_att_dim
        )
        radial, coord_diff = self.coord2radial(row, col, coord)
        edge_feat = self.edge_model(h[row], h[col], radial, edge_attr)
        coord = self.coord_model(coord, row, coord_diff, edge_feat)
        h = self.node_model(h, row, edge_feat, node_attr)
        return h, coord, edge_attr


class EGNN(nn.Module):
    """``embedding_in``, ``n_layers`` :class:`E_GCL` layers ``gcl_i``, ``embedding_out`` (``egnn_clean``'s ``EGNN``)."""

    def __init__(
        self,
        in_node_nf: int,
        hidden_nf: int,
        out_node_nf: int,
        in_edge_nf: int = 0,
        device: Union[str, torch.device] = "cpu",
        act_fn: nn.Module = nn.SiLU(),
        n_layers: int = 4,
        residual: bool = True,
        attention: bool = False,
        normalize: bool = False,
        tanh: bool = False,
    ):
        super().__init__()
        self.in_node_nf = in_node_nf
        self.hidden_nf = hidden_nf
        self.in_edge_nf = in_edge_nf
        self.device = device
        self.n_layers = n_layers
        self.embedding_in = nn.Linear(in_node_nf, hidden_nf)
        self.embedding_out = nn.Linear(hidden_nf, out_node_nf)
        for i in range(n_layers):
            self.add_module(
                f"gcl_{i}",
                E_GCL(
                    hidden_nf,
                    hidden_nf,
                    hidden_nf,
                    edges_in_d=in_edge_nf,
                    act_fn=act_fn,
                    residual=residual,
                    attention=attention,
                    normalize=normalize,
                    tanh=tanh,
                ),
            )
        self.to(device)

    def forward(
        self, h: torch.Tensor, x: torch.Tensor, edges: EdgeIndex, edge_attr: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(h (n, out_node_nf), x (n, 3))`` from ``h (n, in_node_nf)``, ``x (n, 3)``."""
        if h.dim() != 2 or h.size(1) != self.in_node_nf:
            raise ValueError(f"h: expected shape (n, {self.in_node_nf}), got {tuple(h.shape)}")
        # The layers check the rest; check here too so an error names x, not coord.
        if x.dim() != 2 or x.size(1) != COORD_DIM:
            raise ValueError(f"x: expected shape (n, {COORD_DIM}), got {tuple(x.shape)}")
        if x.size(0) != h.size(0):
            raise ValueError(f"x: expected {h.size(0)} rows (as h), got {x.size(0)}")
        h = self.embedding_in(h)
        for i in range(self.n_layers):
            h, x, _ = self._modules[f"gcl_{i}"](h, edges, x, edge_attr=edge_attr)
        return self.embedding_out(h), x
