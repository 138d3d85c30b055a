"""Plain-PyTorch reference of the velocity EGNN used for the N-body task.

This is the ``E_GCL_vel`` / ``EGNN_vel`` model of Satorras, Hoogeboom and Welling,
"E(n) Equivariant Graph Neural Networks" (ICML 2021), section 5.1, written on top of
:class:`equiops.reference.egnn.E_GCL`. One layer, for a node ``i`` with incoming edges
``e = (i, j)`` (``i = row[e]`` receives, as in :mod:`equiops.reference.egnn`)::

    m_ij = phi_e([h_i, h_j, |x_i - x_j|^2, a_ij])
    x_i' = x_i + C * sum_j (x_i - x_j) phi_x(m_ij) + phi_v(h_i) * v_i
    h_i' = [h_i +] phi_h([h_i, sum_j m_ij])

* ``C`` is ``coords_weight / (number of incoming edges of i)``: the coordinate
  aggregation is a mean (count clamped to at least 1), scaled by ``coords_weight``.
  Each edge term ``(x_i - x_j) phi_x(m_ij)`` is clamped to ``[-100, 100]`` before the
  mean, as in the original (it never triggers in normal training).
* ``phi_v`` is ``coord_mlp_vel = Sequential(Linear(input_nf, hidden), act, Linear(hidden, 1))``
  of the *input* features ``h_i`` of the layer; the velocity ``v_i`` is the same in every
  layer (it is an input of the model, not updated).
* ``norm_diff=True`` divides ``x_i - x_j`` by ``|x_i - x_j| + 1`` (the original
  ``gcl.py`` convention, norm not detached); the radial feature stays the unnormalised
  squared distance. (This differs from ``E_GCL(normalize=True)``, which divides by the
  detached norm plus 1e-8.)
* ``recurrent`` is the residual connection of the feature update.
* ``tanh=True`` appends ``Tanh`` to ``phi_x`` (no range factor).

Equivariance: with ``x -> R x + t`` and ``v -> R v`` (velocities are vectors: rotated,
not translated) for any orthogonal ``R``, the output is ``R x' + t``; the features ``h``
must be invariant (e.g. ``|v|``), as must ``edge_attr``.

:class:`EGNN_vel` is ``embedding`` (Linear ``in_node_nf -> hidden_nf``) followed by
``n_layers`` layers ``gcl_0 ..`` with the same ``edge_attr`` and ``vel`` in each; it
returns the final coordinates only.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import nn

from .egnn import COORD_DIM, E_GCL, EdgeIndex, _check_inputs, segment_mean_rows

TRANS_CLAMP = 100.0


class E_GCL_vel(E_GCL):
    """An :class:`E_GCL` with a velocity term ``phi_v(h_i) v_i`` in the coordinate update."""

    def __init__(
        self,
        input_nf: int,
        output_nf: int,
        hidden_nf: int,
        edges_in_d: int = 0,
        nodes_att_dim: int = 0,
        act_fn: nn.Module = nn.SiLU(),
        recurrent: bool = True,
        coords_weight: float = 1.0,
        attention: bool = False,
        norm_diff: bool = False,
        tanh: bool = False,
    ):
        super().__init__(
            input_nf,
            output_nf,
            hidden_nf,
            edges_in_d=edges_in_d,
            act_fn=act_fn,
            residual=recurrent,
            attention=attention,
            normalize=False,
            coords_agg="mean",
            tanh=tanh,
            nodes_att_dim=nodes_att_dim,
        )
        self.recurrent = recurrent
        self.coords_weight = coords_weight
        self.norm_diff = norm_diff
        self.coord_mlp_vel = nn.Sequential(nn.Linear(input_nf, hidden_nf), act_fn, nn.Linear(hidden_nf, 1))

    def coord2radial(self, row: torch.Tensor, col: torch.Tensor, coord: torch.Tensor):
        coord_diff = coord[row] - coord[col]
        radial = (coord_diff**2).sum(dim=1, keepdim=True)
        if self.norm_diff:
            coord_diff = coord_diff / (torch.sqrt(radial) + 1)
        return radial, coord_diff

    def coord_model(self, coord, row, coord_diff, edge_feat):
        trans = (coord_diff * self.coord_mlp(edge_feat)).clamp(min=-TRANS_CLAMP, max=TRANS_CLAMP)
        return coord + segment_mean_rows(trans, row, coord.size(0)) * self.coords_weight

    def forward(
        self,
        h: torch.Tensor,
        edge_index: EdgeIndex,
        coord: torch.Tensor,
        vel: torch.Tensor,
        edge_attr: Optional[torch.Tensor] = None,
        node_attr: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """``(h (n, output_nf), coord (n, 3), edge_attr)``; ``vel`` is ``(n, 3)``."""
        row, col = _check_inputs(
            h, coord, edge_index, edge_attr, node_attr, self.input_nf, self.edges_in_d, self.nodes_att_dim
        )
        if vel.shape != coord.shape:
            raise ValueError(f"vel: expected shape {tuple(coord.shape)} (as coord), got {tuple(vel.shape)}")
        radial, coord_diff = self.coord2radial(row, col, coord)
        edge_feat = self.edge_model(h[row], h[col], radial, edge_attr)
        new_coord = self.coord_model(coord, row, coord_diff, edge_feat)
        new_coord = new_coord + self.coord_mlp_vel(h) * vel
        h = self.node_model(h, row, edge_feat, node_attr)
        return h, new_coord, edge_attr


class EGNN_vel(nn.Module):
    """``embedding`` then ``n_layers`` :class:`E_GCL_vel` layers ``gcl_i``; returns the coordinates."""

    def __init__(
        self,
        in_node_nf: int,
        in_edge_nf: int,
        hidden_nf: int,
        device: Union[str, torch.device] = "cpu",
        act_fn: nn.Module = nn.SiLU(),
        n_layers: int = 4,
        coords_weight: float = 1.0,
        recurrent: bool = False,
        norm_diff: bool = False,
        tanh: bool = False,
    ):
        super().__init__()
        self.in_node_nf = in_node_nf
        self.in_edge_nf = in_edge_nf
        self.hidden_nf = hidden_nf
        self.device = device
        self.n_layers = n_layers
        self.embedding = nn.Linear(in_node_nf, hidden_nf)
        for i in range(n_layers):
            self.add_module(
                "gcl_%d" % i,
                E_GCL_vel(
                    hidden_nf,
                    hidden_nf,
                    hidden_nf,
                    edges_in_d=in_edge_nf,
                    act_fn=act_fn,
                    coords_weight=coords_weight,
                    recurrent=recurrent,
                    norm_diff=norm_diff,
                    tanh=tanh,
                ),
            )
        self.to(device)

    def forward(
        self,
        h: torch.Tensor,
        x: torch.Tensor,
        edges: EdgeIndex,
        vel: torch.Tensor,
        edge_attr: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Predicted coordinates ``(n, 3)`` from ``h (n, in_node_nf)``, ``x (n, 3)``, ``vel (n, 3)``."""
        if h.dim() != 2 or h.size(1) != self.in_node_nf:
            raise ValueError(f"h: expected shape (n, {self.in_node_nf}), got {tuple(h.shape)}")
        if x.dim() != 2 or x.size(1) != COORD_DIM or x.size(0) != h.size(0):
            raise ValueError(f"x: expected shape ({h.size(0)}, {COORD_DIM}), got {tuple(x.shape)}")
        h = self.embedding(h)
        for i in range(self.n_layers):
            h, x, _ = self._modules["gcl_%d" % i](h, edges, x, vel, edge_attr=edge_attr)
        return x
