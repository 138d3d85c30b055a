r"""Radial machinery of Tensor Field Network / NequIP layers: bases, cutoffs, radial MLP.

* :class:`BesselBasis`: NequIP's ``2/r_max * sin(w_n r / r_max) / r`` with trainable
  ``bessel_weights`` ``w_n`` initialised to ``n pi``; finite and exact (value and all
  derivatives) at ``r = 0``, where it tends to ``2/r_max * w_n / r_max``.
* :func:`soft_one_hot_linspace` / :class:`GaussianBasis`: ``e3nn.math.soft_one_hot_linspace``
  (bases ``gaussian``, ``cosine``, ``smooth_finite``, ``fourier``, ``bessel``, same
  normalisation and ``cutoff`` semantics).
* :class:`PolynomialCutoff` (NequIP's envelope, smooth to second order at ``r_max``) and
  :class:`CosineCutoff`: zero (with zero derivatives) for ``r >= r_max``.
* :class:`RadialMLP`: ``e3nn.nn.FullyConnectedNet`` (same initialisation and weight
  normalisation, parameter names ``layer{i}.weight``, the activation normalised by
  :class:`~equiops.nn.gate.Normalize2mom`): the per-edge tensor-product weights.

Every function here is plain differentiable PyTorch (double backward, ``torch.compile``).

``sin(t)/x`` is evaluated with two branches chosen by ``torch.where``: for ``|t| < 1``
the Taylor series of ``sin(t)/t`` (to ``t^20``, exact to rounding, with every derivative
finite at 0), elsewhere the direct quotient; each branch sees only safe inputs, so no
NaN leaks into values or gradients of any order.

Deliberate differences from the originals:

* e3nn's ``bessel`` basis (and NequIP's ``BesselBasis``) are ``0/0 = NaN`` at ``x = start``
  (``r = 0``); here they take their limit (and ``0`` with ``cutoff=True``, where the
  original multiplies NaN by 0).
* e3nn's ``smooth_finite`` builds ``exp(2)`` as a tensor of the *default* dtype; here it is
  a float64 constant (identical under a float64 default dtype, 1 float32 ulp otherwise).
* ``number=1`` with ``cutoff=False`` works for the ``fourier`` and ``bessel`` bases (e3nn
  fails with ``IndexError``); it is a ``ValueError`` for the bases that need a spacing.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor

from ._checks import check_like
from .gate import Normalize2mom

__all__ = [
    "BesselBasis",
    "CosineCutoff",
    "GaussianBasis",
    "PolynomialCutoff",
    "RadialMLP",
    "soft_one_hot_linspace",
    "soft_unit_step",
]

_BASES = ("gaussian", "cosine", "smooth_finite", "fourier", "bessel")

# sin(t)/t = sum_k (-1)^k t^(2k) / (2k+1)!, k = 0..10: below |t| = 1 the first omitted term
# is < 2e-22, so the series is exact to float64 rounding there (derivatives included).
_SINC_COEFFS = tuple((-1) ** k / math.factorial(2 * k + 1) for k in range(11))


def _as_float(x) -> Optional[float]:
    """``float(x)`` for a real number (Python, numpy or a one-element tensor), else None."""
    if isinstance(x, (bool, str, bytes)) or isinstance(x, numbers.Complex) and not isinstance(x, numbers.Real):
        return None
    try:
        return float(x)
    except (TypeError, ValueError, RuntimeError):
        return None


def _positive_number(x, name: str) -> float:
    v = _as_float(x)
    if v is None or not math.isfinite(v) or not v > 0:
        raise ValueError(f"{name} must be a positive finite number, got {name}={x!r}")
    return v


def _positive_int(x, name: str, minimum: int = 1) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or int(x) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={x!r}")
    return int(x)


def _check_input(x, where: str, name: str, like: Optional[Tensor] = None) -> None:
    """``x`` a floating tensor on the device of the module's parameter ``like`` when given
    (its dtype may differ: the bases compute in ``x``'s dtype)."""
    check_like(where, like, dtype=False, **{name: x})


def _sin_ratio(w: Tensor, x: Tensor, scale: float) -> Tensor:
    r"""``sin(w x / scale) / x``, elementwise (broadcast), with its limit ``w / scale`` at
    ``x = 0`` and exact, finite derivatives of every order there."""
    t = w * x / scale
    near = t.abs() < 1.0
    # far branch: the direct quotient on inputs kept away from 0
    x_far = torch.where(near, torch.ones_like(t), x)
    far = torch.sin(t) / x_far
    # near branch: (w / scale) * sin(t)/t by its Taylor series, on inputs kept small
    tn = torch.where(near, t, torch.zeros_like(t))
    s = tn * tn
    series = torch.full_like(s, _SINC_COEFFS[-1])
    for c in reversed(_SINC_COEFFS[:-1]):
        series = series * s + c
    near_value = (w / scale) * series
    return torch.where(near, near_value, far)


def soft_unit_step(x: Tensor) -> Tensor:
    r"""``exp(-1/x)`` for ``x > 0``, else 0 (``e3nn.math.soft_unit_step``; C-infinity,
    here without a custom autograd function)."""
    pos = x > 0.0
    safe = torch.where(pos, x, torch.ones_like(x))
    return torch.where(pos, torch.exp(-1.0 / safe), torch.zeros_like(x))


def _check_linspace_args(start, end, number, basis, cutoff):
    if cutoff not in [True, False]:
        raise ValueError(f"cutoff must be specified as True or False, got cutoff={cutoff!r}")
    if basis not in _BASES:
        raise ValueError(f"basis={basis!r} is not a valid entry; expected one of {_BASES}")
    number = _positive_int(number, "number")
    for name, v in (("start", start), ("end", end)):
        f = _as_float(v)
        if f is None or not math.isfinite(f):
            raise ValueError(f"{name} must be a finite number, got {name}={v!r}")
    if float(start) == float(end):
        raise ValueError(f"start and end must differ, got start={start!r}, end={end!r}")
    if number == 1 and not cutoff and basis in ("gaussian", "cosine", "smooth_finite"):
        raise ValueError(f"number must be >= 2 for basis={basis!r} without cutoff, got number={number!r}")
    return number


def soft_one_hot_linspace(x: Tensor, start, end, number, basis=None, cutoff=None) -> Tensor:
    r"""Projection of ``x`` on ``number`` smooth functions spanning ``[start, end]``:
    ``(...) -> (..., number)``, equal to ``e3nn.math.soft_one_hot_linspace``.

    ``basis`` in ``'gaussian', 'cosine', 'smooth_finite', 'fourier', 'bessel'``;
    ``cutoff=True`` makes every function (about) zero outside ``(start, end)``.
    """
    number = _check_linspace_args(start, end, number, basis, cutoff)
    _check_input(x, "soft_one_hot_linspace", "x")
    return _soft_one_hot(x, float(start), float(end), number, basis, bool(cutoff))


def _soft_one_hot(x: Tensor, start: float, end: float, number: int, basis: str, cutoff: bool) -> Tensor:
    if basis == "fourier":
        u = (x[..., None] - start) / (end - start)
        norm = math.sqrt(0.25 + number / 2)
        if not cutoff:
            i = torch.arange(0, number, dtype=x.dtype, device=x.device)
            return torch.cos(math.pi * i * u) / norm
        i = torch.arange(1, number + 1, dtype=x.dtype, device=x.device)
        return torch.sin(math.pi * i * u) / norm * (0 < u) * (u < 1)

    if basis == "bessel":
        u = x[..., None] - start
        c = end - start
        roots = torch.arange(1, number + 1, dtype=x.dtype, device=x.device) * math.pi
        out = math.sqrt(2 / c) * _sin_ratio(roots, u, c)
        if not cutoff:
            return out
        return out * ((u / c) < 1) * (0 < u)

    if not cutoff:
        values = torch.linspace(start, end, number, dtype=x.dtype, device=x.device)
    else:
        values = torch.linspace(start, end, number + 2, dtype=x.dtype, device=x.device)
    step = values[1] - values[0]
    if cutoff:
        values = values[1:-1]
    diff = (x[..., None] - values) / step

    if basis == "gaussian":
        return diff.pow(2).neg().exp().div(1.12)
    if basis == "cosine":
        return torch.cos(math.pi / 2 * diff) * (diff < 1) * (-1 < diff)
    # smooth_finite
    return 1.14136 * math.exp(2.0) * soft_unit_step(diff + 1) * soft_unit_step(1 - diff)


class GaussianBasis(torch.nn.Module):
    r"""``x -> soft_one_hot_linspace(x, start, end, number, basis, cutoff)``, a module
    without parameters: ``(...) -> (..., number)``. The default is e3nn's Gaussian
    smearing of distances (``basis='gaussian'``); any of e3nn's bases can be chosen."""

    def __init__(self, start, end, number, basis: str = "gaussian", cutoff: bool = False) -> None:
        super().__init__()
        self.number = _check_linspace_args(start, end, number, basis, cutoff)
        self.start = float(start)
        self.end = float(end)
        self.basis = basis
        self.cutoff = bool(cutoff)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, "GaussianBasis", "x")
        return _soft_one_hot(x, self.start, self.end, self.number, self.basis, self.cutoff)

    def extra_repr(self) -> str:
        return f"start={self.start}, end={self.end}, number={self.number}, basis={self.basis!r}, cutoff={self.cutoff}"


