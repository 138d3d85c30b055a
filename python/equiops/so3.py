r"""Rotations, Wigner D matrices and real Clebsch-Gordan coefficients (e3nn 0.6 conventions).

Conventions (identical to ``e3nn.o3``; see ``shared/design/CONVENTIONS.md``):

* Cartesian order is ``(x, y, z)`` and **y is the polar axis** of the real basis.
* The real basis of the irrep ``l`` has ``2l+1`` components indexed by ``m + l`` for
  ``m = -l..l``; for ``l = 1`` it is the Cartesian basis ``(x, y, z)`` itself.
* Euler angles are Y-X-Y: ``R(alpha, beta, gamma) = R_y(alpha) @ R_x(beta) @ R_y(gamma)``
  (``gamma`` is applied first).
* ``wigner_D(l, alpha, beta, gamma) = exp(alpha X_y) @ exp(beta X_x) @ exp(gamma X_y)`` with
  ``X = so3_generators(l)``; for ``l = 1`` it equals ``angles_to_matrix``.
* ``wigner_3j(l1, l2, l3)`` is the real-basis Clebsch-Gordan tensor of shape
  ``(2l1+1, 2l2+1, 2l3+1)`` with Frobenius norm 1, invariant under
  ``D1 (x) D2 (x) D3`` for every rotation.

The module depends on ``torch`` and the standard library only.
"""

import functools
import math
from typing import Optional, Tuple

import torch

__all__ = [
    "angles_to_matrix",
    "angles_to_xyz",
    "axis_angle_to_matrix",
    "change_basis_real_to_complex",
    "compose_angles",
    "identity_angles",
    "inverse_angles",
    "matrix_to_angles",
    "matrix_x",
    "matrix_y",
    "matrix_z",
    "quaternion_to_matrix",
    "rand_angles",
    "rand_matrix",
    "so3_generators",
    "wigner_3j",
    "wigner_D",
    "xyz_to_angles",
]


def _check_l(l, name: str = "l") -> int:
    """Return ``l`` as a Python int, or raise ValueError if it is not a non-negative integer."""
    if isinstance(l, bool):
        raise ValueError(f"{name} must be a non-negative integer, got {l!r}")
    try:
        li = int(l.__index__())
    except (AttributeError, TypeError):
        raise ValueError(f"{name} must be a non-negative integer, got {l!r}") from None
    if li < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {l!r}")
    return li


def _real_dtype(dtype: Optional[torch.dtype]) -> torch.dtype:
    return torch.get_default_dtype() if dtype is None else dtype


# ---------------------------------------------------------------------------------------
# Change of basis and generators
# ---------------------------------------------------------------------------------------

# The real -> complex change of basis is a product of a Gaussian-integer "unit" and a power
# of 1/sqrt(2).  Keeping the unit exact lets wigner_3j combine terms without rounding.
def _q_unit(m: int, mu: int) -> complex:
    """Exact unit phase of ``change_basis_real_to_complex(l)[l + m, l + mu]`` without the
    global ``(-i)^l`` factor and without the ``1/sqrt(2)`` magnitude (0 if the entry is 0).

    Row ``m`` is the complex (Condon-Shortley) component, column ``mu`` the real one;
    only ``|mu| == |m|`` is non-zero.
    """
    if m == 0:
        return 1 + 0j if mu == 0 else 0j
    if abs(mu) != abs(m):
        return 0j
    sign = -1 if m % 2 else 1
    if m < 0:
        return 1 + 0j if mu == -m else -1j
    return complex(sign) if mu == m else 1j * sign


@functools.lru_cache(maxsize=None)
def _change_basis_c128(l: int) -> torch.Tensor:
    n = 2 * l + 1
    q = torch.zeros(n, n, dtype=torch.complex128)
    s = 1 / math.sqrt(2)
    glob = (-1j) ** l  # exact: a power of -i is one of 1, -i, -1, i
    glob = complex(round(glob.real), round(glob.imag))
    for m in range(-l, l + 1):
        for mu in (m, -m):
            u = _q_unit(m, mu)
            if u != 0:
                q[l + m, l + mu] = glob * u * (1.0 if m == 0 else s)
    return q


