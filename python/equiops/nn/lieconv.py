"""Drop-in LieConv / LieResNet (Finzi, Stanton, Izmailov, Wilson, ICML 2020) on sparse
neighbourhoods.

The modules have the constructor arguments and the module tree of ``lie_conv/lieConv.py``
(and ``masked_batchnorm.py``, ``utils.py``) of the final version of GitHub mfinzi/LieConv,
so its ``state_dict`` loads with ``load_state_dict(..., strict=True)`` (keys such as
``net.1.conv.weightnet.0.module.weight``, ``net.1.conv.r``, ``net.1.net.5.linear.weight``
and the batch-norm running statistics) and gives its outputs. Groups come from
:mod:`equiops.lie` (``T(k)``, ``SO3()``, ``SE3()`` ... with the original's methods).

What changes: the original lifts every cloud to *all pairs* ``log(exp(-a_j) exp(a_i))``,
an ``(bs, n, n, d)`` tensor passed from layer to layer, so memory is
``O((n * liftsamples)^2)``. Here the tuple passed between layers is
``(lifted, values, mask)`` with ``lifted (bs, n, lie_dim + q_dim)`` the lifted points
``[a_i, q_i]`` themselves, and each :class:`LieConv`:

1. picks, for every query point, its neighbourhood of ``k = min(nbhd, n)`` input points
   (the k nearest by ``group.distance``, or the original's random sample inside the
   adaptive ball of radius ``r``), processing the ``bs * m`` query rows in chunks of
   ``R = max(1, max_chunk_pairs // n)`` rows: for a chunk it forms the pair embeddings
   and distances of its ``R x n`` (query, point) pairs under ``no_grad``, keeps the
   selected indices and drops the rest. Peak transient memory is therefore
   ``O(max_chunk_pairs)`` pair embeddings (per pair: ``lie_dim + 2 q_dim`` numbers, a
   distance, a noise value, and for matrix groups a few ``rep_dim x rep_dim`` products);
   ``max_chunk_pairs`` is a class attribute (set it on the class or on one layer),
   ``2**17`` by default: measured on the CPU in float64, about 1 KB per pair for ``SE3``
   (about 130 MB per chunk) and a few tens of MB per chunk for ``T(3)``;
2. forms the pair embeddings ``[log(exp(-a_j) exp(a_i)), q_i, q_j]`` (with autograd)
   only for the selected ``(bs, m, k)`` neighbours;
3. runs the weight-net MLP on them and the masked PointConv sum through
   :func:`equiops.ops.pointconv.pointconv` (the fused operator) when it is available,
   else :func:`equiops.reference.pointconv.pointconv` (the class attribute ``backend``:
   ``None`` lets the fused operator choose, ``"reference"`` forces the plain-PyTorch
   one, other strings go to the fused operator's ``backend=``): the neighbours' values
   are gathered inside the operator from ``nbhd_idx``. The original's ``linear`` weight
   (columns ordered value channel major) is permuted to the operator's layout on the fly.

So memory is ``O(n * k)`` (plus the chunk), never ``O(n^2)`` unless ``k = n``.

Semantics kept from the original (final version), quirks included:

* ``knn=True``: ``topk`` of the distances (``1e8`` at masked points), ``sorted=False``.
  With ``k = n`` (``nbhd >= n``, e.g. ``nbhd=inf``) the original masks neighbour *slot*
  ``s`` of query ``i`` with ``mask[s] & mask[i] & mask[idx[i, s]]`` (it broadcasts the
  point mask over the slot axis), so a valid neighbour that ``topk`` happens to return
  in a slot whose position is a padded point is dropped. This depends on ``torch.topk``'s
  unsorted order; it is reproduced (same ``topk`` call on the same distances), as the
  recorded outputs need it (on another device or torch version the order, and so the
  dropped slots, may differ, as they would for the original). With ``k < n`` the original fails (shape mismatch); here the
  mask is ``mask[idx[i, s]] & mask[i]``.
* ``knn=False``: ``topk(within_ball + U(0, 1) noise, k)`` with ``within_ball =
  (dist < r) & mask[j] & mask[i]``, valid where the top value exceeds 1. On the CPU the
  noise is drawn in the original's order (row chunks of the same ``(bs, m, n)`` float
  tensor), so with the same seed the same neighbourhoods are drawn. In training ``r``
  is updated exactly as the original does: ``navg = within_ball.float().sum() /
  mask_at_query.sum()``, ``avg_fill = navg / mask.sum(-1).float().mean()``,
  ``r += coeff * (fill_frac - avg_fill)`` with ``coeff = 0.5`` (skipped, instead of
  making ``r`` NaN, when no query point is valid).
* Farthest-point subsampling (``ds_frac < 1``): ``m = round(ds_frac * n)`` points; the
  start point is *random*, the ``(randint(0, n) mod n_valid)``-th valid point of each
  cloud; then ``m`` steps of batched tensor ops (no loop over points), the running
  distances kept in torch's default dtype with ``1e8`` start and ``-100`` at masked
  points, as the original does (whose ``distances[closer] = dist[closer]`` fails on
  current torch for float64 clouds under a float32 default dtype; here it is cast).
  ``cache=True`` computes the indices once and reuses them.
  Difference: the original's ``BottleBlock`` draws the subsample twice (once for the
  residual, once inside the convolution), so the residual adds values of a different
  random subsample; here the block draws once and the convolution uses those indices.
* Masked batch norm uses ``std = var.clamp(eps) ** 0.5``; ``mean=True`` divides each
  convolution by its number of valid neighbours (after the bias) and makes the final
  pooling a masked mean; a bottleneck block adds its input to the first ``chin`` channels.

Padding: coordinates and values at masked points are replaced by zeros on entry of
:class:`LieResNet`, so garbage (even NaN) there cannot change the outputs. A cloud with
no valid point gives a zero output row (the masked mean pool divides by
``max(1, n_valid)``; a training batch norm with no valid entry normalises with its
running statistics and does not update them).
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import backend as _backend
from ._checks import check_like, first_parameter

__all__ = [
    "BottleBlock",
    "Expression",
    "FPSindices",
    "FPSsubsample",
    "FarthestSubsample",
    "GlobalPool",
    "LieConv",
    "LieConvBNrelu",
    "LieResNet",
    "LinearBNact",
    "MaskBatchNormNd",
    "Pass",
    "PointConv",
    "Swish",
    "WeightNet",
    "farthest_point_indices",
    "lift_points",
    "pConvBNrelu",
]


# --------------------------------------------------------------------------- small modules


class Expression(nn.Module):
    """Wraps a function as a module."""

    def __init__(self, func: Callable):
        super().__init__()
        self.func = func

    def forward(self, x):
        return self.func(x)


class Pass(nn.Module):
    """Applies ``module`` to entry ``dim`` of a ``(coords, values, mask)`` tuple."""

    def __init__(self, module: nn.Module, dim: int = 1):
        super().__init__()
        self.module = module
        self.dim = dim

    def forward(self, x):
        xs = list(x)
        xs[self.dim] = self.module(xs[self.dim])
        return xs


class Swish(nn.Module):
    """``x * sigmoid(x)`` (the original's ``Swish()``, an ``Expression`` without parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(x)


def _activation(act: str) -> nn.Module:
    if act == "swish":
        return Swish()
    if act == "relu":
        return nn.ReLU()
    raise ValueError(f"act: expected 'swish' or 'relu', got {act!r}")


class MaskBatchNormNd(nn.BatchNorm1d):
    """Batch norm over every leading dim of ``values (*, c)`` within ``mask (*)``.

    Takes and returns ``(coords, values, mask)``. As the original: the running variance
    gets the unbiased estimate, the normalisation the biased one, ``std =
    var.clamp(eps) ** 0.5``, ``num_batches_tracked`` is not advanced. Guards the original
    lacks: with no valid entry the running statistics are used and left unchanged (no
    NaN); with one valid entry the unbiased variance divides by ``max(1, n - 1)``.
    """

    def forward(self, inp):
        coords, x, mask = self._check(inp)
        sum_dims = list(range(x.dim() - 1))
        x_or_zero = torch.where(mask.unsqueeze(-1), x, torch.zeros_like(x))
        xmean, var = self.running_mean, self.running_var
        if self.training or not self.track_running_stats:
            numel = mask.sum()
            if mask.shape != x.shape[:-1]:
                numel = numel * x.shape[0]
            if bool(numel > 0):
                xsum = x_or_zero.sum(dim=sum_dims)
                xxsum = (x_or_zero * x_or_zero).sum(dim=sum_dims)
                xmean = xsum / numel
                sumvar = xxsum - xsum * xmean
                var = sumvar / numel
                if self.track_running_stats and self.running_mean is not None:
                    unbiased = sumvar / (numel - 1).clamp(min=1)
                    momentum = 0.1 if self.momentum is None else self.momentum
                    with torch.no_grad():
                        self.running_mean.copy_((1 - momentum) * self.running_mean + momentum * xmean.detach())
                        self.running_var.copy_((1 - momentum) * self.running_var + momentum * unbiased.detach())
            elif xmean is None:  # no running statistics and nothing valid: identity-like
                xmean = torch.zeros_like(self.weight)
                var = torch.ones_like(self.weight)
        std = var.clamp(self.eps) ** 0.5
        ratio = self.weight / std
        output = x_or_zero * ratio + (self.bias - xmean * ratio)
        return (coords, output, mask)

    def _check(self, inp):
        if not isinstance(inp, (tuple, list)) or len(inp) != 3:
            raise TypeError(f"MaskBatchNormNd: expected a (coords, values, mask) tuple, got {type(inp).__name__}"
                            + (f" of length {len(inp)}" if isinstance(inp, (tuple, list)) else ""))
        coords, x, mask = inp
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"MaskBatchNormNd: values must be a floating-point tensor, got "
                            f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}")
        if x.dim() < 2 or x.shape[-1] != self.num_features:
            raise ValueError(f"MaskBatchNormNd: values must have shape (..., {self.num_features}) (num_features), "
                             f"got {tuple(x.shape)}")
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"MaskBatchNormNd: mask must be a bool tensor, got "
                            f"{mask.dtype if isinstance(mask, Tensor) else type(mask).__name__}")
        lead = tuple(x.shape[:-1])
        try:
            ok = mask.dim() <= len(lead) and tuple(torch.broadcast_shapes(mask.shape, lead)) == lead
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"MaskBatchNormNd: mask must have values' leading shape {lead}, got {tuple(mask.shape)}")
        ref = self.weight if self.weight is not None else self.running_mean
        if ref is not None:
            if x.device != ref.device or mask.device != ref.device:
                raise ValueError(f"MaskBatchNormNd: values and mask must be on the module's device {ref.device}, "
                                 f"got {x.device} and {mask.device}")
            if x.dtype != ref.dtype:
                raise TypeError(f"MaskBatchNormNd: values must have the module's dtype {ref.dtype}, got {x.dtype}")
        return coords, x, mask


