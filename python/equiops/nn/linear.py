r"""Equivariant linear layer with ``e3nn.o3.Linear``'s semantics (e3nn 0.6).

:class:`Linear` mixes the channels of equal irreps: an instruction ``(i_in, i_out)``
(``irreps_in[i_in].ir == irreps_out[i_out].ir``) adds
``path_weight * einsum("uw,ui->wi", W, x_block)`` to output block ``i_out``, with ``W`` of
shape ``(mul_in, mul_out)``; the default instructions are every pair of blocks with the same
irrep. Normalization (e3nn's): ``path_weight = alpha ** -0.5`` with, for ``"element"``,
``alpha`` the sum of ``mul_in`` over the instructions into the same output, for
``"path"``, ``mul_in`` of the instruction times their number, times ``f_in`` when given
(``alpha = 0`` counts as 1). Biases (only on ``0e`` outputs) are added with weight 1;
outputs that no instruction reaches are zero.

Weights are e3nn's flat vector: the instructions' ``(mul_in, mul_out)`` matrices
row-major, concatenated in instruction order; ``(f_in, f_out, weight_numel)`` with the
extra feature axes. ``state_dict`` keys (``weight``, ``bias``, ``output_mask``) and shapes
are e3nn's, so checkpoints load strictly both ways.

Computation: plain PyTorch ops (differentiable to any order, ``torch.compile`` and
``torch.export`` friendly, every float dtype). At construction the instructions are
grouped: per irrep, the blocks connected by instructions form a component; a component
whose instructions fill at least half of its ``(sum mul_in) x (sum mul_out)`` matrix (the
default instructions fill it entirely) is one dense matrix, otherwise the instructions are
grouped by input block. Each group is a single ``einsum`` over a ``(M_in, M_out)`` matrix
with the irrep's ``2l+1`` components folded into the batch (one GEMM), so e.g.
``"8x0e+8x0e" -> "16x0e"`` is one ``(16 x 16)`` product instead of two products and a sum.
All groups' matrices come from one ``index_select`` of the scaled flat weights (skipped when
the layout already matches), so a forward launches a few kernels per group, independent of
the multiplicities.
"""

from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .. import backend as _backend
from ..irreps import Irreps

__all__ = ["Instruction", "Linear"]

# A component is one dense matrix when its instructions cover at least this fraction of it.
_DENSE_FILL = 0.5


class Instruction(NamedTuple):
    """e3nn's ``o3.Linear`` instruction; ``i_in == -1`` marks a bias (``path_shape`` =
    ``(dim,)``)."""

    i_in: int
    i_out: int
    path_shape: tuple
    path_weight: float


def _as_irreps(value, name: str) -> Irreps:
    try:
        return Irreps(value)
    except (ValueError, TypeError) as e:
        raise type(e)(f"Linear: {name} is not a valid irreps ({e})") from None


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Linear: {name} must be a positive integer or None, got {value!r}")
    return value


