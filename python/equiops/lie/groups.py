"""Matrix Lie groups used by LieConv (see :mod:`equiops.lie` for the conventions).

This module holds the abstract :class:`LieGroup` base class (lifting, pairing and
distance logic shared by every group), the translation group :class:`T`, the
trivial group :class:`Trivial`, the rotation groups :class:`SO2` / :class:`SO3`
and the rigid-motion groups :class:`SE2` / :class:`SE3`, plus the
small-angle-safe scalar helpers used by their exponential and logarithm maps.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

__all__ = [
    "LieGroup",
    "T",
    "Trivial",
    "SO2",
    "SE2",
    "SO3",
    "SE3",
    "norm",
    "sinc",
    "sincc",
    "cosc",
    "coscc",
    "sinc_inv",
    "cross_matrix",
    "uncross_matrix",
    "TAYLOR_THRESHOLD",
    "thresh",
]


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------


class _NamedGroupType(type):
    """Metaclass: ``str(cls)`` / ``repr(cls)`` is the bare class name (``"SE3"``).

    The group instances format themselves through their class (``str(SE3())`` is
    ``"SE3"`` and ``str(SE3(alpha=0.5))`` is ``"SE3(0.5)"``), which LieConv code uses
    to name runs and checkpoints.
    """

    def __str__(cls):
        return cls.__name__

    def __repr__(cls):
        return cls.__name__


def norm(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Euclidean norm ``sqrt(sum(x**2, dim))``.

    Same values as the plain formula; the only difference is the gradient at an exactly
    zero vector, which is 0 (a subgradient) instead of NaN.
    """
    sq = (x * x).sum(dim=dim)
    positive = sq > 0
    safe = torch.where(positive, sq, torch.ones_like(sq))
    return torch.where(positive, safe.sqrt(), torch.zeros_like(sq))


