r"""Gated and norm nonlinearities of equivariant networks, equal to e3nn 0.6's.

* :class:`Normalize2mom`: ``f`` scaled so that its second moment under a standard normal
  input is 1 (``e3nn.math.normalize2mom``; the constant comes from the same procedure:
  one million float64 samples of ``torch.randn`` seeded with 0, so it is the same number).
* :class:`Activation`: per-term scalar activations with e3nn's parity rules
  (``e3nn.nn.Activation``).
* :class:`Gate`: ``e3nn.nn.Gate``: the input is laid out as e3nn lays it out, i.e. the
  terms of ``irreps_scalars + irreps_gates + irreps_gated`` *stably sorted* by irrep and
  simplified (``Gate.irreps_in``); the output is ``[act(scalars), act(gates) * gated]``.
* :class:`NormActivation`: ``e3nn.nn.NormActivation``, the Tensor Field Network norm
  nonlinearity ``x_u -> phi(|x_u| + b_u) x_u / |x_u|``.

Everything is plain differentiable PyTorch (no custom autograd functions, no in-place
writes), so double backward and ``torch.compile(fullgraph=True)`` work. State dicts hold
only real state (``biases``, parameters of activation modules) under e3nn's names; the
e3nn-only entries of an e3nn state dict (the empty ``weight`` and the ``output_mask``
of its internal tensor products) are accepted and ignored by ``load_state_dict``.

Deliberate differences from e3nn 0.6:

* ``NormActivation(..., normalize=False)`` works (e3nn 0.6 raises ``TypeError`` comparing
  ``None > 0``): the norm is then ``sqrt`` of the squared norm with a zero value and zero
  gradient at zero norm (e3nn's ``relu().sqrt()`` first derivatives), and no NaN in second
  derivatives either.
* ``NormActivation(..., bias=True)`` accepts an irreps string (e3nn 0.6 needs an
  ``Irreps`` object there).
* Norms and the gating product are computed directly (sums of squares, products), not by
  e3nn's tensor products: equal up to rounding (``sqrt(2l+1) * (1/sqrt(2l+1))``).
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..irreps import Irreps

__all__ = ["Activation", "Gate", "NormActivation", "Normalize2mom", "moment"]


def _module_device(f) -> torch.device:
    """The device e3nn's ``_get_device`` infers for ``f`` (its first parameter or buffer)."""
    if isinstance(f, torch.nn.Module):
        t = next(f.parameters(), None)
        if t is None:
            t = next(f.buffers(), None)
        if t is not None:
            return t.device
    return torch.device("cpu")


