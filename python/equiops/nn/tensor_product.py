r"""Clebsch-Gordan tensor products with e3nn's semantics, on equiops' fused kernels.

:class:`TensorProduct` takes ``e3nn.o3.TensorProduct``'s constructor arguments and gives
its outputs (weights copied), with every connection mode (``uvw, uvu, uvv, uuw, uuu,
uvuv, uvu<v, u<vw``), mixed modes, weighted and unweighted paths, shared or per-row
weights in e3nn's flat layout, e3nn's normalizations and broadcasting of leading
dimensions. The subclasses build e3nn's instruction lists:
:class:`FullyConnectedTensorProduct`, :class:`ElementwiseTensorProduct`,
:class:`FullTensorProduct`, and :class:`ChannelWiseTensorProduct` (the "uvu" product of
NequIP / MACE convolutions). :func:`from_e3nn` converts an e3nn module (weights
included); :func:`replace_e3nn_tensor_products` swaps every one inside a model.

Layout (e3nn's "mul_ir"): block ``i`` of an input is ``(mul_i, 2 l_i + 1)`` row-major,
blocks concatenated. Shapes: ``x (..., irreps_in1.dim)``, ``y (..., irreps_in2.dim)``,
``weight (weight_numel,)`` (shared) or ``(..., weight_numel)``; out
``(..., irreps_out.dim)`` with the leading dimensions broadcast.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

from .. import backend as _backend
from ..irreps import Irrep, Irreps
from ..ops import tensor_product as _ops
from ..reference import tensor_product as _reference
from ..tp_problem import build_problem, decode, path_shape

__all__ = [
    "ChannelWiseTensorProduct",
    "ElementwiseTensorProduct",
    "FullTensorProduct",
    "FullyConnectedTensorProduct",
    "Instruction",
    "TensorProduct",
    "from_e3nn",
    "replace_e3nn_tensor_products",
]


class Instruction(NamedTuple):
    """An instruction after normalization, as e3nn stores it: ``path_weight`` is the
    normalized coefficient ``sqrt(alpha / x * path_weight)``."""

    i_in1: int
    i_in2: int
    i_out: int
    connection_mode: str
    has_weight: bool
    path_weight: float
    path_shape: tuple


def _cpu_kernel_dtype(t: Tensor) -> bool:
    return t.dtype in (torch.float32, torch.float64)


class TensorProduct(torch.nn.Module):
    r"""``e3nn.o3.TensorProduct`` on equiops' kernels (same arguments and outputs).

    Args:
        irreps_in1, irreps_in2, irreps_out: irreps (strings, ``equiops.Irreps`` or e3nn's).
        instructions: tuples ``(i_in1, i_in2, i_out, mode, has_weight[, path_weight])``.
        in1_var, in2_var, out_var: per-irrep variances (e3nn's; default 1).
        irrep_normalization: ``"component"`` (default), ``"norm"`` or ``"none"``.
        path_normalization: ``"element"`` (default), ``"path"`` or ``"none"``.
        internal_weights, shared_weights: as e3nn (defaults: shared, internal when any
            path has weights).
        backend: ``"auto"``, ``"cpu"``, ``"triton"``, ``"cuda"`` or ``"torch"``; default:
            the process default (:func:`equiops.set_backend`).

    Invalid instructions, shapes, dtypes and devices raise ``ValueError`` /
    ``TypeError`` naming the problem.
    """

    def __init__(
        self,
        irreps_in1,
        irreps_in2,
        irreps_out,
        instructions: List[tuple],
        in1_var=None,
        in2_var=None,
        out_var=None,
        irrep_normalization: Optional[str] = None,
        path_normalization: Optional[str] = None,
        internal_weights: Optional[bool] = None,
        shared_weights: Optional[bool] = None,
        backend: Optional[str] = None,
    ) -> None:
        super().__init__()
        irrep_normalization = "component" if irrep_normalization is None else irrep_normalization
        path_normalization = "element" if path_normalization is None else path_normalization
        self.irreps_in1, self.irreps_in2, self.irreps_out = Irreps(irreps_in1), Irreps(irreps_in2), Irreps(irreps_out)
        if not isinstance(instructions, (list, tuple)):
            raise TypeError(f"instructions must be a list of tuples, got {type(instructions).__name__}")
        instructions = [tuple(i) if isinstance(i, (list, tuple)) else i for i in instructions]
        problem = build_problem(
            self.irreps_in1,
            self.irreps_in2,
            self.irreps_out,
            instructions,
            irrep_normalization,
            path_normalization,
            in1_var,
            in2_var,
            out_var,
        )
        self.irrep_normalization = irrep_normalization
        self.path_normalization = path_normalization
        self._problem = problem.encode()
        self.instructions = []
        for k, ins in enumerate(instructions):
            a, b, c, mode, has_w = ins[:5]
            shape = path_shape(mode, self.irreps_in1[a].mul, self.irreps_in2[b].mul, self.irreps_out[c].mul)
            self.instructions.append(Instruction(a, b, c, mode, has_w, problem.coefs[k], shape))

        if shared_weights is False and internal_weights is None:
            internal_weights = False
        if shared_weights is None:
            shared_weights = True
        if internal_weights is None:
            internal_weights = shared_weights and any(i.has_weight for i in self.instructions)
        if internal_weights and not shared_weights:
            raise ValueError("internal_weights=True needs shared_weights=True (e3nn's rule)")
        self.shared_weights = bool(shared_weights)
        self.internal_weights = bool(internal_weights)
        self.weight_numel = problem.dim_w
        if self.internal_weights and self.weight_numel > 0:
            self.weight = torch.nn.Parameter(torch.randn(self.weight_numel))
        else:
            self.register_buffer("weight", torch.Tensor())
        written = set(p.instruction for p in problem.paths if p.coef != 0)
        mask = [
            (1.0 if any(ins.i_out == i_out and k in written for k, ins in enumerate(self.instructions)) else 0.0)
            for i_out, (mul, ir) in enumerate(self.irreps_out)
            for _ in range(mul * ir.dim)
        ]
        self.register_buffer("output_mask", torch.tensor(mask) if mask else torch.ones(0))
        if backend is not None:
            _backend.check_backend_name(backend)
        self.backend = backend

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # e3nn's state_dict also holds the constants of its generated code
        # ("_compiled_main_left_right._w3j_1_1_1", ...); drop them so that a checkpoint of
        # an e3nn model loads strictly into the same model with our products swapped in.
        for key in [k for k in state_dict if k.startswith(prefix + "_compiled_main")]:
            del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def problem(self) -> str:
        """The problem string the operators take (see :mod:`equiops.tp_problem`)."""
        return self._problem

    def __repr__(self) -> str:
        npath = sum(math.prod(i.path_shape) for i in self.instructions)
        return (
            f"{self.__class__.__name__}({self.irreps_in1.simplify()} x {self.irreps_in2.simplify()} "
            f"-> {self.irreps_out.simplify()} | {npath} paths | {self.weight_numel} weights)"
        )

    # ------------------------------------------------------------------ weights
    def _prep_weights(self, weight) -> Tensor:
        name = type(self).__name__
        if isinstance(weight, (list, tuple)) and len(weight) == 0 and self.weight_numel == 0:
            weight = None
        if isinstance(weight, (list, tuple)):
            shapes = [ins.path_shape for ins in self.instructions if ins.has_weight]
            if len(weight) != len(shapes):
                raise ValueError(f"{name}: expected {len(shapes)} weight tensors (one per weighted path), got {len(weight)}")
            if self.shared_weights:
                weight = [w.reshape(math.prod(s)) for w, s in zip(weight, shapes)]
            else:
                weight = [w.reshape(-1, math.prod(s)) for w, s in zip(weight, shapes)]
            weight = torch.cat(weight, dim=-1)
        if weight is None:
            if self.weight_numel > 0 and not self.internal_weights:
                raise ValueError(f"{name}: weights must be given: this product has no internal weights")
            return self.weight
        if not isinstance(weight, Tensor):
            raise TypeError(f"{name}: weight must be a tensor or a list of tensors, got {type(weight).__name__}")
        if self.shared_weights:
            if tuple(weight.shape) != (self.weight_numel,):
                raise ValueError(
                    f"{name}: shared weights must have shape ({self.weight_numel},), got {tuple(weight.shape)}"
                )
        else:
            if weight.dim() < 2 or weight.shape[-1] != self.weight_numel:
                raise ValueError(
                    f"{name}: unshared weights must have shape (..., {self.weight_numel}) with a batch "
                    f"dimension, got {tuple(weight.shape)}"
                )
        return weight

    def weight_views(self, weight: Optional[Tensor] = None, yield_instruction: bool = False):
        """Views of the flat weights, one per weighted instruction (e3nn's method)."""
        weight = self._prep_weights(weight)
        batch = weight.shape[:-1]
        offset = 0
        for k, ins in enumerate(self.instructions):
            if ins.has_weight:
                n = math.prod(ins.path_shape)
                view = weight.narrow(-1, offset, n).view(batch + ins.path_shape)
                offset += n
                yield (k, ins, view) if yield_instruction else view

    def weight_view_for_instruction(self, instruction: int, weight: Optional[Tensor] = None) -> Tensor:
        if not self.instructions[instruction].has_weight:
            raise ValueError(f"Instruction {instruction} has no weights.")
        for k, _, view in self.weight_views(weight, yield_instruction=True):
            if k == instruction:
                return view
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, y: Tensor, weight: Optional[Union[Tensor, List[Tensor]]] = None) -> Tensor:
        name = type(self).__name__
        for arg, t, irreps in (("x", x, self.irreps_in1), ("y", y, self.irreps_in2)):
            if not isinstance(t, Tensor):
                raise TypeError(f"{name}: {arg} must be a tensor, got {type(t).__name__}")
            if t.dim() == 0 or t.shape[-1] != irreps.dim:
                raise ValueError(
                    f"{name}: {arg} must have shape (..., {irreps.dim}) for {irreps}, got {tuple(t.shape)}"
                )
        w = self._prep_weights(weight)
        if not x.is_floating_point():
            raise TypeError(f"{name}: x must be a floating-point tensor, got {x.dtype}")
        for arg, t in (("y", y), ("weight", w)):
            if t.numel() == 0 and arg == "weight":
                continue
            if t.dtype != x.dtype:
                raise TypeError(f"{name}: {arg} must have dtype {x.dtype} like x, got {t.dtype}")
            if t.device != x.device:
                raise ValueError(f"{name}: {arg} must be on {x.device} like x, got {t.device}")
        lead = [x.shape[:-1], y.shape[:-1]]
        if not self.shared_weights:
            lead.append(w.shape[:-1])
        try:
            out_lead = torch.broadcast_shapes(*lead)
        except RuntimeError:
            raise ValueError(
                f"{name}: leading dimensions do not broadcast: x {tuple(x.shape)}, y {tuple(y.shape)}"
                + ("" if self.shared_weights else f", weight {tuple(w.shape)}")
            ) from None
        n = math.prod(out_lead)
        x2d = _canonical(x, out_lead, n)
        y2d = _canonical(y, out_lead, n)
        if self.weight_numel == 0:
            w2d = x.new_zeros(1, 0)
        elif self.shared_weights:
            w2d = w.to(device=x.device).reshape(1, -1)
        else:
            w2d = _canonical(w, out_lead, n)
        out = self._run(x2d, y2d, w2d)
        return out.reshape(tuple(out_lead) + (self.irreps_out.dim,))

    def right(self, y: Tensor, weight: Optional[Union[Tensor, List[Tensor]]] = None) -> Tensor:
        """e3nn's ``right``: the operator ``(..., irreps_in1.dim, irreps_out.dim)`` with
        ``out = einsum("...ik,...i->...k", right(y), x)``: the product evaluated on the
        basis vectors of ``irreps_in1`` (one broadcast call)."""
        if not isinstance(y, Tensor):
            raise TypeError(f"{type(self).__name__}: y must be a tensor, got {type(y).__name__}")
        eye = torch.eye(self.irreps_in1.dim, dtype=y.dtype, device=y.device)
        if weight is None:
            return self.forward(eye, y.unsqueeze(-2))
        w = self._prep_weights(weight)
        return self.forward(eye, y.unsqueeze(-2), w if self.shared_weights else w.unsqueeze(-2))

    def _set_coefficients(self, coefs: List[float]) -> None:
        """Replaces the normalized path coefficients, one per instruction (from_e3nn)."""
        prob = decode(self._problem)
        paths = tuple(dataclasses.replace(p, coef=coefs[p.instruction]) for p in prob.paths)
        self._problem = dataclasses.replace(prob, paths=paths).encode()
        self.instructions = [ins._replace(path_weight=c) for ins, c in zip(self.instructions, coefs)]

    def _run(self, x1: Tensor, x2: Tensor, w: Tensor) -> Tensor:
        requested = self.backend if self.backend is not None else _backend.get_backend()
        name = _backend.resolve(requested, x1.device, "tensor_product")
        if name == "cpu" and not _cpu_kernel_dtype(x1):
            if requested != "auto":
                raise TypeError(f"{type(self).__name__}: the CPU kernels take float32 or float64, got {x1.dtype}")
            name = "torch"
        if name == "torch":
            return _reference.tensor_product(x1, x2, w, self._problem)
        return _ops.tensor_product(x1, x2, w, self._problem, name)


def _canonical(t: Tensor, out_lead, n: int) -> Tensor:
    """``t (..., D)`` as ``(n, D)`` or ``(1, D)`` (a single row broadcast to all)."""
    if math.prod(t.shape[:-1]) == 1:
        return t.reshape(1, t.shape[-1])
    if tuple(t.shape[:-1]) == tuple(out_lead):
        return t.reshape(n, t.shape[-1])
    return t.expand(tuple(out_lead) + (t.shape[-1],)).reshape(n, t.shape[-1])


# ---------------------------------------------------------------------- subclasses
class FullyConnectedTensorProduct(TensorProduct):
    """Every allowed path, mode ``uvw``, weighted (e3nn's constructor)."""

    def __init__(self, irreps_in1, irreps_in2, irreps_out, irrep_normalization=None, path_normalization=None, **kwargs):
        in1, in2, out = Irreps(irreps_in1), Irreps(irreps_in2), Irreps(irreps_out)
        instr = [
            (i1, i2, io, "uvw", True, 1.0)
            for i1, (_, ir1) in enumerate(in1)
            for i2, (_, ir2) in enumerate(in2)
            for io, (_, iro) in enumerate(out)
            if iro in ir1 * ir2
        ]
        super().__init__(
            in1, in2, out, instr, irrep_normalization=irrep_normalization, path_normalization=path_normalization, **kwargs
        )


def _filter(filter_ir_out) -> Optional[List[Irrep]]:
    if filter_ir_out is None:
        return None
    try:
        return [Irrep(ir) for ir in filter_ir_out]
    except (ValueError, TypeError):
        raise ValueError(f"filter_ir_out (={filter_ir_out}) must be an iterable of irreps") from None


class ElementwiseTensorProduct(TensorProduct):
    """``z_u = x_u (x) y_u`` over matching channels, mode ``uuu``, no weights (e3nn's)."""

    def __init__(self, irreps_in1, irreps_in2, filter_ir_out=None, irrep_normalization=None, **kwargs):
        in1, in2 = list(Irreps(irreps_in1).simplify()), list(Irreps(irreps_in2).simplify())
        flt = _filter(filter_ir_out)
        if sum(m for m, _ in in1) != sum(m for m, _ in in2):
            raise ValueError(
                f"ElementwiseTensorProduct: the inputs must have the same number of irreps, got "
                f"{Irreps(irreps_in1)} and {Irreps(irreps_in2)}"
            )
        i = 0
        while i < len(in1):  # split blocks so that multiplicities pair up
            (m1, ir1), (m2, ir2) = in1[i], in2[i]
            if m1 < m2:
                in2[i] = (m1, ir2)
                in2.insert(i + 1, (m2 - m1, ir2))
            if m2 < m1:
                in1[i] = (m2, ir1)
                in1.insert(i + 1, (m1 - m2, ir1))
            i += 1
        out, instr = [], []
        for i, ((mul, ir1), (_, ir2)) in enumerate(zip(in1, in2)):
            for ir in Irrep(ir1) * Irrep(ir2):
                if flt is not None and ir not in flt:
                    continue
                instr.append((i, i, len(out), "uuu", False))
                out.append((mul, ir))
        super().__init__(in1, in2, out, instr, irrep_normalization=irrep_normalization, **kwargs)


class FullTensorProduct(TensorProduct):
    """``z_uv = x_u (x) y_v`` for every pair of irreps, mode ``uvuv``, no weights, outputs
    sorted (e3nn's)."""

    def __init__(self, irreps_in1, irreps_in2, filter_ir_out=None, irrep_normalization=None, **kwargs):
        in1, in2 = Irreps(irreps_in1).simplify(), Irreps(irreps_in2).simplify()
        flt = _filter(filter_ir_out)
        out, instr = [], []
        for i1, (m1, ir1) in enumerate(in1):
            for i2, (m2, ir2) in enumerate(in2):
                for ir in ir1 * ir2:
                    if flt is not None and ir not in flt:
                        continue
                    instr.append((i1, i2, len(out), "uvuv", False))
                    out.append((m1 * m2, ir))
        out, p, _ = Irreps(out).sort()
        instr = [(a, b, p[c], m, t) for a, b, c, m, t in instr]
        super().__init__(in1, in2, out, instr, irrep_normalization=irrep_normalization, **kwargs)


CHANNELWISE_LAYOUTS = ("mace", "nequip", "creation")


def channelwise_instructions(irreps_in1, irreps_in2, filter_irreps_out, sort_outputs: bool = True, layout=None):
    """The channel-wise ("uvu") instructions and output irreps of NequIP / MACE
    convolutions: one output ``(mul_in1, ir)`` per pair of input irreps and each ``ir``
    in their product that ``filter_irreps_out`` contains, created in input order.

    ``layout`` orders them as the models do:

    * ``"mace"``: outputs sorted, instructions (so the weights) sorted by output;
    * ``"nequip"``: outputs sorted, instructions (and weights) in creation order, as
      ``nequip.nn.InteractionBlock`` builds them;
    * ``"creation"``: neither sorted.

    Without ``layout``, ``sort_outputs=True`` means ``"mace"`` and ``False``
    ``"creation"``. Returns ``(irreps_out, instructions)``."""
    if layout is None:
        layout = "mace" if sort_outputs else "creation"
    if layout not in CHANNELWISE_LAYOUTS:
        raise ValueError(f"layout must be one of {CHANNELWISE_LAYOUTS}, got {layout!r}")
    in1, in2 = Irreps(irreps_in1), Irreps(irreps_in2)
    keep = [ir for _, ir in Irreps(filter_irreps_out)]
    out, instr = [], []
    for i1, (mul, ir1) in enumerate(in1):
        for i2, (_, ir2) in enumerate(in2):
            for ir in ir1 * ir2:
                if ir in keep:
                    instr.append((i1, i2, len(out), "uvu", True))
                    out.append((mul, ir))
    out = Irreps(out)
    if layout != "creation":
        out, p, _ = out.sort()
        instr = [(a, b, p[c], m, t) for a, b, c, m, t in instr]
        if layout == "mace":
            instr = sorted(instr, key=lambda ins: ins[2])
    return out, instr


class ChannelWiseTensorProduct(TensorProduct):
    """The channel-wise ("uvu") product of NequIP / MACE convolutions; see
    :func:`channelwise_instructions` for ``sort_outputs`` and ``layout`` (``"mace"``,
    ``"nequip"``, ``"creation"``). Defaults to per-row weights (one weight row per edge,
    from a radial network), as those models use it."""

    def __init__(self, irreps_in1, irreps_in2, filter_irreps_out, sort_outputs: bool = True, layout=None, **kwargs):
        out, instr = channelwise_instructions(irreps_in1, irreps_in2, filter_irreps_out, sort_outputs, layout)
        kwargs.setdefault("shared_weights", False)
        kwargs.setdefault("internal_weights", False)
        super().__init__(irreps_in1, irreps_in2, out, instr, **kwargs)


# ---------------------------------------------------------------------- e3nn interop
def from_e3nn(module, backend: Optional[str] = None) -> TensorProduct:
    """An equiops :class:`TensorProduct` equal to ``module`` (an ``e3nn.o3.TensorProduct``
    or subclass): same irreps, instructions, normalization, weight sharing and weights
    (copied; the internal weight stays a Parameter), on the same device and dtype.
    ``forward``, ``right``, ``weight_views`` and the attributes match e3nn's;
    ``visualize`` is not provided."""
    ins = getattr(module, "instructions", None)
    if ins is None or not hasattr(module, "irreps_in1") or not hasattr(module, "weight_numel"):
        raise TypeError(f"from_e3nn expects an e3nn.o3.TensorProduct, got {type(module).__name__}")
    # e3nn stores normalized coefficients in path_weight; rebuild with normalization
    # "none" and path_weight = coef^2, which reproduces them exactly (sqrt(1/1 * c^2)).
    instructions = [(i.i_in1, i.i_in2, i.i_out, i.connection_mode, i.has_weight, float(i.path_weight) ** 2) for i in ins]
    ours = TensorProduct(
        module.irreps_in1,
        module.irreps_in2,
        module.irreps_out,
        instructions,
        irrep_normalization="none",
        path_normalization="none",
        internal_weights=module.internal_weights,
        shared_weights=module.shared_weights,
        backend=backend,
    )
    # sqrt(c^2) can differ from c in the last bit: take e3nn's values as they are.
    ours._set_coefficients([float(i.path_weight) for i in ins])
    if ours.weight_numel != module.weight_numel:
        raise ValueError(f"from_e3nn: weight_numel differs ({ours.weight_numel} vs {module.weight_numel})")
    w = module.weight
    if ours.internal_weights and ours.weight_numel > 0:
        with torch.no_grad():
            ours.weight = torch.nn.Parameter(w.detach().clone(), requires_grad=w.requires_grad)
    if w.is_floating_point():
        ours.to(device=w.device, dtype=w.dtype)
    else:
        ours.to(device=w.device)
    return ours


def replace_e3nn_tensor_products(model: torch.nn.Module, backend: Optional[str] = None) -> Tuple[torch.nn.Module, int]:
    """Replaces, in place, every ``e3nn.o3.TensorProduct`` (any subclass) inside ``model``
    by :func:`from_e3nn` of it. Returns ``(model, number replaced)``; a ``model`` that is
    itself a tensor product is returned converted."""
    try:
        from e3nn.o3 import TensorProduct as E3nnTP
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("replace_e3nn_tensor_products needs e3nn installed") from e
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"replace_e3nn_tensor_products: model must be a torch.nn.Module, got {type(model).__name__}")
    if backend is not None:  # checked even when the model holds no e3nn product
        _backend.check_backend_name(backend)
    if isinstance(model, E3nnTP):
        return from_e3nn(model, backend), 1
    # One e3nn module registered under several parents becomes one of ours (its weight
    # stays tied); the count is of distinct modules.
    converted = {}
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, E3nnTP):
                if id(child) not in converted:
                    converted[id(child)] = from_e3nn(child, backend)
                setattr(parent, child_name, converted[id(child)])
    return model, len(converted)