def _shape_str(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def _check_points(group: "LieGroup", pt, name: str, where: str) -> None:
    """Validate that ``pt`` is a tensor of points ``(*, n, point_dim)``."""
    if not isinstance(pt, torch.Tensor):
        raise TypeError(f"{group}.{where}: `{name}` must be a torch.Tensor of points (*, n, d), got {type(pt).__name__}")
    d = group.point_dim
    if pt.dim() < 2 or pt.shape[-1] != d:
        if group.point_dim == group.rep_dim:
            expected = f"rep_dim={group.rep_dim}"
        else:
            expected = f"{d} (points in R^{d}; the group acts on homogeneous coordinates, rep_dim={group.rep_dim})"
        raise ValueError(
            f"{group}.{where}: `{name}` must have shape (*, n, {d}), i.e. last dimension {expected}; "
            f"got shape {_shape_str(pt)}"
        )
    if not pt.is_floating_point():
        raise TypeError(f"{group}.{where}: `{name}` must be a floating-point tensor, got {pt.dtype}")


def _check_trailing(group, t, name: str, where: str, trailing: tuple, what: str) -> None:
    """Validate that ``t`` is a floating tensor of shape ``(*, *trailing)`` (``what`` describes it)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{group}.{where}: `{name}` must be a torch.Tensor {what}, got {type(t).__name__}")
    k = len(trailing)
    if t.dim() < k or tuple(t.shape[t.dim() - k:]) != tuple(trailing):
        want = ", ".join(["*"] + [str(d) for d in trailing])
        raise ValueError(f"{group}.{where}: `{name}` must have shape ({want}) {what}; got shape {_shape_str(t)}")
    if not t.is_floating_point():
        raise TypeError(f"{group}.{where}: `{name}` must be a floating-point tensor, got {t.dtype}")


def _check_algebra(group, a, where: str, lie_dim: int, name: str = "a") -> None:
    _check_trailing(group, a, name, where, (lie_dim,), f"of Lie algebra coefficients (lie_dim={lie_dim})")


def _check_matrices(group, u, where: str, size: int, name: str = "u") -> None:
    _check_trailing(group, u, name, where, (size, size), f"of {size}x{size} group matrices")


def _check_elems(group, a, where: str) -> None:
    """``a (*, n, lie_dim)``: lifted elements of ``n`` points."""
    if isinstance(a, torch.Tensor) and a.dim() < 2:
        raise ValueError(f"{group}.{where}: `a` must have shape (*, n, {group.lie_dim}) (n lifted elements), "
                         f"got shape {_shape_str(a)}")
    _check_algebra(group, a, where, group.lie_dim)


def _check_pairs(group, abq_pairs, where: str = "distance") -> None:
    d = group.lie_dim + 2 * group.q_dim
    _check_trailing(group, abq_pairs, "abq_pairs", where, (d,),
                    f"of embedded pairs [log(v^-1 u), q_u, q_v] (lie_dim + 2 q_dim = {d})")


def _check_nsamples(group: "LieGroup", nsamples, where: str) -> int:
    if isinstance(nsamples, bool) or not isinstance(nsamples, int) or nsamples < 1:
        raise ValueError(f"{group}.{where}: `nsamples` must be a positive int, got {nsamples!r}")
    return nsamples


def _check_single_lift(group: "LieGroup", nsamples, where: str) -> None:
    """Groups whose lift is single valued (abelian here) only accept ``nsamples == 1``."""
    _check_nsamples(group, nsamples, where)
    if nsamples != 1:
        raise ValueError(
            f"{group}.{where}: the lift to {group} is single valued, so `nsamples` must be 1 "
            f"(got {nsamples}); the original raised AssertionError('Abelian group, no need for nsamples')"
        )


def _check_lift_input(group: "LieGroup", x, where: str = "lift"):
    if not isinstance(x, (tuple, list)) or len(x) != 3:
        got = f"{type(x).__name__} of length {len(x)}" if isinstance(x, (tuple, list)) else type(x).__name__
        raise ValueError(f"{group}.{where}: `x` must be a tuple (coords, values, mask), got {got}")
    p, v, m = x
    _check_points(group, p, "x[0] (coords)", where)
    lead = tuple(p.shape[:-1])
    if not isinstance(v, torch.Tensor) or tuple(v.shape[:-1]) != lead:
        raise ValueError(
            f"{group}.{where}: `x[1]` (values) must have shape {lead + ('c',)} to match coords {_shape_str(p)}, "
            f"got {_shape_str(v) if isinstance(v, torch.Tensor) else type(v).__name__}"
        )
    if not isinstance(m, torch.Tensor) or tuple(m.shape) != lead:
        raise ValueError(
            f"{group}.{where}: `x[2]` (mask) must have shape {lead} to match coords {_shape_str(p)}, "
            f"got {_shape_str(m) if isinstance(m, torch.Tensor) else type(m).__name__}"
        )
    for name, t in (("x[1] (values)", v), ("x[2] (mask)", m)):
        if t.device != p.device:
            raise ValueError(f"{group}.{where}: `{name}` must be on the device of coords ({p.device}), got {t.device}")
    return p, v, m


# ----------------------------------------------------------------------------------------------
# base class
# ----------------------------------------------------------------------------------------------


class LieGroup(metaclass=_NamedGroupType):
    """Abstract matrix Lie group ``G`` acting on ``R^d`` for LieConv.

    Subclasses define the class attributes

    * ``rep_dim``: size of the matrices representing ``G`` (``exp`` returns ``(*, rep_dim, rep_dim)``),
    * ``lie_dim``: dimension of the Lie algebra (length of the coefficient vectors ``a``),
    * ``q_dim``: dimension of the orbit identifier ``q`` of a point (embedding of ``R^d / G``),

    and the methods :meth:`exp`, :meth:`log` and :meth:`lifted_elems`.  ``point_dim`` is
    the dimension ``d`` of the points that are lifted (``rep_dim`` except for the
    homogeneous-coordinate groups SE(2) / SE(3), where it is ``rep_dim - 1``).

    ``alpha`` weights the group part against the orbit part in :meth:`distance`.
    """

    rep_dim = NotImplemented
    lie_dim = NotImplemented
    q_dim = NotImplemented

    def __init__(self, alpha: float = 0.2):
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"{type(self).__name__}: `alpha` must be a number in [0, 1] (the weight of the group "
                             f"part in distance), got {alpha!r}")
        self.alpha = alpha

    # -- dimensions -------------------------------------------------------------------------
    @property
    def point_dim(self) -> int:
        """Dimension of the points that :meth:`lifted_elems` / :meth:`lift` accept."""
        return self.rep_dim

    # -- maps to implement ------------------------------------------------------------------
    def exp(self, a: torch.Tensor) -> torch.Tensor:
        """Matrix exponential of ``sum_i a_i A_i``: ``(*, lie_dim) -> (*, rep_dim, rep_dim)``."""
        raise NotImplementedError(f"{self}.exp is not implemented")

    def log(self, u: torch.Tensor) -> torch.Tensor:
        """Coefficients of the (principal) matrix logarithm: ``(*, rep_dim, rep_dim) -> (*, lie_dim)``."""
        raise NotImplementedError(f"{self}.log is not implemented")

    def lifted_elems(self, pt: torch.Tensor, nsamples: int = 1, **kwargs):
        """Lift points to group elements.

        Input ``pt`` of shape ``(*, n, point_dim)``; returns ``(a, q)`` with algebra
        coefficients ``a`` of shape ``(*, n * nsamples, lie_dim)`` (the ``nsamples`` lifts
        of one point are consecutive) and orbit identifiers ``q`` of shape
        ``(*, n * nsamples, q_dim)``, or ``None`` when ``q_dim == 0``.
        """
        raise NotImplementedError(f"{self}.lifted_elems is not implemented")

    # -- generic group operations -----------------------------------------------------------
    def inv(self, g: torch.Tensor) -> torch.Tensor:
        """Inverse of group matrices ``g`` computed as ``exp(-log(g))``."""
        return self.exp(-self.log(g))

    def distance(self, abq_pairs: torch.Tensor) -> torch.Tensor:
        """Distance ``alpha * |log(v^-1 u)| + (1 - alpha) * |q_u - q_v|`` of embedded pairs.

        ``abq_pairs`` has shape ``(*, lie_dim + 2 * q_dim)`` laid out as
        ``[log(v^-1 u), q_u, q_v]`` (what :meth:`lift` returns); the result has shape ``(*)``.
        """
        _check_pairs(self, abq_pairs)
        ld, qd = self.lie_dim, self.q_dim
        ab_dist = norm(abq_pairs[..., :ld], dim=-1)
        qa = abq_pairs[..., ld : ld + qd]
        qb = abq_pairs[..., ld + qd : ld + 2 * qd]
        qa_qb_dist = norm(qa - qb, dim=-1)
        return ab_dist * self.alpha + (1 - self.alpha) * qa_qb_dist

    def lift(self, x, nsamples: int = 1, **kwargs):
        """Lift a point cloud ``x = (coords, values, mask)`` to embedded group-element pairs.

        ``coords (*, n, point_dim)``, ``values (*, n, c)``, ``mask (*, n)``.  Returns
        ``(abq_pairs, expanded_values, expanded_mask)`` with shapes
        ``(*, N, N, lie_dim + 2 q_dim)``, ``(*, N, c)``, ``(*, N)`` where
        ``N = n * nsamples``.  ``abq_pairs[..., i, j, :]`` is
        ``[log(exp(-a_j) exp(a_i)), q_i, q_j]`` (the ``q`` parts only when ``q_dim > 0``).
        Values and mask are repeated so that the ``nsamples`` copies of a point are
        consecutive, matching :meth:`lifted_elems`.
        """
        p, v, m = _check_lift_input(self, x)
        expanded_a, expanded_q = self.lifted_elems(p, nsamples, **kwargs)
        expanded_v, expanded_mask = self.expand_like(v, m, expanded_a)
        paired_a = self.elems2pairs(expanded_a)
        if expanded_q is None:
            return paired_a, expanded_v, expanded_mask
        qd = expanded_q.shape[-1]
        q_in = expanded_q.unsqueeze(-2).expand(*paired_a.shape[:-1], qd)  # q of the first index i
        q_out = expanded_q.unsqueeze(-3).expand(*paired_a.shape[:-1], qd)  # q of the second index j
        return torch.cat([paired_a, q_in, q_out], dim=-1), expanded_v, expanded_mask

    def expand_like(self, v: torch.Tensor, m: torch.Tensor, a: torch.Tensor):
        """Repeat values ``v (*, n, c)`` and mask ``m (*, n)`` to the ``N = n * nsamples``
        lifted elements ``a (*, N, d)``: returns ``(v (*, N, c), m (*, N))``."""
        n = m.shape[-1]
        nsamples = a.shape[-2] // n if n else 1
        lead = tuple(a.shape[:-1])
        expanded_v = v.unsqueeze(-2).repeat((1,) * (v.dim() - 1) + (nsamples, 1)).reshape(*lead, v.shape[-1])
        expanded_m = m.unsqueeze(-1).repeat((1,) * m.dim() + (nsamples,)).reshape(*lead)
        return expanded_v, expanded_m

    def elems2pairs(self, a: torch.Tensor) -> torch.Tensor:
        """All pairs ``out[..., i, j, :] = log(exp(-a_j) exp(a_i))`` of ``a (*, n, lie_dim)``.

        Returns ``(*, n, n, lie_dim)``.
        """
        _check_elems(self, a, "elems2pairs")
        vinv = self.exp(-a.unsqueeze(-3))  # (*, 1, n, r, r): index j
        u = self.exp(a.unsqueeze(-2))  # (*, n, 1, r, r): index i
        return self.log(vinv @ u)

    def BCH(self, a: torch.Tensor, b: torch.Tensor, order: int = 2) -> torch.Tensor:
        """Baker-Campbell-Hausdorff series for ``log(exp(a) exp(b))`` truncated at ``order`` (1-4)."""
        if order not in (1, 2, 3, 4):
            raise ValueError(f"{self}.BCH: `order` must be 1, 2, 3 or 4, got {order!r}")
        z = a + b
        if order == 1:
            return z
        ab = self.bracket(a, b)
        z = z + 0.5 * ab
        if order == 2:
            return z
        aab = self.bracket(a, ab)
        bba = self.bracket(b, -ab)
        z = z + (1 / 12) * (aab + bba)
        if order == 3:
            return z
        baab = self.bracket(b, aab)
        return z - (1 / 24) * baab

    def bracket(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Lie bracket ``[A, B] = AB - BA`` of coefficient vectors, returned as coefficients."""
        A = self.components2matrix(a)
        B = self.components2matrix(b)
        return self.matrix2components(A @ B - B @ A)

    def components2matrix(self, a: torch.Tensor) -> torch.Tensor:
        """Algebra coefficients ``(*, lie_dim)`` -> algebra matrix ``(*, rep_dim, rep_dim)``."""
        raise NotImplementedError(f"{self}.components2matrix is not implemented")

    def matrix2components(self, A: torch.Tensor) -> torch.Tensor:
        """Algebra matrix ``(*, rep_dim, rep_dim)`` -> coefficients ``(*, lie_dim)``."""
        raise NotImplementedError(f"{self}.matrix2components is not implemented")

    def __str__(self):
        return f"{self.__class__}({self.alpha})" if self.alpha != 0.2 else f"{self.__class__}"

    def __repr__(self):
        return str(self)


# ----------------------------------------------------------------------------------------------
# T(k) and the trivial group
# ----------------------------------------------------------------------------------------------


class T(LieGroup):
    """Translation group ``T(k)`` acting on ``R^k``.

    The lift of a point is the point itself (``a = x``, no orbit identifier), pairs are
    differences ``a_i - a_j``, and the (inherited) distance is ``alpha * |a_i - a_j|``
    (``alpha = 0.2``: ``T`` takes no ``alpha`` argument, as in the original).

    ``exp`` / ``log`` (not in the original, which left them unimplemented) use the
    homogeneous ``(k + 1) x (k + 1)`` representation ``[[I, a], [0, 1]]``; accordingly
    ``rep_dim`` is ``k`` as in the original (it is the dimension of the points), while
    the matrices are ``(k + 1) x (k + 1)``.
    """

    def __init__(self, k: int):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"T: `k` must be a positive int, got {k!r}")
        super().__init__()
        self.q_dim = 0
        self.rep_dim = k
        self.lie_dim = k

    def lifted_elems(self, xyz: torch.Tensor, nsamples: int = 1, **kwargs):
        _check_points(self, xyz, "xyz", "lifted_elems")
        _check_single_lift(self, nsamples, "lifted_elems")
        return xyz, None

    def elems2pairs(self, a: torch.Tensor) -> torch.Tensor:
        _check_elems(self, a, "elems2pairs")
        return a.unsqueeze(-2) - a.unsqueeze(-3)

    def exp(self, a: torch.Tensor) -> torch.Tensor:
        k = self.lie_dim
        _check_algebra(self, a, "exp", k)
        lead = a.shape[:-1]
        eye = torch.eye(k, device=a.device, dtype=a.dtype).expand(*lead, k, k)
        top = torch.cat([eye, a.unsqueeze(-1)], dim=-1)  # [I | a]
        bottom = a.new_zeros(k + 1)
        bottom[k] = 1
        return torch.cat([top, bottom.expand(*lead, 1, k + 1)], dim=-2)

    def log(self, u: torch.Tensor) -> torch.Tensor:
        _check_matrices(self, u, "log", self.lie_dim + 1)
        return u[..., : self.lie_dim, self.lie_dim]

    def components2matrix(self, a: torch.Tensor) -> torch.Tensor:
        k = self.lie_dim
        _check_algebra(self, a, "components2matrix", k)
        A = a.new_zeros(*a.shape[:-1], k + 1, k + 1)
        A[..., :k, k] = a
        return A

    def matrix2components(self, A: torch.Tensor) -> torch.Tensor:
        _check_matrices(self, A, "matrix2components", self.lie_dim + 1, "A")
        return A[..., : self.lie_dim, self.lie_dim]