def LinearBNact(chin: int, chout: int, act: str = "swish", bn: bool = True) -> nn.Sequential:
    """``Pass(Linear)``, ``MaskBatchNormNd`` (or an empty ``Sequential``), ``Pass(act)``;
    inputs ``(_, (bs, n, nbhd, c), mask)``."""
    if act not in ("relu", "swish"):
        raise ValueError(f"act: expected 'swish' or 'relu', got {act!r}")
    return nn.Sequential(
        Pass(nn.Linear(chin, chout), dim=1),
        MaskBatchNormNd(chout) if bn else nn.Sequential(),
        Pass(_activation(act), dim=1),
    )


def WeightNet(in_dim: int, out_dim: int, act: str, bn: bool, k: int = 32) -> nn.Sequential:
    """The kernel MLP: three ``LinearBNact`` blocks flattened into one 9-module ``Sequential``."""
    return nn.Sequential(
        *LinearBNact(in_dim, k, act, bn),
        *LinearBNact(k, k, act, bn),
        *LinearBNact(k, out_dim, act, bn),
    )


# --------------------------------------------------------------------------- groups


def _lie_module():
    try:
        from .. import lie
    except ImportError:
        return None
    return lie


def _resolve_group(group, default: str):
    """``None`` -> the default group of :mod:`equiops.lie`; a group class -> an instance."""
    if group is None:
        lie = _lie_module()
        if lie is None:
            raise ImportError("equiops.lie is not available: pass group= explicitly")
        return lie.T(3) if default == "T3" else getattr(lie, default)()
    if isinstance(group, type):
        group = group()
    for attr in ("lie_dim", "q_dim", "distance"):
        if not hasattr(group, attr):
            raise TypeError(f"group: expected a Lie group of equiops.lie (with {attr}), got {type(group).__name__}")
    return group