class Linear(torch.nn.Module):
    r"""``e3nn.o3.Linear`` (same arguments, attributes, weights and outputs).

    Args:
        irreps_in, irreps_out: irreps (strings, ``equiops.Irreps`` or e3nn's ``Irreps``).
        f_in, f_out: optional extra feature axes (both or neither): input
            ``(..., f_in, irreps_in.dim)``, output ``(..., f_out, irreps_out.dim)``, weights
            ``(f_in, f_out, weight_numel)``, bias ``(f_out, bias_numel)``.
        internal_weights, shared_weights: e3nn's rules (default shared and internal;
            ``shared_weights=False`` implies external weights ``(..., weight_numel)``, one row
            per batch element or one row for all).
        instructions: list of ``(i_in, i_out)``; default: every pair with equal irreps.
        biases: ``bool`` (biases on every ``0e`` output) or one ``bool`` per output block.
        path_normalization: ``"element"`` (default) or ``"path"``.
        backend: accepted for symmetry with the other modules and validated; the layer is
            plain matrix products, which PyTorch already runs well on every device.

    Bad arguments raise ``ValueError`` / ``TypeError`` naming the argument.
    """

    weight_numel: int
    bias_numel: int
    internal_weights: bool
    shared_weights: bool

    def __init__(
        self,
        irreps_in,
        irreps_out,
        *,
        f_in: Optional[int] = None,
        f_out: Optional[int] = None,
        internal_weights: Optional[bool] = None,
        shared_weights: Optional[bool] = None,
        instructions: Optional[Sequence[Tuple[int, int]]] = None,
        biases: Union[bool, Sequence[bool], None] = False,
        path_normalization: str = "element",
        backend: Optional[str] = None,
        _optimize_einsums: Optional[bool] = None,  # e3nn's argument, accepted and ignored
    ) -> None:
        super().__init__()
        irreps_in = _as_irreps(irreps_in, "irreps_in")
        irreps_out = _as_irreps(irreps_out, "irreps_out")
        if path_normalization not in ("element", "path"):
            raise ValueError(f"Linear: path_normalization must be 'element' or 'path', got {path_normalization!r}")
        if (f_in is None) != (f_out is None):
            raise ValueError(f"Linear: f_in and f_out must be given together, got f_in={f_in!r}, f_out={f_out!r}")
        if f_in is not None:
            f_in = _positive_int(f_in, "f_in")
            f_out = _positive_int(f_out, "f_out")
        if backend is not None:
            _backend.check_backend_name(backend)

        # == instructions ==
        if instructions is None:
            pairs = [
                (i, o) for i, (_, ir_i) in enumerate(irreps_in) for o, (_, ir_o) in enumerate(irreps_out) if ir_i == ir_o
            ]
        else:
            if not isinstance(instructions, (list, tuple)):
                raise TypeError(f"Linear: instructions must be a list of (i_in, i_out) tuples, got {type(instructions).__name__}")
            pairs = []
            for k, ins in enumerate(instructions):
                if not isinstance(ins, (list, tuple)) or len(ins) != 2:
                    raise ValueError(f"Linear: instructions[{k}] must be a pair (i_in, i_out), got {ins!r}")
                i, o = ins
                for name, v, n, irreps, what in (("i_in", i, len(irreps_in), irreps_in, "irreps_in"),
                                                 ("i_out", o, len(irreps_out), irreps_out, "irreps_out")):
                    if isinstance(v, bool) or not isinstance(v, int):
                        raise TypeError(f"Linear: instructions[{k}]: {name} must be an int, got {v!r}")
                    if not 0 <= v < n:
                        raise ValueError(
                            f"Linear: instructions[{k}]: {name}={v} is not a valid index for {what}={irreps} "
                            f"({n} blocks)"
                        )
                if irreps_in[i].ir != irreps_out[o].ir:
                    raise ValueError(
                        f"Linear: instructions[{k}] = ({i}, {o}) connects different irreps: "
                        f"irreps_in[{i}] = {irreps_in[i]} and irreps_out[{o}] = {irreps_out[o]}"
                    )
                pairs.append((i, o))

        def alpha(i: int, o: int) -> float:
            into = [ii for ii, oo in pairs if oo == o]
            if path_normalization == "element":
                x = sum(irreps_in[ii].mul for ii in into)
            else:
                x = irreps_in[i].mul * len(into)
            if f_in is not None:
                x *= f_in
            return 1.0 if x == 0 else x

        ins_list = [Instruction(i, o, (irreps_in[i].mul, irreps_out[o].mul), alpha(i, o) ** (-0.5)) for i, o in pairs]

        # == biases ==
        if biases is None:
            biases = [False] * len(irreps_out)
        elif isinstance(biases, bool):
            biases = [biases and ir.is_scalar() for _, ir in irreps_out]
        else:
            if not isinstance(biases, (list, tuple)) or not all(isinstance(b, bool) for b in biases):
                raise TypeError(f"Linear: biases must be a bool or a list of bools, got {biases!r}")
            if len(biases) != len(irreps_out):
                raise ValueError(
                    f"Linear: biases must have one entry per block of irreps_out={irreps_out} "
                    f"({len(irreps_out)}), got {len(biases)}"
                )
            for o, (b, (_, ir)) in enumerate(zip(biases, irreps_out)):
                if b and not ir.is_scalar():
                    raise ValueError(f"Linear: biases[{o}] is True but irreps_out[{o}] = {irreps_out[o]} is not 0e")
            biases = list(biases)
        ins_list += [Instruction(-1, o, (mul_ir.dim,), 1.0) for o, (b, mul_ir) in enumerate(zip(biases, irreps_out)) if b]

        # == weight sharing (e3nn's rules) ==
        if shared_weights is False and internal_weights is None:
            internal_weights = False
        if shared_weights is None:
            shared_weights = True
        if internal_weights is None:
            internal_weights = True
        if internal_weights and not shared_weights:
            raise ValueError("Linear: internal_weights=True needs shared_weights=True (e3nn's rule)")

        self.irreps_in = irreps_in
        self.irreps_out = irreps_out
        self.f_in = f_in
        self.f_out = f_out
        self.path_normalization = path_normalization
        self.internal_weights = bool(internal_weights)
        self.shared_weights = bool(shared_weights)
        self.backend = backend
        self.biases = biases
        self.instructions = ins_list
        self.weight_numel = sum(math.prod(i.path_shape) for i in ins_list if i.i_in != -1)
        self.bias_numel = sum(math.prod(i.path_shape) for i in ins_list if i.i_in == -1)

        # == parameters and buffers (e3nn's names, shapes and RNG use) ==
        feat_w = (f_in, f_out) if f_in is not None else ()
        feat_b = (f_out,) if f_out is not None else ()
        if self.internal_weights and self.weight_numel > 0:
            self.weight = torch.nn.Parameter(torch.randn(*feat_w, self.weight_numel))
        else:
            self.register_buffer("weight", torch.Tensor())
        if self.internal_weights and self.bias_numel > 0:
            self.bias = torch.nn.Parameter(torch.zeros(*feat_b, self.bias_numel))
        else:
            self.register_buffer("bias", torch.Tensor())
        mask = [
            1.0 if any(ins.i_out == o and 0 not in ins.path_shape for ins in ins_list) else 0.0
            for o, mul_ir in enumerate(irreps_out)
            for _ in range(mul_ir.dim)
        ]
        self.register_buffer("output_mask", torch.tensor(mask) if mask else torch.ones(0))

        self._build_plan()

    # ------------------------------------------------------------------ plan
    def _build_plan(self) -> None:
        """Groups the instructions into matrix products and lays out the output (pure
        Python, from ``self.instructions``; also called when path weights are replaced)."""
        irreps_in, irreps_out = self.irreps_in, self.irreps_out
        offsets, off = [], 0
        for ins in self.instructions:
            offsets.append(off)
            if ins.i_in != -1:
                off += math.prod(ins.path_shape)
        weighted = [
            (k, ins) for k, ins in enumerate(self.instructions) if ins.i_in != -1 and 0 not in ins.path_shape
        ]

        # components: blocks (("i", i_in) / ("o", i_out)) connected by instructions
        parent: Dict[tuple, tuple] = {}

        def find(a):
            while parent.setdefault(a, a) != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for _, ins in weighted:
            parent[find(("i", ins.i_in))] = find(("o", ins.i_out))
        components: Dict[tuple, List[Tuple[int, Instruction]]] = {}
        for k, ins in weighted:
            components.setdefault(find(("o", ins.i_out)), []).append((k, ins))

        groups_ins: List[List[Tuple[int, Instruction]]] = []
        for comp in components.values():
            ins_b = sorted({ins.i_in for _, ins in comp})
            outs_b = sorted({ins.i_out for _, ins in comp})
            m_in = sum(irreps_in[i].mul for i in ins_b)
            m_out = sum(irreps_out[o].mul for o in outs_b)
            cells = [(ins.i_in, ins.i_out) for _, ins in comp]
            filled = sum(math.prod(ins.path_shape) for _, ins in comp)
            if len(set(cells)) == len(cells) and filled >= _DENSE_FILL * m_in * m_out:
                groups_ins.append(comp)
                continue
            # sparse or duplicated: one group per input block (and per repeat of a pair)
            for i in ins_b:
                layers: List[List[Tuple[int, Instruction]]] = []
                for k, ins in comp:
                    if ins.i_in != i:
                        continue
                    for layer in layers:
                        if all(other.i_out != ins.i_out for _, other in layer):
                            layer.append((k, ins))
                            break
                    else:
                        layers.append([(k, ins)])
                groups_ins.extend(layers)

        in_starts = [s.start for s in irreps_in.slices()]
        out_dims = [mul_ir.dim for mul_ir in irreps_out]
        index: List[int] = []
        scale: List[float] = []
        padded = False
        groups = []  # (in_runs, m_in, d, m_out, offset in the gathered weights)
        contrib: Dict[int, List[Tuple[int, int, int]]] = {}  # i_out -> [(group, start, length)]
        for g, members in enumerate(groups_ins):
            ins_b = sorted({ins.i_in for _, ins in members})
            outs_b = sorted({ins.i_out for _, ins in members})
            d = irreps_in[ins_b[0]].ir.dim
            cell = {(ins.i_in, ins.i_out): (k, ins) for k, ins in members}
            m_in = sum(irreps_in[i].mul for i in ins_b)
            m_out = sum(irreps_out[o].mul for o in outs_b)
            gathered_offset = len(index)
            for i in ins_b:
                for u in range(irreps_in[i].mul):
                    for o in outs_b:
                        mo = irreps_out[o].mul
                        if (i, o) in cell:
                            k, ins = cell[(i, o)]
                            base = offsets[k] + u * mo
                            index.extend(range(base, base + mo))
                            scale.extend([ins.path_weight] * mo)
                        else:
                            padded = True
                            index.extend([-1] * mo)
                            scale.extend([0.0] * mo)
            runs: List[List[int]] = []  # [start, mul]: adjacent input blocks merge
            for i in ins_b:
                start, mul = in_starts[i], irreps_in[i].mul
                if runs and runs[-1][0] + runs[-1][1] * d == start:
                    runs[-1][1] += mul
                else:
                    runs.append([start, mul])
            groups.append((tuple((s, m) for s, m in runs), m_in, d, m_out, gathered_offset))
            pos = 0
            for o in outs_b:
                contrib.setdefault(o, []).append((g, pos, out_dims[o]))
                pos += out_dims[o]
        index = [self.weight_numel if j == -1 else j for j in index]

        # output pieces: (width, contributions, bias (offset, length) or None); adjacent
        # blocks with compatible pieces are merged so that whole group outputs stay whole
        bias_at: Dict[int, Tuple[int, int]] = {}
        boff = 0
        for ins in self.instructions:
            if ins.i_in == -1:
                if 0 not in ins.path_shape:
                    bias_at[ins.i_out] = (boff, ins.path_shape[0])
                boff += ins.path_shape[0]
        pieces: List[list] = []
        for o, dim in enumerate(out_dims):
            if dim == 0:
                continue
            c = contrib.get(o, [])
            b = bias_at.get(o)
            if pieces:
                width, pc, pb = pieces[-1]
                same_c = (not pc and not c) or (
                    len(pc) == 1 and len(c) == 1 and pc[0][0] == c[0][0] and pc[0][1] + pc[0][2] == c[0][1]
                )
                same_b = (pb is None and b is None) or (pb is not None and b is not None and pb[0] + pb[1] == b[0])
                if same_c and same_b:
                    new_c = [(pc[0][0], pc[0][1], pc[0][2] + c[0][2])] if c else []
                    new_b = (pb[0], pb[1] + b[1]) if b is not None else None
                    pieces[-1] = [width + dim, new_c, new_b]
                    continue
            pieces.append([dim, list(c), b])

        self._groups = tuple(groups)
        self._pieces = tuple((w, tuple(c), b) for w, c, b in pieces)
        self._padded = padded
        self._gather = padded or index != list(range(self.weight_numel))
        # Exact constants kept on the host; the buffers are their copies on the module's
        # device (restored in _apply, so .float()/.half() never round the path weights).
        self._index_host = torch.tensor(index, dtype=torch.long)
        self._scale_host = torch.tensor(scale, dtype=torch.float64)
        device = self.output_mask.device
        self.register_buffer("_w_index", self._index_host.to(device), persistent=False)
        self.register_buffer("_w_scale", self._scale_host.to(device), persistent=False)

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        device = self._w_index.device
        self._w_index = self._index_host.to(device)
        self._w_scale = self._scale_host.to(device)
        return out

    def _set_path_weights(self, path_weights: Sequence[float]) -> None:
        """Replaces the instructions' path weights (``from_e3nn`` copies e3nn's values)."""
        self.instructions = [ins._replace(path_weight=float(p)) for ins, p in zip(self.instructions, path_weights)]
        self._build_plan()

    # ------------------------------------------------------------------ e3nn interop
    @classmethod
    def from_e3nn(cls, module, *, f_in: Optional[int] = None, f_out: Optional[int] = None, backend: Optional[str] = None):
        """A :class:`Linear` equal to ``module`` (an ``e3nn.o3.Linear``): same irreps,
        instructions, path weights (e3nn's values), biases, weight sharing, weights and
        biases (copied; parameters stay parameters), dtype and device.

        e3nn does not store ``f_in`` / ``f_out``: they are read from the internal weight's
        shape, and must be passed for a module with external weights built with them (a
        mismatch is detected through the path weights, except ``f_in=1``)."""
        ins = getattr(module, "instructions", None)
        if ins is None or not hasattr(module, "irreps_in") or not hasattr(module, "weight_numel") or hasattr(
            module, "irreps_in1"
        ):
            raise TypeError(f"Linear.from_e3nn expects an e3nn.o3.Linear, got {type(module).__name__}")
        w, b = module.weight, module.bias
        if module.internal_weights and f_in is None and f_out is None:
            if module.weight_numel > 0 and w.dim() == 3:
                f_in, f_out = int(w.shape[0]), int(w.shape[1])
            elif module.bias_numel > 0 and b.dim() == 2:
                raise ValueError(
                    f"Linear.from_e3nn: the module has feature axes (bias {tuple(b.shape)}) but no weights "
                    "to read f_in from: pass f_in and f_out"
                )
        # e3nn does not store path_normalization either: take the one that reproduces its
        # path weights (both do when every output has one instruction).
        ours = None
        for normalization in ("element", "path"):
            with torch.random.fork_rng(devices=[]):  # the candidates' random init leaves the RNG alone
                candidate = cls(
                    module.irreps_in,
                    module.irreps_out,
                    f_in=f_in,
                    f_out=f_out,
                    internal_weights=module.internal_weights,
                    shared_weights=module.shared_weights,
                    instructions=[(i.i_in, i.i_out) for i in ins if i.i_in != -1],
                    biases=[any(i.i_in == -1 and i.i_out == o for i in ins) for o in range(len(module.irreps_out))],
                    path_normalization=normalization,
                    backend=backend,
                )
            if len(candidate.instructions) != len(ins) or any(
                tuple(a.path_shape) != tuple(e.path_shape) or (a.i_in, a.i_out) != (e.i_in, e.i_out)
                for a, e in zip(candidate.instructions, ins)
            ):
                raise ValueError("Linear.from_e3nn: the module's instructions could not be reproduced")
            if all(
                math.isclose(a.path_weight, float(e.path_weight), rel_tol=1e-9) for a, e in zip(candidate.instructions, ins)
            ):
                ours = candidate
                break
        if ours is None:
            raise ValueError(
                "Linear.from_e3nn: the module's path weights match neither path normalization with "
                f"f_in={f_in}: pass the module's f_in and f_out"
            )
        ours._set_path_weights([float(e.path_weight) for e in ins])
        ref = w if (w.numel() > 0 or b.numel() == 0) else b
        if ref.is_floating_point():
            ours.to(device=ref.device, dtype=ref.dtype)
        else:
            ours.to(device=ref.device)
        ours.load_state_dict(module.state_dict(), strict=True)
        for name in ("weight", "bias"):
            theirs = getattr(module, name)
            if isinstance(theirs, torch.nn.Parameter):
                getattr(ours, name).requires_grad_(theirs.requires_grad)
        return ours

    # ------------------------------------------------------------------ weights
    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.irreps_in} -> {self.irreps_out} | {self.weight_numel} weights)"

    def _weight_or_internal(self, weight: Optional[Tensor]) -> Tensor:
        if weight is None:
            if self.weight_numel > 0 and not self.internal_weights:
                raise ValueError("Linear: weight must be given: this module has no internal weights")
            return self.weight
        if not isinstance(weight, Tensor):
            raise TypeError(f"Linear: weight must be a tensor, got {type(weight).__name__}")
        return weight

    def weight_views(self, weight: Optional[Tensor] = None, yield_instruction: bool = False):
        """Views of the flat weights, one per weight instruction (``(..., mul_in, mul_out)``,
        or ``(..., f_in, f_out, mul_in, mul_out)``); bias instructions are skipped (their
        values are in ``bias``)."""
        weight = self._weight_or_internal(weight)
        if weight.shape[-1] != self.weight_numel:
            raise ValueError(f"Linear: weight must have shape (..., {self.weight_numel}), got {tuple(weight.shape)}")
        batch = weight.shape[:-1]
        offset = 0
        for k, ins in enumerate(self.instructions):
            if ins.i_in == -1:
                continue
            n = math.prod(ins.path_shape)
            view = weight.narrow(-1, offset, n).view(batch + ins.path_shape)
            offset += n
            yield (k, ins, view) if yield_instruction else view

    def weight_view_for_instruction(self, instruction: int, weight: Optional[Tensor] = None) -> Tensor:
        """The view of ``weight`` (default: the internal weights) for one instruction."""
        if not 0 <= instruction < len(self.instructions):
            raise ValueError(f"Linear: instruction must be in [0, {len(self.instructions)}), got {instruction}")
        if self.instructions[instruction].i_in == -1:
            raise ValueError(f"Linear: instruction {instruction} is a bias; its values are in bias")
        for k, _, view in self.weight_views(weight, yield_instruction=True):
            if k == instruction:
                return view
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ forward
    def forward(self, features: Tensor, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None) -> Tensor:
        """``features (..., irreps_in.dim)`` (or ``(..., f_in, irreps_in.dim)``) ->
        ``(..., irreps_out.dim)`` (or ``(..., f_out, irreps_out.dim)``)."""
        x = features
        f_in, f_out = self.f_in, self.f_out
        dim_in, dim_out = self.irreps_in.dim, self.irreps_out.dim
        if not isinstance(x, Tensor):
            raise TypeError(f"Linear: features must be a tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"Linear: features must be a floating-point tensor, got {x.dtype}")
        tail = (dim_in,) if f_in is None else (f_in, dim_in)
        if x.dim() < len(tail) or tuple(x.shape[x.dim() - len(tail):]) != tail:
            want = f"(..., {dim_in})" if f_in is None else f"(..., {f_in}, {dim_in})"
            raise ValueError(f"Linear: features must have shape {want} for irreps_in={self.irreps_in}, got {tuple(x.shape)}")
        lead = x.shape[: x.dim() - len(tail)]
        feat_out = () if f_out is None else (f_out,)
        out_shape = tuple(lead) + feat_out + (dim_out,)
        rows = x.unsqueeze(0) if len(lead) == 0 else x.flatten(0, len(lead) - 1)
        n = rows.shape[0]

        # -- weights --
        w = None
        shared = True
        if self._groups:
            w = self._weight_or_internal(weight)
            feat_w = () if f_in is None else (f_in, f_out)
            need = feat_w + (self.weight_numel,)
            if self.shared_weights:
                if w.dim() < len(need) or tuple(w.shape[w.dim() - len(need):]) != need or w.numel() != math.prod(need):
                    raise ValueError(f"Linear: shared weight must have shape {need}, got {tuple(w.shape)}")
                w = w.reshape(need)
            else:
                if w.dim() < len(need) or tuple(w.shape[w.dim() - len(need):]) != need:
                    raise ValueError(f"Linear: weight must have shape (batch..., {', '.join(map(str, need))}), got {tuple(w.shape)}")
                w = w.reshape((-1,) + need) if w.dim() > len(need) else w.unsqueeze(0)
                if w.shape[0] == 1:
                    w = w[0]
                elif w.shape[0] != n:
                    raise ValueError(
                        f"Linear: weight has {w.shape[0]} rows of weights but features has {n} rows "
                        f"(batch shape {tuple(lead)}); give one row per batch element or one for all"
                    )
                else:
                    shared = False
            self._check_like(w, x, "weight")

        # -- bias --
        b = None
        if any(p[2] is not None for p in self._pieces):
            if bias is None:
                if not self.internal_weights:
                    raise ValueError("Linear: bias must be given: this module has no internal weights")
                b = self.bias
            else:
                if not isinstance(bias, Tensor):
                    raise TypeError(f"Linear: bias must be a tensor, got {type(bias).__name__}")
                b = bias
            need = feat_out + (self.bias_numel,)
            if b.dim() < len(need) or tuple(b.shape[b.dim() - len(need):]) != need or b.numel() != math.prod(need):
                raise ValueError(f"Linear: bias must have shape {need}, got {tuple(b.shape)}")
            b = b.reshape(need)
            self._check_like(b, x, "bias")

        if not self._pieces:
            return x.new_zeros(out_shape)

        # -- one matrix product per group --
        ys = []
        if self._groups:
            wf = w
            if self._padded:
                wf = torch.cat([wf, wf.new_zeros(wf.shape[:-1] + (1,))], dim=-1)
            if self._gather:
                wf = wf.index_select(-1, self._w_index)
            wf = wf * self._w_scale.to(wf.dtype)
            xlead = (n,) if f_in is None else (n, f_in)
            for runs, m_in, d, m_out, goff in self._groups:
                wg = wf.narrow(-1, goff, m_in * m_out)
                parts = [rows.narrow(-1, s, mul * d).reshape(xlead + (mul, d)) for s, mul in runs]
                xg = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-2)
                ys.append(self._mix(wg, xg, shared, n, m_in, m_out, d))

        # -- assemble the output blocks --
        pieces = []
        for width, contribs, bslice in self._pieces:
            t = None
            for g, start, length in contribs:
                part = ys[g].narrow(-1, start, length)
                t = part if t is None else t + part
            if bslice is not None:
                bb = b.narrow(-1, bslice[0], bslice[1])
                t = bb.expand((n,) + feat_out + (width,)) if t is None else t + bb
            if t is None:
                t = rows.new_zeros((n,) + feat_out + (width,))
            pieces.append(t)
        out = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)
        return out.reshape(out_shape)

    def _mix(self, wg: Tensor, xg: Tensor, shared: bool, n: int, m_in: int, m_out: int, d: int) -> Tensor:
        """``out[z, (y,) w, i] = sum_(x,) u W[(z,) (x, y,) u, w] X[z, (x,) u, i]`` as one GEMM,
        ``(n d, K) @ (K, M)`` with the irrep components folded into the rows (shared
        weights), or one batched ``(M, K) @ (K, d)`` product per row (per-row weights);
        ``K = f_in m_in``, ``M = f_out m_out``. Returns ``(n, (f_out,) m_out d)``."""
        f_in, f_out = self.f_in, self.f_out
        if f_in is None:
            k, mm = m_in, m_out
            feat_out: Tuple[int, ...] = ()
        else:
            k, mm = f_in * m_in, f_out * m_out
            feat_out = (f_out,)
        x2 = xg.reshape(n, k, d)
        if shared:
            w2 = wg.reshape(m_in, m_out) if f_in is None else (
                wg.reshape(f_in, f_out, m_in, m_out).permute(0, 2, 1, 3).reshape(k, mm))
            y = torch.matmul(x2.transpose(-1, -2), w2).transpose(-1, -2)  # (n, M, d)
        else:
            w2 = wg.reshape(n, m_in, m_out).transpose(-1, -2) if f_in is None else (
                wg.reshape(n, f_in, f_out, m_in, m_out).permute(0, 2, 4, 1, 3).reshape(n, mm, k))
            y = torch.matmul(w2, x2)  # (n, M, d)
        return y.reshape((n,) + feat_out + (m_out * d,))

    @staticmethod
    def _check_like(t: Tensor, x: Tensor, name: str) -> None:
        if t.dtype != x.dtype:
            raise TypeError(f"Linear: {name} has dtype {t.dtype} but features has {x.dtype}; they must match")
        if t.device != x.device:
            raise ValueError(f"Linear: {name} is on {t.device} but features is on {x.device}; they must match")
