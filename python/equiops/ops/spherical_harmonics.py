"""The spherical-harmonics operators: coupling table, fake kernels, autograd, CUDA dispatch.

Schemas live in ``csrc/ops.cpp``, the CPU kernels in ``csrc/cpu/sh_kernels.h``, the
Triton kernels in ``kernels/spherical_harmonics.py``; semantics in
``equiops.reference.spherical_harmonics``. For each of
``torch.ops.equiops.spherical_harmonics{,_backward,_double_backward,_jacobian}`` this
module adds a fake kernel (``torch.compile``/``torch.export``), autograd whose backward
calls registered ops only (forward -> backward -> double backward; a third derivative
raises), and the CUDA implementation (Triton; there is no CUDA C++ kernel yet).

Every kernel evaluates the same recurrence, driven by one table, the *coupling*:
``Y^0 = 1``, ``Y[i] = sum c * Y[j] * u[k]`` over the entries ``(i, j, k, c)`` of
degree ``l`` (``i`` in ``l^2 .. (l+1)^2 - 1``, ``j`` in degree ``l - 1``, ``k`` an axis),
``c = (2l+1)/sqrt(l) * wigner_3j(l, l-1, 1)[i - l^2, j - (l-1)^2, k]``; and
``dY[i]/du[k] = l * sum_j c * Y[j]`` over the same entries.
"""

from __future__ import annotations

import bisect
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor

from .. import _extension
from .. import backend as _backend
from ._devices import same_device
from .. import so3
from ..reference.spherical_harmonics import NORMALIZATIONS, recurrence_factor

__all__ = [
    "MAX_DEGREE",
    "TRITON_MAX_DEGREE",
    "coupling_entries",
    "coupling_table",
    "output_width",
    "spherical_harmonics",
    "spherical_harmonics_backward",
    "spherical_harmonics_double_backward",
    "spherical_harmonics_jacobian",
]

# Largest degree the kernels accept; see the accuracy table in ARCHITECTURE.md
# (benchmarks/sh_accuracy.py measures it).
MAX_DEGREE = 32

# Largest degree of the Triton (GPU) kernels: their unrolled code compiles in seconds up
# to here and in minutes beyond (timings in kernels/spherical_harmonics.py).
TRITON_MAX_DEGREE = 8


def _entries_of_degree(l: int) -> List[Tuple[int, int, int, float]]:
    C = so3.wigner_3j(l, l - 1, 1, dtype=torch.float64) * recurrence_factor(l)
    # Zeros of the exact 3j symbol can come out as rounding residue of the real basis
    # change; anything below 1e-13 of the largest entry is such a zero.
    keep = C.abs() > 1e-13 * C.abs().max()
    out = []
    for a, b, k in keep.nonzero().tolist():
        out.append((l * l + a, (l - 1) * (l - 1) + b, k, float(C[a, b, k])))
    return out


# Built once at import (about 40 ms for every degree up to MAX_DEGREE), never while
# torch.compile/export traces: a table built under tracing would be a fake tensor, and
# caching it would poison later eager calls.
_ENTRIES: List[Tuple[int, int, int, float]] = [e for l in range(1, MAX_DEGREE + 1) for e in _entries_of_degree(l)]
_ALL = torch.tensor(_ENTRIES, dtype=torch.float64).reshape(-1, 4)
# _END[l]: number of entries of degrees 1..l, so the table for lmax is a prefix.
_END = [bisect.bisect_left([e[0] for e in _ENTRIES], (l + 1) ** 2) for l in range(MAX_DEGREE + 1)]
_TABLES: Dict[int, Tensor] = {l: _ALL[: _END[l]] for l in range(MAX_DEGREE + 1)}


def coupling_entries(lmax: int) -> List[Tuple[int, int, int, float]]:
    """The coupling entries ``(i, j, k, c)`` of degrees ``1..lmax``, sorted (Python list)."""
    if not 0 <= lmax <= MAX_DEGREE:
        raise ValueError(f"degree must be in 0..{MAX_DEGREE}, got {lmax}")
    return _ENTRIES[: _END[lmax]]


def coupling_table(lmax: int) -> Tensor:
    """The coupling as the ``(nnz, 4)`` float64 CPU tensor the operators take."""
    if not 0 <= lmax <= MAX_DEGREE:
        raise ValueError(f"degree must be in 0..{MAX_DEGREE}, got {lmax}")
    return _TABLES[lmax]


def output_width(ls: Sequence[int]) -> int:
    return sum(2 * l + 1 for l in ls)


def _ops():
    _extension.extension()  # raises with the reason when the extension is missing
    return torch.ops.equiops