class BesselBasis(torch.nn.Module):
    r"""NequIP's radial Bessel basis, ``(...) -> (..., num_basis)``:

    .. math:: e_n(r) = \frac{2}{r_{max}} \frac{\sin(w_n r / r_{max})}{r}, \quad w_n = n \pi

    ``bessel_weights`` (``w_n``) is a parameter when ``trainable`` else a buffer (the
    same state-dict name either way). At ``r = 0`` the value is the limit
    ``2/r_max * w_n / r_max``; first and second derivatives are finite and exact there.
    """

    def __init__(self, r_max, num_basis: int = 8, trainable: bool = True) -> None:
        super().__init__()
        self.r_max = _positive_number(r_max, "r_max")
        self.num_basis = _positive_int(num_basis, "num_basis")
        self.trainable = bool(trainable)
        self.prefactor = 2.0 / self.r_max
        weights = torch.linspace(start=1.0, end=self.num_basis, steps=self.num_basis) * math.pi
        if self.trainable:
            self.bessel_weights = torch.nn.Parameter(weights)
        else:
            self.register_buffer("bessel_weights", weights)

    def forward(self, r: Tensor) -> Tensor:
        _check_input(r, "BesselBasis", "r", self.bessel_weights)
        return self.prefactor * _sin_ratio(self.bessel_weights, r.unsqueeze(-1), self.r_max)

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}, num_basis={self.num_basis}, trainable={self.trainable}"