def moment(f: Callable[[Tensor], Tensor], n: int, dtype=None, device=None) -> Tensor:
    r"""``<f(z)^n>`` for ``z ~ N(0, 1)``, estimated exactly as e3nn does: the mean over
    ``torch.randn(1_000_000)`` drawn in float64 from a generator seeded with 0."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    device = torch.device("cpu") if device is None else torch.device(device)
    gen = torch.Generator(device=device).manual_seed(0)
    z = torch.randn(1_000_000, generator=gen, dtype=torch.float64, device=device).to(dtype=dtype)
    return f(z).pow(n).mean()


class Normalize2mom(torch.nn.Module):
    r"""``x -> cst * f(x)`` with ``cst = <f(z)^2>^{-1/2}``, ``z ~ N(0, 1)``
    (``e3nn.math.normalize2mom``). When ``|cst - 1| < 1e-4`` the scaling is skipped, as
    in e3nn. ``f`` is kept as the submodule/attribute ``f`` (e3nn's state-dict names)."""

    _is_id: bool
    cst: float

    def __init__(self, f: Callable[[Tensor], Tensor], dtype=None, device=None) -> None:
        super().__init__()
        if not callable(f):
            raise ValueError(f"the activation must be callable, got {f!r}")
        if device is None:
            device = _module_device(f)
        with torch.no_grad():
            cst = moment(f, 2, dtype=torch.float64, device=device).pow(-0.5).item()
        self._is_id = abs(cst - 1) < 1e-4
        self.f = f
        self.cst = cst

    def forward(self, x: Tensor) -> Tensor:
        if self._is_id:
            return self.f(x)
        return self.f(x).mul(self.cst)

    def extra_repr(self) -> str:
        return f"cst={self.cst!r}"


def _as_irreps(x, name: str) -> Irreps:
    try:
        return Irreps(x)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be irreps (a string, Irreps or e3nn Irreps), got {x!r}: {e}") from None


def _act_parity(act: Callable[[Tensor], Tensor]) -> int:
    """e3nn's parity test of an activation: +1 even, -1 odd, 0 neither (on ``[0, 10]``,
    256 points in the default dtype, to ``1e-5``)."""
    x = torch.linspace(0, 10, 256, device=_module_device(act))
    with torch.no_grad():
        a1, a2 = act(x), act(-x)
        if (a1 - a2).abs().max() < 1e-5:
            return 1
        if (a1 + a2).abs().max() < 1e-5:
            return -1
    return 0


class Activation(torch.nn.Module):
    r"""Scalar activations per term of ``irreps_in`` (``e3nn.nn.Activation``): ``acts[i]``
    (normalized by :class:`Normalize2mom`) acts on term ``i``, ``None`` passes it through.
    An odd scalar input needs an even or odd activation; the output parity is that of
    the activation (even: ``0e``; odd: unchanged)."""

    def __init__(self, irreps_in, acts: Sequence[Optional[Callable[[Tensor], Tensor]]]) -> None:
        super().__init__()
        irreps_in = _as_irreps(irreps_in, "irreps_in")
        acts = list(acts)
        if len(irreps_in) != len(acts):
            raise ValueError(
                f"Activation: Irreps in and number of activation functions does not match: irreps_in={irreps_in} has "
                f"{len(irreps_in)} terms, got {len(acts)} activations (one activation or None per term)"
            )
        acts = [Normalize2mom(act) if act is not None else None for act in acts]
        irreps_out = []
        for (mul, ir), act in zip(irreps_in, acts):
            if act is None:
                irreps_out.append((mul, ir))
                continue
            if ir.l != 0:
                raise ValueError(
                    f"Activation: cannot apply an activation function to a non-scalar input ({mul}x{ir} in {irreps_in})."
                )
            p_act = _act_parity(act)
            p_out = p_act if ir.p == -1 else ir.p
            if p_out == 0:
                raise ValueError(
                    "Activation: the parity is violated! The input scalar is odd but the activation is neither "
                    f"even nor odd ({act.f!r} on {mul}x{ir})."
                )
            irreps_out.append((mul, (0, p_out)))
        self.irreps_in = irreps_in
        self.irreps_out = Irreps(irreps_out)
        self.acts = torch.nn.ModuleList(acts)
        # (start, length, activation index or -1) per term
        self._paths: List[Tuple[int, int, int]] = []
        index = 0
        for i, ((mul, ir), act) in enumerate(zip(irreps_in, acts)):
            self._paths.append((index, mul * ir.dim, i if act is not None else -1))
            index += mul * ir.dim

    def __repr__(self) -> str:
        acts = "".join("x" if a is not None else " " for a in self.acts)
        return f"{self.__class__.__name__} [{acts}] ({self.irreps_in} -> {self.irreps_out})"

    def forward(self, features: Tensor, dim: int = -1) -> Tensor:
        if not isinstance(features, Tensor) or not features.is_floating_point():
            raise TypeError(f"Activation: features must be a floating-point tensor, got "
                            f"{getattr(features, 'dtype', type(features).__name__)}")
        if features.dim() == 0 or features.shape[dim] != self.irreps_in.dim:
            raise ValueError(f"Activation: features must have size {self.irreps_in.dim} (irreps_in={self.irreps_in}) "
                             f"along dim={dim}, got shape {tuple(features.shape)}")
        output = []
        for start, length, i in self._paths:
            piece = features.narrow(dim, start, length)
            output.append(self.acts[i](piece) if i >= 0 else piece)
        if len(output) > 1:
            return torch.cat(output, dim=dim)
        if len(output) == 1:
            return output[0]
        return torch.zeros_like(features)


def _merge_ranges(ranges: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """Adjacent ``(start, length)`` ranges merged (fewer ``narrow``/``cat`` calls)."""
    out: List[Tuple[int, int]] = []
    for start, length in ranges:
        if length == 0:
            continue
        if out and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], out[-1][1] + length)
        else:
            out.append((start, length))
    return out


