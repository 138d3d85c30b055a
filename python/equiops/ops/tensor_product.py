"""The tensor-product operators: fake kernels, autograd, CUDA dispatch.

Schemas live in ``csrc/ops.cpp``, the CPU kernels in ``csrc/cpu/tp_kernels.h``, the
Triton kernels in ``kernels/tensor_product.py``, the CUDA C++ kernels in
``csrc/cuda/tp_kernels.cuh``; semantics in ``equiops.reference.tensor_product``. The
problem (irreps, instructions, CG nonzeros) travels as the string of
:meth:`equiops.tp_problem.TPProblem.encode`.

Autograd chains ``tensor_product`` -> ``tensor_product_backward`` ->
``tensor_product_double_backward``; a third derivative raises ``NotImplementedError``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _extension
from .. import backend as _backend
from ._devices import same_device
from ..tp_problem import decode

__all__ = ["tensor_product", "tensor_product_backward", "tensor_product_double_backward"]

_OP = "equiops.tensor_product"


def _ops():
    _extension.extension()  # raises with the reason when the extension is missing
    return torch.ops.equiops


def tensor_product(x1: Tensor, x2: Tensor, weight: Tensor, problem: str, backend: str) -> Tensor:
    _backend.check_func_transforms("equiops.TensorProduct (torch.ops.equiops.tensor_product)", x1, x2, weight)
    return _ops().tensor_product(x1, x2, weight, problem, backend)


def tensor_product_backward(grad_out, x1, x2, weight, problem, need, backend):
    return _ops().tensor_product_backward(grad_out, x1, x2, weight, problem, list(need), backend)


def tensor_product_double_backward(gg1, gg2, ggw, grad_out, x1, x2, weight, problem, backend):
    return _ops().tensor_product_double_backward(gg1, gg2, ggw, grad_out, x1, x2, weight, problem, backend)


def _rows(*ts: Tensor) -> int:
    n = 1
    for t in ts:
        if t.shape[0] != 1:
            n = t.shape[0]
    return n


# ----------------------------------------------------------------------------- CUDA
def _cuda_backend(x1: Tensor, backend: str) -> str:
    if backend in ("cpu", "torch"):
        raise ValueError(f"{_OP}: backend {backend!r} cannot run the CUDA implementation (tensors on {x1.device})")
    return _backend.resolve(backend, x1.device, "tensor_product")


def _triton():
    from equiops.kernels import tensor_product as kernels  # Triton is optional

    return kernels


def _empty_if_none(t: Optional[Tensor], like: Tensor) -> Tensor:
    return t if t is not None else like.new_empty(0)


def _cuda_forward(x1, x2, weight, problem, backend):
    name = _cuda_backend(x1, backend)
    args = (x1.contiguous(), x2.contiguous(), weight.contiguous(), problem)
    if name == "cuda":
        return _extension.extension().tensor_product_cuda(*args)
    return _triton().forward(*args)


def _cuda_backward(grad_out, x1, x2, weight, problem, need, backend):
    name = _cuda_backend(x1, backend)
    args = (grad_out.contiguous(), x1.contiguous(), x2.contiguous(), weight.contiguous(), problem)
    if name == "cuda":
        return tuple(_extension.extension().tensor_product_backward_cuda(*args, *need))
    g1, g2, gw = _triton().backward(*args, tuple(need))
    return _empty_if_none(g1, x1), _empty_if_none(g2, x2), _empty_if_none(gw, weight)


def _cuda_double_backward(gg1, gg2, ggw, grad_out, x1, x2, weight, problem, backend):
    name = _cuda_backend(x1, backend)
    c = [None if t is None else t.contiguous() for t in (gg1, gg2, ggw)]
    args = (*c, grad_out.contiguous(), x1.contiguous(), x2.contiguous(), weight.contiguous(), problem)
    if name == "cuda":
        return tuple(_extension.extension().tensor_product_double_backward_cuda(*args))
    return tuple(_triton().double_backward(*args))


# ------------------------------------------------------------------- fake + autograd
def _register() -> None:
    lib = torch.library.Library("equiops", "IMPL")
    lib.impl("tensor_product", _cuda_forward, "CUDA")
    lib.impl("tensor_product_backward", _cuda_backward, "CUDA")
    lib.impl("tensor_product_double_backward", _cuda_double_backward, "CUDA")
    _register._lib = lib  # keep the registrations alive

    @torch.library.register_fake("equiops::tensor_product")
    def _(x1, x2, weight, problem, backend):
        same_device("tensor_product", dict(x1=x1, x2=x2, weight=weight))
        return x1.new_empty(_rows(x1, x2, weight), decode(problem).dim_out)

    @torch.library.register_fake("equiops::tensor_product_backward")
    def _(grad_out, x1, x2, weight, problem, need, backend):
        same_device("tensor_product_backward", dict(x1=x1, x2=x2, weight=weight, grad_out=grad_out))
        return tuple(t.new_empty(t.shape) if n else t.new_empty(0) for t, n in zip((x1, x2, weight), need))

    @torch.library.register_fake("equiops::tensor_product_double_backward")
    def _(gg1, gg2, ggw, grad_out, x1, x2, weight, problem, backend):
        same_device("tensor_product_double_backward", dict(x1=x1, x2=x2, weight=weight, grad_out=grad_out, gg_x1=gg1,
                                                           gg_x2=gg2, gg_weight=ggw))
        return (grad_out.new_empty(grad_out.shape), x1.new_empty(x1.shape), x2.new_empty(x2.shape),
                weight.new_empty(weight.shape))

    def forward_setup(ctx, inputs, output):
        x1, x2, weight, problem, backend = inputs
        ctx.args = (problem, backend)
        ctx.save_for_backward(x1, x2, weight)

    def forward_backward(ctx, grad):
        x1, x2, weight = ctx.saved_tensors
        need = list(ctx.needs_input_grad[:3])
        if not any(need):
            return None, None, None, None, None
        problem, backend = ctx.args
        g = tensor_product_backward(grad.contiguous(), x1, x2, weight, problem, need, backend)
        return tuple(gi if n else None for gi, n in zip(g, need)) + (None, None)

    def backward_setup(ctx, inputs, output):
        grad_out, x1, x2, weight, problem, need, backend = inputs
        ctx.args = (problem, backend)
        ctx.need = list(need)
        ctx.save_for_backward(grad_out, x1, x2, weight)

    def backward_backward(ctx, gg1, gg2, ggw):
        grad_out, x1, x2, weight = ctx.saved_tensors
        problem, backend = ctx.args
        # Outputs the forward did not compute carry no gradient (they are (0,) tensors).
        gg = [g if (n and g is not None) else None for g, n in zip((gg1, gg2, ggw), ctx.need)]
        if all(g is None for g in gg):
            return (None,) * 7
        ggo, g1, g2, gw = tensor_product_double_backward(
            *[None if g is None else g.contiguous() for g in gg], grad_out, x1, x2, weight, problem, backend
        )
        return ggo, g1, g2, gw, None, None, None

    def double_backward_backward(ctx, *grads):
        raise NotImplementedError(f"{_OP}: derivatives beyond the second order are not implemented")

    def double_backward_setup(ctx, inputs, output):
        pass

    torch.library.register_autograd("equiops::tensor_product", forward_backward, setup_context=forward_setup)
    torch.library.register_autograd(
        "equiops::tensor_product_backward", backward_backward, setup_context=backward_setup
    )
    torch.library.register_autograd(
        "equiops::tensor_product_double_backward", double_backward_backward, setup_context=double_backward_setup
    )


if _extension.available():
    _register()