def _coord_dim(group) -> int:
    """Dimension of the points the group lifts from: ``group.point_dim`` (``rep_dim`` for
    T(k), SO(3), SO(2); ``rep_dim - 1`` for SE(2), SE(3), whose matrices are homogeneous)."""
    explicit = getattr(group, "point_dim", None)
    if isinstance(explicit, int):
        return explicit
    names = {cls.__name__ for cls in type(group).__mro__}
    return group.rep_dim - 1 if names & {"SE3", "SE2"} else group.rep_dim


def _group_name(group) -> str:
    return type(group).__name__


def _pair_kind(group) -> str:
    lie = _lie_module()
    if lie is not None:
        if isinstance(group, getattr(lie, "T", ())):
            return "diff"
        base = getattr(lie, "LieGroup", None)
        if base is not None and isinstance(group, base) and type(group).elems2pairs is base.elems2pairs:
            return "exp"
    return "stack"


class _PairEmbedder:
    """Pair embeddings ``[log(exp(-a_j) exp(a_i)), q_i, q_j]`` (the original's
    ``abq_pairs[b, i, j]``) of query points ``i`` against input points ``j``, for chosen
    rows or gathered neighbours only.

    ``query`` ``(bs, m, lie_dim + q_dim)``, ``points`` ``(bs, n, lie_dim + q_dim)``.
    The group part uses a difference for translation groups, ``log(exp(-a_j) @
    exp(a_i))`` with the matrices of every point computed once for groups with the
    generic ``elems2pairs``, else the group's own ``elems2pairs`` on stacked pairs.
    """

    def __init__(self, group, query: Tensor, points: Tensor):
        ld = group.lie_dim if group is not None else points.shape[-1]
        self.group = group
        self.a_q, self.q_q = query[..., :ld], query[..., ld:]
        self.a_p, self.q_p = points[..., :ld], points[..., ld:]
        self.kind = _pair_kind(group) if group is not None else "diff"
        if self.kind == "exp":
            self.e_q = group.exp(self.a_q)  # (bs, m, r, r)
            self.e_inv = group.exp(-self.a_p)  # (bs, n, r, r)

    def _group_part(self, a_q: Tensor, a_p: Tensor, e_q=None, e_inv=None) -> Tensor:
        if self.kind == "diff":
            return a_q - a_p
        if self.kind == "exp":
            return self.group.log(e_inv @ e_q)
        a_q, a_p = torch.broadcast_tensors(a_q, a_p)
        return self.group.elems2pairs(torch.stack([a_q, a_p], dim=-2))[..., 0, 1, :]

    def _embed(self, ab: Tensor, q_q: Tensor, q_p: Tensor) -> Tensor:
        if q_q.shape[-1] == 0:
            return ab
        q_q = q_q.expand(*ab.shape[:-1], q_q.shape[-1])
        q_p = q_p.expand(*ab.shape[:-1], q_p.shape[-1])
        return torch.cat([ab, q_q, q_p], dim=-1)

    def rows(self, b: Tensor, q: Tensor) -> Tensor:
        """``(R, n, d)`` embeddings of the query rows ``(b[r], q[r])`` against every point
        (``b`` may be an int: all rows in one cloud, whose points are then broadcast, not copied)."""
        a_q = self.a_q[b, q].unsqueeze(-2)  # (R, 1, ld)
        a_p = self.a_p[b]  # (R, n, ld)
        if self.kind == "exp":
            ab = self._group_part(a_q, a_p, self.e_q[b, q].unsqueeze(-3), self.e_inv[b])
        else:
            ab = self._group_part(a_q, a_p)
        return self._embed(ab, self.q_q[b, q].unsqueeze(-2), self.q_p[b])

    def gather(self, idx: Tensor) -> Tensor:
        """``(bs, m, K, d)`` embeddings of each query against its neighbours ``idx (bs, m, K)``."""
        B = torch.arange(idx.shape[0], device=idx.device).view(-1, 1, 1)
        a_q = self.a_q.unsqueeze(-2)  # (bs, m, 1, ld)
        a_p = self.a_p[B, idx]  # (bs, m, K, ld)
        if self.kind == "exp":
            ab = self._group_part(a_q, a_p, self.e_q.unsqueeze(-3), self.e_inv[B, idx])
        else:
            ab = self._group_part(a_q, a_p)
        return self._embed(ab, self.q_q.unsqueeze(-2), self.q_p[B, idx])


def _euclidean_distance(pairs: Tensor) -> Tensor:
    return (pairs**2).sum(dim=-1).sqrt()


def lift_points(group, coords: Tensor, values: Tensor, mask: Tensor, nsamples: int = 1):
    """Lift ``(coords (bs, n, coord_dim), values (bs, n, c), mask (bs, n))`` to
    ``(lifted (bs, n * s, lie_dim + q_dim), values (bs, n * s, c), mask (bs, n * s))``
    with ``group.lifted_elems`` (``s`` lifts per point, each point's lifts consecutive,
    as the original's ``lift``); ``lifted = [a, q]``. No pairs are formed."""
    if not hasattr(group, "lifted_elems"):
        raise TypeError(f"group: {_group_name(group)} has no lifted_elems; LieResNet needs a liftable group")
    coords, values, mask = _check_triple((coords, values, mask), where="lift_points")
    a, q = group.lifted_elems(coords, nsamples)
    bs, n = mask.shape
    if a.dim() != 3 or a.shape[0] != bs or a.shape[1] % max(n, 1) != 0:
        raise ValueError(f"group.lifted_elems returned a of shape {tuple(a.shape)} for coords {tuple(coords.shape)}")
    s = a.shape[1] // n if n else 1
    if q is None:
        q = a.new_zeros(*a.shape[:-1], 0)
    lifted = torch.cat([a, q], dim=-1)
    values = values.unsqueeze(2).expand(bs, n, s, values.shape[-1]).reshape(bs, n * s, values.shape[-1])
    mask = mask.unsqueeze(2).expand(bs, n, s).reshape(bs, n * s)
    return lifted, values, mask


# --------------------------------------------------------------------------- pointconv operator

_FUSED = None  # cache: False when equiops.ops.pointconv is unavailable