def change_basis_real_to_complex(l: int, dtype=None, device=None) -> torch.Tensor:
    r"""Unitary matrix ``Q`` of shape ``(2l+1, 2l+1)`` with ``complex = Q @ real``.

    Rows are complex (Condon-Shortley) components ``m = -l..l``, columns the real components.
    Includes e3nn's global ``(-i)^l`` factor, which makes the real Clebsch-Gordan
    coefficients real.  ``dtype`` may be a real dtype (float32 -> complex64,
    float64 -> complex128; default: the default dtype) or a complex dtype.
    """
    l = _check_l(l)
    dtype = _real_dtype(dtype)
    if not dtype.is_complex:
        dtype = {torch.float64: torch.complex128}.get(dtype, torch.complex64)
    return _change_basis_c128(l).to(dtype=dtype, device=device, copy=True)


@functools.lru_cache(maxsize=None)
def _so3_generators_f64(l: int) -> torch.Tensor:
    # Angular momentum operators in the complex basis |l, m>, m = -l..l.
    n = 2 * l + 1
    m = torch.arange(-l, l + 1, dtype=torch.float64)
    jz = torch.diag(m).to(torch.complex128)
    jp = torch.zeros(n, n, dtype=torch.complex128)
    for i in range(n - 1):
        mm = -l + i
        jp[i + 1, i] = math.sqrt(l * (l + 1) - mm * (mm + 1))
    jm = jp.T
    jx = (jp + jm) / 2
    jy = (jp - jm) / 2j
    # e3nn's real basis has the polar axis along y; with its change of basis the Cartesian
    # generators correspond to (J_y, -J_z, -J_x) of the complex basis (checked against
    # e3nn.o3.so3_generators).  Generator = -i J, brought to the real basis by Q^dagger . Q.
    q = _change_basis_c128(l)
    out = []
    for j in (jy, -jz, -jx):
        x = q.conj().T @ (-1j * j) @ q
        assert x.imag.abs().max().item() < 1e-12
        out.append(x.real)
    x = torch.stack(out)
    # Clean rounding noise: the generators are antisymmetric with exact structural zeros.
    x = torch.where(x.abs() < 1e-13, torch.zeros_like(x), x)
    return x


def so3_generators(l: int, dtype=None, device=None) -> torch.Tensor:
    r"""Real generators of SO(3) in the irrep ``l``, shape ``(3, 2l+1, 2l+1)``.

    ``X[0], X[1], X[2]`` generate rotations about ``x``, ``y``, ``z``:
    ``matrix_exp(t * X[i])`` is the Wigner D matrix of the rotation by ``t`` about axis
    ``i``.  For ``l = 1``, ``matrix_exp(t * X[0]) == matrix_x(t)``.
    """
    l = _check_l(l)
    return _so3_generators_f64(l).to(dtype=_real_dtype(dtype), device=device, copy=True)


@functools.lru_cache(maxsize=None)
def _x_from_y_f64(l: int) -> torch.Tensor:
    # P = R_z(-pi/2) maps the y axis onto the x axis, so R_x(b) = P R_y(b) P^T and
    # D(R_x(b)) = D(P) D(R_y(b)) D(P)^T.  D(P) is computed once per l in float64.
    x = _so3_generators_f64(l)
    p = torch.linalg.matrix_exp(-math.pi / 2 * x[2])
    # Entries of D(P) that vanish exactly come out as ~1e-17: clean them.
    return torch.where(p.abs() < 1e-14, torch.zeros_like(p), p)


def _rot_y(l: int, angle: torch.Tensor) -> torch.Tensor:
    """``exp(angle * X_y)`` for irrep ``l``, shape ``angle.shape + (2l+1, 2l+1)``.

    The polar axis is y, so the rotation only mixes the real components ``m`` and ``-m``:
    ``D[l+m, l+m] = cos(m angle)`` and ``D[l+m, l-m] = -sin(m angle)``.
    """
    m = torch.arange(-l, l + 1, dtype=angle.dtype, device=angle.device)
    t = angle[..., None] * m
    c = torch.cos(t)
    s = torch.sin(t)
    # diag_embed(-s).flip(-1) puts -s[i] at column 2l - i (the anti-diagonal); at the
    # centre m = 0 both contributions add up to cos(0) + sin(0) = 1.
    return torch.diag_embed(c) + torch.diag_embed(-s).flip(-1)


