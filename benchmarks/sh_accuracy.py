"""How far the harmonic recurrence stays accurate: equiops' spherical harmonics
(C++ kernel, float32 and float64) against an independent 40-digit evaluation with
mpmath (associated Legendre functions, no Condon-Shortley phase, at e3nn's axis
permutation (x', y', z') = (z, x, y)), degree by degree.

    python benchmarks/sh_accuracy.py [--lmax 32] [--points 64]

Prints, per degree, the largest error relative to that degree's largest magnitude
(component normalization, unit vectors), for the values and the gradient. Needs mpmath.
"""

from __future__ import annotations

import argparse

import mpmath
import torch

import equiops

mpmath.mp.dps = 40


def exact(l: int, v, grad_axis=None):
    """Component-normalized Y^l (2l+1 values) at v, or d/dv[grad_axis] of it."""
    def value(x, y, z, m):
        xs, ys, zs = z, x, y  # e3nn's y is the polar axis
        r = mpmath.sqrt(xs**2 + ys**2 + zs**2)
        ct, phi = zs / r, mpmath.atan2(ys, xs)
        am = abs(m)
        K = mpmath.sqrt((2 * l + 1) * mpmath.factorial(l - am) / mpmath.factorial(l + am))
        P = mpmath.legenp(l, am, ct) * (-1) ** am  # legenp carries the Condon-Shortley phase
        if m > 0:
            return mpmath.sqrt(2) * K * P * mpmath.cos(am * phi)
        if m < 0:
            return mpmath.sqrt(2) * K * P * mpmath.sin(am * phi)
        return K * P

    p = [mpmath.mpf(float(t)) for t in v]
    out = []
    for m in range(-l, l + 1):
        if grad_axis is None:
            out.append(value(*p, m))
        else:
            def f(t, m=m):
                q = list(p)
                q[grad_axis] = t
                return value(*q, m)
            out.append(mpmath.diff(f, p[grad_axis]))
    return [float(o) for o in out]


def measure(lmax: int, points: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(points, 3, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    rows = []
    for l in range(lmax + 1):
        ref = torch.tensor([exact(l, v) for v in x.tolist()], dtype=torch.float64)
        gref = torch.tensor([exact(l, v, 0) for v in x[:8].tolist()], dtype=torch.float64)
        scale, gscale = ref.abs().max().item(), gref.abs().max().item()
        row = {"l": l}
        for dtype in (torch.float32, torch.float64):
            xd = x.to(dtype)
            y = equiops.spherical_harmonics(l, xd, normalize=False, normalization="component").double()
            _, jac = equiops.spherical_harmonics_with_gradients(l, xd[:8], normalize=False, normalization="component")
            row[str(dtype)] = (
                (y - ref).abs().max().item() / scale,
                (jac[:, 0].double() - gref).abs().max().item() / max(gscale, 1e-300),
            )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmax", type=int, default=equiops.harmonics.MAX_DEGREE)
    parser.add_argument("--points", type=int, default=64)
    args = parser.parse_args()
    print(f"{'l':>3}  {'float64 value':>14}  {'float64 grad':>13}  {'float32 value':>14}  {'float32 grad':>13}")
    for row in measure(args.lmax, args.points):
        v64, g64 = row["torch.float64"]
        v32, g32 = row["torch.float32"]
        print(f"{row['l']:>3}  {v64:>14.2e}  {g64:>13.2e}  {v32:>14.2e}  {g32:>13.2e}", flush=True)


if __name__ == "__main__":
    main()