def _take(x: Tensor, ranges: Sequence[Tuple[int, int]]) -> Tensor:
    if len(ranges) == 0:
        return x.new_zeros(x.shape[:-1] + (0,))
    if len(ranges) == 1:
        return x.narrow(-1, ranges[0][0], ranges[0][1])
    return torch.cat([x.narrow(-1, s, n) for s, n in ranges], dim=-1)


def _elementwise_split(irreps_1: Irreps, irreps_2: Irreps) -> List[Tuple[int, object, object]]:
    """e3nn ElementwiseTensorProduct's splitting of two simplified irreps with the same
    number of irreps into aligned ``(mul, ir_1, ir_2)`` terms."""
    a = [(mul, ir) for mul, ir in irreps_1]
    b = [(mul, ir) for mul, ir in irreps_2]
    i = 0
    while i < len(a):
        (m1, ir1), (m2, ir2) = a[i], b[i]
        if m1 < m2:
            b[i] = (m1, ir2)
            b.insert(i + 1, (m2 - m1, ir2))
        if m2 < m1:
            a[i] = (m2, ir1)
            a.insert(i + 1, (m1 - m2, ir1))
        i += 1
    return [(m1, ir1, ir2) for (m1, ir1), (_, ir2) in zip(a, b)]


def _drop_keys(state_dict, prefix: str, keys: Sequence[str]) -> None:
    for k in keys:
        state_dict.pop(prefix + k, None)


