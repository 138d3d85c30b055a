"""Spherical-harmonics benchmark problems and baselines (issue: N in {1e5, 1e6}
vectors, l_max in {2, 3, 6, 10}, forward and forward+backward, against sphericart,
e3nn and, on a GPU, cuEquivariance).

Every candidate computes all degrees ``0..l_max`` of unit-normalized vectors in the
"integral" normalization and is checked against e3nn's float64 values (or, beyond
e3nn's reach, equiops' float64 reference) before it is timed. sphericart uses the
z-polar basis: it gets the vectors with e3nn's axis permutation ``(z, x, y)`` applied
beforehand (not timed), which makes its output equal to e3nn's component for component.
Forward+backward backpropagates a fixed random cotangent to the vectors; "force"
is the force-training pattern (double backward): ``E = <Y(x), w>``, ``F = dE/dx`` with
``create_graph``, then the gradient of ``|F|^2`` with respect to ``x``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import sys

import torch

import equiops

from . import optional_module

LMAX = (2, 3, 6, 10)
E3NN_LMAX = 12


@dataclass(frozen=True)
class Problem:
    num_vectors: int
    lmax: int

    @property
    def width(self) -> int:
        return (self.lmax + 1) ** 2

    @property
    def label(self) -> str:
        return f"N={self.num_vectors:.0e} lmax={self.lmax}".replace("e+0", "e")


# On a GPU, degrees stay within the Triton kernels' range (TRITON_MAX_DEGREE = 8) and
# below it: the unrolled double backward at l_max = 8 compiles for about half a minute.
GPU_LMAX = (2, 3, 6)


def problems(quick: bool = False, device="cpu") -> List[Problem]:
    sizes = (100_000,) if quick else (100_000, 1_000_000)
    lmaxes = GPU_LMAX if torch.device(device).type == "cuda" else LMAX
    return [Problem(n, l) for n in sizes for l in lmaxes]


def make_inputs(problem: Problem, device, dtype, seed: int = 0) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(problem.num_vectors, 3, generator=g, dtype=torch.float64)
    cot = torch.randn(problem.num_vectors, problem.width, generator=g, dtype=torch.float64)
    return {
        "x": x.to(device=device, dtype=dtype),
        "x_zxy": x[:, [2, 0, 1]].contiguous().to(device=device, dtype=dtype),
        "cot": cot.to(device=device, dtype=dtype),
    }


def expected(problem: Problem, inputs) -> torch.Tensor:
    """Float64 values on the CPU, from e3nn when it reaches l_max."""
    x = inputs["x"].detach().double().cpu()
    ls = list(range(problem.lmax + 1))
    e3nn = optional_module("e3nn.o3")
    if e3nn is not None and problem.lmax <= E3NN_LMAX:
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # e3nn builds its constants in the default dtype
        try:
            return e3nn.spherical_harmonics(ls, x, True, "integral")
        finally:
            torch.set_default_dtype(old)
    return equiops.spherical_harmonics(ls, x, True, "integral", backend="torch")


def bytes_moved(problem: Problem, dtype) -> int:
    """The forward reads the vectors once and writes every component once."""
    item = torch.empty((), dtype=dtype).element_size()
    return problem.num_vectors * (3 + problem.width) * item


def _sphericart(problem: Problem, device):
    st = optional_module("sphericart.torch")
    if st is None:
        return None
    sph = st.SphericalHarmonics(problem.lmax)
    # Its GPU code loads its own CUDA runtime libraries at the first call (the 2.0.4
    # wheels want CUDA 12's NVRTC, absent from a CUDA 13 machine): probe once, and leave
    # the baseline out with a message rather than failing the whole benchmark.
    try:
        sph(torch.zeros(2, 3, device=device) + 0.5)
    except Exception as e:  # noqa: BLE001 - any failure of a third-party baseline
        print(f"sphericart left out on {device}: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    return sph


def _cuequivariance(problem: Problem, device):
    if torch.device(device).type != "cuda":
        return None
    cuet = optional_module("cuequivariance_torch")
    if cuet is None or not hasattr(cuet, "spherical_harmonics"):
        return None
    ls = list(range(problem.lmax + 1))
    return lambda x: cuet.spherical_harmonics(ls, x, normalize=True)


def candidates(problem: Problem, inputs, backend: str) -> Dict[str, Dict[str, Callable[[], torch.Tensor]]]:
    """{"forward": {name: fn}, "backward": {...}, "force": {...}}: forward fns return the
    values (to check), backward fns the gradient of <values, cot>, force fns the
    force-training gradient (both checked against ours in float64)."""
    ls = list(range(problem.lmax + 1))
    x, xz, cot = inputs["x"], inputs["x_zxy"], inputs["cot"]
    sph = _sphericart(problem, x.device)
    e3nn = optional_module("e3nn.o3")
    if e3nn is not None and problem.lmax > E3NN_LMAX:
        e3nn = None
    cue = _cuequivariance(problem, x.device)

    def ours(p):
        return equiops.spherical_harmonics(ls, p, True, "integral", backend=backend)

    def theirs(p):
        return e3nn.spherical_harmonics(ls, p, True, "integral")

    # On a GPU e3nn is also timed under torch.compile (its recommended mode there; on
    # the CPU the compile time would dominate the run). Not for the double backward,
    # which PyTorch cannot compile.
    compiled = torch.compile(theirs) if (e3nn is not None and x.device.type == "cuda") else None

    fwd: Dict[str, Callable[[], torch.Tensor]] = {"equiops": lambda: ours(x)}
    if sph is not None:
        fwd["sphericart"] = lambda: sph(xz)
    if e3nn is not None:
        fwd["e3nn"] = lambda: theirs(x)
    if compiled is not None:
        fwd["e3nn compiled"] = lambda: compiled(x)
    if cue is not None:
        fwd["cuequivariance"] = lambda: cue(x)

    def gradient(fn: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor, unpermute: Optional[list], force: bool):
        """The gradient of <fn(p), cot> at the points, or with ``force`` the gradient of
        |F|^2 where F is that gradient (taken with create_graph: the double backward)."""
        leaf = points.detach().requires_grad_()

        def run():
            (g,) = torch.autograd.grad(fn(leaf), leaf, cot, create_graph=force)
            if force:
                (g,) = torch.autograd.grad((g * g).sum(), leaf)
            return g[:, unpermute] if unpermute else g

        return run

    groups: Dict[str, Dict[str, Callable[[], torch.Tensor]]] = {"forward": fwd}
    for group, suffix, force in (("backward", "fwd+bwd", False), ("force", "force", True)):
        fns = {f"equiops {suffix}": gradient(ours, x, None, force)}
        if sph is not None:
            fns[f"sphericart {suffix}"] = gradient(sph, xz, [1, 2, 0], force)
        if e3nn is not None:
            fns[f"e3nn {suffix}"] = gradient(theirs, x, None, force)
        if compiled is not None and not force:
            fns[f"e3nn compiled {suffix}"] = gradient(compiled, x, None, force)
        if cue is not None:
            fns[f"cuequivariance {suffix}"] = gradient(cue, x, None, force)
        groups[group] = fns
    return groups