def _fused_pointconv():
    global _FUSED
    if _FUSED is None:
        try:
            from ..ops import pointconv as _mod

            _FUSED = getattr(_mod, "pointconv", None) or False
        except ImportError:
            _FUSED = False
    return _FUSED or None


def _pointconv(penult, values, nbhd_idx, nbhd_mask, weight, bias, mean, backend=None):
    """The one call site of the PointConv sum: the fused operator when importable (and
    ``backend != "reference"``), else the plain-PyTorch reference."""
    fused = _fused_pointconv() if backend != "reference" else None
    if fused is not None:
        return fused(penult, values, nbhd_idx, nbhd_mask, weight, bias, mean, backend=backend)
    from ..reference.pointconv import pointconv as reference

    return reference(penult, values, nbhd_idx, nbhd_mask, weight, bias, mean)


# --------------------------------------------------------------------------- neighbourhoods


def _check_nbhd(nbhd, name: str = "nbhd"):
    if isinstance(nbhd, bool) or not isinstance(nbhd, numbers.Real) or math.isnan(nbhd) or nbhd < 1:
        raise ValueError(f"{name}: expected a neighbourhood size >= 1 (an int or inf), got {nbhd!r}")
    return nbhd


def _fast_knn_applies(group) -> bool:
    """Whether the exact kNN fast path (:func:`_translation_knn`) may be used for
    ``group``: a translation group ``T(k)`` with the inherited distance
    ``alpha * |a_i - a_j|`` (``alpha > 0``, no orbit part), a monotone function of the
    Euclidean distance of the lifted points."""
    lie = _lie_module()
    if lie is None or not isinstance(group, getattr(lie, "T", ())):
        return False
    base = getattr(lie, "LieGroup", None)
    if base is None or type(group).distance is not base.distance or type(group).elems2pairs is not lie.T.elems2pairs:
        return False
    alpha = getattr(group, "alpha", None)
    return getattr(group, "q_dim", None) == 0 and isinstance(alpha, numbers.Real) and alpha > 0