class Gate(torch.nn.Module):
    r"""Gate nonlinearity (``e3nn.nn.Gate``):
    ``[x, g, y] -> [act_scalars(x), act_gates(g) * y]``.

    Parameters
    ----------
    irreps_scalars, act_scalars : scalars and one activation (or ``None``) per term
    irreps_gates, act_gates : gate scalars and one activation (or ``None``) per term
    irreps_gated : the gated irreps, ``irreps_gated.num_irreps == irreps_gates.num_irreps``;
        gate ``u`` multiplies the ``u``-th gated irrep copy.

    ``irreps_in`` is e3nn's layout: the terms of the (simplified) three irreps stably sorted
    by irrep, then simplified. ``irreps_out`` is ``act_scalars.irreps_out`` followed by the
    gated terms (split to align with the gates, parity times the gate's output parity).
    Activations are normalized with :class:`Normalize2mom`; an odd scalar needs an even or
    odd activation (the output parity follows e3nn's rules).
    """

    def __init__(self, irreps_scalars, act_scalars, irreps_gates, act_gates, irreps_gated) -> None:
        super().__init__()
        irreps_scalars = _as_irreps(irreps_scalars, "irreps_scalars")
        irreps_gates = _as_irreps(irreps_gates, "irreps_gates")
        irreps_gated = _as_irreps(irreps_gated, "irreps_gated")
        if any(mul > 0 and ir.l > 0 for mul, ir in irreps_gates):
            raise ValueError(f"Gate scalars must be scalars, instead got irreps_gates = {irreps_gates}")
        if any(mul > 0 and ir.l > 0 for mul, ir in irreps_scalars):
            raise ValueError(f"Scalars must be scalars, instead got irreps_scalars = {irreps_scalars}")
        if irreps_gates.num_irreps != irreps_gated.num_irreps:
            raise ValueError(
                f"There are {irreps_gated.num_irreps} irreps in irreps_gated, but a different number "
                f"({irreps_gates.num_irreps}) of gate scalars in irreps_gates"
            )
        if act_scalars is None or act_gates is None:
            raise ValueError("act_scalars and act_gates must be lists (one activation or None per term)")

        # e3nn's _Sortcut: the input is the sorted concatenation of the simplified pieces.
        parts = (irreps_scalars.simplify(), irreps_gates.simplify(), irreps_gated.simplify())
        cat = Irreps([mul_ir for p in parts for mul_ir in p])
        sorted_irreps, _, inv = cat.sort()
        offsets = [0] * len(cat)
        pos = 0
        for j in range(len(cat)):
            offsets[inv[j]] = pos
            pos += sorted_irreps[j].dim
        ranges = []
        k = 0
        for p in parts:
            ranges.append(_merge_ranges([(offsets[k + t], p[t].dim) for t in range(len(p))]))
            k += len(p)
        self._ranges = ranges
        self.irreps_scalars, self.irreps_gates, self.irreps_gated = parts
        self._irreps_in = sorted_irreps.simplify()

        self.act_scalars = Activation(irreps_scalars, act_scalars)
        self.act_gates = Activation(irreps_gates, act_gates)
        gates_out = self.act_gates.irreps_out

        # e3nn's ElementwiseTensorProduct(irreps_gated, gates_out): per aligned block
        # (gated offset, gate offset, mul, 2l+1); output parity p_gated * p_gate.
        blocks = []
        out_terms = []
        i1 = i2 = 0
        for mul, ir1, ir2 in _elementwise_split(irreps_gated.simplify(), gates_out.simplify()):
            blocks.append((i1, i2, mul, ir1.dim))
            out_terms.append((mul, (ir1.l, ir1.p * ir2.p)))
            i1 += mul * ir1.dim
            i2 += mul
        self._blocks = _merge_blocks(blocks)
        self._has_gates = self.irreps_gates.dim > 0
        self._irreps_out = self.act_scalars.irreps_out + Irreps(out_terms)

    # e3nn's Gate holds an ElementwiseTensorProduct ``mul`` with an empty ``weight`` and an
    # ``output_mask`` of ones: accepted (ignored) when loading an e3nn state dict.
    _E3NN_ONLY_KEYS = ("mul.weight", "mul.output_mask")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _drop_keys(state_dict, prefix, self._E3NN_ONLY_KEYS)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def irreps_in(self) -> Irreps:
        return self._irreps_in

    @property
    def irreps_out(self) -> Irreps:
        return self._irreps_out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__} ({self.irreps_in} -> {self.irreps_out})"

    def forward(self, features: Tensor) -> Tensor:
        """``(..., irreps_in.dim) -> (..., irreps_out.dim)``."""
        if not isinstance(features, Tensor) or not features.is_floating_point():
            raise TypeError(f"Gate: features must be a floating-point tensor, got "
                            f"{getattr(features, 'dtype', type(features).__name__)}")
        if features.dim() == 0 or features.shape[-1] != self._irreps_in.dim:
            raise ValueError(f"Gate: the last dimension of the input must be {self._irreps_in.dim}, got {features.shape[-1]}")
        scalars = _take(features, self._ranges[0])
        scalars = self.act_scalars(scalars)
        if not self._has_gates:
            return scalars
        gates = self.act_gates(_take(features, self._ranges[1]))
        gated = _take(features, self._ranges[2])
        pieces = [scalars]
        batch = gated.shape[:-1]
        for s1, s2, mul, d in self._blocks:
            g = gates.narrow(-1, s2, mul)
            y = gated.narrow(-1, s1, mul * d)
            if d == 1:
                pieces.append(y * g)
            else:
                pieces.append((y.reshape(batch + (mul, d)) * g.unsqueeze(-1)).reshape(batch + (mul * d,)))
        return torch.cat(pieces, dim=-1)


def _merge_blocks(blocks):
    """Consecutive blocks of the same ``2l+1`` merged (one multiply per run)."""
    out = []
    for s1, s2, mul, d in blocks:
        if mul == 0:
            continue
        if out and out[-1][3] == d and out[-1][0] + out[-1][2] * d == s1 and out[-1][1] + out[-1][2] == s2:
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] + mul, d)
        else:
            out.append((s1, s2, mul, d))
    return out


