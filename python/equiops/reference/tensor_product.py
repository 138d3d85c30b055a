r"""Plain-PyTorch tensor product: the semantics every tensor-product kernel must match.

Inputs in the operators' canonical layout: ``x1 (N1, dim1)``, ``x2 (N2, dim2)``,
``weight (Nw, dim_w)`` with each of ``N1, N2, Nw`` either ``N`` or ``1`` (broadcast over
rows; ``Nw == 1`` is e3nn's shared weights). Returns ``(N, dim_out)``. The path
semantics are in :mod:`equiops.tp_problem`; this module is written from them, one dense
einsum per path with the dense ``wigner_3j`` block (not the kernels' sparse tables), and
is differentiable to any order by autograd.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import so3
from ..tp_problem import TPProblem, decode

__all__ = ["tensor_product"]


def _rows(*ts: Tensor) -> int:
    n = 1
    for t in ts:
        if t.shape[0] != 1:
            if n != 1 and t.shape[0] != n:
                raise ValueError(f"row counts {[t.shape[0] for t in ts]} do not broadcast")
            n = t.shape[0]
    return n


def tensor_product(x1: Tensor, x2: Tensor, weight: Tensor, problem) -> Tensor:
    """``out (N, dim_out)`` of the problem (a :class:`TPProblem` or its encoded string)."""
    prob: TPProblem = decode(problem) if isinstance(problem, str) else problem
    N = _rows(x1, x2, weight)
    # Each output slot's paths are summed out of place, in path order, and the slots joined
    # at the end: under torch.vmap an input may be batched while x1 is not, and an in-place
    # write of batched values into an unbatched buffer fails.
    blocks = {}
    for p in prob.paths:
        a = x1[:, p.off1 : p.off1 + p.m1 * p.d1].reshape(-1, p.m1, p.d1).expand(N, -1, -1)
        b = x2[:, p.off2 : p.off2 + p.m2 * p.d2].reshape(-1, p.m2, p.d2).expand(N, -1, -1)
        C = so3.wigner_3j(p.l1, p.l2, p.lo, dtype=x1.dtype, device=x1.device)
        if p.weighted:
            W = weight[:, p.w_off : p.w_off + p.w_numel].reshape((-1,) + p.shape).expand((N,) + p.shape)
        if p.mode in ("uuw", "uuu"):
            z = torch.einsum("nui,nuj,ijk->nuk", a, b, C)
        else:
            z = torch.einsum("nui,nvj,ijk->nuvk", a, b, C)
        if p.mode in ("uvu<v", "u<vw"):
            iu = torch.triu_indices(p.m1, p.m2, 1, device=x1.device)
            z = z[:, iu[0], iu[1]]  # (N, pairs, k)
        if p.mode == "uvw":
            r = torch.einsum("nuvw,nuvk->nwk", W, z)
        elif p.mode == "uvu":
            r = torch.einsum("nuv,nuvk->nuk", W, z) if p.weighted else z.sum(2)
        elif p.mode == "uvv":
            r = torch.einsum("nuv,nuvk->nvk", W, z) if p.weighted else z.sum(1)
        elif p.mode == "uuw":
            r = torch.einsum("nuw,nuk->nwk", W, z) if p.weighted else z.sum(1, keepdim=True)
        elif p.mode == "uuu":
            r = W.unsqueeze(-1) * z if p.weighted else z
        elif p.mode == "uvuv":
            r = (W.unsqueeze(-1) * z if p.weighted else z).reshape(N, p.m1 * p.m2, p.dk)
        elif p.mode == "uvu<v":
            r = W.unsqueeze(-1) * z if p.weighted else z
        else:  # u<vw
            r = torch.einsum("nqw,nqk->nwk", W, z)
        term = (p.coef * r.reshape(N, p.mo * p.dk)).to(x1.dtype)
        key = (p.offo, p.mo * p.dk)
        blocks[key] = blocks[key] + term if key in blocks else term
    pieces, col = [], 0
    for (off, width), term in sorted(blocks.items()):
        if off > col:
            pieces.append(x1.new_zeros(N, off - col))
        pieces.append(term)
        col = off + width
    if col < prob.dim_out or not pieces:
        pieces.append(x1.new_zeros(N, prob.dim_out - col))
    return torch.cat(pieces, dim=1)
