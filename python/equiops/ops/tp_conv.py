"""The fused tensor-product convolution operators: fake kernels, autograd, CUDA dispatch.

Schemas live in ``csrc/ops.cpp``, the CPU kernels in ``csrc/cpu/tp_conv_cpu.cpp`` (the
tensor-product row kernels of ``csrc/cpu/tp_kernels.h`` with row maps), the Triton
kernels in ``kernels/tp_conv.py``; semantics in ``equiops.reference.tp_conv``.

``tp_conv(x, edge_attr, weight, src, dst, dst_perm, dst_indptr, src_perm, src_indptr,
num_nodes, problem, backend)`` returns ``out (num_nodes, dim_out)`` with ``out[n]`` the sum
over the edges ``e`` with ``dst[e] == n`` of ``tensor_product(x[src[e]], edge_attr[e],
weight[e])``; ``tp_conv_backward`` gives the gradients w.r.t. ``(x, edge_attr, weight)``.
Both take the graph's two CSR views (``equiops.Graph``); the forward sums over the
receiver view, the backward's gradient w.r.t. ``x`` over the sender view.

Autograd: ``tp_conv``'s backward is ``tp_conv_backward``; ``tp_conv_backward``'s own
derivative (the double backward of force training) is composed of the two ops with one
argument replaced by its incoming gradient (the product is linear in each argument)::

    d/d grad_out:  conv(gg_x, a, w) + conv(x, gg_a, w) + conv(x, a, gg_w)
    d/d x:         bwd_x(go; a=gg_a, w) + bwd_x(go; a, w=gg_w)
    d/d a:         bwd_a(go; x=gg_x, w) + bwd_a(go; x, w=gg_w)
    d/d w:         bwd_w(go; x=gg_x, a) + bwd_w(go; x, a=gg_a)

at most three fused forwards and three fused backwards, none of which builds an
``(E, dim_out)`` tensor, each deterministic with the graph's views; being made of the
differentiable ops themselves, it is differentiable again to any order. The product is
affine, not linear, in the weights when some paths have none: the terms with ``gg_w`` in
place of ``w`` use the problem restricted to its weighted paths (:func:`weighted_only`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Optional, Sequence

import torch
from torch import Tensor

from .. import _extension
from .. import backend as _backend
from ._devices import same_device
from ..tp_problem import decode

__all__ = ["tp_conv", "tp_conv_backward"]

_OP = "equiops.tp_conv"


def _ops():
    _extension.extension()  # raises with the reason when the extension is missing
    return torch.ops.equiops


def tp_conv(x, edge_attr, weight, src, dst, dst_perm, dst_indptr, src_perm, src_indptr, num_nodes, problem, backend):
    _backend.check_func_transforms("equiops.TensorProductConv (torch.ops.equiops.tp_conv)", x, edge_attr, weight)
    return _ops().tp_conv(
        x, edge_attr, weight, src, dst, dst_perm, dst_indptr, src_perm, src_indptr, num_nodes, problem, backend
    )


def tp_conv_backward(grad_out, x, edge_attr, weight, src, dst, dst_perm, dst_indptr, src_perm, src_indptr, need,
                     problem, backend):
    return _ops().tp_conv_backward(
        grad_out, x, edge_attr, weight, src, dst, dst_perm, dst_indptr, src_perm, src_indptr, list(need), problem,
        backend,
    )


@functools.lru_cache(maxsize=256)
def weighted_only(problem: str) -> str:
    """The problem with its unweighted paths dropped (same widths and weight layout):
    the part of the product that is linear in the weights."""
    prob = decode(problem)
    if all(p.weighted for p in prob.paths):
        return problem
    return dataclasses.replace(prob, paths=tuple(p for p in prob.paths if p.weighted)).encode()


# ----------------------------------------------------------------------------- CUDA
def _triton(x: Tensor, backend: str):
    if backend in ("cpu", "torch"):
        raise ValueError(f"{_OP}: backend {backend!r} cannot run the CUDA implementation (tensors on {x.device})")
    name = _backend.resolve(backend, x.device, "tp_conv")
    if name == "cuda":
        raise ValueError(
            f"{_OP}: there is no CUDA C++ kernel for the fused convolution; use backend 'triton' or 'auto' "
            "(equiops.TensorProductConv(..., backend='triton'))"
        )
    from equiops.kernels import tp_conv as kernels  # Triton is optional

    return kernels


def _deterministic_view(keys: Tensor, perm: Optional[Tensor], indptr: Optional[Tensor], n: int):
    """``(perm, indptr)``: the given CSR view, or, when there is none and deterministic results
    are asked for, the one a Graph would hold (a stable sort of ``keys``), so the Triton
    kernels reduce in CSR order instead of with atomic adds (also for raw op calls)."""
    if indptr is None and _backend.is_deterministic():
        from ..graph import _csr

        return _csr(keys.long(), n)
    return perm, indptr


def in_forward_mode(ctx):
    """The deterministic switch as it was when the forward ran (``ctx.deterministic``), for a
    backward: on CUDA, autograd runs backward functions on its device thread, which does not
    see the thread-local :func:`equiops.deterministic` block of the caller."""
    return _backend.deterministic(True) if getattr(ctx, "deterministic", False) else contextlib.nullcontext()


def _cuda_forward(x, edge_attr, weight, src, dst, dst_perm, dst_indptr, src_perm, src_indptr, num_nodes, problem,
                  backend):
    k = _triton(x, backend)
    dst_perm, dst_indptr = _deterministic_view(dst, dst_perm, dst_indptr, int(num_nodes))
    return k.conv_forward(x.contiguous(), edge_attr.contiguous(), weight.contiguous(), src, dst, dst_perm, dst_indptr,
                          int(num_nodes), problem)


def _cuda_backward(grad_out, x, edge_attr, weight, src, dst, dst_perm, dst_indptr, src_perm, src_indptr, need,
                   problem, backend):
    k = _triton(x, backend)
    src_perm, src_indptr = _deterministic_view(src, src_perm, src_indptr, x.shape[0])
    g = k.conv_backward(grad_out.contiguous(), x.contiguous(), edge_attr.contiguous(), weight.contiguous(), src, dst,
                        src_perm, src_indptr, tuple(need), problem)
    return tuple(gi if gi is not None else t.new_empty(0) for gi, t in zip(g, (x, edge_attr, weight)))


# ------------------------------------------------------------------- fake + autograd
def _add(a: Optional[Tensor], b: Optional[Tensor]) -> Optional[Tensor]:
    if a is None:
        return b
    return a if b is None else a + b


def _register() -> None:
    lib = torch.library.Library("equiops", "IMPL")
    lib.impl("tp_conv", _cuda_forward, "CUDA")
    lib.impl("tp_conv_backward", _cuda_backward, "CUDA")
    _register._lib = lib  # keep the registrations alive

    @torch.library.register_fake("equiops::tp_conv")
    def _(x, edge_attr, weight, src, dst, dst_perm, dst_indptr, src_perm, src_indptr, num_nodes, problem, backend):
        same_device("tp_conv", dict(x=x, edge_attr=edge_attr, weight=weight, src=src, dst=dst, dst_perm=dst_perm,
                                    dst_indptr=dst_indptr, src_perm=src_perm, src_indptr=src_indptr))
        return x.new_empty(num_nodes, decode(problem).dim_out)

    @torch.library.register_fake("equiops::tp_conv_backward")
    def _(grad_out, x, edge_attr, weight, src, dst, dst_perm, dst_indptr, src_perm, src_indptr, need, problem,
          backend):
        same_device("tp_conv_backward", dict(x=x, edge_attr=edge_attr, weight=weight, grad_out=grad_out, src=src, dst=dst,
                                             dst_perm=dst_perm, dst_indptr=dst_indptr, src_perm=src_perm,
                                             src_indptr=src_indptr))
        return tuple(t.new_empty(t.shape) if n else t.new_empty(0) for t, n in zip((x, edge_attr, weight), need))

    def conv_setup(ctx, inputs, output):
        x, a, w, src, dst, dp, di, sp, si, num_nodes, problem, backend = inputs
        ctx.args = (problem, backend)
        ctx.deterministic = _backend.is_deterministic()
        ctx.graph_optional = tuple(t is not None for t in (dp, di, sp, si))
        ctx.save_for_backward(x, a, w, src, dst, *(t for t in (dp, di, sp, si) if t is not None))

    def _graph(ctx):
        saved = ctx.saved_tensors
        x, a, w, src, dst = saved[:5]
        rest = iter(saved[5:])
        views = tuple(next(rest) if present else None for present in ctx.graph_optional)
        return x, a, w, src, dst, views

    def conv_backward(ctx, grad):
        need = list(ctx.needs_input_grad[:3])
        if not any(need):
            return (None,) * 12
        x, a, w, src, dst, views = _graph(ctx)
        problem, backend = ctx.args
        with in_forward_mode(ctx):
            g = tp_conv_backward(grad.contiguous(), x, a, w, src, dst, *views, need, problem, backend)
        return tuple(gi if n else None for gi, n in zip(g, need)) + (None,) * 9

    def backward_setup(ctx, inputs, output):
        go, x, a, w, src, dst, dp, di, sp, si, need, problem, backend = inputs
        ctx.args = (problem, backend)
        ctx.need = list(need)
        ctx.deterministic = _backend.is_deterministic()
        ctx.graph_optional = tuple(t is not None for t in (dp, di, sp, si))
        ctx.save_for_backward(go, x, a, w, src, dst, *(t for t in (dp, di, sp, si) if t is not None))

    def backward_backward(ctx, gg_x, gg_a, gg_w):
        with in_forward_mode(ctx):
            return _backward_backward(ctx, gg_x, gg_a, gg_w)

    def _backward_backward(ctx, gg_x, gg_a, gg_w):
        saved = ctx.saved_tensors
        go, x, a, w, src, dst = saved[:6]
        rest = iter(saved[6:])
        views = tuple(next(rest) if present else None for present in ctx.graph_optional)
        problem, backend = ctx.args
        # Outputs the backward did not compute carry no gradient (they are (0,) tensors).
        gg_x, gg_a, gg_w = (g if (n and g is not None) else None for g, n in zip((gg_x, gg_a, gg_w), ctx.need))
        n_go, n_x, n_a, n_w = ctx.needs_input_grad[:4]
        num_nodes = go.shape[0]  # receivers (x's rows are the senders)

        def conv(xx, aa, ww, prob=problem):
            return tp_conv(xx, aa, ww, src, dst, *views, num_nodes, prob, backend)

        def bwd(xx, aa, ww, need, prob=problem):
            return tp_conv_backward(go, xx, aa, ww, src, dst, *views, need, prob, backend)

        d_go = d_x = d_a = d_w = None
        if n_go:
            if gg_x is not None:
                d_go = _add(d_go, conv(gg_x, a, w))
            if gg_a is not None:
                d_go = _add(d_go, conv(x, gg_a, w))
            if gg_w is not None:
                d_go = _add(d_go, conv(x, a, gg_w, weighted_only(problem)))
        if gg_x is not None and (n_a or n_w):
            _, ga, gw = bwd(gg_x, a, w, [False, n_a, n_w])
            d_a, d_w = _add(d_a, ga if n_a else None), _add(d_w, gw if n_w else None)
        if gg_a is not None and (n_x or n_w):
            gx, _, gw = bwd(x, gg_a, w, [n_x, False, n_w])
            d_x, d_w = _add(d_x, gx if n_x else None), _add(d_w, gw if n_w else None)
        if gg_w is not None and (n_x or n_a):
            gx, ga, _ = bwd(x, a, gg_w, [n_x, n_a, False], weighted_only(problem))
            d_x, d_a = _add(d_x, gx if n_x else None), _add(d_a, ga if n_a else None)
        return (d_go, d_x, d_a, d_w) + (None,) * 9

    torch.library.register_autograd("equiops::tp_conv", conv_backward, setup_context=conv_setup)
    torch.library.register_autograd("equiops::tp_conv_backward", backward_backward, setup_context=backward_setup)


def graph_args(graph) -> Sequence[Optional[Tensor]]:
    """(dst_perm, dst_indptr, src_perm, src_indptr) for the ops: the Graph's views (perms
    None where the edges are already in that order), or all None without a graph."""
    if graph is None:
        return (None, None, None, None)
    return (
        None if graph.dst_sorted else graph.dst_perm,
        graph.dst_indptr,
        None if graph.src_sorted else graph.src_perm,
        graph.src_indptr,
    )


if _extension.available():
    _register()
