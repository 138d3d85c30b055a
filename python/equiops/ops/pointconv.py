"""The fused PointConv operator of LieConv: public function, checks, fake kernels, autograd.

Schemas live in ``csrc/ops.cpp``, the CPU kernels in ``csrc/cpu/pointconv_cpu.cpp``, the
Triton kernels in ``kernels/pointconv.py``; the semantics (and the plain-PyTorch path of
``backend="torch"``) in :mod:`equiops.reference.pointconv`.

``pointconv(penult (B, m, K, C), values (B, n, ci), nbhd_idx (B, m, K), nbhd_mask (B, m,
K), weight (co, C * ci), bias, mean) -> (B, m, co)`` without the reference's ``(B, m, K,
ci)`` gathered values or ``(B, m, C * ci)`` partials: the kernels form the partials of a
block of queries at a time and multiply them with the weight right away. The backward
(``pointconv_backward``) recomputes them instead of storing them, so the op keeps only
its inputs for backward. It is first-order: a double backward through the fused op
raises (use ``backend="torch"`` for that).

Determinism: the CPU kernels are bitwise reproducible and independent of the thread
count. On CUDA the forward is deterministic; the values gradient uses atomic adds unless
deterministic results are asked for (:func:`equiops.backend.set_deterministic` or
``torch.use_deterministic_algorithms``), when it sorts the neighbours by source point
and sums each point's rows in a fixed order.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _extension
from .. import backend as _backend
from ._devices import same_device
from ._first_order import register_first_order
from ..reference import pointconv as _ref
from .tp_conv import in_forward_mode

__all__ = ["pointconv", "check_inputs"]

_OP = "equiops.pointconv"


def check_inputs(penult, values, nbhd_idx, nbhd_mask, weight, bias, mean) -> None:
    """Shapes, dtypes and devices, with errors naming the argument (index values are
    checked by the CPU kernel, and here for other devices)."""
    for name, t in (("penult", penult), ("values", values), ("nbhd_idx", nbhd_idx), ("nbhd_mask", nbhd_mask),
                    ("weight", weight)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{_OP}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"{_OP}: bias must be a torch.Tensor or None, got {type(bias).__name__}")
    if not isinstance(mean, bool):
        raise TypeError(f"{_OP}: mean must be a bool, got {type(mean).__name__}")
    if penult.dim() != 4:
        raise ValueError(f"{_OP}: penult must be 4-D (B, m, K, C), got shape {tuple(penult.shape)}")
    B, m, K, C = penult.shape
    dtype, device = penult.dtype, penult.device
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{_OP}: penult must be float32 or float64, got {dtype}")
    if values.dim() != 3 or values.size(0) != B:
        raise ValueError(f"{_OP}: values must have shape ({B}, n, ci) (B = penult's batch), got {tuple(values.shape)}")
    ci = values.size(2)
    for name, t, want in (("nbhd_idx", nbhd_idx, torch.int64), ("nbhd_mask", nbhd_mask, torch.bool)):
        if t.dtype != want:
            raise TypeError(f"{_OP}: {name} must be {want}, got {t.dtype}")
        if tuple(t.shape) != (B, m, K):
            raise ValueError(f"{_OP}: {name} must have shape {(B, m, K)} (penult's B, m, K), got {tuple(t.shape)}")
    if weight.dim() != 2 or weight.size(1) != C * ci:
        raise ValueError(f"{_OP}: weight must have shape (co, {C * ci}) (C * ci = {C} * {ci}), got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.size(0),):
        raise ValueError(f"{_OP}: bias must have shape ({weight.size(0)},) (co = weight's rows), got {tuple(bias.shape)}")
    for name, t in (("values", values), ("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != dtype:
            raise TypeError(f"{_OP}: {name} must have penult's dtype {dtype}, got {t.dtype}")
    for name, t in (("values", values), ("nbhd_idx", nbhd_idx), ("nbhd_mask", nbhd_mask), ("weight", weight),
                    ("bias", bias)):
        if t is not None and t.device != device:
            raise ValueError(f"{_OP}: {name} must be on penult's device {device}, got {t.device}")


def _check_index_range(nbhd_idx: Tensor, n: int) -> None:
    """Index values on a non-CPU device (a host synchronisation; skipped while compiling)."""
    if nbhd_idx.numel() == 0 or _backend.tracing():
        return
    lo, hi = nbhd_idx.min(), nbhd_idx.max()
    if bool(lo < 0) or bool(hi >= n):
        raise IndexError(f"{_OP}: nbhd_idx must hold point ids in [0, {n}), got values in [{int(lo)}, {int(hi)}]")


def _ops():
    _extension.extension()  # raises with the reason when the extension is missing
    return torch.ops.equiops


def pointconv(penult: Tensor, values: Tensor, nbhd_idx: Tensor, nbhd_mask: Tensor, weight: Tensor,
              bias: Optional[Tensor] = None, mean: bool = False, *, backend: Optional[str] = None) -> Tensor:
    """``out (B, m, co)``, differentiable w.r.t. ``penult``, ``values``, ``weight`` and ``bias``.

    See :mod:`equiops.reference.pointconv` for the semantics. ``backend``: see
    :mod:`equiops.backend`; ``"torch"`` runs the reference (which also supports double
    backward).
    """
    check_inputs(penult, values, nbhd_idx, nbhd_mask, weight, bias, mean)
    name = _backend.resolve(backend, penult.device, "pointconv")
    if name == "torch":
        return _ref.pointconv(penult, values, nbhd_idx, nbhd_mask, weight, bias, mean)
    if penult.device.type != "cpu":
        _check_index_range(nbhd_idx, values.size(1))
    _backend.check_func_transforms("equiops.ops.pointconv.pointconv (torch.ops.equiops.pointconv)", penult, values,
                                   weight, bias)
    return _ops().pointconv(penult, values, nbhd_idx, nbhd_mask, weight, bias, mean, name)


# ----------------------------------------------------------------------------- CUDA
def _triton(t: Tensor, backend: str):
    if backend in ("cpu", "torch"):
        raise ValueError(f"{_OP}: backend {backend!r} cannot run the CUDA implementation (tensors on {t.device})")
    if backend == "cuda":
        raise ValueError(f"{_OP}: there is no CUDA C++ kernel for PointConv; use backend 'triton' or 'auto'")
    from equiops.kernels import pointconv as kernels  # Triton is optional

    return kernels


def _cuda_forward(penult, values, nbhd_idx, nbhd_mask, weight, bias, mean, backend):
    k = _triton(penult, backend)
    return k.pointconv_forward(penult, values, nbhd_idx, nbhd_mask, weight, bias, mean)


def _cuda_backward(grad_out, penult, values, nbhd_idx, nbhd_mask, weight, bias, mean, backend):
    k = _triton(penult, backend)
    gp, gv, gw, gb = k.pointconv_backward(grad_out, penult, values, nbhd_idx, nbhd_mask, weight, bias, mean,
                                          deterministic=_backend.is_deterministic())
    return gp, gv, gw, gb if gb is not None else penult.new_empty(0)


# ------------------------------------------------------------------- fake + autograd
def _register() -> None:
    lib = torch.library.Library("equiops", "IMPL")
    lib.impl("pointconv", _cuda_forward, "CUDA")
    lib.impl("pointconv_backward", _cuda_backward, "CUDA")
    _register._lib = lib  # keep the registrations alive

    @torch.library.register_fake("equiops::pointconv")
    def _(penult, values, nbhd_idx, nbhd_mask, weight, bias, mean, backend):
        same_device("pointconv", dict(penult=penult, values=values, nbhd_idx=nbhd_idx, nbhd_mask=nbhd_mask, weight=weight,
                                      bias=bias))
        B, m = penult.shape[0], penult.shape[1]
        return penult.new_empty(B, m, weight.shape[0])

    @torch.library.register_fake("equiops::pointconv_backward")
    def _(grad_out, penult, values, nbhd_idx, nbhd_mask, weight, bias, mean, backend):
        same_device("pointconv_backward", dict(penult=penult, grad_out=grad_out, values=values, nbhd_idx=nbhd_idx,
                                               nbhd_mask=nbhd_mask, weight=weight, bias=bias))
        gb = bias.new_empty(bias.shape) if bias is not None else penult.new_empty(0)
        return penult.new_empty(penult.shape), values.new_empty(values.shape), weight.new_empty(weight.shape), gb

    def setup(ctx, inputs, output):
        penult, values, nbhd_idx, nbhd_mask, weight, bias, mean, backend = inputs
        ctx.has_bias = bias is not None
        ctx.options = (mean, backend)
        ctx.deterministic = _backend.is_deterministic()
        ctx.save_for_backward(penult, values, nbhd_idx, nbhd_mask, weight, *((bias,) if bias is not None else ()))

    def backward(ctx, grad_out):
        saved = ctx.saved_tensors
        penult, values, nbhd_idx, nbhd_mask, weight = saved[:5]
        bias = saved[5] if ctx.has_bias else None
        with in_forward_mode(ctx):  # the values gradient's atomics-or-sort choice, as in the forward's thread
            gp, gv, gw, gb = _ops().pointconv_backward(grad_out.contiguous(), penult, values, nbhd_idx, nbhd_mask,
                                                       weight, bias, *ctx.options)
        need = ctx.needs_input_grad
        return (gp if need[0] else None, gv if need[1] else None, None, None, gw if need[4] else None,
                gb if (ctx.has_bias and need[5]) else None, None, None)

    register_first_order("pointconv", backward, setup, "for a double backward build the layer with backend='torch'")


if _extension.available():
    _register()
