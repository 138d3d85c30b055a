"""Real spherical harmonics with e3nn's signature, output and conventions.

* :func:`spherical_harmonics` is ``e3nn.o3.spherical_harmonics``: same arguments,
  basis (``y`` is the polar axis), component order, normalizations and solid
  harmonics for ``normalize=False``; degrees up to :data:`MAX_DEGREE` (e3nn stops
  at 12).
* :class:`SphericalHarmonics` is ``e3nn.o3.SphericalHarmonics``, plus
  :meth:`SphericalHarmonics.compute_with_gradients`.
* :func:`spherical_harmonics_with_gradients` returns the values and the Jacobian
  ``(..., 3, K)`` in one pass (what sphericart's ``compute_with_gradients`` gives).
* :func:`patch_e3nn` makes e3nn's own function and module call these kernels,
  reversibly.

Everything is differentiable twice (forces, and training on forces), through the
registered operators ``torch.ops.equiops.spherical_harmonics*``; a third derivative
raises. Convention details: :mod:`equiops.reference.spherical_harmonics`.
"""

from __future__ import annotations

import threading
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import backend as _backend
from .irreps import Irreps
from .ops import spherical_harmonics as _ops
from .reference import spherical_harmonics as _reference
from .reference.spherical_harmonics import NORMALIZATIONS

__all__ = [
    "MAX_DEGREE",
    "SphericalHarmonics",
    "patch_e3nn",
    "spherical_harmonics",
    "spherical_harmonics_with_gradients",
]

MAX_DEGREE = _ops.MAX_DEGREE

_FN = "equiops.spherical_harmonics"


def _parse_degrees(l, p_in: Optional[int] = None) -> Tuple[List[int], int]:
    """``(ls, input parity)`` from an int, a sequence of ints, or irreps (str/Irreps).

    Irreps fix the input's parity as e3nn does, unless ``p_in`` gives it: a vector
    (``1o``) unless some odd degree is even (``1e``, a pseudovector); every degree's
    parity must then be the input parity to the power ``l``.
    """
    if isinstance(l, bool):
        raise TypeError(f"{_FN}: l must be an int, a list of ints or irreps, got {l!r}")
    if isinstance(l, int):
        ls = [l]
    elif (
        isinstance(l, (list, tuple))
        and not isinstance(l, Irreps)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in l)
    ):
        ls = list(l)
    else:  # irreps: a string, equiops.Irreps, e3nn's Irreps or a list of (mul, ir) pairs
        try:
            irreps = Irreps(l)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{_FN}: l must be an int, a list of ints or irreps, got {l!r} ({err})") from None
        if p_in is None:
            p_in = 1 if any(ir.l % 2 == 1 and ir.p == 1 for _, ir in irreps) else -1
        ls = []
        for mul, ir in irreps:
            if ir.p != p_in**ir.l:
                raise ValueError(
                    f"{_FN}: irreps {irreps} ask for l = {ir.l} with parity {ir.p}, inconsistent with "
                    f"the input parity {p_in}: expected parity {p_in ** ir.l}"
                )
            ls.extend([ir.l] * mul)
    if not ls:
        raise ValueError(f"{_FN}: l must name at least one degree, got {l!r}")
    if p_in is None:
        p_in = -1
    for v in ls:
        if not 0 <= v <= MAX_DEGREE:
            raise ValueError(f"{_FN}: degrees must be in 0..{MAX_DEGREE}, got l = {v}")
    return ls, p_in


