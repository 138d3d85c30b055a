"""The fused EGNN message operators: public function, checks, fake kernels, autograd.

Schemas live in ``csrc/ops.cpp``, the CPU kernels in ``csrc/cpu/egnn_cpu.cpp``, the
Triton kernels in ``kernels/egnn.py``; the semantics (and the plain-PyTorch path of
``backend="torch"``) in :mod:`equiops.reference.egnn_message`.

``egnn_message`` returns ``(m_sum (n, M), t_sum (n, 3))``: every edge's gated message
and coordinate term, summed at its receiver, without any ``(E, width)`` tensor in the
forward. The backward (``egnn_message_backward``) recomputes the edge quantities from
the node tensors instead of storing them (as flash attention does), so a layer keeps
only its inputs for backward. It is first-order: a double backward through the fused
op raises (use ``backend="torch"`` for that).
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _extension
from .. import backend as _backend
from ._devices import same_device
from ._first_order import register_first_order
from ..reference import egnn_message as _ref
from .tp_conv import _deterministic_view, in_forward_mode

__all__ = ["MessageParams", "MessageConfig", "egnn_message"]

_OP = "equiops.egnn_message"


@dataclasses.dataclass(frozen=True)
class MessageConfig:
    """The non-tensor options of the message block (see :mod:`equiops.reference.egnn_message`).

    act: ``"silu"`` or ``"relu"`` (the kernels' activations) or, with ``backend="torch"``
    only, any callable. coord_norm: ``"none"``, ``"detached"``, ``"plus_one"``,
    ``"clamped"``. c_clamp / trans_clamp: 0 turns the clamp off.
    """

    act: object = "silu"
    coord_norm: str = "none"
    tanh: bool = False
    c_clamp: float = 0.0
    trans_clamp: float = 0.0

    def __post_init__(self):
        if not callable(self.act) and self.act not in _ref.ACTIVATIONS:
            raise ValueError(f"act: expected one of {_ref.ACTIVATIONS} or a callable, got {self.act!r}")
        if self.coord_norm not in _ref.COORD_NORMS:
            raise ValueError(f"coord_norm: expected one of {_ref.COORD_NORMS}, got {self.coord_norm!r}")
        for name in ("c_clamp", "trans_clamp"):
            v = getattr(self, name)
            if not (v >= 0.0):  # also rejects NaN
                raise ValueError(f"{name}: expected a number >= 0 (0 = off), got {v}")

    @property
    def fusable(self) -> bool:
        """Whether the kernels implement this configuration (a named activation)."""
        return not callable(self.act)


@dataclasses.dataclass
class MessageParams:
    """The weights of the message block, in the layout of the module docstring of
    :mod:`equiops.reference.egnn_message` (``w_att``/``b_att`` and ``bc2`` may be None)."""

    w_radial: Tensor
    w_edge: Tensor
    w2: Tensor
    b2: Tensor
    w_att: Optional[Tensor]
    b_att: Optional[Tensor]
    wc1: Tensor
    bc1: Tensor
    wc2: Tensor
    bc2: Optional[Tensor]

    def tensors(self) -> Tuple[Optional[Tensor], ...]:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))


def _shape_error(name: str, expected, t: Tensor) -> ValueError:
    return ValueError(f"{_OP}: {name} must have shape {tuple(expected)}, got {tuple(t.shape)}")


def check_inputs(node_i, node_j, coord, edge_attr, src, dst, p: MessageParams) -> None:
    """Shapes, dtypes, devices and index ranges, with errors naming the argument."""
    for name, t in (("node_i", node_i), ("node_j", node_j), ("coord", coord), ("edge_attr", edge_attr),
                    ("src", src), ("dst", dst)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{_OP}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if node_i.dim() != 2:
        raise ValueError(f"{_OP}: node_i must be 2-D (n, H1), got shape {tuple(node_i.shape)}")
    n, h1 = node_i.shape
    dtype, device = node_i.dtype, node_i.device
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{_OP}: node_i must be float32 or float64, got {dtype}")
    for name, idx in (("src", src), ("dst", dst)):
        if idx.dtype != torch.int64 or idx.dim() != 1:
            raise ValueError(f"{_OP}: {name} must be a 1-D int64 tensor (E,), got {idx.dtype} of shape {tuple(idx.shape)}")
    E = src.numel()
    if dst.numel() != E:
        raise ValueError(f"{_OP}: src and dst must have the same length, got {E} and {dst.numel()}")
    if edge_attr.dim() != 2 or edge_attr.size(0) != E:
        raise ValueError(f"{_OP}: edge_attr must have shape ({E}, D) (E = {E} edges), got {tuple(edge_attr.shape)}")
    D = edge_attr.size(1)
    if p.w2.dim() != 2 or p.w2.size(1) != h1:
        raise ValueError(f"{_OP}: w2 must have shape (M, {h1}) (H1 = node_i's width), got {tuple(p.w2.shape)}")
    M = p.w2.size(0)
    if p.wc1.dim() != 2 or p.wc1.size(1) != M:
        raise ValueError(f"{_OP}: wc1 must have shape (Hc, {M}) (M = w2's rows), got {tuple(p.wc1.shape)}")
    hc = p.wc1.size(0)
    expected = {
        "node_j": (n, h1), "coord": (n, 3), "w_radial": (h1,), "w_edge": (h1, D), "b2": (M,), "w_att": (M,),
        "b_att": (1,), "bc1": (hc,), "wc2": (hc,), "bc2": (1,),
    }
    given = {"node_j": node_j, "coord": coord, "edge_attr": edge_attr, **{f.name: getattr(p, f.name) for f in dataclasses.fields(p)}}
    if (p.w_att is None) != (p.b_att is None):
        raise ValueError(f"{_OP}: w_att and b_att must be given together (the attention gate) or both be None")
    for name, t in given.items():
        if t is None:
            if name in ("w_att", "b_att", "bc2"):
                continue
            raise ValueError(f"{_OP}: {name} must be a tensor, got None")
        if not isinstance(t, Tensor):
            raise TypeError(f"{_OP}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if name in expected and tuple(t.shape) != expected[name]:
            raise _shape_error(name, expected[name], t)
        if t.dtype != dtype:
            raise TypeError(f"{_OP}: {name} must have node_i's dtype {dtype}, got {t.dtype}")
        if t.device != device:
            raise ValueError(f"{_OP}: {name} must be on node_i's device {device}, got {t.device}")
    for name, idx in (("src", src), ("dst", dst)):
        if idx.device != device:
            raise ValueError(f"{_OP}: {name} must be on node_i's device {device}, got {idx.device}")


def _ops():
    _extension.extension()  # raises with the reason when the extension is missing
    return torch.ops.equiops


def _graph_views(graph, src: Tensor, dst: Tensor, n: int):
    if graph is None:
        return (None, None, None, None)
    if graph.num_nodes != n or graph.src.numel() != src.numel():
        raise ValueError(
            f"{_OP}: graph has {graph.num_nodes} nodes and {graph.src.numel()} edges, the inputs {n} and {src.numel()}"
        )
    from .tp_conv import graph_args

    return tuple(graph_args(graph))


def egnn_message(
    node_i: Tensor, node_j: Tensor, coord: Tensor, edge_attr: Tensor, src: Tensor, dst: Tensor,
    params: MessageParams, config: MessageConfig = MessageConfig(), *, graph=None, backend: Optional[str] = None,
) -> Tuple[Tensor, Tensor]:
    """``(m_sum (n, M), t_sum (n, 3))``, differentiable w.r.t. every tensor argument.

    ``graph`` (an :class:`equiops.Graph` of ``(src, dst)``, receiver = ``dst``) gives the
    kernels its sorted views: deterministic sums on every backend, and the views are
    not rebuilt per call. ``backend``: see :mod:`equiops.backend`; ``"torch"`` runs the
    reference (which also takes a callable ``act`` and supports double backward).
    """
    check_inputs(node_i, node_j, coord, edge_attr, src, dst, params)
    name = _backend.resolve(backend, node_i.device, "egnn")
    if name != "torch" and not config.fusable:
        if backend not in (None, "auto"):
            raise ValueError(f"{_OP}: backend {backend!r} has no kernel for act={config.act!r}; use 'torch'")
        name = "torch"
    if name == "torch":
        return _ref.egnn_message(node_i, node_j, coord, edge_attr, src, dst, *params.tensors(), config.act,
                                 config.coord_norm, config.tanh, config.c_clamp, config.trans_clamp)
    if name == "cpu" or node_i.device.type != "cpu":
        # Only integer ranges are checked here; the kernels check them too on the CPU.
        n = node_i.size(0)
        views = _graph_views(graph, src, dst, n)
        if graph is None and src.numel() > 0 and node_i.device.type != "cpu":
            lo = torch.minimum(src.min(), dst.min())
            hi = torch.maximum(src.max(), dst.max())
            if bool(lo < 0) or bool(hi >= n):
                raise IndexError(f"{_OP}: src/dst must hold node ids in [0, {n}), got values in [{int(lo)}, {int(hi)}]")
        _backend.check_func_transforms(f"{_OP} (torch.ops.equiops.egnn_message)", node_i, node_j, coord, edge_attr,
                                       *params.tensors())
        # contiguous: the C++ op's index check reads a strided or expand()-ed index as if dense
        return _ops().egnn_message(
            node_i, node_j, coord, edge_attr, src.contiguous(), dst.contiguous(), *views, *params.tensors(), config.act,
            config.coord_norm, bool(config.tanh), float(config.c_clamp), float(config.trans_clamp), name,
        )
    raise AssertionError(name)


# ----------------------------------------------------------------------------- CUDA
def _triton(t: Tensor, backend: str):
    if backend in ("cpu", "torch"):
        raise ValueError(f"{_OP}: backend {backend!r} cannot run the CUDA implementation (tensors on {t.device})")
    if backend == "cuda":
        raise ValueError(f"{_OP}: there is no CUDA C++ kernel for the EGNN message block; use backend 'triton' or 'auto'")
    from equiops.kernels import egnn as kernels  # Triton is optional

    return kernels


def _cuda_forward(node_i, node_j, coord, edge_attr, src, dst, dp, di, sp, si, *rest):
    weights, (act, coord_norm, tanh, c_clamp, trans_clamp, backend) = rest[:10], rest[10:]
    k = _triton(node_i, backend)
    dp, di = _deterministic_view(dst, dp, di, node_i.shape[0])  # no view + deterministic: CSR, not atomics
    return k.message_forward(node_i, node_j, coord, edge_attr, src, dst, dp, di, *weights, act, coord_norm, tanh,
                             c_clamp, trans_clamp)


def _cuda_backward(grad_m, grad_t, node_i, node_j, coord, edge_attr, src, dst, dp, di, sp, si, *rest):
    weights, (act, coord_norm, tanh, c_clamp, trans_clamp, backend) = rest[:10], rest[10:]
    k = _triton(node_i, backend)
    dp, di = _deterministic_view(dst, dp, di, node_i.shape[0])
    sp, si = _deterministic_view(src, sp, si, node_i.shape[0])
    g = k.message_backward(grad_m, grad_t, node_i, node_j, coord, edge_attr, src, dst, dp, di, sp, si, *weights, act,
                           coord_norm, tanh, c_clamp, trans_clamp)
    inputs = (node_i, node_j, coord, edge_attr) + tuple(weights)
    return tuple(gi if gi is not None else t.new_empty(0) if t is not None else node_i.new_empty(0)
                 for gi, t in zip(g, inputs))


# ------------------------------------------------------------------- fake + autograd
_N_GRAD = 14  # node_i, node_j, coord, edge_attr and the ten weights


_WEIGHT_NAMES = tuple(f.name for f in dataclasses.fields(MessageParams))


def _register() -> None:
    lib = torch.library.Library("equiops", "IMPL")
    lib.impl("egnn_message", _cuda_forward, "CUDA")
    lib.impl("egnn_message_backward", _cuda_backward, "CUDA")
    _register._lib = lib  # keep the registrations alive

    @torch.library.register_fake("equiops::egnn_message")
    def _(node_i, node_j, coord, edge_attr, src, dst, dp, di, sp, si, w_radial, w_edge, w2, *rest):
        same_device("egnn_message", dict(node_i=node_i, node_j=node_j, coord=coord, edge_attr=edge_attr, src=src, dst=dst,
                                         dst_perm=dp, dst_indptr=di, src_perm=sp, src_indptr=si, w_radial=w_radial,
                                         w_edge=w_edge, w2=w2, **dict(zip(_WEIGHT_NAMES[3:], rest[:7]))))
        n = node_i.shape[0]
        return node_i.new_empty(n, w2.shape[0]), node_i.new_empty(n, 3)

    @torch.library.register_fake("equiops::egnn_message_backward")
    def _(grad_m, grad_t, node_i, node_j, coord, edge_attr, src, dst, dp, di, sp, si, *rest):
        same_device("egnn_message_backward", dict(node_i=node_i, grad_m=grad_m, grad_t=grad_t, node_j=node_j, coord=coord,
                                                  edge_attr=edge_attr, src=src, dst=dst, dst_perm=dp, dst_indptr=di,
                                                  src_perm=sp, src_indptr=si,
                                                  **dict(zip(_WEIGHT_NAMES, rest[:10]))))
        inputs = (node_i, node_j, coord, edge_attr) + tuple(rest[:10])
        return tuple(t.new_empty(t.shape) if t is not None else node_i.new_empty(0) for t in inputs)

    def setup(ctx, inputs, output):
        ctx.present = tuple(t is not None for t in inputs[:20])
        ctx.options = inputs[20:]
        ctx.deterministic = _backend.is_deterministic()
        ctx.save_for_backward(*(t for t in inputs[:20] if t is not None))

    def backward(ctx, grad_m, grad_t):
        saved = iter(ctx.saved_tensors)
        args = [next(saved) if present else None for present in ctx.present]
        grad_m = grad_m.contiguous() if grad_m is not None else args[0].new_zeros(args[0].shape[0], args[12].shape[0])
        grad_t = grad_t.contiguous() if grad_t is not None else args[0].new_zeros(args[0].shape[0], 3)
        with in_forward_mode(ctx):
            g = _ops().egnn_message_backward(grad_m, grad_t, *args, *ctx.options)
        # Inputs 0-3 (node_i, node_j, coord, edge_attr), 4-5 src/dst, 6-9 views, 10-19 weights.
        grads = list(g[:4]) + [None] * 6 + list(g[4:])
        out = [gi if (need and args[k] is not None) else None
               for k, (gi, need) in enumerate(zip(grads, ctx.needs_input_grad[:20]))]
        return tuple(out) + (None,) * 6

    # Forces from an EGNN energy are first order (they work fused); training on them is not.
    register_first_order("egnn_message", backward, setup, "for a double backward (e.g. training on forces from "
                         "an EGNN energy) build the module with backend='torch'")


if _extension.available():
    _register()
