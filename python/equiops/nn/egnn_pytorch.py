"""Drop-in replacements of ``egnn_pytorch.EGNN`` and ``egnn_pytorch.EGNN_Network``.

The modules take the constructor arguments and the forward signature of the
``egnn-pytorch`` package (version 0.2.8; dense ``(batch, nodes, dim)`` features and
``(batch, nodes, 3)`` coordinates), hold parameters under the same ``state_dict`` keys
and shapes (``load_state_dict`` of an ``egnn_pytorch`` model works with ``strict=True``,
both ways) and compute the same outputs and gradients. The edge part of each layer runs
through equiops' fused EGNN message block (:func:`equiops.ops.egnn.egnn_message`)::

    from equiops.nn.egnn_pytorch import EGNN
    layer = EGNN(dim=32, edge_dim=4, norm_coors=True)
    layer.load_state_dict(original_layer.state_dict())
    feats, coors = layer(feats, coors, edges=edges, mask=mask)

How a layer maps onto the message block: the padded batch becomes one graph with node
``b * n + i``; node ``i`` receives from every ``j`` it attends to in ``egnn-pytorch``
(with the dense default, every ``j`` of its batch element *including itself*; with
``num_nearest_neighbors`` / ``only_sparse_neighbors`` the same top-k selection, computed
the same way), and pairs with a masked end are left out. The first edge-MLP layer, over
``[feats_i, feats_j, fourier(|x_i - x_j|^2), |x_i - x_j|^2, edges_ij]``, is split by
columns: the two feature blocks become per-node products, the distance column
``w_radial`` and the rest ``w_edge`` over the per-edge ``edge_attr`` (the Fourier
features, computed per edge in PyTorch so that autograd carries their coordinate
gradient, then the gathered ``edges``). ``CoorsNorm`` is ``coord_norm="clamped"`` (its
eps is 1e-8) with its scale applied to the summed coordinate term,
``coor_weights_clamp_value`` is ``c_clamp``, the edge gate (``soft_edges``) the
attention gate.

What runs on the plain dense PyTorch path instead (same results): training with
``dropout > 0`` (dropout inside the MLPs cannot be fused; the dense path draws the
same dropout masks as ``egnn-pytorch`` for a given RNG state), dtypes other than
float32 / float64, empty inputs, ``coor_weights_clamp_value <= 0``, a ``CoorsNorm``
whose ``eps`` was changed from 1e-8, and a neighbour selection of size 0. ``backend`` (constructor keyword, or the attribute) is passed to
the message block: ``"torch"`` runs its plain-PyTorch reference, which also supports
double backward (the fused kernels are first-order).

Behaviours of ``egnn-pytorch`` 0.2.8 that are reproduced on purpose:

* the dense (fully connected) layer includes the pair ``i == j`` in every sum (it adds
  a message, and nothing to the coordinates, its difference being 0);
* padded nodes (``mask`` False) send and receive nothing, but their features still
  go through ``node_mlp`` (with a zero message) and their coordinates are returned as
  given; ``m_pool_method="mean"`` divides by the number of unmasked partners (0 -> 0);
* ``adj_mat`` is read only when ``num_nearest_neighbors > 0`` or
  ``only_sparse_neighbors``; the neighbour ranking is the *squared* distance, with
  ``-1`` for the node itself and ``0`` for adjacent nodes, and ``valid_radius`` is
  compared to that ranking (so to a squared distance) and is applied only when a
  ``mask`` is given;
* ``only_sparse_neighbors`` takes ``k`` = the largest row sum of ``adj_mat`` (over the
  whole batch) and a radius of 0.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .. import backend as _backend
from ..graph import Graph
from ..ops import egnn as _egnn_ops

__all__ = ["CoorsNorm", "EGNN", "EGNN_Network", "GlobalLinearAttention"]

_FUSED_DTYPES = (torch.float32, torch.float64)
# The ranking egnn-pytorch gives to pairs with a masked end in its neighbour selection.
_MASKED_RANK = 1e5
# The eps of the fused block's "clamped" coordinate normalisation (CoorsNorm's default).
_CLAMPED_EPS = 1e-8


class CoorsNorm(nn.Module):
    """``d / max(|d|, eps) * scale`` (the relative-coordinate normalisation of egnn-pytorch)."""

    def __init__(self, eps: float = 1e-8, scale_init: float = 1.0):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.full((1,), float(scale_init)))

    def forward(self, coors: Tensor) -> Tensor:
        length = coors.norm(dim=-1, keepdim=True).clamp(min=self.eps)
        return coors / length * self.scale


def _fourier(r: Tensor, num: int) -> Tensor:
    """``[sin(r / 2^k), cos(r / 2^k)]`` for ``k < num`` along a new last dim (r is ``(..., 1)``)."""
    scales = 2 ** torch.arange(num, device=r.device, dtype=r.dtype)
    x = r / scales
    return torch.cat((x.sin(), x.cos()), dim=-1)


def _pick(values: Tensor, index: Tensor) -> Tensor:
    """``values (B, n, n, ...)`` at ``[b, i, index[b, i, k]]`` -> ``(B, n, k, ...)``."""
    index = index.reshape(index.shape + (1,) * (values.dim() - 3)).expand(index.shape + values.shape[3:])
    return values.gather(2, index)


def _per_batch(values: Tensor, index: Tensor) -> Tensor:
    """``values (B, n, ...)`` at ``[b, index[b, i, k]]`` -> ``(B, n, k, ...)``."""
    batch = torch.arange(values.size(0), device=values.device).view(-1, 1, 1)
    return values[batch, index]


class EGNN(nn.Module):
    """One E(n)-equivariant layer with the interface and parameters of ``egnn_pytorch.EGNN``.

    ``forward(feats (b, n, dim), coors (b, n, 3), edges=None (b, n, n, edge_dim),
    mask=None (b, n) bool, adj_mat=None (n, n) or (b, n, n) bool)`` returns the updated
    ``(feats, coors)``. See the module docstring for the mapping onto the fused block.
    """

    def __init__(
        self,
        dim: int,
        edge_dim: int = 0,
        m_dim: int = 16,
        fourier_features: int = 0,
        num_nearest_neighbors: int = 0,
        dropout: float = 0.0,
        init_eps: float = 1e-3,
        norm_feats: bool = False,
        norm_coors: bool = False,
        norm_coors_scale_init: float = 1e-2,
        update_feats: bool = True,
        update_coors: bool = True,
        only_sparse_neighbors: bool = False,
        valid_radius: float = float("inf"),
        m_pool_method: str = "sum",
        soft_edges: bool = False,
        coor_weights_clamp_value: Optional[float] = None,
        *,
        backend: Optional[str] = None,
    ):
        super().__init__()
        if m_pool_method not in ("sum", "mean"):
            raise ValueError(f"EGNN: m_pool_method must be 'sum' or 'mean', got {m_pool_method!r}")
        if not (update_feats or update_coors):
            raise ValueError("EGNN: update_feats and update_coors are both False; the layer would do nothing")
        for name, v in (("dim", dim), ("edge_dim", edge_dim), ("m_dim", m_dim), ("fourier_features", fourier_features),
                        ("num_nearest_neighbors", num_nearest_neighbors)):
            if not isinstance(v, int) or isinstance(v, bool) or v < (1 if name in ("dim", "m_dim") else 0):
                raise ValueError(f"EGNN: {name} must be an int >= {1 if name in ('dim', 'm_dim') else 0}, got {v!r}")
        self.dim, self.edge_dim, self.m_dim = dim, edge_dim, m_dim
        self.fourier_features = fourier_features
        self.num_nearest_neighbors = num_nearest_neighbors
        self.only_sparse_neighbors = only_sparse_neighbors
        self.valid_radius = valid_radius
        self.m_pool_method = m_pool_method
        self.coor_weights_clamp_value = coor_weights_clamp_value
        self.dropout = float(dropout)
        self.init_eps = init_eps
        self.backend = backend

        width = 2 * dim + 2 * fourier_features + 1 + edge_dim  # the edge MLP's input

        def drop() -> nn.Module:
            return nn.Dropout(self.dropout) if self.dropout > 0 else nn.Identity()

        # Module indices (0 and 3 for the Linear layers) give egnn-pytorch's state_dict keys.
        self.edge_mlp = nn.Sequential(nn.Linear(width, 2 * width), drop(), nn.SiLU(), nn.Linear(2 * width, m_dim), nn.SiLU())
        self.edge_gate = nn.Sequential(nn.Linear(m_dim, 1), nn.Sigmoid()) if soft_edges else None
        self.node_norm = nn.LayerNorm(dim) if norm_feats else nn.Identity()
        self.coors_norm = CoorsNorm(scale_init=norm_coors_scale_init) if norm_coors else nn.Identity()
        self.node_mlp = (nn.Sequential(nn.Linear(dim + m_dim, 2 * dim), drop(), nn.SiLU(), nn.Linear(2 * dim, dim))
                         if update_feats else None)
        self.coors_mlp = (nn.Sequential(nn.Linear(m_dim, 4 * m_dim), drop(), nn.SiLU(), nn.Linear(4 * m_dim, 1))
                          if update_coors else None)
        for module in self.modules():
            if type(module) is nn.Linear:  # small weights, default biases (as egnn-pytorch)
                nn.init.normal_(module.weight, std=init_eps)

    # ------------------------------------------------------------------ checks
    def _check(self, feats, coors, edges, mask) -> None:
        if not isinstance(feats, Tensor):
            raise TypeError(f"EGNN: feats must be a torch.Tensor, got {type(feats).__name__}")
        if feats.dim() != 3 or feats.size(-1) != self.dim:
            raise ValueError(f"EGNN: feats must have shape (batch, nodes, dim={self.dim}), got {tuple(feats.shape)}")
        if not feats.is_floating_point():
            raise TypeError(f"EGNN: feats must be a floating-point tensor, got {feats.dtype}")
        p = self.edge_mlp[0].weight
        if feats.dtype != p.dtype:
            raise TypeError(f"EGNN: feats must have the dtype of the layer's parameters ({p.dtype}), got {feats.dtype}")
        if feats.device != p.device:
            raise ValueError(f"EGNN: feats must be on the device of the layer's parameters ({p.device}), got {feats.device}")
        b, n = feats.shape[:2]
        if not isinstance(coors, Tensor):
            raise TypeError(f"EGNN: coors must be a torch.Tensor, got {type(coors).__name__}")
        if coors.dim() != 3 or coors.size(-1) != 3:
            raise ValueError(f"EGNN: coors must have shape (batch, nodes, 3), got {tuple(coors.shape)}")
        if tuple(coors.shape[:2]) != (b, n):
            raise ValueError(f"EGNN: coors must have shape ({b}, {n}, 3) to match feats {tuple(feats.shape)}, "
                             f"got {tuple(coors.shape)}")
        if coors.dtype != feats.dtype:
            raise TypeError(f"EGNN: coors must have feats' dtype {feats.dtype}, got {coors.dtype}")
        if coors.device != feats.device:
            raise ValueError(f"EGNN: coors must be on feats' device {feats.device}, got {coors.device}")
        if edges is None:
            if self.edge_dim > 0:
                raise ValueError(f"EGNN: edges of shape ({b}, {n}, {n}, edge_dim={self.edge_dim}) are required "
                                 f"(the layer was built with edge_dim={self.edge_dim})")
        else:
            if not isinstance(edges, Tensor):
                raise TypeError(f"EGNN: edges must be a torch.Tensor, got {type(edges).__name__}")
            if self.edge_dim == 0:
                raise ValueError(f"EGNN: edges were given (shape {tuple(edges.shape)}) but the layer was built with "
                                 "edge_dim=0")
            if tuple(edges.shape) != (b, n, n, self.edge_dim):
                raise ValueError(f"EGNN: edges must have shape ({b}, {n}, {n}, edge_dim={self.edge_dim}), "
                                 f"got {tuple(edges.shape)}")
            if not edges.is_floating_point():
                raise TypeError(f"EGNN: edges must be a floating-point tensor, got {edges.dtype}")
            if edges.device != feats.device:
                raise ValueError(f"EGNN: edges must be on feats' device {feats.device}, got {edges.device}")
        if mask is not None:
            if not isinstance(mask, Tensor):
                raise TypeError(f"EGNN: mask must be a torch.Tensor, got {type(mask).__name__}")
            if mask.dtype != torch.bool:
                raise TypeError(f"EGNN: mask must be a bool tensor (True = real node), got {mask.dtype}")
            if tuple(mask.shape) != (b, n):
                raise ValueError(f"EGNN: mask must have shape ({b}, {n}), got {tuple(mask.shape)}")
            if mask.device != feats.device:
                raise ValueError(f"EGNN: mask must be on feats' device {feats.device}, got {mask.device}")

    def _check_adj(self, adj_mat, b: int, n: int, device) -> Tensor:
        if not isinstance(adj_mat, Tensor):
            raise TypeError(f"EGNN: adj_mat must be a torch.Tensor, got {type(adj_mat).__name__}")
        if adj_mat.dtype != torch.bool:
            raise TypeError(f"EGNN: adj_mat must be a bool tensor, got {adj_mat.dtype}")
        if tuple(adj_mat.shape) not in ((n, n), (b, n, n)):
            raise ValueError(f"EGNN: adj_mat must have shape ({n}, {n}) or ({b}, {n}, {n}), got {tuple(adj_mat.shape)}")
        if adj_mat.dim() == 2:
            adj_mat = adj_mat.unsqueeze(0).expand(b, n, n)
        if adj_mat.device != device:
            raise ValueError(f"EGNN: adj_mat must be on feats' device {device}, got {adj_mat.device}")
        return adj_mat

    # ------------------------------------------------------- neighbour choice
    def _neighbours(self, coors: Tensor, mask: Optional[Tensor], adj_mat: Optional[Tensor]):
        """``None`` (every pair) or ``(index (b, n, k), within (b, n, k))`` as egnn-pytorch picks them."""
        if not (self.num_nearest_neighbors > 0 or self.only_sparse_neighbors):
            return None
        b, n = coors.shape[:2]
        k, radius = self.num_nearest_neighbors, self.valid_radius
        with torch.no_grad():
            c = coors.detach()
            # Same expression as the original, so that ties break the same way in topk.
            rank = ((c[:, :, None, :] - c[:, None, :, :]) ** 2).sum(dim=-1)
            if mask is not None:
                rank.masked_fill_(~(mask[:, :, None] & mask[:, None, :]), _MASKED_RANK)
            if adj_mat is not None:
                adj = self._check_adj(adj_mat, b, n, coors.device)
                if self.only_sparse_neighbors:
                    k = int(adj.float().sum(dim=-1).max().item())
                    radius = 0
                eye = torch.eye(n, dtype=torch.bool, device=coors.device)
                rank.masked_fill_(eye, -1.0)
                rank.masked_fill_(adj & ~eye, 0.0)
            if k > n:
                raise ValueError(f"EGNN: cannot pick {k} neighbours among {n} nodes (num_nearest_neighbors="
                                 f"{self.num_nearest_neighbors}, only_sparse_neighbors={self.only_sparse_neighbors})")
            ranked, index = rank.topk(k, dim=-1, largest=False)
        return index, ranked <= radius

    # ------------------------------------------------------------------ paths
    def _fusable(self, feats: Tensor, selection) -> bool:
        if feats.dtype not in _FUSED_DTYPES or feats.numel() == 0:
            return False
        if self.training and self.dropout > 0:
            return False
        if self.coor_weights_clamp_value is not None and not self.coor_weights_clamp_value > 0:
            return False
        if isinstance(self.coors_norm, CoorsNorm) and self.coors_norm.eps != _CLAMPED_EPS:
            return False
        return selection is None or selection[0].size(-1) > 0

    def forward(self, feats: Tensor, coors: Tensor, edges: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                adj_mat: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        self._check(feats, coors, edges, mask)
        if edges is not None:
            edges = edges.to(feats.dtype)
        selection = self._neighbours(coors, mask, adj_mat)
        if self._fusable(feats, selection):
            return self._forward_fused(feats, coors, edges, mask, selection)
        return self._forward_dense(feats, coors, edges, mask, selection)

    def _update_feats(self, feats: Tensor, m: Tensor) -> Tensor:
        if self.node_mlp is None:
            return feats
        return self.node_mlp(torch.cat((self.node_norm(feats), m), dim=-1)) + feats

    def _forward_fused(self, feats, coors, edges, mask, selection):
        b, n, dim = feats.shape
        nodes = b * n
        device, dtype = feats.device, feats.dtype
        ids = torch.arange(nodes, device=device).view(b, n)
        # Receiver i (dst) and sender j (src) of every candidate pair, as global node ids.
        if selection is None:
            senders = ids[:, None, :].expand(b, n, n)
        else:
            index, within = selection
            senders = index + (torch.arange(b, device=device) * n).view(b, 1, 1)
        receivers = ids[:, :, None].expand(senders.shape)
        if mask is None:
            src, dst = senders.reshape(-1), receivers.reshape(-1)
        else:
            keep = mask[:, :, None] & mask.reshape(-1)[senders]
            if selection is not None:
                keep = keep & within
            src, dst = senders[keep], receivers[keep]
        graph = Graph(src, dst, nodes, validate=False)

        x = coors.reshape(nodes, 3)
        w1, b1 = self.edge_mlp[0].weight, self.edge_mlp[0].bias
        ff = self.fourier_features
        radial = 2 * dim + 2 * ff  # the column of |x_i - x_j|^2
        attrs: List[Tensor] = []
        if ff > 0:
            d = x[dst] - x[src]
            attrs.append(_fourier((d * d).sum(dim=-1, keepdim=True), ff))
        if edges is not None:
            # Pair (b, i, j) is row (b * n + i) * n + j of the flattened edges.
            attrs.append(edges.reshape(nodes * n, self.edge_dim)[dst * n + src % n])
        edge_attr = torch.cat(attrs, dim=-1) if attrs else x.new_zeros(src.numel(), 0)
        w_edge = torch.cat((w1[:, 2 * dim:radial], w1[:, radial + 1:]), dim=1)

        if self.coors_mlp is not None:
            c1, c2 = self.coors_mlp[0], self.coors_mlp[3]
            wc1, bc1, wc2, bc2 = c1.weight, c1.bias, c2.weight[0], c2.bias
        else:  # a zero coordinate MLP; its output is not used
            wc1, bc1, wc2, bc2 = feats.new_zeros(1, self.m_dim), feats.new_zeros(1), feats.new_zeros(1), None
        gate = self.edge_gate[0] if self.edge_gate is not None else None
        params = _egnn_ops.MessageParams(
            w_radial=w1[:, radial], w_edge=w_edge, w2=self.edge_mlp[3].weight, b2=self.edge_mlp[3].bias,
            w_att=gate.weight[0] if gate is not None else None, b_att=gate.bias if gate is not None else None,
            wc1=wc1, bc1=bc1, wc2=wc2, bc2=bc2,
        )
        clamp = self.coor_weights_clamp_value
        config = _egnn_ops.MessageConfig(
            act="silu", coord_norm="clamped" if isinstance(self.coors_norm, CoorsNorm) else "none",
            c_clamp=float(clamp) if clamp is not None else 0.0,
        )
        h = feats.reshape(nodes, dim)
        node_i = nn.functional.linear(h, w1[:, :dim], b1)
        node_j = nn.functional.linear(h, w1[:, dim:2 * dim])
        m_sum, t_sum = _egnn_ops.egnn_message(node_i, node_j, x, edge_attr, src, dst, params, config, graph=graph,
                                              backend=self.backend)

        if self.coors_mlp is not None:
            t = t_sum.view(b, n, 3)
            if isinstance(self.coors_norm, CoorsNorm):
                t = t * self.coors_norm.scale
            coors_out = coors + t
        else:
            coors_out = coors
        m = m_sum.view(b, n, self.m_dim)
        if self.m_pool_method == "mean":
            m = m / graph.in_degree.clamp(min=1).to(dtype).view(b, n, 1)
        return self._update_feats(feats, m), coors_out

    def _forward_dense(self, feats, coors, edges, mask, selection):
        """Every pair as a dense ``(b, n, k, ...)`` tensor, in egnn-pytorch's order of operations."""
        b, n, dim = feats.shape
        rel = coors[:, :, None, :] - coors[:, None, :, :]
        dist = (rel ** 2).sum(dim=-1, keepdim=True)
        pair_mask = None
        if selection is None:
            feats_j = feats[:, None, :, :].expand(b, n, n, dim)
            if mask is not None:
                pair_mask = mask[:, :, None] & mask[:, None, :]
        else:
            index, within = selection
            rel, dist = _pick(rel, index), _pick(dist, index)
            if edges is not None:
                edges = _pick(edges, index)
            feats_j = _per_batch(feats, index)
            if mask is not None:
                pair_mask = mask[:, :, None] & _per_batch(mask, index) & within
        if self.fourier_features > 0:
            dist = torch.cat((_fourier(dist, self.fourier_features), dist), dim=-1)
        parts = [feats[:, :, None, :].expand(feats_j.shape), feats_j, dist]
        if edges is not None:
            parts.append(edges)
        m = self.edge_mlp(torch.cat(parts, dim=-1))
        if self.edge_gate is not None:
            m = m * self.edge_gate(m)

        if self.coors_mlp is not None:
            weight = self.coors_mlp(m).squeeze(-1)
            rel = self.coors_norm(rel)
            if pair_mask is not None:
                weight = weight.masked_fill(~pair_mask, 0.0)
            clamp = self.coor_weights_clamp_value
            if clamp is not None:
                weight = weight.clamp(min=-clamp, max=clamp)
            coors_out = coors + torch.einsum("bij,bijc->bic", weight, rel)
        else:
            coors_out = coors

        if self.node_mlp is None:
            return feats, coors_out
        if pair_mask is not None:
            m = m.masked_fill(~pair_mask[..., None], 0.0)
        if self.m_pool_method == "sum":
            pooled = m.sum(dim=-2)
        elif pair_mask is None:
            pooled = m.mean(dim=-2)
        else:
            count = pair_mask.sum(dim=-1, keepdim=True)
            pooled = (m.sum(dim=-2) / count.clamp(min=1)).masked_fill(count == 0, 0.0)
        return self._update_feats(feats, pooled), coors_out