# Thin typed entry points (x (N, 3) float32/float64).
def spherical_harmonics(x: Tensor, ls: List[int], normalize: bool, normalization: str, backend: str) -> Tensor:
    _backend.check_func_transforms("equiops.spherical_harmonics (torch.ops.equiops.spherical_harmonics)", x)
    return _ops().spherical_harmonics(x, coupling_table(max(ls)), ls, normalize, normalization, backend)


def spherical_harmonics_backward(grad, x, coupling, ls, normalize, normalization, backend) -> Tensor:
    return _ops().spherical_harmonics_backward(grad, x, coupling, ls, normalize, normalization, backend)


def spherical_harmonics_double_backward(v, grad, x, coupling, ls, normalize, normalization, backend):
    return _ops().spherical_harmonics_double_backward(v, grad, x, coupling, ls, normalize, normalization, backend)


def spherical_harmonics_jacobian(x: Tensor, ls: List[int], normalize: bool, normalization: str, backend: str):
    _backend.check_func_transforms(
        "equiops.spherical_harmonics_with_gradients (torch.ops.equiops.spherical_harmonics_jacobian)", x)
    return _ops().spherical_harmonics_jacobian(x, coupling_table(max(ls)), ls, normalize, normalization, backend)


# ----------------------------------------------------------------------------- CUDA
def _triton():
    from equiops.kernels import spherical_harmonics as kernels  # Triton is optional

    return kernels


def check_triton_degrees(ls: Sequence[int]) -> None:
    if len(ls) == 0 or min(ls) < 0 or max(ls) > TRITON_MAX_DEGREE:
        raise ValueError(
            f"equiops.spherical_harmonics: the Triton kernels take degrees 0..{TRITON_MAX_DEGREE}, got {list(ls)}"
        )


