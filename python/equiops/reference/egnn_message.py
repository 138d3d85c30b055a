"""Plain-PyTorch reference of the fused EGNN message block (``equiops.ops.egnn``).

The edge part of an EGNN layer, the only part whose cost grows with the number of
edges, summed at the receivers. It is written so that the E(n)-GNN layers of
``egnn_clean`` (:mod:`equiops.reference.egnn`), of the N-body velocity variant
(:mod:`equiops.reference.egnn_vel`) and of the ``egnn-pytorch`` package all map onto it:

For each edge ``e`` with receiver ``i = dst[e]`` and sender ``j = src[e]``::

    d   = coord[i] - coord[j]                      # (3,)
    r   = |d|^2                                    # squared distance
    z1  = node_i[i] + node_j[j] + r * w_radial + w_edge @ edge_attr[e]      # (H1,)
    m   = act(w2 @ act(z1) + b2)                   # (M,)
    m   = m * sigmoid(w_att . m + b_att)           # only when w_att is given
    c   = wc2 . act(wc1 @ m + bc1) [+ bc2]         # scalar
    c   = tanh(c)                                  # only with tanh
    c   = clamp(c, -c_clamp, c_clamp)              # only with c_clamp > 0
    u   = d                                        # coord_norm "none"
        | d / (sqrt(r).detach() + 1e-8)            #            "detached" (egnn_clean normalize)
        | d / (sqrt(r) + 1)                        #            "plus_one" (EGNN_vel norm_diff)
        | d / max(|d|, 1e-8)                       #            "clamped"  (egnn-pytorch CoorsNorm)
    t   = clamp(u * c, -trans_clamp, trans_clamp)  # per component, only with trans_clamp > 0

and returns ``(m_sum, t_sum)``: ``m_sum[i] = sum_{e: dst[e] = i} m_e`` ``(n, M)`` and
``t_sum[i] = sum_{e: dst[e] = i} t_e`` ``(n, 3)``.

``node_i``/``node_j`` are the first edge-MLP layer applied per node: with the layer's
weight ``W1 = [W_i | W_j | w_radial | W_edge]`` over the input ``[h_i, h_j, r, a]``,
``node_i = h @ W_i.T + b1`` and ``node_j = h @ W_j.T``. By linearity that equals the
first layer on the concatenated edge input, without its ``(E, 2F + 1 + D)`` matrix.

Shapes: ``node_i``, ``node_j`` ``(n, H1)``; ``coord`` ``(n, 3)``; ``edge_attr``
``(E, D)`` (``D`` may be 0); ``src``, ``dst`` ``(E,)`` int64; ``w_radial`` ``(H1,)``;
``w_edge`` ``(H1, D)``; ``w2`` ``(M, H1)``; ``b2`` ``(M,)``; ``w_att`` ``(M,)`` and
``b_att`` ``(1,)`` or both None; ``wc1`` ``(Hc, M)``; ``bc1`` ``(Hc,)``; ``wc2``
``(Hc,)``; ``bc2`` ``(1,)`` or None. ``act`` is ``"silu"``, ``"relu"`` or any callable
(the fused kernels take the two names only).
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import torch
from torch import Tensor

EPSILON = 1e-8
ACTIVATIONS = ("silu", "relu")
COORD_NORMS = ("none", "detached", "plus_one", "clamped")

Activation = Union[str, Callable[[Tensor], Tensor]]


def activation(act: Activation) -> Callable[[Tensor], Tensor]:
    if callable(act):
        return act
    if act == "silu":
        return torch.nn.functional.silu
    if act == "relu":
        return torch.relu
    raise ValueError(f"act: expected one of {ACTIVATIONS} or a callable, got {act!r}")


def normalized_diff(d: Tensor, r: Tensor, coord_norm: str) -> Tensor:
    """``u`` of the module docstring from ``d (E, 3)`` and ``r = |d|^2 (E, 1)``."""
    if coord_norm == "none":
        return d
    if coord_norm == "detached":
        return d / (torch.sqrt(r).detach() + EPSILON)
    if coord_norm == "plus_one":
        return d / (torch.sqrt(r) + 1)
    if coord_norm == "clamped":
        return d / d.norm(dim=1, keepdim=True).clamp(min=EPSILON)
    raise ValueError(f"coord_norm: expected one of {COORD_NORMS}, got {coord_norm!r}")


def edge_messages(
    node_i: Tensor, node_j: Tensor, coord: Tensor, edge_attr: Tensor, src: Tensor, dst: Tensor,
    w_radial: Tensor, w_edge: Tensor, w2: Tensor, b2: Tensor, w_att: Optional[Tensor], b_att: Optional[Tensor],
    wc1: Tensor, bc1: Tensor, wc2: Tensor, bc2: Optional[Tensor], act: Activation = "silu",
    coord_norm: str = "none", tanh: bool = False, c_clamp: float = 0.0, trans_clamp: float = 0.0,
) -> Tuple[Tensor, Tensor]:
    """The per-edge ``(m (E, M), t (E, 3))`` before the sums (see the module docstring)."""
    f = activation(act)
    d = coord[dst] - coord[src]
    r = (d * d).sum(dim=1, keepdim=True)
    z1 = node_i[dst] + node_j[src] + r * w_radial
    if edge_attr.size(1) > 0:
        z1 = z1 + edge_attr @ w_edge.t()
    m = f(f(z1) @ w2.t() + b2)
    if w_att is not None:
        m = m * torch.sigmoid(m @ w_att.unsqueeze(1) + b_att)
    c = f(m @ wc1.t() + bc1) @ wc2.unsqueeze(1)
    if bc2 is not None:
        c = c + bc2
    if tanh:
        c = torch.tanh(c)
    if c_clamp > 0:
        c = c.clamp(-c_clamp, c_clamp)
    t = normalized_diff(d, r, coord_norm) * c
    if trans_clamp > 0:
        t = t.clamp(-trans_clamp, trans_clamp)
    return m, t


def egnn_message(
    node_i: Tensor, node_j: Tensor, coord: Tensor, edge_attr: Tensor, src: Tensor, dst: Tensor,
    w_radial: Tensor, w_edge: Tensor, w2: Tensor, b2: Tensor, w_att: Optional[Tensor], b_att: Optional[Tensor],
    wc1: Tensor, bc1: Tensor, wc2: Tensor, bc2: Optional[Tensor], act: Activation = "silu",
    coord_norm: str = "none", tanh: bool = False, c_clamp: float = 0.0, trans_clamp: float = 0.0,
) -> Tuple[Tensor, Tensor]:
    """``(m_sum (n, M), t_sum (n, 3))``: the edge messages summed at their receivers."""
    m, t = edge_messages(node_i, node_j, coord, edge_attr, src, dst, w_radial, w_edge, w2, b2, w_att, b_att,
                         wc1, bc1, wc2, bc2, act, coord_norm, tanh, c_clamp, trans_clamp)
    n = node_i.size(0)
    m_sum = m.new_zeros(n, m.size(1)).index_add(0, dst, m)
    t_sum = t.new_zeros(n, 3).index_add(0, dst, t)
    return m_sum, t_sum