class PolynomialCutoff(torch.nn.Module):
    r"""NequIP's polynomial envelope, ``(...) -> (...)``, with ``u = r / r_max``:

    .. math:: f(u) = 1 - \frac{(p+1)(p+2)}{2} u^p + p(p+2) u^{p+1} - \frac{p(p+1)}{2} u^{p+2}

    for ``u < 1``, else 0. ``f(1) = f'(1) = f''(1) = 0``. ``p >= 1`` (default 6; an
    integer ``p >= 2`` is also twice differentiable at ``r = 0``).
    """

    def __init__(self, r_max, p: float = 6) -> None:
        super().__init__()
        self.r_max = _positive_number(r_max, "r_max")
        pf = _as_float(p)
        if pf is None or not math.isfinite(pf) or pf < 1:
            raise ValueError(f"p must be a number >= 1, got p={p!r}")
        self.p = pf
        self._factor = 1.0 / self.r_max
        # The exponents as a tensor, not Python floats: torch.compile(dynamic=True) turns a
        # module's float attributes into symbolic scalars, and the backward of
        # pow(u, <symbolic float>) then fails to lower in Inductor (PyTorch 2.13:
        # "LoweringException: KeyError: 'unbacked_bindings'"). Not in the state_dict.
        self.register_buffer("_exponents", torch.tensor([pf, pf + 1.0, pf + 2.0], dtype=torch.float64),
                             persistent=False)

    def forward(self, r: Tensor) -> Tensor:
        _check_input(r, "PolynomialCutoff", "r")
        p = self.p
        u = r * self._factor
        e = self._exponents.to(r.dtype)
        out = (
            1.0
            - (p + 1.0) * (p + 2.0) / 2.0 * torch.pow(u, e[0])
            + p * (p + 2.0) * torch.pow(u, e[1])
            - p * (p + 1.0) / 2.0 * torch.pow(u, e[2])
        )
        return out * (u < 1.0)

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}, p={self.p}"