# ------------------------------------------------------------------------ network
class _Attention(nn.Module):
    """Multi-head softmax attention of queries ``x`` over ``context`` (egnn-pytorch's ``Attention``)."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        inner = heads * dim_head
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: Tensor, context: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        def split(t: Tensor) -> Tensor:  # (b, n, h * d) -> (b, h, n, d)
            return t.reshape(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)

        k, v = self.to_kv(context).chunk(2, dim=-1)
        q, k, v = split(self.to_q(x)), split(k), split(v)
        scores = (q @ k.transpose(-1, -2)) * self.scale
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], -torch.finfo(scores.dtype).max)
        out = scores.softmax(dim=-1) @ v
        return self.to_out(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


class GlobalLinearAttention(nn.Module):
    """egnn-pytorch's global attention block: global tokens attend to the nodes, the nodes
    to the global tokens, then a feed-forward layer (same parameter names)."""

    def __init__(self, *, dim: int, heads: int = 8, dim_head: int = 64):
        super().__init__()
        self.norm_seq = nn.LayerNorm(dim)
        self.norm_queries = nn.LayerNorm(dim)
        self.attn1 = _Attention(dim, heads, dim_head)
        self.attn2 = _Attention(dim, heads, dim_head)
        self.ff = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor, queries: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        normed = self.norm_seq(x)
        induced = self.attn1(self.norm_queries(queries), normed, mask=mask)
        x = x + self.attn2(normed, induced)
        return self.ff(x) + x, queries + induced


def _check_tokens(t, num: int, name: str, what: str, ndim: int) -> None:
    """Token ids for an ``nn.Embedding`` of ``num`` rows: an integer ``ndim``-D tensor in
    ``[0, num)`` (checked here: the embedding's own error does not say which input)."""
    if not isinstance(t, Tensor) or t.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"EGNN_Network: {name} must be an int64 tensor of token ids (the network has {what}), "
                        f"got {getattr(t, 'dtype', type(t).__name__)}")
    if t.dim() != ndim:
        raise ValueError(f"EGNN_Network: {name} must be a {ndim}-D tensor of token ids, got shape {tuple(t.shape)}")
    if not _backend.tracing() and t.numel():
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= num:
            raise IndexError(f"EGNN_Network: {name} must hold token ids in [0, {what}={num}), got values in [{lo}, {hi}]")