class NormActivation(torch.nn.Module):
    r"""Norm nonlinearity (``e3nn.nn.NormActivation``, Tensor Field Networks):
    ``x_u -> phi(|x_u| + b_u) * x_u / |x_u|`` for every irrep copy ``u`` (without the
    division when ``normalize=False``).

    Parameters
    ----------
    irreps_in : the irreps (``irreps_out`` is the same)
    scalar_nonlinearity : ``phi`` (not normalized, as in e3nn)
    normalize : divide by the norm
    epsilon : with ``normalize``, squared norms below ``epsilon**2`` are raised to it
        (default ``1e-8``); not allowed with ``normalize=False``
    bias : a learnable bias ``biases`` (one per irrep copy, zeros) added to the norms
    """

    epsilon: Optional[float]
    _eps_squared: float

    def __init__(
        self,
        irreps_in,
        scalar_nonlinearity: Callable[[Tensor], Tensor],
        normalize: bool = True,
        epsilon: Optional[float] = None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.irreps_in = _as_irreps(irreps_in, "irreps_in")
        self.irreps_out = self.irreps_in
        if not callable(scalar_nonlinearity):
            raise ValueError(f"scalar_nonlinearity must be callable, got {scalar_nonlinearity!r}")
        if epsilon is None and normalize:
            epsilon = 1e-8
        elif epsilon is not None and not normalize:
            raise ValueError("epsilon and normalize = False don't make sense together")
        elif epsilon is not None and not epsilon > 0:
            raise ValueError(f"epsilon {epsilon} is invalid, must be strictly positive.")
        self.epsilon = epsilon
        self._eps_squared = epsilon * epsilon if epsilon is not None else 0.0
        self.scalar_nonlinearity = scalar_nonlinearity
        self.normalize = normalize
        self.bias = bias
        if bias:
            self.biases = torch.nn.Parameter(torch.zeros(self.irreps_in.num_irreps))
        # (start, mul, 2l+1) per simplified term, consecutive equal-l terms merged
        blocks = []
        start = 0
        for mul, ir in self.irreps_in.simplify():
            if blocks and blocks[-1][2] == ir.dim and blocks[-1][0] + blocks[-1][1] * ir.dim == start:
                blocks[-1] = (blocks[-1][0], blocks[-1][1] + mul, ir.dim)
            else:
                blocks.append((start, mul, ir.dim))
            start += mul * ir.dim
        self._blocks = blocks

    # e3nn's tensor products ``norm.tp`` and ``scalar_multiplier`` hold empty weights and
    # output masks: accepted (ignored) when loading an e3nn state dict.
    _E3NN_ONLY_KEYS = ("norm.tp.weight", "norm.tp.output_mask", "scalar_multiplier.weight", "scalar_multiplier.output_mask")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _drop_keys(state_dict, prefix, self._E3NN_ONLY_KEYS)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.irreps_in}, normalize={self.normalize}, bias={self.bias})"

    def forward(self, features: Tensor) -> Tensor:
        """``(..., irreps_in.dim) -> (..., irreps_in.dim)``."""
        if not isinstance(features, Tensor) or not features.is_floating_point():
            raise TypeError(f"NormActivation: features must be a floating-point tensor, got "
                            f"{getattr(features, 'dtype', type(features).__name__)}")
        if self.bias and features.device != self.biases.device:
            raise ValueError(f"NormActivation: features must be on the device of biases ({self.biases.device}), "
                             f"got {features.device}")
        if features.dim() == 0 or features.shape[-1] != self.irreps_in.dim:
            raise ValueError(
                f"NormActivation: the last dimension of the input must be {self.irreps_in.dim}, got {features.shape[-1]}"
            )
        batch = features.shape[:-1]
        if len(self._blocks) == 0:
            return features.clone()
        views = [features.narrow(-1, s, mul * d).reshape(batch + (mul, d)) for s, mul, d in self._blocks]
        sq = torch.cat([v.pow(2).sum(-1) for v in views], dim=-1)  # (..., num_irreps)
        if self.epsilon is not None:
            # e3nn: norms[norms < eps^2] = eps^2 (no gradient there), then sqrt
            norms = sq.clamp_min(self._eps_squared).sqrt()
        else:
            # e3nn: relu().sqrt(): zero value and zero gradient at zero, without NaN
            pos = sq > 0
            norms = torch.where(pos, torch.where(pos, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))
        arg = norms + self.biases if self.bias else norms
        scalings = self.scalar_nonlinearity(arg)
        if self.normalize:
            scalings = scalings / norms
        pieces = []
        i = 0
        for (s, mul, d), v in zip(self._blocks, views):
            sc = scalings.narrow(-1, i, mul)
            pieces.append((v * sc.unsqueeze(-1)).reshape(batch + (mul * d,)))
            i += mul
        return torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]