def _as_float_tensors(*xs):
    """Turn angles (tensors or numbers) into floating tensors of a common dtype and device.

    The dtype is promoted over the floating tensor arguments (plain numbers and integer
    tensors do not take part, as in torch's scalar promotion); without any it is the default
    dtype.  Plain numbers follow the device of the tensor arguments (a non-CPU device wins).
    """
    device = None
    dtype = None
    for x in xs:
        if isinstance(x, torch.Tensor):
            if device is None or x.device.type != "cpu":
                device = x.device
            if x.is_floating_point():
                dtype = x.dtype if dtype is None else torch.promote_types(dtype, x.dtype)
    if dtype is None:
        dtype = torch.get_default_dtype()
    return [torch.as_tensor(x, dtype=dtype, device=device) for x in xs]


def wigner_D(l: int, alpha, beta, gamma) -> torch.Tensor:
    r"""Wigner D matrix of the real irrep ``l`` (parity not included).

    ``D = exp(alpha X_y) @ exp(beta X_x) @ exp(gamma X_y)`` with ``X = so3_generators(l)``.

    Args:
        l: degree, ``l >= 0``.
        alpha, beta, gamma: tensors (or numbers) broadcastable to a common shape ``S``.

    Returns:
        tensor of shape ``S + (2l+1, 2l+1)``, dtype of the (promoted) angles.
    """
    l = _check_l(l)
    alpha, beta, gamma = _as_float_tensors(alpha, beta, gamma)
    try:
        alpha, beta, gamma = torch.broadcast_tensors(alpha, beta, gamma)
    except RuntimeError:  # torch's message names tensors "a" and "b", not the angles
        raise ValueError(f"wigner_D: alpha, beta and gamma must broadcast to one shape, got {tuple(alpha.shape)}, "
                         f"{tuple(beta.shape)} and {tuple(gamma.shape)}") from None
    p = _x_from_y_f64(l).to(dtype=alpha.dtype, device=alpha.device)
    d_beta = p @ _rot_y(l, beta) @ p.T
    return _rot_y(l, alpha) @ d_beta @ _rot_y(l, gamma)


# ---------------------------------------------------------------------------------------
# Clebsch-Gordan coefficients
# ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _fact(n: int) -> int:
    return math.factorial(n)


def _racah_sum(l1: int, l2: int, l3: int, m1: int, m2: int) -> int:
    r"""Integer ``T`` with ``<l1 m1 l2 m2 | l3 m1+m2> = T * sqrt(Pi (2l3+1) / ((L+1)! M))``.

    Racah's formula has the alternating sum over k of
    ``1 / (k! (a-k)! (b-k)! (c-k)! (d+k)! (e+k)!)``.  Pairing the factorials into binomials,
    ``k!(a-k)! = a!/C(a,k)``, ``(b-k)!(d+k)! = (b+d)!/C(b+d,b-k)`` and
    ``(c-k)!(e+k)! = (c+e)!/C(c+e,c-k)``, turns it into ``T / M`` with an *integer* ``T``
    and ``M = a! (b+d)! (c+e)!``, so the sum is exact (no cancellation error).
    """
    a = l1 + l2 - l3
    b = l1 - m1
    c = l2 + m2
    d = l3 - l2 + m1
    e = l3 - l1 - m2
    t = 0
    for k in range(max(0, -d, -e), min(a, b, c) + 1):
        term = math.comb(a, k) * math.comb(b + d, b - k) * math.comb(c + e, c - k)
        t += -term if k % 2 else term
    return t


def _check_triple(l1, l2, l3) -> Tuple[int, int, int]:
    try:
        ls = tuple(_check_l(x, n) for x, n in ((l1, "l1"), (l2, "l2"), (l3, "l3")))
    except ValueError as err:
        raise ValueError(f"wigner_3j(l1={l1!r}, l2={l2!r}, l3={l3!r}): {err}") from None
    a, b, c = ls
    if not abs(a - b) <= c <= a + b:
        raise ValueError(
            f"wigner_3j(l1={l1!r}, l2={l2!r}, l3={l3!r}): the triangle condition "
            f"|l1 - l2| <= l3 <= l1 + l2 is violated"
        )
    return ls