class Trivial(LieGroup):
    """The trivial group acting on ``R^dim``: no group part, the orbit identifier is the point.

    ``lift`` returns ``([p_i, p_j] (*, n, n, 2 dim), values, mask)`` untouched (as the
    original, without repeating for ``nsamples``; only ``nsamples == 1`` is accepted) and
    the inherited distance is ``(1 - alpha) * |p_i - p_j|``.
    """

    lie_dim = 0

    def __init__(self, dim: int = 2):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"Trivial: `dim` must be a positive int, got {dim!r}")
        super().__init__()
        self.q_dim = dim
        self.rep_dim = dim

    def lift(self, x, nsamples: int = 1, **kwargs):
        p, v, m = _check_lift_input(self, x)
        _check_single_lift(self, nsamples, "lift")
        n, d = p.shape[-2], p.shape[-1]
        qa = p.unsqueeze(-2).expand(*p.shape[:-2], n, n, d)
        qb = p.unsqueeze(-3).expand(*p.shape[:-2], n, n, d)
        return torch.cat([qa, qb], dim=-1), v, m

    def lifted_elems(self, pt: torch.Tensor, nsamples: int = 1, **kwargs):
        """Extension (the original has none): ``a`` is empty ``(*, n, 0)`` and ``q = pt``."""
        _check_points(self, pt, "pt", "lifted_elems")
        _check_single_lift(self, nsamples, "lifted_elems")
        return pt.new_zeros(*pt.shape[:-1], 0), pt

    def elems2pairs(self, a: torch.Tensor) -> torch.Tensor:
        _check_elems(self, a, "elems2pairs")
        n = a.shape[-2]
        return a.new_zeros(*a.shape[:-2], n, n, 0)

    def exp(self, a: torch.Tensor) -> torch.Tensor:
        """Extension: the identity ``(*, dim, dim)`` for every (empty) ``a (*, 0)``."""
        d = self.rep_dim
        _check_algebra(self, a, "exp", 0)
        return torch.eye(d, device=a.device, dtype=a.dtype).expand(*a.shape[:-1], d, d).clone()

    def log(self, u: torch.Tensor) -> torch.Tensor:
        _check_matrices(self, u, "log", self.rep_dim)
        return u.new_zeros(*u.shape[:-2], 0)

    def components2matrix(self, a: torch.Tensor) -> torch.Tensor:
        d = self.rep_dim
        _check_algebra(self, a, "components2matrix", 0)
        return a.new_zeros(*a.shape[:-1], d, d)

    def matrix2components(self, A: torch.Tensor) -> torch.Tensor:
        _check_matrices(self, A, "matrix2components", self.rep_dim, "A")
        return A.new_zeros(*A.shape[:-2], 0)