def _check_args(x, normalize, normalization) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{_FN}: x must be a Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{_FN}: x must have a floating dtype, got {x.dtype}")
    if x.dim() == 0 or x.shape[-1] != 3:
        raise ValueError(f"{_FN}: x must have shape (..., 3), got {tuple(x.shape)}")
    if not isinstance(normalize, bool):
        raise TypeError(f"{_FN}: normalize must be a bool, got {normalize!r}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"{_FN}: normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def _compute(ls: List[int], x: Tensor, normalize: bool, normalization: str, backend: Optional[str], jacobian: bool):
    _check_args(x, normalize, normalization)
    name = _backend.resolve(backend, x.device, "spherical_harmonics")
    if name == "triton" and max(ls) > _ops.TRITON_MAX_DEGREE:
        # The unrolled Triton kernels take minutes to compile beyond this degree
        # (kernels/spherical_harmonics.py); "auto" falls back to the reference there.
        if (backend or _backend.get_backend()) != "auto":
            raise ValueError(
                f"{_FN}: the Triton kernels stop at l = {_ops.TRITON_MAX_DEGREE}, got l = {max(ls)}; "
                "use backend='torch' (or 'auto') for higher degrees on the GPU"
            )
        name = "torch"
    K = _ops.output_width(ls)
    lead = x.shape[:-1]
    if name == "torch":
        if not jacobian:
            return _reference.spherical_harmonics(ls, x, normalize, normalization)
        return _reference_with_gradients(ls, x, normalize, normalization)
    # The kernels take float32/float64; half types compute in float32 and the result is
    # cast back.
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    flat = work.reshape(-1, 3)
    if jacobian:
        values, jac = _ops.spherical_harmonics_jacobian(flat, ls, normalize, normalization, name)
        return values.reshape(*lead, K).to(x.dtype), jac.reshape(*lead, 3, K).to(x.dtype)
    return _ops.spherical_harmonics(flat, ls, normalize, normalization, name).reshape(*lead, K).to(x.dtype)


def _reference_with_gradients(ls, x, normalize, normalization):
    with torch.enable_grad():
        xr = x.detach().requires_grad_()
        values = _reference.spherical_harmonics(ls, xr, normalize, normalization)
        flat = values.reshape(-1, values.shape[-1])
        rows = [torch.autograd.grad(flat[:, c].sum(), xr, retain_graph=True)[0] for c in range(flat.shape[-1])]
    jac = torch.stack(rows, dim=-1) if rows else x.new_zeros(*x.shape, 0)
    return values.detach(), jac


def spherical_harmonics(
    l: Union[int, Sequence[int], str, Irreps],
    x: Tensor,
    normalize: bool = True,
    normalization: str = "integral",
    *,
    backend: Optional[str] = None,
) -> Tensor:
    """Real spherical harmonics of ``x``, equal to ``e3nn.o3.spherical_harmonics``.

    Args:
        l: a degree, a list of degrees (any order, repeats allowed) or irreps such as
            ``"0e + 1o + 2e"`` (``"1e"`` makes ``x`` a pseudovector, as in e3nn).
            Degrees ``0..MAX_DEGREE``.
        x: ``(..., 3)`` floating tensor in e3nn's ``(x, y, z)`` order (``y`` polar).
        normalize: evaluate at ``x / max(|x|, 1e-12)`` (a zero vector gives 0 for
            ``l >= 1``); if False, the solid harmonics (polynomials of degree ``l``).
        normalization: ``"integral"`` (orthonormal on the sphere), ``"component"``
            (``|Y^l|^2 = 2l+1`` on the unit sphere) or ``"norm"`` (``|Y^l| = 1``).
        backend: ``"auto"``, ``"cpu"``, ``"triton"`` or ``"torch"``; default: the
            process default (:func:`equiops.set_backend`).

    Returns:
        ``(..., K)`` with ``K = sum(2l+1)``, the degrees concatenated in order.
    """
    ls, _ = _parse_degrees(l)
    return _compute(ls, x, normalize, normalization, backend, jacobian=False)


def spherical_harmonics_with_gradients(
    l: Union[int, Sequence[int], str, Irreps],
    x: Tensor,
    normalize: bool = True,
    normalization: str = "integral",
    *,
    backend: Optional[str] = None,
) -> Tuple[Tensor, Tensor]:
    """Values ``(..., K)`` and Jacobian ``(..., 3, K)``, ``jac[..., a, c] = dY_c / dx_a``.

    One fused pass. Both outputs are differentiable (the Jacobian's derivative is the
    second derivative of the harmonics). Arguments as :func:`spherical_harmonics`.
    """
    ls, _ = _parse_degrees(l)
    return _compute(ls, x, normalize, normalization, backend, jacobian=True)


class SphericalHarmonics(torch.nn.Module):
    """Module form, like ``e3nn.o3.SphericalHarmonics(irreps_out, normalize, normalization)``.

    Attributes as e3nn's: ``irreps_in`` (``1x1o``, or ``1x1e`` for a pseudovector),
    ``irreps_out`` (simplified), ``normalize``, ``normalization``. ``backend`` picks the
    kernel (default: the process default).
    """

    def __init__(
        self,
        irreps_out: Union[int, Sequence[int], str, Irreps],
        normalize: bool = True,
        normalization: str = "integral",
        irreps_in=None,
        backend: Optional[str] = None,
    ) -> None:
        super().__init__()
        p_given = None
        if irreps_in is not None:
            irreps_in = Irreps(irreps_in)
            if irreps_in not in (Irreps("1x1o"), Irreps("1x1e")):
                raise ValueError(f"{_FN}: irreps_in must be 1x1o (vector) or 1x1e (pseudovector), got {irreps_in}")
            p_given = irreps_in[0].ir.p
        ls, p_in = _parse_degrees(irreps_out, p_given)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"{_FN}: normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if backend is not None:
            _backend.check_backend_name(backend)
        self.normalize = bool(normalize)
        self.normalization = normalization
        self.irreps_in = Irreps([(1, (1, p_in))])
        self.irreps_out = Irreps([(1, (l, p_in**l)) for l in ls]).simplify()
        self.backend = backend
        self._ls_list = ls
        self._lmax = max(ls)

    def forward(self, x: Tensor) -> Tensor:
        return _compute(self._ls_list, x, self.normalize, self.normalization, self.backend, jacobian=False)

    def compute_with_gradients(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """``(values (..., K), jacobian (..., 3, K))``, see :func:`spherical_harmonics_with_gradients`."""
        return _compute(self._ls_list, x, self.normalize, self.normalization, self.backend, jacobian=True)

    def extra_repr(self) -> str:
        return f"{self.irreps_out}, normalize={self.normalize}, normalization={self.normalization!r}"


# --------------------------------------------------------------------------- e3nn patch
_patch_lock = threading.Lock()


class E3nnPatch:
    """Handle returned by :func:`patch_e3nn`; ``undo()`` (or leaving the ``with``
    block) restores e3nn's own implementation."""

    def __init__(self, cls, original, backend: Optional[str]):
        self._cls = cls
        self._original = original
        self.backend = backend
        self.active = True

    def undo(self) -> None:
        with _patch_lock:
            if self.active:
                self._cls.forward = self._original
                self.active = False

    def __enter__(self) -> "E3nnPatch":
        return self

    def __exit__(self, *exc) -> None:
        self.undo()


def patch_e3nn(backend: Optional[str] = None) -> E3nnPatch:
    """Make ``e3nn.o3.spherical_harmonics`` and ``e3nn.o3.SphericalHarmonics`` use
    these kernels.

    Patches ``e3nn.o3.SphericalHarmonics.forward`` (e3nn's function calls the module),
    so modules built before the call switch too. Eager and ``torch.compile`` code see
    the patch; TorchScript-compiled modules keep e3nn's scripted code. Reversible::

        with equiops.patch_e3nn():
            energy = model(data)            # e3nn model, our harmonics
        # or: patch = equiops.patch_e3nn(); ...; patch.undo()

    Raises:
        RuntimeError: e3nn is already patched (undo the earlier patch first).
        ImportError: e3nn is not installed.
    """
    from e3nn.o3 import SphericalHarmonics as E3nnSphericalHarmonics

    if backend is not None:
        _backend.check_backend_name(backend)
    with _patch_lock:
        original = E3nnSphericalHarmonics.forward
        if getattr(original, "_equiops_patch", False):
            raise RuntimeError("patch_e3nn: e3nn is already patched; call undo() on the earlier patch first")

        def forward(self, x: Tensor) -> Tensor:
            return _compute(list(self._ls_list), x, self.normalize, self.normalization, backend, jacobian=False)

        forward._equiops_patch = True
        E3nnSphericalHarmonics.forward = forward
        return E3nnPatch(E3nnSphericalHarmonics, original, backend)
