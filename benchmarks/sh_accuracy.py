"""How far the harmonic recurrence stays accurate, degree by degree: equiops' C++
kernel in float64 against an independent 40-digit evaluation with mpmath (associated
Legendre functions, no Condon-Shortley phase, at e3nn's axis permutation
(x', y', z') = (z, x, y)), and in float32 (values and Jacobian) against float64.

    python benchmarks/sh_accuracy.py [--lmax 32] [--points 16]

Errors are relative to the degree's largest magnitude (component normalization, unit
vectors). Needs mpmath.
"""

from __future__ import annotations

import argparse

import mpmath
import torch

import equiops

mpmath.mp.dps = 40


def exact(l: int, v):
    """Component-normalized Y^l (2l+1 values) at the point v, to 40 digits."""
    x, y, z = (mpmath.mpf(float(t)) for t in v)
    xs, ys, zs = z, x, y  # e3nn's y is the polar axis
    r = mpmath.sqrt(xs**2 + ys**2 + zs**2)
    ct, phi = zs / r, mpmath.atan2(ys, xs)
    out = []
    for m in range(-l, l + 1):
        am = abs(m)
        K = mpmath.sqrt((2 * l + 1) * mpmath.factorial(l - am) / mpmath.factorial(l + am))
        P = mpmath.legenp(l, am, ct) * (-1) ** am  # legenp carries the Condon-Shortley phase
        if m > 0:
            out.append(mpmath.sqrt(2) * K * P * mpmath.cos(am * phi))
        elif m < 0:
            out.append(mpmath.sqrt(2) * K * P * mpmath.sin(am * phi))
        else:
            out.append(K * P)
    return [float(o) for o in out]


def measure(lmax: int, points: int, seed: int = 0):
    """Per degree: float64 value error against mpmath (``points`` unit vectors), and
    float32 value and gradient errors against float64 (4096 unit vectors), each
    relative to the degree's largest magnitude."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4096, 3, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    for l in range(lmax + 1):
        kw = dict(normalize=True, normalization="component")
        ref = torch.tensor([exact(l, v) for v in x[:points].tolist()], dtype=torch.float64)
        y64 = equiops.spherical_harmonics(l, x[:points], **kw)
        v64 = (y64 - ref).abs().max().item() / ref.abs().max().item()
        val64, jac64 = equiops.spherical_harmonics_with_gradients(l, x, **kw)
        val32, jac32 = equiops.spherical_harmonics_with_gradients(l, x.float(), **kw)
        v32 = (val32.double() - val64).abs().max().item() / val64.abs().max().item()
        g32 = (jac32.double() - jac64).abs().max().item() / max(jac64.abs().max().item(), 1e-300)
        yield {"l": l, "float64 value": v64, "float32 value": v32, "float32 gradient": g32}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmax", type=int, default=equiops.harmonics.MAX_DEGREE)
    parser.add_argument("--points", type=int, default=16, help="points checked against mpmath")
    args = parser.parse_args()
    print(f"{'l':>3}  {'float64 value':>14}  {'float32 value':>14}  {'float32 gradient':>16}")
    for row in measure(args.lmax, args.points):
        print(f"{row['l']:>3}  {row['float64 value']:>14.2e}  {row['float32 value']:>14.2e}  {row['float32 gradient']:>16.2e}", flush=True)


if __name__ == "__main__":
    main()