# ----------------------------------------------------------------------------------------------
# scalar helpers with Taylor expansions near 0
# ----------------------------------------------------------------------------------------------

#: Below this |x| the helpers switch to their Taylor polynomials (the original's ``thresh``).
TAYLOR_THRESHOLD = 7e-2
thresh = TAYLOR_THRESHOLD  # the original's name for it


def _small(x: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the entries that use the Taylor branch."""
    return x.detach().abs() < TAYLOR_THRESHOLD


def _away_from_zero(x: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
    """``x`` where it is not small, 1 elsewhere: the closed-form branch is evaluated on this
    so that the branch that is *not* selected never sees 0 (its NaN / inf would otherwise
    leak into the gradient through ``torch.where``)."""
    return torch.where(small, torch.ones_like(x), x)


def _same_value(exact: torch.Tensor, smooth: torch.Tensor) -> torch.Tensor:
    """Forward value of ``exact`` with the gradient of ``smooth`` (which must be equal up to
    rounding).  ``smooth + (exact - smooth)`` reproduces ``exact`` bit for bit because the
    two are within a factor 2 of each other (Sterbenz), so the subtraction and the addition
    are exact."""
    return smooth + (exact - smooth).detach()


def _sinc(x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    small = _small(x)
    xs = _away_from_zero(x, small)
    return torch.where(small, 1 - x2 / 6 * (1 - x2 / 20 * (1 - x2 / 42)), xs.sin() / xs)


def _sincc(x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    small = _small(x)
    xs = _away_from_zero(x, small)
    return torch.where(small, 1 / 6 * (1 - x2 / 20 * (1 - x2 / 42 * (1 - x2 / 72))), (xs - xs.sin()) / xs**3)


def _cosc(x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    small = _small(x)
    xs = _away_from_zero(x, small)
    return torch.where(small, 1 / 2 * (1 - x2 / 12 * (1 - x2 / 30 * (1 - x2 / 56))), (1 - xs.cos()) / xs**2)


def _coscc(x: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    small = _small(x)
    xs = _away_from_zero(x, small)
    taylor = 1 / 12 * (1 + x2 / 60 * (1 + x2 / 42 * (1 + x2 / 40)))
    costerm = (2 * (1 - xs.cos())).clamp(min=1e-6)
    full = (1 - xs * xs.sin() / costerm) / xs**2
    return torch.where(small, taylor, full)


def _sinc_inv(x: torch.Tensor, x2: torch.Tensor, x4: torch.Tensor, small: Optional[torch.Tensor] = None) -> torch.Tensor:
    small = _small(x) if small is None else small
    xs = _away_from_zero(x, small)
    return torch.where(small, 1 + (1 / 6) * x2 + (7 / 360) * x4, xs / xs.sin())


def sinc(x: torch.Tensor) -> torch.Tensor:
    """``sin(x) / x``; Taylor polynomial (to x^6) for ``|x| < 7e-2``."""
    return _sinc(x, x * x)


def sincc(x: torch.Tensor) -> torch.Tensor:
    """``(x - sin(x)) / x^3`` (= ``(1 - sinc(x)) / x^2``); Taylor polynomial for ``|x| < 7e-2``."""
    return _sincc(x, x * x)


def cosc(x: torch.Tensor) -> torch.Tensor:
    """``(1 - cos(x)) / x^2``; Taylor polynomial for ``|x| < 7e-2``."""
    return _cosc(x, x * x)


def coscc(x: torch.Tensor) -> torch.Tensor:
    """``(1 - x sin(x) / (2 (1 - cos(x)))) / x^2``, the ``K^2`` coefficient of the inverse
    SE(3) ``V`` matrix (the denominator clamped at ``1e-6``); Taylor polynomial for
    ``|x| < 7e-2``."""
    return _coscc(x, x * x)


def sinc_inv(x: torch.Tensor) -> torch.Tensor:
    """``x / sin(x)``; the polynomial ``1 + x^2/6 + 7 x^4/360`` for ``|x| < 7e-2``."""
    return _sinc_inv(x, x**2, x**4)


def _norm_and_sq(w: torch.Tensor):
    """``theta = |w|`` over the last dim and ``theta * theta`` carrying the (smooth everywhere,
    also at ``w = 0``) gradient of ``sum(w**2)``; both shaped ``(*, 1, 1)``."""
    sq = (w * w).sum(dim=-1)
    theta = norm(w, dim=-1)
    theta2 = _same_value(theta * theta, sq)
    return theta[..., None, None], theta2[..., None, None]


# ----------------------------------------------------------------------------------------------
# groups acting on R^2
# ----------------------------------------------------------------------------------------------


class SO2(LieGroup):
    """Rotations of the plane.  ``a = [theta]``, ``exp(a) = [[cos, -sin], [sin, cos]]``.

    The lift of a point ``p`` is its polar angle with orbit identifier ``q = |p|``, so that
    ``q * exp(a) @ [1, 0] = p``.  :meth:`distance` is
    ``alpha * |theta| + (1 - alpha) * |r_u - r_v| / (r_u + r_v + 1e-3)``.
    """

    lie_dim = 1
    rep_dim = 2
    q_dim = 1

    def exp(self, a: torch.Tensor) -> torch.Tensor:
        _check_algebra(self, a, "exp", 1)
        t = a[..., 0]
        c, s = t.cos(), t.sin()
        return torch.stack([c, -s, s, c], dim=-1).reshape(*a.shape[:-1], 2, 2)

    def log(self, R: torch.Tensor) -> torch.Tensor:
        _check_matrices(self, R, "log", 2, "R")
        return torch.atan2(R[..., 1, 0] - R[..., 0, 1], R[..., 0, 0] + R[..., 1, 1])[..., None]

    def components2matrix(self, a: torch.Tensor) -> torch.Tensor:
        _check_algebra(self, a, "components2matrix", 1)
        t = a[..., 0]
        z = torch.zeros_like(t)
        return torch.stack([z, -t, t, z], dim=-1).reshape(*a.shape[:-1], 2, 2)

    def matrix2components(self, A: torch.Tensor) -> torch.Tensor:
        _check_matrices(self, A, "matrix2components", 2, "A")
        return ((A[..., 1, 0] - A[..., 0, 1]) / 2)[..., None]

    def lifted_elems(self, pt: torch.Tensor, nsamples: int = 1, **kwargs):
        _check_points(self, pt, "pt", "lifted_elems")
        _check_single_lift(self, nsamples, "lifted_elems")
        r = norm(pt, dim=-1).unsqueeze(-1)
        theta = torch.atan2(pt[..., 1], pt[..., 0]).unsqueeze(-1)
        return theta, r

    def distance(self, abq_pairs: torch.Tensor) -> torch.Tensor:
        _check_pairs(self, abq_pairs)
        angle = abq_pairs[..., 0]
        ra = abq_pairs[..., 1]
        rb = abq_pairs[..., 2]
        return angle.abs() * self.alpha + (1 - self.alpha) * (ra - rb).abs() / (ra + rb + 1e-3)


def _so2_generator(like: torch.Tensor) -> torch.Tensor:
    return torch.tensor([[0.0, -1.0], [1.0, 0.0]], device=like.device, dtype=like.dtype)


class SE2(SO2):
    """Rigid motions of the plane, as ``3 x 3`` homogeneous matrices.

    ``a = [theta, u_x, u_y]`` (rotation first): ``exp(a) = [[R(theta), V(theta) u], [0, 1]]``
    with ``V = sinc(theta) I + theta cosc(theta) K``.  No orbit identifier (transitive
    action).  :meth:`distance` is ``alpha * |theta| + (1 - alpha) * |u|``.
    """

    lie_dim = 3
    rep_dim = 3
    q_dim = 0

    @property
    def point_dim(self) -> int:
        return 2

    def exp(self, a: torch.Tensor) -> torch.Tensor:
        _check_algebra(self, a, "exp", 3)
        theta = a[..., 0, None, None]  # (*, 1, 1)
        eye = torch.eye(2, device=a.device, dtype=a.dtype)
        K = _so2_generator(a)
        V = sinc(theta) * eye + theta * cosc(theta) * K
        R = theta.cos() * eye + theta.sin() * K
        t = (V @ a[..., 1:].unsqueeze(-1)).squeeze(-1)
        top = torch.cat([R, t.unsqueeze(-1)], dim=-1)
        bottom = a.new_tensor([0.0, 0.0, 1.0]).expand(*a.shape[:-1], 1, 3)
        return torch.cat([top, bottom], dim=-2)

    def log(self, g: torch.Tensor) -> torch.Tensor:
        _check_matrices(self, g, "log", 3, "g")
        theta = super().log(g[..., :2, :2])  # (*, 1)
        eye = torch.eye(2, device=g.device, dtype=g.dtype)
        K = _so2_generator(g)
        th = theta.unsqueeze(-1)  # (*, 1, 1)
        Vinv = (sinc(th) / (2 * cosc(th))) * eye - th * K / 2
        u = (Vinv @ g[..., :2, 2].unsqueeze(-1)).squeeze(-1)
        return torch.cat([theta, u], dim=-1)

    def components2matrix(self, a: torch.Tensor) -> torch.Tensor:
        """``[[theta K, u], [0, 0]]`` (``K = [[0, -1], [1, 0]]``), so that its matrix
        exponential is :meth:`exp` (the original put ``u`` in the bottom row and used
        the opposite sign for ``theta``; see the package docstring)."""
        _check_algebra(self, a, "components2matrix", 3)
        z = torch.zeros_like(a[..., 0])
        t, ux, uy = a[..., 0], a[..., 1], a[..., 2]
        return torch.stack([z, -t, ux, t, z, uy, z, z, z], dim=-1).reshape(*a.shape[:-1], 3, 3)

    def matrix2components(self, A: torch.Tensor) -> torch.Tensor:
        _check_matrices(self, A, "matrix2components", 3, "A")
        return torch.cat([((A[..., 1, 0] - A[..., 0, 1]) / 2)[..., None], A[..., :2, 2]], dim=-1)

    def lifted_elems(self, pt: torch.Tensor, nsamples: int = 1, **kwargs):
        """Lift to ``nsamples`` elements ``g = [[R(phi_s), p], [0, 1]]`` per point (``g 0 = p``).

        The angles are ``phi_s = -pi + 2 pi s / nsamples + 2 pi U`` (``s = 1..nsamples``) with one
        ``U ~ uniform[0, 1)`` per point, drawn exactly as the original: one
        ``torch.rand(*pt.shape[:-1], 1)`` call on the CPU generator in the default dtype, the
        angles formed in the default dtype; the rest is computed in ``pt``'s dtype and device
        (the original silently computed in the default dtype, float32).  The mask is not used.
        """
        _check_points(self, pt, "pt", "lifted_elems")
        _check_nsamples(self, nsamples, "lifted_elems")
        lead = pt.shape[:-1]
        base = torch.linspace(-math.pi, math.pi, nsamples + 1)[1:]
        offsets = torch.rand(*lead, 1)  # CPU generator, default dtype (as the original)
        thetas = (base.reshape((1,) * len(lead) + (nsamples,)) + offsets * 2 * math.pi).to(pt.device, pt.dtype)
        c, s = thetas.cos(), thetas.sin()
        z, o = torch.zeros_like(c), torch.ones_like(c)
        px = pt[..., 0, None].expand_as(c)
        py = pt[..., 1, None].expand_as(c)
        # T(p) @ R(phi) = [[R, p], [0, 1]]
        g = torch.stack([c, -s, px, s, c, py, z, z, o], dim=-1).reshape(*c.shape, 3, 3)
        a = self.log(g)
        return a.reshape(*lead[:-1], lead[-1] * nsamples, 3), None

    def distance(self, abq_pairs: torch.Tensor) -> torch.Tensor:
        _check_pairs(self, abq_pairs)
        d_theta = abq_pairs[..., 0].abs()
        d_r = norm(abq_pairs[..., 1:], dim=-1)
        return d_theta * self.alpha + (1 - self.alpha) * d_r


# ----------------------------------------------------------------------------------------------
# groups acting on R^3
# ----------------------------------------------------------------------------------------------


def cross_matrix(k: torch.Tensor) -> torch.Tensor:
    """``(*, 3) -> (*, 3, 3)``: the skew matrix ``[k]_x`` with ``[k]_x v = k x v``."""
    _check_trailing("equiops.lie", k, "k", "cross_matrix", (3,), "of vectors")
    k0, k1, k2 = k[..., 0], k[..., 1], k[..., 2]
    z = torch.zeros_like(k0)
    return torch.stack([z, -k2, k1, k2, z, -k0, -k1, k0, z], dim=-1).reshape(*k.shape[:-1], 3, 3)


def uncross_matrix(K: torch.Tensor) -> torch.Tensor:
    """``(*, 3, 3) -> (*, 3)``: the vector of the antisymmetric part of ``K`` (inverse of
    :func:`cross_matrix` on skew matrices)."""
    _check_trailing("equiops.lie", K, "K", "uncross_matrix", (3, 3), "of 3x3 matrices")
    return torch.stack(
        [(K[..., 2, 1] - K[..., 1, 2]) / 2, (K[..., 0, 2] - K[..., 2, 0]) / 2, (K[..., 1, 0] - K[..., 0, 1]) / 2],
        dim=-1,
    )


def _acos_sq_series(u: torch.Tensor) -> torch.Tensor:
    """``acos(1 - u)**2`` for small ``u >= 0`` (series to ``u^6``; exact to rounding for
    ``u < 1 - cos(7e-2)``).  Smooth at ``u = 0`` where ``acos`` itself has an infinite slope."""
    return u * (2 + u * (1 / 3 + u * (4 / 45 + u * (1 / 35 + u * (16 / 1575 + u * (8 / 2079))))))


def _so3_log(R: torch.Tensor) -> torch.Tensor:
    trR = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
    c = ((trR - 1) / 2).clamp(max=1, min=-1).unsqueeze(-1)  # cos(theta), (*, 1)
    theta = torch.acos(c.detach())  # forward value only
    small = _small(theta)
    # closed form x / sin(x) away from 0, on an argument that keeps acos off its endpoint 1
    theta_full = torch.acos(torch.where(small, torch.zeros_like(c), c))
    # Taylor branch: theta^2 and theta^4 with the values of the original (acos(c)**2, **4)
    # and the smooth gradients of the series in u = 1 - c
    sq = _acos_sq_series(1 - c)
    theta2 = _same_value(theta**2, sq)
    theta4 = _same_value(theta**4, sq * sq)
    return uncross_matrix(R) * _sinc_inv(theta_full, theta2, theta4, small)


class SO3(LieGroup):
    """Rotations of space.  ``a = w in R^3`` (``w = theta * axis``),
    ``exp(w) = I + sinc(theta) K + cosc(theta) K^2`` with ``K = [w]_x`` (Rodrigues).

    ``log`` returns the principal logarithm (angle in ``[0, pi]``) through
    ``uncross(R) * theta / sin(theta)``, ``theta = acos((tr R - 1) / 2)``: accurate except
    within ~``sqrt(eps)`` of angle ``pi``, where ``sin(theta) -> 0`` (as the original).

    The lift of a point (``nsamples`` per point) has orbit identifier ``q = |p|`` and
    ``q * exp(a) @ [1, 0, 0] = p``; see :meth:`lifted_elems`.
    """

    lie_dim = 3
    rep_dim = 3
    q_dim = 1

    def __init__(self, alpha: float = 0.2):
        super().__init__(alpha)

    def exp(self, w: torch.Tensor) -> torch.Tensor:
        _check_algebra(self, w, "exp", 3, "w")
        theta, theta2 = _norm_and_sq(w)
        K = cross_matrix(w)
        eye = torch.eye(3, device=w.device, dtype=w.dtype)
        return eye + K * _sinc(theta, theta2) + (K @ K) * _cosc(theta, theta2)

    def log(self, R: torch.Tensor) -> torch.Tensor:
        _check_matrices(self, R, "log", 3, "R")
        return _so3_log(R)

    def components2matrix(self, a: torch.Tensor) -> torch.Tensor:
        _check_algebra(self, a, "components2matrix", 3)
        return cross_matrix(a)

    def matrix2components(self, A: torch.Tensor) -> torch.Tensor:
        _check_matrices(self, A, "matrix2components", 3, "A")
        return uncross_matrix(A)

    def sample(self, *shape, device=None, dtype=None) -> torch.Tensor:
        """Haar-random rotation matrices of shape ``(*shape, 3, 3)`` (from normalised
        Gaussian quaternions).  The original defaulted to ``device='cuda', float32``; here
        the defaults are torch's current default device and dtype."""
        q = torch.randn(*shape, 4, device=device, dtype=dtype)
        return SO3.exp(self, _quaternion_to_so3(q))

    def lifted_elems(self, pt: torch.Tensor, nsamples: int = 1, **kwargs):
        """Lift ``pt (*, n, 3)`` to ``nsamples`` rotations per point.

        For each sample a rotation ``Rx`` about the x axis by angle ``phi`` and then the
        minimal rotation ``Rp`` taking ``e_x = [1, 0, 0]`` to ``p / |p|`` (about ``e_x x p``);
        ``a = log(Rp @ Rx)`` and ``q = |p|``.  So ``|p| exp(a) @ e_x = p`` (not for points on the
        negative x axis, where ``e_x x p = 0`` and ``Rp`` degenerates to the identity, as in the
        original).  ``phi`` is drawn as in the original: ``torch.randn(*pt.shape[:-1], nsamples, 4)``
        normalised to a quaternion ``q`` (pt's device and dtype) and ``phi = 2 atan2(|q_v|, q_0)``,
        i.e. the angle of a Haar-random rotation (density ``~ sin^2(phi / 2)`` on ``[0, 2 pi]``,
        not uniform).  Returns ``a (*, n * nsamples, 3)`` and ``q (*, n * nsamples, 1)``.
        """
        _check_points(self, pt, "pt", "lifted_elems")
        _check_nsamples(self, nsamples, "lifted_elems")
        device, dtype = pt.device, pt.dtype
        lead = pt.shape[:-1]
        q = torch.randn(*lead, nsamples, 4, device=device, dtype=dtype)
        q = q / norm(q, dim=-1).unsqueeze(-1)
        phi = 2 * torch.atan2(norm(q[..., 1:], dim=-1), q[..., 0]).unsqueeze(-1)  # (*, n, ns, 1)
        ex = torch.zeros(*lead, nsamples, 3, device=device, dtype=dtype)
        ex[..., 0] = 1
        Rx = SO3.exp(self, ex * phi)

        r = norm(pt, dim=-1).unsqueeze(-1)  # (*, n, 1)
        p_on_sphere = pt / r.clamp(min=1e-5)
        w = torch.cross(ex, p_on_sphere[..., None, :].expand(*ex.shape), dim=-1)  # sin(angle) * axis
        sin = norm(w, dim=-1)
        cos = p_on_sphere[..., None, 0]
        angle = torch.atan2(sin, cos).unsqueeze(-1)
        Rp = SO3.exp(self, w * sinc_inv(angle))

        A = SO3.log(self, Rp @ Rx)
        qs = r[..., None, :].expand(*r.shape[:-1], nsamples, 1)
        flat_q = qs.reshape(*lead[:-1], lead[-1] * nsamples, 1)
        flat_a = A.reshape(*lead[:-1], lead[-1] * nsamples, 3)
        return flat_a, flat_q


def _quaternion_to_so3(q: torch.Tensor) -> torch.Tensor:
    """Unnormalised quaternions ``(*, 4)`` (real part first) -> axis-angle vectors ``(*, 3)``
    of the rotations they represent, angle in ``[0, 2 pi]`` (the original's formula
    ``2 sinc_inv(theta/2) q_v`` with ``theta/2 = atan2(|q_v|, q_0)``)."""
    q = q / norm(q, dim=-1).unsqueeze(-1)
    half = torch.atan2(norm(q[..., 1:], dim=-1), q[..., 0]).unsqueeze(-1)
    return 2 * sinc_inv(half) * q[..., 1:]


class SE3(SO3):
    """Rigid motions of space as ``4 x 4`` homogeneous matrices.

    ``a = [w, u]`` (rotation first, then translation):
    ``exp(a) = [[R(w), V(w) u], [0, 1]]`` with ``V = I + cosc(theta) K + sincc(theta) K^2``;
    ``log`` inverts it with ``V^-1 = I - K / 2 + coscc(theta) K^2``.  ``distance`` is
    ``alpha * |w| + (1 - alpha) * |u|``.  ``per_point=False`` shares the sampled
    rotations between all the points of a cloud in :meth:`lifted_elems`.
    """

    lie_dim = 6
    rep_dim = 4
    q_dim = 0

    def __init__(self, alpha: float = 0.2, per_point: bool = True):
        super().__init__(alpha)
        self.per_point = per_point

    @property
    def point_dim(self) -> int:
        return 3

    def exp(self, w: torch.Tensor) -> torch.Tensor:
        _check_algebra(self, w, "exp", 6, "w")
        wr = w[..., :3]
        theta, theta2 = _norm_and_sq(wr)
        K = cross_matrix(wr)
        R = super().exp(wr)
        eye = torch.eye(3, device=w.device, dtype=w.dtype)
        V = eye + _cosc(theta, theta2) * K + _sincc(theta, theta2) * (K @ K)
        t = (V @ w[..., 3:].unsqueeze(-1)).squeeze(-1)
        top = torch.cat([R, t.unsqueeze(-1)], dim=-1)
        bottom = w.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(*w.shape[:-1], 1, 4)
        return torch.cat([top, bottom], dim=-2)

    def log(self, U: torch.Tensor) -> torch.Tensor:
        _check_matrices(self, U, "log", 4, "U")
        w = super().log(U[..., :3, :3])
        eye = torch.eye(3, device=w.device, dtype=w.dtype)
        K = cross_matrix(w)
        theta, theta2 = _norm_and_sq(w)
        Vinv = eye - K / 2 + _coscc(theta, theta2) * (K @ K)
        u = (Vinv @ U[..., :3, 3].unsqueeze(-1)).squeeze(-1)
        return torch.cat([w, u], dim=-1)

    def components2matrix(self, a: torch.Tensor) -> torch.Tensor:
        _check_algebra(self, a, "components2matrix", 6)
        top = torch.cat([cross_matrix(a[..., :3]), a[..., 3:].unsqueeze(-1)], dim=-1)
        return torch.cat([top, torch.zeros_like(top[..., :1, :])], dim=-2)

    def matrix2components(self, A: torch.Tensor) -> torch.Tensor:
        _check_matrices(self, A, "matrix2components", 4, "A")
        return torch.cat([uncross_matrix(A[..., :3, :3]), A[..., :3, 3]], dim=-1)

    def sample(self, *shape, device=None, dtype=None) -> torch.Tensor:
        raise NotImplementedError("SE3.sample: the translations have no Haar probability measure; use SO3().sample")

    def lifted_elems(self, pt: torch.Tensor, nsamples: int = 1, **kwargs):
        """Lift ``pt (*, n, 3)`` to ``g = [[R_s, p], [0, 1]]`` (``g 0 = p``), ``nsamples`` random
        rotations ``R_s`` per point.

        ``R_s`` are Haar-random, drawn as the original: ``torch.randn(*pt.shape[:-2], n, nsamples, 4)``
        (``(*, 1, nsamples, 4)`` with ``per_point=False``) on pt's device and dtype, normalised
        quaternions mapped to axis-angle ``2 sinc_inv(h) q_v`` with ``h = atan2(|q_v|, q_0)``.
        Returns ``a = log(g)`` of shape ``(*, n * nsamples, 6)`` and ``None``.
        """
        _check_points(self, pt, "pt", "lifted_elems")
        _check_nsamples(self, nsamples, "lifted_elems")
        lead = pt.shape[:-2]
        n = pt.shape[-2]
        q = torch.randn(*lead, n if self.per_point else 1, nsamples, 4, device=pt.device, dtype=pt.dtype)
        so3_elem = _quaternion_to_so3(q)
        R = SO3.exp(self, so3_elem)  # (*, n or 1, ns, 3, 3)
        R = R.expand(*lead, n, nsamples, 3, 3)
        t = pt[..., :, None, :].expand(*lead, n, nsamples, 3)
        top = torch.cat([R, t.unsqueeze(-1)], dim=-1)
        bottom = pt.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(*lead, n, nsamples, 1, 4)
        g = torch.cat([top, bottom], dim=-2)  # T(p) @ R
        a = self.log(g)
        return a.reshape(*lead, n * nsamples, 6), None

    def distance(self, abq_pairs: torch.Tensor) -> torch.Tensor:
        _check_pairs(self, abq_pairs)
        dist_rot = norm(abq_pairs[..., :3], dim=-1)
        dist_trans = norm(abq_pairs[..., 3:], dim=-1)
        return dist_rot * self.alpha + (1 - self.alpha) * dist_trans
