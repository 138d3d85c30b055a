"""Plain-PyTorch reference of the fused PointConv operator (``equiops.ops.pointconv``).

LieConv (Finzi et al., ICML 2020) estimates its group convolution with the PointConv
trick: for each query point ``q`` with neighbours ``k = 0..K-1`` (point ids
``nbhd_idx[b, q, k]``, valid where ``nbhd_mask[b, q, k]``), the weight-net output
``penult[b, q, k] (C,)`` of the lifted pair and the neighbour's values
``values[b, nbhd_idx[b, q, k]] (ci,)`` are combined as::

    partial[b, q, c, i] = sum_k mask[b, q, k] penult[b, q, k, c] values[b, idx[b, q, k], i]
    out[b, q]           = weight @ partial[b, q].reshape(C * ci) + bias       # (co,)
    out[b, q]          /= max(1, sum_k mask[b, q, k])                          # only with mean

(the original divides after the bias too). Shapes: ``penult (B, m, K, C)``,
``values (B, n, ci)``, ``nbhd_idx (B, m, K)`` int64 in ``[0, n)``, ``nbhd_mask
(B, m, K)`` bool, ``weight (co, C * ci)`` (``nn.Linear(C * ci, co)``'s layout: column
``c * ci + i``), ``bias (co,)`` or None; ``out (B, m, co)``.

This reference gathers ``(B, m, K, ci)`` and forms ``(B, m, C, ci)``, as the original
does; the fused kernels do neither.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def pointconv(penult: Tensor, values: Tensor, nbhd_idx: Tensor, nbhd_mask: Tensor, weight: Tensor,
              bias: Optional[Tensor] = None, mean: bool = False) -> Tensor:
    B, m, K, C = penult.shape
    ci = values.shape[-1]
    batch = torch.arange(B, device=values.device).view(B, 1, 1)
    nbhd_vals = values[batch, nbhd_idx]  # (B, m, K, ci)
    mask = nbhd_mask.unsqueeze(-1)
    masked_penult = torch.where(mask, penult, torch.zeros_like(penult))
    masked_vals = torch.where(mask, nbhd_vals, torch.zeros_like(nbhd_vals))
    partial = (masked_penult.transpose(-1, -2) @ masked_vals).reshape(B, m, C * ci)
    out = torch.nn.functional.linear(partial, weight, bias)
    if mean:
        out = out / nbhd_mask.sum(-1, keepdim=True).clamp(min=1).to(out.dtype)
    return out