class CosineCutoff(torch.nn.Module):
    r"""``0.5 * (cos(pi r / r_max) + 1)`` for ``r < r_max``, else 0: ``(...) -> (...)``."""

    def __init__(self, r_max) -> None:
        super().__init__()
        self.r_max = _positive_number(r_max, "r_max")

    def forward(self, r: Tensor) -> Tensor:
        _check_input(r, "CosineCutoff", "r")
        return 0.5 * (torch.cos(math.pi * r / self.r_max) + 1.0) * (r < self.r_max)

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}"


class _Layer(torch.nn.Module):
    """One layer of :class:`RadialMLP` (e3nn's ``_Layer``: ``weight`` of shape
    ``(h_in, h_out)``, initialised ``randn``, scaled in the forward pass)."""

    def __init__(self, h_in: int, h_out: int, act: Optional[torch.nn.Module], var_in: float, var_out: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(h_in, h_out))
        self.act = act
        self.h_in = h_in
        self.h_out = h_out
        self.var_in = var_in
        self.var_out = var_out

    def __repr__(self) -> str:
        act = self.act
        if act is not None:
            f = getattr(act, "f", act)
            act = getattr(f, "__name__", f.__class__.__name__)
        return f"Layer({self.h_in}->{self.h_out}, act={act})"

    def forward(self, x: Tensor) -> Tensor:
        if self.act is not None:
            w = self.weight / (self.h_in * self.var_in) ** 0.5
            x = x @ w
            x = self.act(x)
            x = x * self.var_out**0.5
        else:
            w = self.weight / (self.h_in * self.var_in / self.var_out) ** 0.5
            x = x @ w
        return x


class RadialMLP(torch.nn.Sequential):
    r"""Fully connected network equal to ``e3nn.nn.FullyConnectedNet``:
    ``(..., hs[0]) -> (..., hs[-1])``, e.g. radial basis -> per-edge tensor-product weights.

    Layer ``i`` computes ``x @ W_i / sqrt(h_in * var_in)`` followed by the activation
    (normalised to unit second moment) and ``* sqrt(var_out)``; the last layer has no
    activation unless ``out_act`` (then ``x @ W / sqrt(h_in * var_in / var_out)``).
    ``var_in = variance_in`` for the first layer, ``var_out = variance_out`` for the last,
    1 elsewhere. Parameters ``layer{i}.weight`` ``(hs[i], hs[i+1])``, initialised ``randn``:
    an e3nn ``FullyConnectedNet`` state dict loads strictly.
    """

    hs: List[int]

    def __init__(
        self,
        hs: Sequence[int],
        act: Optional[Callable[[Tensor], Tensor]] = None,
        variance_in: float = 1,
        variance_out: float = 1,
        out_act: bool = False,
    ) -> None:
        super().__init__()
        hs = list(hs)
        if len(hs) < 1:
            raise ValueError(f"hs must list at least one size, got hs={hs!r}")
        for i, h in enumerate(hs):
            _positive_int(h, f"hs[{i}]")
        if act is not None and not callable(act):
            raise ValueError(f"act must be callable or None, got act={act!r}")
        _positive_number(variance_in, "variance_in")
        _positive_number(variance_out, "variance_out")
        self.hs = [int(h) for h in hs]
        if act is not None:
            act = Normalize2mom(act)
        var_in = variance_in
        for i, (h1, h2) in enumerate(zip(self.hs, self.hs[1:])):
            if i == len(self.hs) - 2:
                var_out = variance_out
                a = act if out_act else None
            else:
                var_out = 1
                a = act
            setattr(self, f"layer{i}", _Layer(h1, h2, a, var_in, var_out))
            var_in = var_out

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}{self.hs}"

    def forward(self, x: Tensor) -> Tensor:
        """``(..., hs[0]) -> (..., hs[-1])``."""
        w = self.layer0.weight if len(self.hs) > 1 else None
        _check_input(x, "RadialMLP", "x", w)
        if x.dim() < 1 or x.shape[-1] != self.hs[0]:
            raise ValueError(f"RadialMLP: x must have shape (..., {self.hs[0]}) (hs[0]), got {tuple(x.shape)}")
        if w is not None and x.dtype != w.dtype:
            raise TypeError(f"RadialMLP: x must have the dtype of the weights ({w.dtype}), got {x.dtype}")
        return super().forward(x)
