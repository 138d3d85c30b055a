r"""Deployment: energy-and-forces models as ``torch.export`` programs and AOTInductor packages.

Molecular-dynamics codes (LAMMPS, ASE calculators in C++, i-PI drivers) want one artefact
that takes positions and returns energies and forces, loadable without Python. Forces
are a derivative, so the backward pass must be part of the exported graph. ``torch.export``
alone does not trace ``torch.autograd.grad`` inside ``forward``; this module first traces
the whole energy-and-forces computation with ``make_fx`` (which records the backward as
ordinary ops: our ``*_backward`` operators and aten), then exports that graph with
symbolic atom and edge counts, then (optionally) compiles it with AOTInductor.

* :func:`trace_energy_and_forces` -> ``torch.fx.GraphModule``: ``(pos, *rest) -> (energy, forces)``.
* :func:`export_energy_and_forces` -> ``torch.export.ExportedProgram`` with dynamic sizes.
* :func:`package_energy_and_forces` -> path of an AOTInductor ``.pt2`` package.
* :func:`library_path` -> the compiled kernels' shared library. A process that runs the
  package needs the operators registered, and nothing else of equiops:
  ``torch.ops.load_library(path)`` in Python, or ``dlopen`` of the same file from C++
  before ``torch::inductor::AOTIModelPackageLoader`` (tested from a fresh Python process
  that never imports equiops; ``tests/test_deployment.py``).

The traced graph holds the model's parameters and constant tables as frozen constants:
re-export after changing weights. The CPU kernels are pure C++; on CUDA the Triton and
CUDA implementations are registered from Python, so a CUDA package needs ``import equiops``
in the loading process (ARCHITECTURE.md, known limits).
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import _extension

__all__ = ["library_path", "trace_energy_and_forces", "export_energy_and_forces", "package_energy_and_forces"]


def library_path() -> str:
    """Path of ``equiops._C`` (operator schemas and C++ CPU kernels), for
    ``torch.ops.load_library`` or ``dlopen`` in a process that runs an exported model."""
    module = _extension.extension()
    return os.path.abspath(module.__file__)


def _energy_and_forces(model: Callable[..., Tensor]) -> Callable[..., Tuple[Tensor, Tensor]]:
    def energy_and_forces(pos: Tensor, *rest) -> Tuple[Tensor, Tensor]:
        pos = pos.detach().requires_grad_(True)
        energy = model(pos, *rest)
        (grad,) = torch.autograd.grad(energy.sum(), pos)
        return energy.detach(), -grad

    return energy_and_forces


def _check_example(model, example_args) -> None:
    if not callable(model):
        raise TypeError(f"equiops.export: model must be callable (an nn.Module), got {type(model).__name__}")
    if not isinstance(example_args, (tuple, list)) or not example_args:
        raise TypeError("equiops.export: example_args must be a non-empty tuple (pos, *rest), got "
                        f"{type(example_args).__name__}")
    pos = example_args[0]
    if not isinstance(pos, Tensor) or not pos.is_floating_point() or pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError("equiops.export: example_args[0] must be positions, a floating (num_atoms, 3) tensor, got "
                         f"{getattr(pos, 'dtype', type(pos).__name__)} {tuple(getattr(pos, 'shape', ()))}")
    if pos.shape[0] < 2:
        raise ValueError(f"equiops.export: trace with at least 2 atoms (sizes 0 and 1 are specialised), got {pos.shape[0]}")


def trace_energy_and_forces(model: Callable[..., Tensor], example_args: Sequence) -> torch.fx.GraphModule:
    """Traces ``pos, *rest -> (model(pos, *rest), -d sum(model(pos, *rest)) / d pos)``.

    ``model(pos, *rest)`` returns energies (any shape; forces are of their sum). The
    example inputs fix dtypes, devices and ranks, not sizes: the graph has symbolic
    sizes (``make_fx(tracing_mode="symbolic")``). Index checks that need values are
    skipped while tracing (``equiops.backend.tracing``): give valid indices at run time.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    _check_example(model, example_args)
    # Constant tables (the harmonics' coupling, the problem tables) are real tensors made
    # outside the trace: they become constants of the graph.
    return make_fx(_energy_and_forces(model), tracing_mode="symbolic", _allow_non_fake_inputs=True)(*example_args)


def export_energy_and_forces(model: Callable[..., Tensor], example_args: Sequence,
                             dynamic_shapes: Optional[Sequence[Optional[Dict[int, object]]]] = None,
                             ) -> torch.export.ExportedProgram:
    """``torch.export`` of :func:`trace_energy_and_forces`'s graph.

    ``dynamic_shapes``: one entry per example argument (``None`` or ``{dim: torch.export.Dim}``),
    as ``torch.export.export`` takes them. Default: dimension 0 of every tensor argument
    is dynamic, tensors whose first size equals ``pos``'s share the atom dimension, the
    others share a second dimension (edges), e.g. ``(pos, species, edge_src, edge_dst)``.
    """
    from torch.export import Dim

    traced = trace_energy_and_forces(model, example_args)
    if dynamic_shapes is None:
        atoms, edges = Dim("atoms", min=2), Dim("edges", min=2)
        n = example_args[0].shape[0]
        dynamic_shapes = tuple(
            ({0: atoms if a.shape[0] == n else edges} if isinstance(a, Tensor) and a.dim() > 0 else None)
            for a in example_args
        )
    return torch.export.export(traced, tuple(example_args), dynamic_shapes=tuple(dynamic_shapes))


def package_energy_and_forces(model: Callable[..., Tensor], example_args: Sequence, package_path: str,
                              dynamic_shapes=None) -> str:
    """AOTInductor package of the energy-and-forces program at ``package_path`` (``.pt2``).

    Load it with ``torch._inductor.aoti_load_package(path)`` (Python) or
    ``torch::inductor::AOTIModelPackageLoader`` (C++) after loading :func:`library_path`.
    Compiling takes about a minute on a small CPU (C++ code generation and compilation).
    """
    if not str(package_path).endswith(".pt2"):
        raise ValueError(f"equiops.export: package_path must end with .pt2, got {package_path!r}")
    program = export_energy_and_forces(model, example_args, dynamic_shapes)
    return torch._inductor.aoti_compile_and_package(program, package_path=str(package_path))