def _check_cuda_args(x: Tensor, ls, normalization: str, backend: str, *rows: Tuple[str, Tensor, int]):
    op = "equiops.spherical_harmonics"
    if backend in ("cpu", "torch"):
        raise ValueError(f"{op}: backend {backend!r} cannot run the CUDA implementation (tensors on {x.device})")
    name = _backend.resolve(backend, x.device, "spherical_harmonics")
    if name == "cuda":
        raise RuntimeError(f"{op}: there is no CUDA C++ kernel for spherical harmonics; use backend='triton' or 'auto'")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{op}: x must be float32 or float64, got {x.dtype}")
    if x.dim() != 2 or x.shape[1] != 3:
        raise ValueError(f"{op}: x must have shape (N, 3), got {tuple(x.shape)}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"{op}: normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    check_triton_degrees(ls)
    for what, t, cols in rows:
        if t.dtype != x.dtype or t.shape != (x.shape[0], cols):
            raise ValueError(f"{op}: {what} must be ({x.shape[0]}, {cols}) {x.dtype}, got {tuple(t.shape)} {t.dtype}")


def _cuda_forward(x, coupling, ls, normalize, normalization, backend):
    _check_cuda_args(x, ls, normalization, backend)
    return _triton().forward(x.contiguous(), list(ls), normalize, normalization)


def _cuda_backward(grad, x, coupling, ls, normalize, normalization, backend):
    _check_cuda_args(x, ls, normalization, backend, ("grad", grad, output_width(ls)))
    return _triton().backward(grad.contiguous(), x.contiguous(), list(ls), normalize, normalization)


def _cuda_double_backward(v, grad, x, coupling, ls, normalize, normalization, backend):
    _check_cuda_args(x, ls, normalization, backend, ("grad", grad, output_width(ls)), ("grad_grad_x", v, 3))
    return _triton().double_backward(v.contiguous(), grad.contiguous(), x.contiguous(), list(ls), normalize, normalization)


def _cuda_jacobian(x, coupling, ls, normalize, normalization, backend):
    _check_cuda_args(x, ls, normalization, backend)
    return _triton().jacobian(x.contiguous(), list(ls), normalize, normalization)


# ------------------------------------------------------------------- fake + autograd
def _register() -> None:
    lib = torch.library.Library("equiops", "IMPL")
    lib.impl("spherical_harmonics", _cuda_forward, "CUDA")
    lib.impl("spherical_harmonics_backward", _cuda_backward, "CUDA")
    lib.impl("spherical_harmonics_double_backward", _cuda_double_backward, "CUDA")
    lib.impl("spherical_harmonics_jacobian", _cuda_jacobian, "CUDA")
    _register._lib = lib  # keep the registrations alive

    @torch.library.register_fake("equiops::spherical_harmonics")
    def _(x, coupling, ls, normalize, normalization, backend):
        same_device("spherical_harmonics", dict(x=x, coupling=coupling), cpu_ok=("coupling",))
        return x.new_empty(x.shape[0], output_width(ls))

    @torch.library.register_fake("equiops::spherical_harmonics_backward")
    def _(grad, x, coupling, ls, normalize, normalization, backend):
        same_device("spherical_harmonics_backward", dict(x=x, grad=grad, coupling=coupling), cpu_ok=("coupling",))
        return x.new_empty(x.shape[0], 3)

    @torch.library.register_fake("equiops::spherical_harmonics_double_backward")
    def _(v, grad, x, coupling, ls, normalize, normalization, backend):
        same_device("spherical_harmonics_double_backward", dict(x=x, grad_grad_x=v, grad=grad, coupling=coupling),
                    cpu_ok=("coupling",))
        return x.new_empty(x.shape[0], output_width(ls)), x.new_empty(x.shape[0], 3)

    @torch.library.register_fake("equiops::spherical_harmonics_jacobian")
    def _(x, coupling, ls, normalize, normalization, backend):
        same_device("spherical_harmonics_jacobian", dict(x=x, coupling=coupling), cpu_ok=("coupling",))
        K = output_width(ls)
        return x.new_empty(x.shape[0], K), x.new_empty(x.shape[0], 3, K)

    def setup(ctx, inputs, output):
        # Every op's inputs end with (x, coupling, ls, normalize, normalization, backend).
        x, coupling = inputs[-6], inputs[-5]
        ctx.args = tuple(inputs[-4:])
        ctx.n_leading = len(inputs) - 6
        ctx.save_for_backward(*inputs[: ctx.n_leading], x, coupling)

    def forward_backward(ctx, grad):
        x, coupling = ctx.saved_tensors
        gx = spherical_harmonics_backward(grad.contiguous(), x, coupling, *ctx.args)
        return gx, None, None, None, None, None

    def backward_backward(ctx, v):
        grad, x, coupling = ctx.saved_tensors
        gg, gx = spherical_harmonics_double_backward(v.contiguous(), grad, x, coupling, *ctx.args)
        return gg, gx, None, None, None, None, None

    def double_backward_backward(ctx, *grads):
        raise NotImplementedError(
            "equiops.spherical_harmonics: derivatives beyond the second order are not implemented"
        )

    def jacobian_backward(ctx, grad_values, grad_jac):
        # d/dx of <grad_values, Y> + <grad_jac, dY/dx>; the second term is, per axis a,
        # the double backward with grad = grad_jac[:, a] and incoming vector e_a.
        x, coupling = ctx.saved_tensors
        N = x.shape[0]
        gx = x.new_zeros(N, 3)
        if grad_values is not None:
            gx = gx + spherical_harmonics_backward(grad_values.contiguous(), x, coupling, *ctx.args)
        if grad_jac is not None:
            for a in range(3):
                e = x.new_zeros(N, 3)
                e[:, a] = 1
                _, gxa = spherical_harmonics_double_backward(e, grad_jac[:, a].contiguous(), x, coupling, *ctx.args)
                gx = gx + gxa
        return gx, None, None, None, None, None

    torch.library.register_autograd("equiops::spherical_harmonics", forward_backward, setup_context=setup)
    torch.library.register_autograd("equiops::spherical_harmonics_backward", backward_backward, setup_context=setup)
    torch.library.register_autograd(
        "equiops::spherical_harmonics_double_backward", double_backward_backward, setup_context=setup
    )
    torch.library.register_autograd("equiops::spherical_harmonics_jacobian", jacobian_backward, setup_context=setup)

    # torch.vmap: every op here maps rows to rows independently, so a vmapped call is one call
    # on the batch folded into the rows (instead of PyTorch's per-sample fallback loop).
    def fold_rows(op: str):
        def rule(info, in_dims, *args):
            n_rows = len(args) - 5  # the row tensors come first, then (coupling, ls, ...)
            if in_dims[n_rows] is not None:
                raise ValueError(f"torch.ops.equiops.{op}: vmap over the coupling table is not supported")
            b = info.batch_size
            rows = []
            for t, d in zip(args[:n_rows], in_dims[:n_rows]):
                t = t.movedim(d, 0) if d is not None else t.unsqueeze(0).expand(b, *t.shape)
                rows.append(t.reshape(b * t.shape[1], *t.shape[2:]).contiguous())
            n = args[n_rows - 1].shape[0 if in_dims[n_rows - 1] is None else 1]  # rows of x per sample
            out = getattr(torch.ops.equiops, op)(*rows, *args[n_rows:])
            if isinstance(out, tuple):
                return tuple(o.reshape(b, n, *o.shape[1:]) for o in out), (0,) * len(out)
            return out.reshape(b, n, *out.shape[1:]), 0

        torch.library.register_vmap(f"equiops::{op}", rule)

    for op in ("spherical_harmonics", "spherical_harmonics_backward", "spherical_harmonics_double_backward",
               "spherical_harmonics_jacobian"):
        fold_rows(op)


if _extension.available():
    _register()