@functools.lru_cache(maxsize=None)
def _real_targets(m1: int, m2: int, m3: int, partner_sign: int, glob: int):
    """Real entries fed by the complex triple ``m`` and its partner ``-m``.

    Returns ``((mu1, mu2, mu3, g), ...)`` with the exact integer ``g`` such that the real
    entry is ``g * <l1 m1 l2 m2 | l3 m3> * 2^(-k/2) / sqrt(2l3+1)``, where
    ``g = i^glob * sum_partners sign * u1 u2 conj(u3)`` (``u = _q_unit``) and
    ``<.. -m ..> = partner_sign * <.. m ..>``.  Cached: it only depends on small integers.
    """
    phase = (1, 1j, -1, -1j)[glob]
    partners = [((m1, m2, m3), 1)]
    if (m1, m2, m3) != (0, 0, 0):
        partners.append(((-m1, -m2, -m3), partner_sign))
    out = []
    for mu1 in sorted({m1, -m1}):
        for mu2 in sorted({m2, -m2}):
            for mu3 in sorted({m3, -m3}):
                g = 0j
                for (a1, a2, a3), sgn in partners:
                    g += sgn * _q_unit(a1, mu1) * _q_unit(a2, mu2) * _q_unit(a3, mu3).conjugate()
                g *= phase
                # Gaussian integers: exact.  The real basis makes the coefficients real.
                if g.imag != 0:
                    raise AssertionError(f"non-real Clebsch-Gordan phase {g} for m={(m1, m2, m3)}")
                if g.real != 0:
                    out.append((mu1, mu2, mu3, int(g.real)))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _wigner_3j_f64(l1: int, l2: int, l3: int) -> torch.Tensor:
    r"""Real-basis CG tensor in float64 (cached; never hand it out without copying).

    ``C[i, j, k] = sum_m Q1[m1, i] Q2[m2, j] conj(Q3[m3, k]) <l1 m1 l2 m2 | l3 m3> / sqrt(2l3+1)``
    with ``Q = change_basis_real_to_complex`` and the Condon-Shortley complex CG.  This is
    e3nn's sign convention: no extra sign is applied (checked against e3nn for all triples).

    Every real entry (i, j, k) combines the complex triple m = (m1, m2, m3) with
    |m_i| = |i - l_i| and its partner -m, whose CG differ by the exact sign
    (-1)^(l1+l2-l3).  All phases are Gaussian integers and all magnitudes are
    sqrt(integer / integer), so each entry is ``g * sqrt(num / den)`` with a small integer
    ``g``: one correctly rounded division and one square root, and exact zeros.
    """
    n1, n2, n3 = 2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1
    big_l = l1 + l2 + l3
    # M of _racah_sum (constant for the triple) times (L+1)!; the (2l3+1) of the CG
    # cancels the Frobenius normalisation 1/sqrt(2l3+1).
    denom = _fact(big_l + 1) * _fact(l1 + l2 - l3) * _fact(l1 - l2 + l3) * _fact(-l1 + l2 + l3)
    partner_sign = -1 if (l1 + l2 - l3) % 2 else 1
    glob = (l3 - l1 - l2) % 4  # global phase (-i)^(l1+l2) i^l3 = i^glob

    idx = []
    vals = []
    # One representative of each partner pair {m, -m}: m1 > 0, or m1 = 0 and m2 >= 0.
    for m1 in range(0, l1 + 1):
        for m2 in range(0 if m1 == 0 else -l2, l2 + 1):
            m3 = m1 + m2
            if abs(m3) > l3:
                continue
            t = _racah_sum(l1, l2, l3, m1, m2)
            if t == 0:
                continue
            prod = (
                _fact(l3 + m3) * _fact(l3 - m3) * _fact(l1 - m1) * _fact(l1 + m1)
                * _fact(l2 - m2) * _fact(l2 + m2)
            )
            k = (m1 != 0) + (m2 != 0) + (m3 != 0)  # number of 1/sqrt(2) factors of Q
            # |entry| = |t| sqrt(prod / (denom 2^k)); int / int is correctly rounded.
            mag = math.sqrt((t * t * prod) / (denom << k))
            sign_t = 1 if t > 0 else -1
            for mu1, mu2, mu3, g in _real_targets(m1, m2, m3, partner_sign, glob):
                idx.append((l1 + mu1, l2 + mu2, l3 + mu3))
                vals.append(g * sign_t * mag)
    out = torch.zeros(n1, n2, n3, dtype=torch.float64)
    if idx:
        i = torch.tensor(idx, dtype=torch.long)
        out[i[:, 0], i[:, 1], i[:, 2]] = torch.tensor(vals, dtype=torch.float64)
    return out