def _translation_knn(group, lifted_q: Tensor, lifted: Tensor, mask: Tensor, mask_q: Tensor, k: int,
                     max_pairs: int):
    """Exact k nearest neighbours ``(bs, m, k)`` and validity for a translation group
    (``k < n``), the same neighbour *sets* as :func:`_select_neighbours` with ``knn=True``:

    1. candidates: squared Euclidean distances ``|p|^2 - 2 q.p`` (``|q|^2`` is constant
       per row) of every query to every point of its cloud by a batched matrix product
       (points centred on the mean of the cloud's valid points; ``+inf`` at masked
       points), ``max_pairs`` pairs per chunk, and the ``k + margin`` smallest
       (``margin = min(n - k, max(8, k))``);
    2. exact re-ranking: the distance of those candidates by ``group.distance`` of the
       same pair embeddings as the generic path (``1e8`` at masked points), and ``topk``
       of ``k`` among them, ``sorted=False``.

    The selected set equals the generic path's except when the k-th and the
    ``(k + margin + 1)``-th nearest points are within the rounding error of step 1
    (about ``eps * (|q - c|^2 + |p - c|^2)``) of each other, or on exact ties at the k-th
    distance (which ``topk`` breaks either way, in both paths), or for masked queries or
    masked neighbours (which are invalid anyway). The order within a query's ``k``
    neighbours may differ (only the summation order changes)."""
    bs, n = mask.shape
    m = mask_q.shape[1]
    ld = group.lie_dim
    device = mask.device
    a_p, a_q = lifted[..., :ld], lifted_q[..., :ld]
    zero = a_p.new_zeros(())
    pm, qm = mask.unsqueeze(-1), mask_q.unsqueeze(-1)
    centre = torch.where(pm, a_p, zero).sum(1, keepdim=True) / mask.sum(-1).clamp(min=1).view(bs, 1, 1).to(a_p.dtype)
    p = torch.where(pm, a_p - centre, zero)
    q = torch.where(qm, a_q - centre, zero)
    pp = (p * p).sum(-1).masked_fill(~mask, math.inf).unsqueeze(1)  # (bs, 1, n)
    pT = p.transpose(1, 2)
    kc = min(n, k + min(n - k, max(8, k)))
    cand = torch.empty(bs, m, kc, dtype=torch.long, device=device)
    step = max(1, int(max_pairs) // max(bs * n, 1))
    for s in range(0, m, step):
        e = min(s + step, m)
        d2 = torch.baddbmm(pp, q[:, s:e], pT, alpha=-2)  # (bs, R, n)
        cand[:, s:e] = torch.topk(d2, kc, dim=-1, largest=False, sorted=False)[1]
    B = torch.arange(bs, device=device).view(-1, 1, 1)
    dists = group.distance(_PairEmbedder(group, lifted_q, lifted).gather(cand))  # (bs, m, kc)
    dists = torch.where(mask[B, cand], dists, torch.full_like(dists, 1e8))
    sel = torch.topk(dists, k, dim=-1, largest=False, sorted=False)[1]
    idx = cand.gather(-1, sel)
    return idx, mask_q.unsqueeze(-1).expand(bs, m, k)


def _row_chunk(n: int, max_pairs: int) -> int:
    return max(1, int(max_pairs) // max(n, 1))


def _select_neighbours(row_dists: Callable, mask: Tensor, mask_q: Tensor, k: int, knn: bool, radius,
                       max_pairs: int, slot_quirk: bool):
    """Neighbour ids ``(bs, m, k)``, validity ``(bs, m, k)`` and the within-ball count.

    ``row_dists(b, q)`` gives the ``(R, n)`` distances of query rows ``(b, q)`` (``b`` a
    tensor, or an int when the chunk's rows are all in one cloud). Rows are
    the ``bs * m`` queries in row-major order, processed ``max_pairs // n`` at a time.
    """
    bs, n = mask.shape
    m = mask_q.shape[1]
    device = mask.device
    rows = bs * m
    idx_out = torch.empty(rows, k, dtype=torch.long, device=device)
    valid_out = torch.empty(rows, k, dtype=torch.bool, device=device)
    within_count = torch.zeros((), dtype=torch.long, device=device)
    flat_mask_q = mask_q.reshape(rows)
    step = _row_chunk(n, max_pairs)
    for s in range(0, rows, step):
        e = min(s + step, rows)
        r = torch.arange(s, e, device=device)
        q = r % m
        b = s // m if s // m == (e - 1) // m else r // m  # one cloud: an int, its points broadcast
        pmask = mask[b]  # (R, n), or (n,) for an int b
        dists = row_dists(b, q)
        dists = torch.where(pmask, dists, torch.full_like(dists, 1e8))
        qmask = flat_mask_q[s:e].unsqueeze(-1)
        if knn:
            idx = torch.topk(dists, k, dim=-1, largest=False, sorted=False)[1]
            valid = (pmask & qmask).expand(e - s, n) if (slot_quirk and k == n) else qmask.expand(e - s, k)
        else:
            within = (dists < radius) & pmask & qmask
            noise = torch.zeros(e - s, n, device=device)  # torch's default dtype, as the original
            noise.uniform_(0, 1)
            top, idx = torch.topk(within + noise, k, dim=-1, largest=True, sorted=False)
            valid = top > 1
            within_count += within.sum()
        idx_out[s:e] = idx
        valid_out[s:e] = valid
    return idx_out.view(bs, m, k), valid_out.view(bs, m, k), within_count


# --------------------------------------------------------------------------- subsampling


def farthest_point_indices(row_dist: Callable, frac: float, mask: Tensor) -> Tensor:
    """Farthest-point sampling of ``round(frac * n)`` indices ``(bs, m)``, as the original's
    ``FPSindices`` but reading one distance row per step: ``row_dist(farthest (bs,))``
    gives the ``(bs, n)`` distances from each cloud's newest point to all its points.

    Start: the ``(randint(0, n) mod n_valid)``-th valid point of each cloud (random, one
    ``torch.randint(0, n, (bs,))`` draw; point 0 for a cloud with no valid point).
    """
    if isinstance(frac, bool) or not isinstance(frac, numbers.Real) or not 0 < frac <= 1:
        raise ValueError(f"farthest_point_indices: frac must be a fraction in (0, 1], got {frac!r}")
    bs, n = mask.shape
    device = mask.device
    m = int(round(frac * n))
    chosen = torch.zeros(bs, m, dtype=torch.long, device=device)
    distances = torch.ones(bs, n, device=device) * 1e8
    a = torch.randint(0, n, (bs,), dtype=torch.long, device=device)
    counts = mask.sum(-1)
    rank = a % counts.clamp(min=1)
    farthest = (mask.long().cumsum(-1) <= rank.unsqueeze(-1)).sum(-1).clamp(max=n - 1)
    for i in range(m):
        chosen[:, i] = farthest
        dist = torch.where(mask, row_dist(farthest), -100 * torch.ones_like(distances))
        closer = dist < distances
        distances[closer] = dist[closer].to(distances.dtype)
        farthest = torch.max(distances, -1)[1]
    return chosen


def FPSindices(dists: Tensor, frac: float, mask: Tensor) -> Tensor:
    """The original's signature: ``dists (bs, n, n)`` pairwise distances (dense)."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.dim() != 2:
        raise ValueError(f"FPSindices: mask must be a bool tensor of shape (bs, n), got "
                         f"{getattr(mask, 'dtype', type(mask).__name__)} of shape {tuple(getattr(mask, 'shape', ()))}")
    bs, n = mask.shape
    if not isinstance(dists, Tensor) or tuple(dists.shape) != (bs, n, n):
        raise ValueError(f"FPSindices: dists must have shape ({bs}, {n}, {n}) (pairwise distances of mask's points), "
                         f"got {tuple(getattr(dists, 'shape', ()))}")
    if dists.device != mask.device:
        raise ValueError(f"FPSindices: dists must be on mask's device {mask.device}, got {dists.device}")
    B = torch.arange(dists.shape[0], device=dists.device)
    return farthest_point_indices(lambda f: dists[B, f], frac, mask)


class FPSsubsample(nn.Module):
    """Farthest-point subsampling of ``(lifted, values, mask)`` by the group distance."""

    def __init__(self, ds_frac: float, cache: bool = False, group=None):
        super().__init__()
        if not 0 < ds_frac <= 1:
            raise ValueError(f"ds_frac: expected a fraction in (0, 1], got {ds_frac!r}")
        self.ds_frac = ds_frac
        self.cache = cache
        self.cached_indices = None
        self.group = group

    def indices(self, inp) -> Optional[Tensor]:
        lifted, _, mask = inp
        if self.ds_frac == 1:
            return None
        if self.cache and self.cached_indices is not None:
            idx = self.cached_indices
            if idx.shape[0] == 1 and mask.shape[0] > 1:
                idx = idx.expand(mask.shape[0], -1)
            elif idx.shape[0] != mask.shape[0]:
                raise ValueError(f"cached subsample indices are for batch size {idx.shape[0]}, got {mask.shape[0]}")
            return idx
        with torch.no_grad():
            pe = _PairEmbedder(self.group, lifted, lifted)
            dist = self.group.distance if self.group is not None else _euclidean_distance
            B = torch.arange(mask.shape[0], device=mask.device)
            idx = farthest_point_indices(lambda f: dist(pe.rows(B, f)), self.ds_frac, mask)
        if self.cache:
            self.cached_indices = idx.detach()
        return idx

    @staticmethod
    def take(inp, query_idx: Optional[Tensor]):
        lifted, vals, mask = inp
        if query_idx is None:
            return lifted, vals, mask
        B = torch.arange(query_idx.shape[0], device=query_idx.device).unsqueeze(-1)
        return lifted[B, query_idx], vals[B, query_idx], mask[B, query_idx]

    def forward(self, inp, withquery: bool = False):
        query_idx = self.indices(inp)
        out = self.take(inp, query_idx)
        return (*out, query_idx) if withquery else out


class FarthestSubsample(nn.Module):
    """PointConv's subsample module; like the original, only ``ds_frac == 1`` is supported."""

    def __init__(self, ds_frac: float = 0.5, knn_channels=None, cache: bool = False):
        super().__init__()
        if ds_frac != 1:
            raise ValueError(f"ds_frac: PointConv supports only ds_frac=1, got {ds_frac!r}")
        self.ds_frac = ds_frac
        self.knn_channels = knn_channels
        self.cache = cache

    def forward(self, x, withquery: bool = False):
        coords, values, mask = x
        return (coords, values, mask, None) if withquery else (coords, values, mask)


# --------------------------------------------------------------------------- convolutions


def _check_triple(inp, name: str = "inp", where: Optional[str] = None):
    if where is None:
        return _check_triple_impl(inp, name)
    try:
        return _check_triple_impl(inp, name)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None


def _check_triple_impl(inp, name: str):
    if not isinstance(inp, (tuple, list)) or len(inp) != 3:
        raise TypeError(f"{name}: expected a (coords, values, mask) tuple, got {type(inp).__name__}"
                        + (f" of length {len(inp)}" if isinstance(inp, (tuple, list)) else ""))
    coords, values, mask = inp
    for arg, t in (("coords", coords), ("values", values), ("mask", mask)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{arg}: expected a Tensor, got {type(t).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask: expected dtype torch.bool, got {mask.dtype}")
    if mask.dim() != 2:
        raise ValueError(f"mask: expected shape (bs, n), got {tuple(mask.shape)}")
    bs, n = mask.shape
    if coords.dim() != 3 or tuple(coords.shape[:2]) != (bs, n):
        hint = " (the original's all-pairs tensor? LieConv takes lifted points (bs, n, d))" if coords.dim() == 4 else ""
        raise ValueError(f"coords: expected shape ({bs}, {n}, d) to match mask (bs, n), got {tuple(coords.shape)}{hint}")
    if values.dim() != 3 or tuple(values.shape[:2]) != (bs, n):
        raise ValueError(f"values: expected shape ({bs}, {n}, c) to match mask (bs, n), got {tuple(values.shape)}")
    if not coords.is_floating_point():
        raise TypeError(f"coords: expected a floating dtype, got {coords.dtype}")
    if not values.is_floating_point():
        raise TypeError(f"values: expected a floating dtype, got {values.dtype}")
    for arg, t in (("values", values), ("mask", mask)):
        if t.device != coords.device:
            raise ValueError(f"{arg}: expected coords' device {coords.device}, got {t.device}")
    return coords, values, mask


def _check_params_like(module, coords: Tensor, values: Tensor) -> None:
    """coords and values in the dtype and on the device of ``module``'s parameters."""
    check_like(type(module).__name__, first_parameter(module), coords=coords, values=values)


def _check_positive_int(value, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{where}: {name} must be an int >= 1, got {value!r}")
    return int(value)


class PointConv(nn.Module):
    """Euclidean PointConv on ``(xyz (bs, n, d), values (bs, n, chin), mask (bs, n))``:
    k nearest neighbours by squared distance over the first ``knn_channels`` coordinates,
    kernel ``WeightNet(query - neighbour)``. ``nbhd`` is accepted as an alias of
    ``mc_samples`` (earlier versions' name)."""

    max_chunk_pairs = 1 << 17
    backend = None  # None/"auto"/...: equiops.ops.pointconv's backend; "reference": equiops.reference.pointconv

    def __init__(self, chin, chout, mc_samples=32, xyz_dim=3, ds_frac=1, knn_channels=None, act="swish", bn=False,
                 mean=False, nbhd=None):
        super().__init__()
        if nbhd is not None:
            mc_samples = nbhd
        _check_nbhd(mc_samples, "mc_samples (nbhd)")
        if act not in ("relu", "swish"):
            raise ValueError(f"act: expected 'swish' or 'relu', got {act!r}")
        where = type(self).__name__
        _check_positive_int(chin, "chin", where)
        _check_positive_int(chout, "chout", where)
        _check_positive_int(xyz_dim, "xyz_dim", where)
        if knn_channels is not None and (isinstance(knn_channels, bool) or not isinstance(knn_channels, int)
                                         or not 1 <= knn_channels <= xyz_dim):
            raise ValueError(f"{where}: knn_channels must be None or an int in [1, xyz_dim={xyz_dim}], got {knn_channels!r}")
        self.chin = chin
        self.cmco_ci = 16
        self.xyz_dim = xyz_dim
        self.knn_channels = knn_channels
        self.mc_samples = mc_samples
        self.weightnet = WeightNet(xyz_dim, self.cmco_ci, act, bn)
        self.linear = nn.Linear(self.cmco_ci * chin, chout)
        self.mean = mean
        self.subsample = FarthestSubsample(ds_frac, knn_channels=knn_channels)

    @property
    def nbhd(self):
        return self.mc_samples

    def _check_input(self, inp, coord_dim: int, what: str):
        coords, values, mask = _check_triple(inp, where=type(self).__name__)
        if coords.shape[-1] != coord_dim:
            raise ValueError(f"{type(self).__name__}: coords: expected last dim {coord_dim} ({what}), got {coords.shape[-1]}")
        if values.shape[-1] != self.chin:
            raise ValueError(f"{type(self).__name__}: values: expected {self.chin} channels (chin), got {values.shape[-1]}")
        _check_params_like(self, coords, values)
        return coords, values, mask

    def point_convolve(self, nbhd_embedded: Tensor, values: Tensor, nbhd_idx: Tensor, nbhd_mask: Tensor) -> Tensor:
        """``out[b, i] = linear(sum_s mask * weightnet(e[b, i, s]) (x) values[b, idx[b, i, s]])``
        (divided by the neighbour count with ``mean``): ``(bs, m, chout)``. The values are
        gathered inside the operator."""
        _, penult, _ = self.weightnet((None, nbhd_embedded, nbhd_mask))
        w = self.linear.weight  # original layout: column i * C + c (values channel-major)
        co, C = w.shape[0], self.cmco_ci
        w_op = w.view(co, self.chin, C).transpose(1, 2).reshape(co, C * self.chin)
        return _pointconv(penult, values, nbhd_idx, nbhd_mask, w_op, self.linear.bias, bool(self.mean), self.backend)

    def extract_neighborhood(self, inp, query_xyz):
        xyz, _, mask = inp
        kc = self.knn_channels
        k = int(min(self.mc_samples, xyz.shape[1]))
        with torch.no_grad():
            xk, qk = xyz[..., :kc].detach(), query_xyz[..., :kc].detach()

            def row_dists(b, q):
                return ((qk[b, q].unsqueeze(-2) - xk[b]) ** 2).sum(-1)

            always = torch.ones_like(mask[:, : query_xyz.shape[1]])
            idx, valid, _ = _select_neighbours(row_dists, mask, always, k, True, None, self.max_chunk_pairs, False)
        B = torch.arange(xyz.shape[0], device=xyz.device).view(-1, 1, 1)
        deltas = query_xyz.unsqueeze(2) - xyz[B, idx]
        return deltas, idx, mask[B, idx] & valid

    def forward(self, inp, query_indices=None):
        xyz, values, mask = self._check_input(inp, self.xyz_dim, "xyz_dim")
        query_xyz, _, sub_mask = self.subsample((xyz, values, mask))
        deltas, idx, nbhd_mask = self.extract_neighborhood((xyz, values, mask), query_xyz)
        out = self.point_convolve(deltas, values, idx, nbhd_mask)
        out = torch.where(sub_mask.unsqueeze(-1), out, torch.zeros_like(out))
        return query_xyz, out, sub_mask


_UNSET = object()


def _check_query_indices(idx, mask: Tensor) -> None:
    bs, n = mask.shape
    if not isinstance(idx, Tensor) or idx.dtype not in (torch.int64, torch.int32) or idx.dim() != 2 or idx.shape[0] != bs:
        raise ValueError(f"LieConv: query_indices must be an int64 tensor of shape ({bs}, m), got "
                         f"{getattr(idx, 'dtype', type(idx).__name__)} of shape {tuple(getattr(idx, 'shape', ()))}")
    if idx.device != mask.device:
        raise ValueError(f"LieConv: query_indices must be on the device of the inputs ({mask.device}), got {idx.device}")
    if not _backend.tracing() and idx.numel():
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= n:
            raise IndexError(f"LieConv: query_indices must hold point indices in [0, {n}), got values in [{lo}, {hi}]")


class LieConv(PointConv):
    """Group convolution on lifted points ``(lifted (bs, n, lie_dim + q_dim), values (bs,
    n, chin), mask (bs, n))`` (see the module docstring; the original passes all pairs
    ``(bs, n, n, lie_dim + 2 q_dim)`` instead). Returns the (subsampled) triple."""

    # knn with k < n for T(k): exact candidates-then-re-rank search (_translation_knn);
    # False forces the generic chunked search. fast_knn_chunk_pairs: pairs per chunk there.
    fast_knn = True
    fast_knn_chunk_pairs = 1 << 21

    def __init__(self, *args, group=None, ds_frac=1, fill=1 / 3, cache=False, knn=False, **kwargs):
        kwargs.pop("xyz_dim", None)
        group = _resolve_group(group, "T3")
        super().__init__(*args, xyz_dim=group.lie_dim + 2 * group.q_dim, **kwargs)
        self.group = group
        self.register_buffer("r", torch.tensor(2.0))
        self.fill_frac = min(fill, 1.0)
        self.knn = knn
        self.subsample = FPSsubsample(ds_frac, cache=cache, group=self.group)
        self.coeff = 0.5
        self.fill_frac_ema = fill

    def extract_neighborhood(self, inp, query_indices):
        """``(nbhd_abq (bs, m, k, lie_dim + 2 q_dim), nbhd_idx (bs, m, k), nbhd_mask (bs, m, k))``
        (the original returns the neighbours' values instead of their ids)."""
        lifted, _, mask = inp
        bs, n = mask.shape
        B = torch.arange(bs, device=mask.device)
        if query_indices is not None:
            lifted_q, mask_q = lifted[B[:, None], query_indices], mask[B[:, None], query_indices]
        else:
            lifted_q, mask_q = lifted, mask
        k = int(min(self.mc_samples, n))
        with torch.no_grad():
            if self.knn and k < n and self.fast_knn and _fast_knn_applies(self.group):
                idx, valid = _translation_knn(self.group, lifted_q.detach(), lifted.detach(), mask, mask_q, k,
                                              self.fast_knn_chunk_pairs)
                within = None
            else:
                pe = _PairEmbedder(self.group, lifted_q.detach(), lifted.detach())
                idx, valid, within = _select_neighbours(
                    lambda b, q: self.group.distance(pe.rows(b, q)), mask, mask_q, k, self.knn, self.r,
                    self.max_chunk_pairs, slot_quirk=True)
        nbhd_abq = _PairEmbedder(self.group, lifted_q, lifted).gather(idx)
        nbhd_mask = mask[B.view(-1, 1, 1), idx] & valid
        if self.training and not self.knn:
            n_query = mask_q.sum()
            if bool(n_query > 0):  # the original would make r NaN here
                navg = within.float() / n_query
                avg_fill = (navg / mask.sum(-1).float().mean()).cpu().item()
                with torch.no_grad():
                    self.r += self.coeff * (self.fill_frac - avg_fill)
                self.fill_frac_ema += 0.1 * (avg_fill - self.fill_frac_ema)
        return nbhd_abq, idx, nbhd_mask

    def forward(self, inp, query_indices=_UNSET):
        """``query_indices``: given by :class:`BottleBlock` (its one subsample draw);
        otherwise this layer subsamples."""
        d = self.group.lie_dim + self.group.q_dim
        lifted, values, mask = self._check_input(inp, d, f"lie_dim + q_dim of {_group_name(self.group)}")
        inp = (lifted, values, mask)
        if query_indices is _UNSET:
            query_indices = self.subsample.indices(inp)
        elif query_indices is not None:
            _check_query_indices(query_indices, mask)
        sub_lifted, _, sub_mask = self.subsample.take(inp, query_indices)
        nbhd_abq, idx, nbhd_mask = self.extract_neighborhood(inp, query_indices)
        out = self.point_convolve(nbhd_abq, values, idx, nbhd_mask)
        out = torch.where(sub_mask.unsqueeze(-1), out, torch.zeros_like(out))
        return sub_lifted, out, sub_mask


def pConvBNrelu(in_channels, out_channels, bn=True, act="swish", **kwargs):
    return nn.Sequential(
        PointConv(in_channels, out_channels, bn=bn, act=act, **kwargs),
        MaskBatchNormNd(out_channels) if bn else nn.Sequential(),
        Pass(_activation(act), dim=1),
    )


def LieConvBNrelu(in_channels, out_channels, bn=True, act="swish", **kwargs):
    return nn.Sequential(
        LieConv(in_channels, out_channels, bn=bn, act=act, **kwargs),
        MaskBatchNormNd(out_channels) if bn else nn.Sequential(),
        Pass(_activation(act), dim=1),
    )


class BottleBlock(nn.Module):
    """Bottleneck residual block (Fig. 5): BN, act, linear to ``chin // 4``, BN, act, conv,
    BN, act, linear to ``chout``; the (subsampled) input is added to the first ``chin``
    channels. ``self.conv`` is also ``self.net[5]`` (both keys in the state dict)."""

    def __init__(self, chin, chout, conv, bn=False, act="swish", fill=None):
        super().__init__()
        if chin > chout:
            raise ValueError(f"chout: expected chout >= chin (no channel reduction), got chin={chin}, chout={chout}")
        if act not in ("relu", "swish"):
            raise ValueError(f"act: expected 'swish' or 'relu', got {act!r}")
        self.conv = conv(chin // 4, chout // 4, fill=fill) if fill is not None else conv(chin // 4, chout // 4)
        self.net = nn.Sequential(
            MaskBatchNormNd(chin) if bn else nn.Sequential(),
            Pass(_activation(act), dim=1),
            Pass(nn.Linear(chin, chin // 4), dim=1),
            MaskBatchNormNd(chin // 4) if bn else nn.Sequential(),
            Pass(_activation(act), dim=1),
            self.conv,
            MaskBatchNormNd(chout // 4) if bn else nn.Sequential(),
            Pass(_activation(act), dim=1),
            Pass(nn.Linear(chout // 4, chout), dim=1),
        )
        self.chin = chin

    def forward(self, inp):
        _, values, _ = _check_triple(inp, where="BottleBlock")
        if values.shape[-1] != self.chin:
            raise ValueError(f"BottleBlock: values must have {self.chin} channels (chin), got {values.shape[-1]}")
        sub = self.conv.subsample(inp, withquery=True)
        sub_values, query_idx = sub[1], sub[3]
        x = inp
        for module in self.net:
            x = module(x, query_indices=query_idx) if module is self.conv else module(x)
        coords, values, mask = x
        values = values + F.pad(sub_values, (0, values.shape[-1] - self.chin))
        return coords, values, mask


class GlobalPool(nn.Module):
    """Sum (``mean=True``: mean) of the values over the valid points; a cloud with no valid
    point gives zeros (the original divides by zero)."""

    def __init__(self, mean=False):
        super().__init__()
        self.mean = mean

    def forward(self, x):
        if isinstance(x, (tuple, list)) and len(x) == 2:
            return x[1].mean(1)
        _, vals, mask = _check_triple(x, "x", where="GlobalPool")
        summed = torch.where(mask.unsqueeze(-1), vals, torch.zeros_like(vals)).sum(1)
        if self.mean:
            summed = summed / mask.sum(-1).clamp(min=1).unsqueeze(-1).to(summed.dtype)
        return summed


def _values_of(x):
    return x[1]


class LieResNet(nn.Module):
    """The generic LieConv network of Fig. 5, called as ``model((coords, values, mask))``
    with ``coords (bs, n, coord_dim)`` (3 for T(3), SO3, SE3), ``values (bs, n, chin)``,
    ``mask (bs, n)`` bool. Arguments as the original: ``fill`` (fraction of the input in
    each neighbourhood; per layer if a list), ``nbhd`` (neighbourhood size, ``inf``: all
    points), ``ds_frac`` (per-layer farthest-point subsampling), ``k`` (channels; per
    layer if a list), ``liftsamples`` (lifts per point), ``group`` (``None``: ``SE3()``,
    the original's default; a group class is instantiated)."""

    def __init__(self, chin, ds_frac=1, num_outputs=1, k=1536, nbhd=math.inf, act="swish", bn=True, num_layers=6,
                 mean=True, per_point=True, pool=True, liftsamples=1, fill=1 / 4, group=None, knn=False, cache=False,
                 **kwargs):
        super().__init__()
        _check_nbhd(nbhd)
        if act not in ("relu", "swish"):
            raise ValueError(f"act: expected 'swish' or 'relu', got {act!r}")
        if not isinstance(liftsamples, int) or liftsamples < 1:
            raise ValueError(f"liftsamples: expected an int >= 1, got {liftsamples!r}")
        group = _resolve_group(group, "SE3")
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
            raise ValueError(f"LieResNet: num_layers must be an int >= 0, got {num_layers!r}")
        _check_positive_int(chin, "chin", "LieResNet")
        _check_positive_int(num_outputs, "num_outputs", "LieResNet")
        if isinstance(fill, (float, int)):
            fill = [fill] * num_layers
        if isinstance(k, int):
            k = [k] * (num_layers + 1)
        if len(fill) != num_layers:
            raise ValueError(f"LieResNet: fill must be a number or a list of num_layers={num_layers} numbers, "
                             f"got {len(fill)}")
        if len(k) != num_layers + 1:
            raise ValueError(f"LieResNet: k must be an int or a list of num_layers + 1 = {num_layers + 1} ints, got {len(k)}")
        for i, ki in enumerate(k):
            _check_positive_int(ki, f"k[{i}]", "LieResNet")

        def conv(ki, ko, fill):
            return LieConv(ki, ko, mc_samples=nbhd, ds_frac=ds_frac, bn=bn, act=act, mean=mean, group=group, fill=fill,
                           cache=cache, knn=knn, **kwargs)

        self.net = nn.Sequential(
            Pass(nn.Linear(chin, k[0]), dim=1),
            *[BottleBlock(k[i], k[i + 1], conv, bn=bn, act=act, fill=fill[i]) for i in range(num_layers)],
            MaskBatchNormNd(k[-1]) if bn else nn.Sequential(),
            Pass(_activation(act), dim=1),
            Pass(nn.Linear(k[-1], num_outputs), dim=1),
            GlobalPool(mean=mean) if pool else Expression(_values_of),
        )
        self.chin = chin
        self.liftsamples = liftsamples
        self.per_point = per_point
        self.group = group

    def forward(self, x):
        coords, values, mask = _check_triple(x, "x", where="LieResNet")
        _check_params_like(self, coords, values)
        cd = _coord_dim(self.group)
        if coords.shape[-1] != cd:
            raise ValueError(f"LieResNet: coords: expected last dim {cd} (the points {_group_name(self.group)} acts on; "
                             f"rep_dim={self.group.rep_dim}), got {coords.shape[-1]}")
        if values.shape[-1] != self.chin:
            raise ValueError(f"LieResNet: values: expected {self.chin} channels (chin), got {values.shape[-1]}")
        keep = mask.unsqueeze(-1)
        coords = torch.where(keep, coords, torch.zeros_like(coords))
        values = torch.where(keep, values, torch.zeros_like(values))
        lifted = lift_points(self.group, coords, values, mask, self.liftsamples)
        return self.net(lifted)