class EGNN_Network(nn.Module):
    """A stack of :class:`EGNN` layers with egnn-pytorch's ``EGNN_Network`` interface and parameters.

    Optional token / position / edge-token embeddings, adjacency-degree embeddings
    (``num_adj_degrees``, ``adj_dim``) and global attention every
    ``global_linear_attn_every`` layers; ``**kwargs`` (``backend`` included) go to
    every :class:`EGNN` layer, which gets ``norm_feats=True``.
    """

    def __init__(
        self,
        *,
        depth: int,
        dim: int,
        num_tokens: Optional[int] = None,
        num_edge_tokens: Optional[int] = None,
        num_positions: Optional[int] = None,
        edge_dim: int = 0,
        num_adj_degrees: Optional[int] = None,
        adj_dim: int = 0,
        global_linear_attn_every: int = 0,
        global_linear_attn_heads: int = 8,
        global_linear_attn_dim_head: int = 64,
        num_global_tokens: int = 4,
        **kwargs,
    ):
        super().__init__()
        if num_adj_degrees is not None and num_adj_degrees < 1:
            raise ValueError(f"EGNN_Network: num_adj_degrees must be >= 1, got {num_adj_degrees}")
        for name, v, low in (("depth", depth, 0), ("dim", dim, 1), ("num_tokens", num_tokens, 1),
                             ("num_edge_tokens", num_edge_tokens, 1), ("num_positions", num_positions, 1)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
                raise ValueError(f"EGNN_Network: {name} must be an int >= {low}, got {v!r}")
        self.num_positions = num_positions
        self.token_emb = nn.Embedding(num_tokens, dim) if num_tokens is not None else None
        self.pos_emb = nn.Embedding(num_positions, dim) if num_positions is not None else None
        self.edge_emb = nn.Embedding(num_edge_tokens, edge_dim) if num_edge_tokens is not None else None
        self.has_edges = edge_dim > 0
        self.num_adj_degrees = num_adj_degrees
        self.adj_emb = (nn.Embedding(num_adj_degrees + 1, adj_dim)
                        if num_adj_degrees is not None and adj_dim > 0 else None)
        layer_edge_dim = (edge_dim if self.has_edges else 0) + (adj_dim if num_adj_degrees is not None else 0)
        self.global_tokens = (nn.Parameter(torch.randn(num_global_tokens, dim))
                              if global_linear_attn_every > 0 else None)
        self.layers = nn.ModuleList()
        for depth_index in range(depth):
            attn = None
            if global_linear_attn_every > 0 and depth_index % global_linear_attn_every == 0:
                attn = GlobalLinearAttention(dim=dim, heads=global_linear_attn_heads,
                                             dim_head=global_linear_attn_dim_head)
            self.layers.append(nn.ModuleList([attn, EGNN(dim=dim, edge_dim=layer_edge_dim, norm_feats=True, **kwargs)]))

    def forward(self, feats: Tensor, coors: Tensor, adj_mat: Optional[Tensor] = None, edges: Optional[Tensor] = None,
                mask: Optional[Tensor] = None, return_coor_changes: bool = False):
        b = feats.shape[0]
        if self.token_emb is not None:
            _check_tokens(feats, self.token_emb.num_embeddings, "feats", "num_tokens", 2)
            feats = self.token_emb(feats)
        if self.pos_emb is not None:
            n = feats.shape[1]
            if n > self.num_positions:
                raise ValueError(f"EGNN_Network: {n} nodes exceed num_positions={self.num_positions}")
            feats = feats + self.pos_emb(torch.arange(n, device=feats.device))[None]
        if edges is not None and self.edge_emb is not None:
            _check_tokens(edges, self.edge_emb.num_embeddings, "edges", "num_edge_tokens", 3)
            edges = self.edge_emb(edges)

        if self.num_adj_degrees is not None:
            if adj_mat is None:
                raise ValueError("EGNN_Network: adj_mat is required with num_adj_degrees")
            if not isinstance(adj_mat, Tensor) or adj_mat.dtype != torch.bool:
                raise TypeError(f"EGNN_Network: adj_mat must be a bool tensor, got "
                                f"{getattr(adj_mat, 'dtype', type(adj_mat).__name__)}")
            if adj_mat.dim() == 2:
                adj_mat = adj_mat.unsqueeze(0).expand(b, *adj_mat.shape)
            degrees = adj_mat.long()
            for degree in range(2, self.num_adj_degrees + 1):
                reach = (adj_mat.float() @ adj_mat.float()) > 0
                # As egnn-pytorch: every entry where reach and adj_mat differ gets this degree.
                degrees = degrees.masked_fill((reach.float() - adj_mat.float()).bool(), degree)
                adj_mat = reach
            if self.adj_emb is not None:
                adj_features = self.adj_emb(degrees)
                edges = torch.cat((edges, adj_features), dim=-1) if edges is not None else adj_features

        tokens = self.global_tokens[None].expand(b, *self.global_tokens.shape) if self.global_tokens is not None else None
        changes = [coors]
        for attn, layer in self.layers:
            if attn is not None:
                feats, tokens = attn(feats, tokens, mask=mask)
            feats, coors = layer(feats, coors, adj_mat=adj_mat, edges=edges, mask=mask)
            changes.append(coors)
        if return_coor_changes:
            return feats, coors, changes
        return feats, coors