def wigner_3j(l1: int, l2: int, l3: int, dtype=None, device=None) -> torch.Tensor:
    r"""Real-basis Clebsch-Gordan tensor ``C`` of shape ``(2l1+1, 2l2+1, 2l3+1)``.

    Equal to ``e3nn.o3.wigner_3j`` (same real basis, sign and normalization): Frobenius
    norm 1 and, for every rotation, ``einsum('ijk,ia,jb,kc->abc', C, D1, D2, D3) == C``.
    Examples: ``C(0, l, l) = I / sqrt(2l+1)``, ``C(1, 1, 1) = epsilon / sqrt(6)``.

    Computed exactly (integer Racah sums; each entry is one rounded square root) in
    float64 once per triple and cached; every call returns a fresh copy cast to ``dtype``
    (default: the default dtype) on ``device``.  Call it when a module is built (e.g. into a
    buffer): inside ``torch.compile`` Dynamo ignores the cache and traces the construction.

    Raises:
        ValueError: a negative or non-integer ``l``, or ``|l1 - l2| <= l3 <= l1 + l2`` fails.
    """
    l1, l2, l3 = _check_triple(l1, l2, l3)
    return _wigner_3j_f64(l1, l2, l3).to(dtype=_real_dtype(dtype), device=device, copy=True)


# ---------------------------------------------------------------------------------------
# Rotation matrices and Euler angles (Y-X-Y)
# ---------------------------------------------------------------------------------------

def _rot(angle, i: int, j: int) -> torch.Tensor:
    (angle,) = _as_float_tensors(angle)
    c = torch.cos(angle)
    s = torch.sin(angle)
    o = torch.ones_like(angle)
    z = torch.zeros_like(angle)
    rows = [[o, z, z], [z, o, z], [z, z, o]]
    rows[i][i] = c
    rows[j][j] = c
    rows[i][j] = -s
    rows[j][i] = s
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def matrix_x(angle) -> torch.Tensor:
    """Rotation by ``angle`` about the x axis, shape ``angle.shape + (3, 3)``."""
    return _rot(angle, 1, 2)


def matrix_y(angle) -> torch.Tensor:
    """Rotation by ``angle`` about the y axis, shape ``angle.shape + (3, 3)``."""
    return _rot(angle, 2, 0)


def matrix_z(angle) -> torch.Tensor:
    """Rotation by ``angle`` about the z axis, shape ``angle.shape + (3, 3)``."""
    return _rot(angle, 0, 1)


def angles_to_matrix(alpha, beta, gamma) -> torch.Tensor:
    """``R_y(alpha) @ R_x(beta) @ R_y(gamma)``, shape ``broadcast(alpha, beta, gamma) + (3, 3)``."""
    alpha, beta, gamma = _as_float_tensors(alpha, beta, gamma)
    alpha, beta, gamma = torch.broadcast_tensors(alpha, beta, gamma)
    return matrix_y(alpha) @ matrix_x(beta) @ matrix_y(gamma)


def angles_to_xyz(alpha, beta) -> torch.Tensor:
    """Unit vector ``R_y(alpha) R_x(beta) e_y``: ``(sin b sin a, cos b, sin b cos a)``, shape ``S + (3,)``."""
    alpha, beta = _as_float_tensors(alpha, beta)
    alpha, beta = torch.broadcast_tensors(alpha, beta)
    x = torch.sin(beta) * torch.sin(alpha)
    y = torch.cos(beta)
    z = torch.sin(beta) * torch.cos(alpha)
    return torch.stack([x, y, z], dim=-1)


