"""Plain-PyTorch real spherical harmonics in e3nn's convention: the reference.

``spherical_harmonics(ls, x, normalize, normalization)`` equals
``e3nn.o3.spherical_harmonics(ls, x, normalize, normalization)`` (checked in
``tests/test_spherical_harmonics.py``). It is written for clarity, from the dense
Clebsch-Gordan recurrence that defines e3nn's harmonics, and differentiates to any
order through PyTorch's autograd, so the fused kernels' backward and double backward
are tested against it.

Convention (e3nn 0.6):
* ``x`` is ``(..., 3)`` in e3nn's ``(x, y, z)`` order; ``y`` is the polar axis. Degree
  ``l`` has ``2l+1`` components, ``m = -l..l``; they equal the standard real harmonics
  (no Condon-Shortley phase) evaluated at ``(x', y', z') = (z, x, y)``.
* ``normalize=True`` evaluates at ``x / max(|x|, 1e-12)``, as
  ``torch.nn.functional.normalize`` does (a zero vector gives 0 for ``l >= 1``);
  ``normalize=False`` gives the solid harmonics ``|x|^l Y(x / |x|)``, polynomials.
* ``normalization``: ``"component"``: ``|Y^l(u)|^2 = 2l+1`` on the unit sphere;
  ``"norm"``: ``|Y^l(u)| = 1``; ``"integral"``: ``\\int_{S^2} Y^l_m Y^l_m = 1``.

The recurrence: ``Y^0 = 1`` and ``Y^l_i = c_l sum_jk C^l_ijk Y^{l-1}_j x_k`` with
``C^l = wigner_3j(l, l-1, 1)`` and ``c_l = (2l+1)/sqrt(l)`` (component normalization).
``x_k Y^{l-1}_j`` is a degree-``l`` polynomial whose harmonic part is exactly the
``l`` component of the coupling, so the recurrence is exact, and by Euler's identity
``d/dx_k Y^l_i = l c_l sum_j C^l_ijk Y^{l-1}_j``: the same table gives the derivatives.
"""

from __future__ import annotations

import math
from typing import List

import torch
from torch import Tensor

from .. import so3

NORMALIZATIONS = ("integral", "component", "norm")

# torch.nn.functional.normalize's default, which e3nn uses.
NORMALIZE_EPS = 1e-12


def recurrence_factor(l: int) -> float:
    """``c_l`` in ``Y^l = c_l C^l (Y^{l-1} (x) x)`` (component normalization)."""
    return (2 * l + 1) / math.sqrt(l)


def degree_scale(l: int, normalization: str) -> float:
    """Factor turning component-normalized degree ``l`` into ``normalization``."""
    if normalization == "component":
        return 1.0
    if normalization == "integral":
        return 1.0 / math.sqrt(4 * math.pi)
    if normalization == "norm":
        return 1.0 / math.sqrt(2 * l + 1)
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def spherical_harmonics(ls: List[int], x: Tensor, normalize: bool, normalization: str = "integral") -> Tensor:
    """``(..., 3) -> (..., sum(2l+1 for l in ls))``, degrees concatenated in ``ls`` order."""
    if normalize:
        x = torch.nn.functional.normalize(x, dim=-1, eps=NORMALIZE_EPS)
    lmax = max(ls)
    ys = [torch.ones_like(x[..., :1])]
    for l in range(1, lmax + 1):
        C = so3.wigner_3j(l, l - 1, 1, dtype=x.dtype, device=x.device) * recurrence_factor(l)
        ys.append(torch.einsum("ijk,...j,...k->...i", C, ys[-1], x))
    return torch.cat([ys[l] * degree_scale(l, normalization) for l in ls], dim=-1)