def xyz_to_angles(xyz: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inverse of ``angles_to_xyz`` (the input need not be normalized): ``(alpha, beta)``,
    ``beta = acos(y / |r|)`` in ``[0, pi]``, ``alpha = atan2(x, z)`` in ``(-pi, pi]``."""
    xyz = torch.nn.functional.normalize(xyz, p=2.0, dim=-1)
    xyz = xyz.clamp(-1, 1)
    beta = torch.acos(xyz[..., 1])
    alpha = torch.atan2(xyz[..., 0], xyz[..., 2])
    return alpha, beta


def matrix_to_angles(R: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Euler angles ``(alpha, beta, gamma)`` of a proper rotation ``R`` of shape ``S + (3, 3)``.

    ``angles_to_matrix(*matrix_to_angles(R)) == R``.  ``R`` must have ``det(R) = +1``
    (no check is made, to avoid a device synchronisation).
    """
    # The image of the polar axis fixes (alpha, beta); what remains is a rotation about y.
    alpha, beta = xyz_to_angles(R[..., :, 1])
    r0 = angles_to_matrix(alpha, beta, torch.zeros_like(alpha))
    rest = r0.transpose(-1, -2) @ R
    gamma = torch.atan2(rest[..., 0, 2], rest[..., 0, 0])
    return alpha, beta, gamma


def _factory_kwargs(dtype, device):
    return dict(dtype=_real_dtype(dtype), device=device)


def rand_angles(*shape, requires_grad: bool = False, dtype=None, device=None):
    """Euler angles of uniformly (Haar) distributed random rotations, each of shape ``shape``.

    Draws from torch's global RNG exactly like e3nn (same numbers for the same seed).
    """
    kw = _factory_kwargs(dtype, device)
    alpha, gamma = 2 * math.pi * torch.rand(2, *shape, **kw)
    beta = torch.rand(shape, **kw).mul(2).sub(1).acos()
    alpha = alpha.detach().requires_grad_(requires_grad)
    beta = beta.detach().requires_grad_(requires_grad)
    gamma = gamma.detach().requires_grad_(requires_grad)
    return alpha, beta, gamma


def rand_matrix(*shape, requires_grad: bool = False, dtype=None, device=None) -> torch.Tensor:
    """Uniformly (Haar) distributed rotation matrices, shape ``shape + (3, 3)``, ``det = +1``."""
    r = angles_to_matrix(*rand_angles(*shape, dtype=dtype, device=device))
    return r.detach().requires_grad_(requires_grad)


def identity_angles(*shape, requires_grad: bool = False, dtype=None, device=None):
    """Euler angles ``(0, 0, 0)`` of the identity, each of shape ``shape``."""
    kw = _factory_kwargs(dtype, device)
    return tuple(torch.zeros(shape, **kw).requires_grad_(requires_grad) for _ in range(3))


def inverse_angles(a, b, c):
    """Angles of the inverse rotation: ``(-c, -b, -a)``."""
    return -c, -b, -a


def compose_angles(a1, b1, c1, a2, b2, c2):
    """Angles of ``angles_to_matrix(a1, b1, c1) @ angles_to_matrix(a2, b2, c2)``."""
    return matrix_to_angles(angles_to_matrix(a1, b1, c1) @ angles_to_matrix(a2, b2, c2))


def axis_angle_to_matrix(axis, angle) -> torch.Tensor:
    """Rotation by ``angle`` about ``axis`` (normalized here; Rodrigues' formula).

    ``axis``: shape ``S1 + (3,)``; ``angle``: shape ``S2``; result ``broadcast(S1, S2) + (3, 3)``.
    """
    axis, angle = _as_float_tensors(axis, angle)
    axis = torch.nn.functional.normalize(axis, p=2.0, dim=-1)
    shape = torch.broadcast_shapes(axis.shape[:-1], angle.shape)
    axis = axis.expand(shape + (3,))
    angle = angle.expand(shape)
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack(
        [torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1), torch.stack([-y, x, zero], -1)],
        dim=-2,
    )
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device)
    s = torch.sin(angle)[..., None, None]
    c = torch.cos(angle)[..., None, None]
    return eye + s * k + (1 - c) * (k @ k)


def quaternion_to_matrix(q) -> torch.Tensor:
    """Rotation matrix of the quaternion ``q = (w, x, y, z)`` (normalized here), shape ``S + (3, 3)``."""
    (q,) = _as_float_tensors(q)
    q = torch.nn.functional.normalize(q, p=2.0, dim=-1)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        dim=-2,
    )
