"""Spherical harmonics: values against e3nn, sphericart and an mpmath evaluation, the
C++ kernel against the plain-PyTorch reference, first and second derivatives, the
Jacobian, equivariance, special inputs, bad input, the operator contract (opcheck,
compile, export), the e3nn patch and the module."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

import equiops
from equiops.ops import spherical_harmonics as sh_ops
from equiops.reference import spherical_harmonics as sh_ref

from conftest import default_dtype, assert_close, assert_equivariant, check_compiled_matches_eager, random_o3

MAX_DEGREE = equiops.harmonics.MAX_DEGREE
NORMALIZATIONS = ("integral", "component", "norm")
CPU_BACKENDS = ("cpu", "torch")

# Degree selections, as ints, lists (repeats, any order) and irreps strings.
LS_CASES = [
    list(range(13)),
    0,
    5,
    12,
    "0e+1o+2e",
    [2, 0, 2, 7],
    "1e+2e",  # a pseudovector input (1e), as e3nn infers it
    "2x0e+3o+1x1o",
]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _o3():
    return pytest.importorskip("e3nn.o3")


def _degrees(l):
    """The degrees of each output block, in order, for any accepted ``l``."""
    if isinstance(l, int):
        return [l]
    if isinstance(l, (list, tuple)) and all(isinstance(d, int) for d in l):
        return list(l)
    return [ir.l for mul, ir in equiops.Irreps(l) for _ in range(mul)]


def _blocks(ls):
    start = 0
    for l in ls:
        yield l, slice(start, start + 2 * l + 1)
        start += 2 * l + 1


def _err_per_degree(actual, expected, ls):
    """``{block index: max |actual - expected| / max |expected|}`` over each degree's block."""
    actual, expected = actual.double(), expected.double()
    out = {}
    for q, (_, s) in enumerate(_blocks(ls)):
        scale = expected[..., s].abs().max().clamp_min(1e-300)
        out[q] = float((actual[..., s] - expected[..., s]).abs().max() / scale)
    return out


def _max_err_per_degree(actual, expected, ls):
    return max(_err_per_degree(actual, expected, ls).values())


def _rel_to_max(actual, expected):
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-300))


# ------------------------------------------------------------------- values vs e3nn
@pytest.mark.parametrize("normalize", (True, False))
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_matches_e3nn_float64(float64_default, normalization, normalize):
    o3 = _o3()
    x = torch.randn(4, 5, 3, dtype=torch.float64, generator=_gen(1)) * 1.7  # |x| != 1 matters for normalize=False
    for l in LS_CASES:
        expected = o3.spherical_harmonics(l, x, normalize, normalization)
        for backend in (None, "auto", "cpu", "torch"):
            out = equiops.spherical_harmonics(l, x, normalize, normalization, backend=backend)
            assert out.shape == expected.shape == (4, 5, sum(2 * d + 1 for d in _degrees(l)))
            assert out.dtype == torch.float64
            # 1e-12 of each degree's largest magnitude (measured: ~2e-15)
            err = _max_err_per_degree(out, expected, _degrees(l))
            assert err < 1e-12, (l, backend, err)
            torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12 * float(expected.abs().max()))


def test_matches_e3nn_float32(float64_default):
    """float32 input vs e3nn in float64 (at the same float64 input), per degree relative to
    that degree's largest magnitude, 2000 points. Measured over l = 0..12, all normalizations:
    ours <= 1.0e-6, e3nn's own float32 <= 8.5e-7, the float32 reference <= 7.5e-7. With
    normalize=True the error grows with l (the rounding of x / |x| in float32, amplified by
    the derivative ~ l), as e3nn's does."""
    o3 = _o3()
    x = torch.randn(2000, 3, dtype=torch.float64, generator=_gen(2))
    ls = list(range(13))
    for normalization in NORMALIZATIONS:
        for normalize in (True, False):
            expected = o3.spherical_harmonics(ls, x, normalize, normalization)
            with default_dtype(torch.float32):
                e3nn32 = o3.spherical_harmonics(ls, x.float(), normalize, normalization)
            ours = equiops.spherical_harmonics(ls, x.float(), normalize, normalization, backend="cpu")
            assert ours.dtype == torch.float32
            ours_err = _err_per_degree(ours, expected, ls)
            e3nn_err = _err_per_degree(e3nn32, expected, ls)
            for q in ours_err:
                assert ours_err[q] < 2e-6, (normalization, normalize, q, ours_err[q])
                # e3nn's own float32 error is the yardstick
                assert ours_err[q] <= 2 * e3nn_err[q] + 1e-7, (normalization, normalize, q, ours_err[q], e3nn_err[q])
            ref32 = equiops.spherical_harmonics(ls, x.float(), normalize, normalization, backend="torch")
            assert max(_err_per_degree(ref32, expected, ls).values()) < 2e-6


# ------------------------------------------------------------------ values vs sphericart
def test_matches_sphericart():
    """e3nn's basis is sphericart's under the axis permutation (x, y, z) -> (z, x, y):
    ours(x) == sphericart(x[:, [2, 0, 1]]) component for component (no reordering of the
    2l+1 components is needed), in the "integral" normalization; normalize=False gives
    sphericart's solid harmonics. Jacobians: sphericart's axis a' is our axis [2, 0, 1][a']."""
    sct = pytest.importorskip("sphericart.torch")
    L = 10
    ls = list(range(L + 1))
    g = _gen(3)
    x = torch.randn(50, 3, dtype=torch.float64, generator=g)
    xs = x[:, [2, 0, 1]].contiguous()

    sph = sct.SphericalHarmonics(L)
    expected = sph(xs)
    ours = equiops.spherical_harmonics(ls, x, True, "integral", backend="cpu")
    assert ours.shape == expected.shape
    assert _max_err_per_degree(ours, expected, ls) < 1e-12
    # the permutation is not a formality: the identity permutation does not match
    assert _max_err_per_degree(ours, sph(x), ls) > 1e-2

    values, grads = sph.compute_with_gradients(xs)
    ours_v, ours_jac = equiops.spherical_harmonics_with_gradients(ls, x, True, "integral", backend="cpu")
    assert _max_err_per_degree(ours_v, values, ls) < 1e-12
    assert _rel_to_max(ours_jac[:, [2, 0, 1]], grads) < 1e-12

    solid = sct.SolidHarmonics(L)(xs * 1.3)
    ours_solid = equiops.spherical_harmonics(ls, x * 1.3, False, "integral", backend="cpu")
    assert _max_err_per_degree(ours_solid, solid, ls) < 1e-12


# -------------------------------------------------------- degrees beyond e3nn's 12
def test_high_degrees_kernel_matches_reference():
    g = _gen(4)
    x = torch.randn(32, 3, dtype=torch.float64, generator=g) * 1.2
    x[3] = torch.tensor([1e-3, 2.0, -2e-3])  # near the (y) pole
    ls = list(range(MAX_DEGREE + 1))
    for normalize, normalization in ((True, "integral"), (True, "component"), (False, "norm")):
        out = equiops.spherical_harmonics(ls, x, normalize, normalization, backend="cpu")
        ref = equiops.spherical_harmonics(ls, x, normalize, normalization, backend="torch")
        assert _max_err_per_degree(out, ref, ls) < 1e-12, (normalize, normalization)
    # Jacobian at high degrees, against autograd through the reference, projected on
    # random output weights (one backward each instead of one per column)
    hl = [13, 20, MAX_DEGREE]
    xs = x[:5]
    for normalize in (True, False):
        _, jac = equiops.spherical_harmonics_with_gradients(hl, xs, normalize, "component", backend="cpu")
        xr = xs.clone().requires_grad_()
        yr = sh_ref.spherical_harmonics(hl, xr, normalize, "component")
        for seed in range(3):
            w = torch.randn(yr.shape, dtype=torch.float64, generator=_gen(100 + seed))
            (expected,) = torch.autograd.grad((yr * w).sum(), xr, retain_graph=True)
            assert _rel_to_max(torch.einsum("nac,nc->na", jac, w), expected) < 1e-12, (normalize, seed)


def _legendre_derivative_coefficients(l, m):
    """Exact coefficients ``{power: Fraction}`` of ``d^m/dt^m P_l(t)``."""
    out = {}
    for k in range(l // 2 + 1):
        p = l - 2 * k
        if p < m:
            continue
        c = Fraction((-1) ** k * math.comb(l, k) * math.comb(2 * l - 2 * k, l), 2**l)
        out[p - m] = c * (math.factorial(p) // math.factorial(p - m))
    return out


def _mp_fraction(mpmath, f):
    return mpmath.mpf(f.numerator) / f.denominator


def _mpmath_harmonics(mpmath, l, point):
    """Standard real harmonics without Condon-Shortley phase, component normalization,
    at (x', y', z') = (z, x, y), on the unit sphere: ``sqrt(2) K P_l^|m|(cos t) cos(m phi)``
    (m > 0), ``sin(|m| phi)`` (m < 0), ``K P_l^0`` (m = 0), ``K = sqrt((2l+1)(l-|m|)!/(l+|m|)!)``.
    ``P_l^m = (1 - t^2)^(m/2) d^m/dt^m P_l(t)`` from exact coefficients (mpmath.legenp agrees,
    see the test; it is too slow near the poles and fails to converge at l = 32)."""
    x, y, z = (mpmath.mpf(float(v)) for v in point)
    xp, yp, zp = z, x, y
    r = mpmath.sqrt(xp**2 + yp**2 + zp**2)
    cos_t, sin_t = zp / r, mpmath.sqrt(xp**2 + yp**2) / r
    phi = mpmath.atan2(yp, xp)
    out = []
    for m in range(-l, l + 1):
        am = abs(m)
        K = mpmath.sqrt(_mp_fraction(mpmath, Fraction((2 * l + 1) * math.factorial(l - am), math.factorial(l + am))))
        P = sin_t**am * sum(_mp_fraction(mpmath, c) * cos_t**p for p, c in _legendre_derivative_coefficients(l, am).items())
        if m > 0:
            out.append(mpmath.sqrt(2) * K * P * mpmath.cos(m * phi))
        elif m < 0:
            out.append(mpmath.sqrt(2) * K * P * mpmath.sin(am * phi))
        else:
            out.append(K * P)
    return torch.tensor([float(v) for v in out], dtype=torch.float64)


def test_high_degrees_match_mpmath():
    """Measured (float64, per point relative to the point's largest component), C++ kernel:
    l = 13: 1.7e-15, l = 16: 2.2e-15, l = 24: 3.5e-15, l = 32: 5.1e-15 (reference backend:
    <= 2.6e-15)."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    # the exact-coefficient Legendre functions against mpmath.legenp (which has the phase)
    for l, m in ((16, 0), (16, 3), (32, 5), (32, 32)):
        mine = (1 - mpmath.mpf("0.3") ** 2) ** (mpmath.mpf(m) / 2) * sum(
            _mp_fraction(mpmath, c) * mpmath.mpf("0.3") ** p for p, c in _legendre_derivative_coefficients(l, m).items()
        )
        legenp = mpmath.legenp(l, m, mpmath.mpf("0.3")) * (-1) ** m
        assert abs(mine - legenp) <= mpmath.mpf(10) ** -30 * abs(legenp)

    g = _gen(5)
    x = torch.randn(6, 3, dtype=torch.float64, generator=g)
    x[4] = torch.tensor([1e-3, 2.0, -2e-3])  # near the pole
    x[5] = torch.tensor([0.6, 0.0, -0.8])  # on the equator
    for l in (13, 16, 24, MAX_DEGREE):
        expected = torch.stack([_mpmath_harmonics(mpmath, l, p) for p in x])
        for backend in CPU_BACKENDS:
            out = equiops.spherical_harmonics(l, x, True, "component", backend=backend)
            row_err = (out - expected).abs().amax(-1) / expected.abs().amax(-1)
            assert float(row_err.max()) < 1e-13, (l, backend, row_err)
        # normalize=False: |x|^l Y(x / |x|); integral normalization: / sqrt(4 pi)
        solid = equiops.spherical_harmonics(l, x, False, "integral", backend="cpu")
        expected_solid = expected * x.norm(dim=-1, keepdim=True) ** l / math.sqrt(4 * math.pi)
        row_err = (solid - expected_solid).abs().amax(-1) / expected_solid.abs().amax(-1)
        assert float(row_err.max()) < 1e-13, (l, row_err)


# ------------------------------------------------------------------------ gradients
def test_gradcheck_and_gradgradcheck():
    g = _gen(6)
    x = torch.randn(6, 3, dtype=torch.float64, generator=g)
    for normalize in (True, False):
        for ls in ([0, 1, 2, 3], [3, 1, 3, 0, 5]):
            xx = x.clone().requires_grad_()

            def fn(v):
                return equiops.spherical_harmonics(ls, v, normalize, "component", backend="cpu")

            torch.autograd.gradcheck(fn, (xx,))
            torch.autograd.gradgradcheck(fn, (xx,))
            # the Jacobian output is differentiable (its derivative is the second derivative)
            torch.autograd.gradcheck(
                lambda v: equiops.spherical_harmonics_with_gradients(ls, v, normalize, "norm", backend="cpu"), (xx,)
            )


def _force_loss(fn, x0, w0):
    """The force-training pattern: E = sum(w * Y(x)), F = -dE/dx (create_graph),
    loss = |F|^2 + E; returns (E, F, dloss/dx, dloss/dw)."""
    x = x0.clone().requires_grad_()
    w = w0.clone().requires_grad_()
    energy = (w * fn(x)).sum()
    (forces,) = torch.autograd.grad(-energy, x, create_graph=True)
    loss = (forces**2).sum() + energy
    gx, gw = torch.autograd.grad(loss, (x, w))
    return energy.detach(), forces.detach(), gx, gw


def _assert_force_loss_close(actual, expected, what):
    # (energy, forces, dloss/dx, dloss/dw) relative to each one's largest magnitude;
    # measured <= 7e-15
    for name, a, e, bound in zip(("E", "F", "dL/dx", "dL/dw"), actual, expected, (1e-12, 1e-11, 1e-10, 1e-10)):
        err = _rel_to_max(a, e)
        assert err < bound, (what, name, err)


def test_derivatives_match_e3nn_and_reference(float64_default):
    o3 = _o3()
    g = _gen(7)
    cases = [
        (list(range(13)), True, "integral"),
        ([3, 1, 3, 0, 5], False, "component"),
        (list(range(13)), False, "norm"),
        ("0e+1o+2e", True, "norm"),
    ]
    for ls, normalize, normalization in cases:
        x0 = torch.randn(20, 3, generator=g) * 1.3
        w0 = torch.randn(sum(2 * d + 1 for d in _degrees(ls)), generator=g)
        what = (ls, normalize, normalization)
        ours = _force_loss(lambda v: equiops.spherical_harmonics(ls, v, normalize, normalization, backend="cpu"), x0, w0)
        e3nn = _force_loss(lambda v: o3.spherical_harmonics(ls, v, normalize, normalization), x0, w0)
        ref = _force_loss(lambda v: sh_ref.spherical_harmonics(_degrees(ls), v, normalize, normalization), x0, w0)
        torch_backend = _force_loss(
            lambda v: equiops.spherical_harmonics(ls, v, normalize, normalization, backend="torch"), x0, w0
        )
        _assert_force_loss_close(ours, e3nn, what + ("e3nn",))
        _assert_force_loss_close(ours, ref, what + ("reference",))
        _assert_force_loss_close(torch_backend, ours, what + ("torch backend",))


def test_high_degree_derivatives_match_reference():
    g = _gen(8)
    ls = [0, 1, 13, 20, MAX_DEGREE]
    x0 = torch.randn(4, 3, dtype=torch.float64, generator=g)
    w0 = torch.randn(sum(2 * l + 1 for l in ls), dtype=torch.float64, generator=g)
    for normalize in (True, False):
        ours = _force_loss(lambda v: equiops.spherical_harmonics(ls, v, normalize, "component", backend="cpu"), x0, w0)
        ref = _force_loss(lambda v: sh_ref.spherical_harmonics(ls, v, normalize, "component"), x0, w0)
        _assert_force_loss_close(ours, ref, (ls, normalize))


# ------------------------------------------------------------------------- Jacobian
def _autograd_jacobian(ls, x, normalize, normalization):
    """``(..., 3, K)`` from autograd through the reference."""
    xr = x.detach().clone().requires_grad_()
    values = sh_ref.spherical_harmonics(ls, xr, normalize, normalization)
    flat = values.reshape(-1, values.shape[-1])
    cols = [torch.autograd.grad(flat[:, c].sum(), xr, retain_graph=True)[0] for c in range(flat.shape[-1])]
    return torch.stack(cols, dim=-1)


def test_with_gradients_matches_autograd(dtype):
    g = _gen(9)
    x = torch.randn(2, 7, 3, dtype=torch.float64, generator=g)
    for l, normalize, normalization in (([0, 1, 2, 3, 4], True, "integral"), ("1e+2e", False, "component"), ([6, 2, 6], True, "norm")):
        ls = _degrees(l)
        expected = _autograd_jacobian(ls, x, normalize, normalization)
        module = equiops.SphericalHarmonics(l, normalize, normalization)
        for backend in CPU_BACKENDS:
            values, jac = equiops.spherical_harmonics_with_gradients(l, x.to(dtype), normalize, normalization, backend=backend)
            K = sum(2 * d + 1 for d in ls)
            assert values.shape == (2, 7, K) and jac.shape == (2, 7, 3, K)
            assert values.dtype == jac.dtype == dtype
            assert_close(values, equiops.spherical_harmonics(l, x.to(dtype), normalize, normalization, backend=backend))
            assert_close(jac, expected.to(dtype), order=1)
        m_values, m_jac = module.compute_with_gradients(x.to(dtype))
        assert_close(m_values, module(x.to(dtype)))
        assert_close(m_jac, expected.to(dtype), order=1)


def test_jacobian_derivative_matches_reference():
    """d/dx of a loss on (values, jacobian) == autograd's second derivative of the reference."""
    g = _gen(10)
    ls = [1, 0, 3, 2]
    x0 = torch.randn(9, 3, dtype=torch.float64, generator=g)
    wv = torch.randn(9, 16, dtype=torch.float64, generator=g)
    wj = torch.randn(9, 3, 16, dtype=torch.float64, generator=g)
    x = x0.clone().requires_grad_()
    values, jac = equiops.spherical_harmonics_with_gradients(ls, x, True, "integral", backend="cpu")
    (ours,) = torch.autograd.grad((values * wv).sum() + (jac * wj).sum(), x)
    xr = x0.clone().requires_grad_()
    yr = sh_ref.spherical_harmonics(ls, xr, True, "integral")
    jr = torch.stack(
        [torch.autograd.grad(yr[:, c].sum(), xr, create_graph=True)[0] for c in range(16)], dim=-1
    )
    (expected,) = torch.autograd.grad((yr * wv).sum() + (jr * wj).sum(), xr)
    assert _rel_to_max(ours, expected) < 1e-11


# ---------------------------------------------------------------------- equivariance
def test_equivariance_rotations_and_reflections():
    """Y(x R^T) == Y(x) D(R)^T for rotations and reflections; the input is a vector (1o),
    so degree l carries parity (-1)^l; a pseudovector input (1e) gives even parities."""
    g = _gen(11)
    x = torch.randn(10, 3, dtype=torch.float64, generator=g) * 1.5
    ls = list(range(13)) + [16]
    irreps_out = equiops.Irreps([(1, (l, (-1) ** l)) for l in ls])
    vector = equiops.Irreps("1o").D_from_matrix
    assert_equivariant(lambda v: equiops.spherical_harmonics(ls, v, backend="cpu"), [vector], irreps_out.D_from_matrix, [x])
    # normalize=False: solid harmonics grow as |x|^l, so compare per degree, relative
    for R in random_o3(4, seed=4):
        rotated = equiops.spherical_harmonics(ls, x @ R.T, False, backend="cpu")
        expected = equiops.spherical_harmonics(ls, x, False, backend="cpu") @ irreps_out.D_from_matrix(R).T
        assert _max_err_per_degree(rotated, expected, ls) < 1e-12
    irreps = equiops.Irreps("2x0e+3o+1o+2e")
    assert_equivariant(lambda v: equiops.spherical_harmonics(str(irreps), v, backend="cpu"), [vector], irreps.D_from_matrix, [x])
    pseudo = equiops.Irreps("1e+2e+3e")
    assert_equivariant(
        lambda v: equiops.spherical_harmonics(str(pseudo), v, backend="cpu"),
        [equiops.Irreps("1e").D_from_matrix],
        pseudo.D_from_matrix,
        [x],
    )
    # the parity matters: the wrong output parities break the check under reflections
    wrong = equiops.Irreps([(1, (l, 1)) for l in ls])
    with pytest.raises(AssertionError):
        assert_equivariant(lambda v: equiops.spherical_harmonics(ls, v), [vector], wrong.D_from_matrix, [x])


# ---------------------------------------------------------------------- special inputs
def test_zero_vector_matches_e3nn(float64_default):
    o3 = _o3()
    g = _gen(12)
    ls = list(range(13))
    K = sum(2 * l + 1 for l in ls)
    x0 = torch.randn(4, 3, generator=g)
    x0[1] = 0
    w = torch.randn(K, generator=g)
    for normalize in (True, False):
        xe = x0.clone().requires_grad_()
        ye = o3.spherical_harmonics(ls, xe, normalize, "integral")
        (ge,) = torch.autograd.grad((ye * w).sum(), xe)
        for backend in CPU_BACKENDS:
            x = x0.clone().requires_grad_()
            y = equiops.spherical_harmonics(ls, x, normalize, "integral", backend=backend)
            torch.testing.assert_close(y[1, 0].detach(), torch.tensor(1 / math.sqrt(4 * math.pi)), rtol=1e-15, atol=0)
            assert torch.equal(y[1, 1:], torch.zeros(K - 1))
            (grad,) = torch.autograd.grad((y * w).sum(), x)
            assert bool(grad.isfinite().all())
            torch.testing.assert_close(y, ye.detach(), rtol=1e-10, atol=1e-12)
            # with normalize=True the gradient at 0 is ~1/eps (1e12), as e3nn's
            torch.testing.assert_close(grad, ge, rtol=1e-10, atol=1e-10)
            values, jac = equiops.spherical_harmonics_with_gradients(ls, x0, normalize, "integral", backend=backend)
            assert bool(jac.isfinite().all())
            torch.testing.assert_close(torch.einsum("nac,c->na", jac, w), ge, rtol=1e-10, atol=1e-10)


def test_nan_row_stays_in_its_row(float64_default):
    g = _gen(13)
    x0 = torch.randn(37, 3, dtype=torch.float64, generator=g)
    x0[17, 1] = float("nan")
    ls = [0, 1, 2, 3, 6]
    others = torch.arange(37) != 17
    for normalize in (True, False):
        for backend in CPU_BACKENDS:
            x = x0.clone().requires_grad_()
            y = equiops.spherical_harmonics(ls, x, normalize, backend=backend)
            assert bool(y[others].isfinite().all())
            # normalize=True: every l >= 1 component (l = 0 is a constant); normalize=False:
            # the polynomials that involve the NaN coordinate (the kernel skips zero couplings)
            nan_row = y[17, 1:].isnan()
            assert bool(nan_row.all() if normalize else nan_row.any())
            (grad,) = torch.autograd.grad(y.sum(), x)
            assert bool(grad[others].isfinite().all()) and bool(grad[17].isnan().any())
            values, jac = equiops.spherical_harmonics_with_gradients(ls, x0, normalize, backend=backend)
            assert bool(values[others].isfinite().all()) and bool(jac[others].isfinite().all())
            assert bool(jac[17].isnan().any())
            assert torch.equal(values.isnan(), y.isnan())
            if backend == "cpu":  # the same NaN pattern as e3nn's explicit polynomials
                assert torch.equal(y.isnan(), _o3().spherical_harmonics(ls, x0, normalize).isnan())
            clean = equiops.spherical_harmonics(ls, x0[others], normalize, backend=backend)
            if backend == "cpu":  # each row on its own: bitwise independent of the other rows
                assert torch.equal(y[others].detach(), clean)
            else:
                assert_close(y[others].detach(), clean)


def test_empty_input():
    for backend in CPU_BACKENDS:
        x = torch.zeros(0, 3, dtype=torch.float64, requires_grad=True)
        y = equiops.spherical_harmonics([0, 1, 2], x, backend=backend)
        assert y.shape == (0, 9)
        (grad,) = torch.autograd.grad(y.sum(), x)
        assert grad.shape == (0, 3)
        values, jac = equiops.spherical_harmonics_with_gradients([3, 1], torch.zeros(2, 0, 3), backend=backend)
        assert values.shape == (2, 0, 10) and jac.shape == (2, 0, 3, 10)
        assert equiops.SphericalHarmonics("0e+1o", backend=backend)(torch.zeros(0, 3)).shape == (0, 4)


@pytest.mark.parametrize("half", (torch.float16, torch.bfloat16))
def test_half_types_compute_in_float32(half):
    g = _gen(14)
    x = torch.randn(2, 25, 3, generator=g).to(half)
    ls = [0, 1, 2, 5]
    y = equiops.spherical_harmonics(ls, x, backend="cpu")
    assert y.dtype == half and y.shape == (2, 25, 20)
    assert torch.equal(y, equiops.spherical_harmonics(ls, x.float(), backend="cpu").to(half))
    values, jac = equiops.spherical_harmonics_with_gradients(ls, x, backend="cpu")
    assert values.dtype == jac.dtype == half
    _, jac32 = equiops.spherical_harmonics_with_gradients(ls, x.float(), backend="cpu")
    assert torch.equal(jac, jac32.to(half))
    xg = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(equiops.spherical_harmonics(ls, xg, backend="cpu").float().sum(), xg)
    assert grad.dtype == half and bool(grad.isfinite().all())
    expected = equiops.spherical_harmonics(ls, x.double(), backend="cpu")
    rtol, atol = {torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}[half]
    torch.testing.assert_close(y.double(), expected, rtol=rtol, atol=atol * float(expected.abs().max()))


# ----------------------------------------------------------------------- bad input
def test_bad_input_errors():
    x = torch.randn(4, 3, dtype=torch.float64)
    sh = equiops.spherical_harmonics
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\), got \(4, 2\)"):
        sh(2, torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\), got \(\)"):
        sh(2, torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"x must have a floating dtype, got torch.int64"):
        sh(2, torch.ones(4, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"x must be a Tensor"):
        sh(2, [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match=rf"degrees must be in 0..{MAX_DEGREE}, got l = -1"):
        sh(-1, x)
    with pytest.raises(ValueError, match=rf"degrees must be in 0..{MAX_DEGREE}, got l = {MAX_DEGREE + 1}"):
        sh(MAX_DEGREE + 1, x)
    with pytest.raises(ValueError, match=r"degrees must be in"):
        sh([0, 1, 40], x)
    with pytest.raises(ValueError, match=r"normalization must be one of .*got 'foo'"):
        sh(2, x, normalization="foo")
    with pytest.raises(ValueError, match=r"inconsistent with the input parity"):
        sh("1e+2o", x)
    with pytest.raises(ValueError, match=r"inconsistent with the input parity"):
        equiops.SphericalHarmonics("1e+2o")
    with pytest.raises(ValueError, match=r"at least one degree"):
        sh([], x)
    with pytest.raises(ValueError, match=r"backend must be one of"):
        sh(2, x, backend="nope")
    with pytest.raises(ValueError, match=r"backend 'triton' runs on CUDA tensors"):
        sh(2, x, backend="triton")
    with pytest.raises(TypeError, match=r"l must be an int"):
        sh(True, x)
    with pytest.raises(TypeError, match=r"normalize must be a bool"):
        sh(2, x, normalize="yes")
    with pytest.raises(ValueError, match=r"normalization must be one of"):
        equiops.SphericalHarmonics(2, normalization="x")
    with pytest.raises(ValueError, match=r"backend must be one of"):
        equiops.SphericalHarmonics(2, backend="x")
    with pytest.raises(ValueError, match=r"irreps_in must be 1x1o"):
        equiops.SphericalHarmonics(2, irreps_in="2x1o")
    with pytest.raises(ValueError, match=r"x must have shape"):
        equiops.spherical_harmonics_with_gradients(2, torch.randn(3, 4))


def test_third_derivative_raises():
    x = torch.randn(4, 3, dtype=torch.float64, generator=_gen(15), requires_grad=True)
    y = equiops.spherical_harmonics([1, 2, 3], x, backend="cpu")
    (g1,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (g2,) = torch.autograd.grad((g1**2).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match=r"beyond the second order"):
        torch.autograd.grad(g2.sum(), x)
    _, jac = equiops.spherical_harmonics_with_gradients([1, 2, 3], x, backend="cpu")
    (h,) = torch.autograd.grad((jac**2).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match=r"beyond the second order"):
        torch.autograd.grad(h.sum(), x)


def test_direct_op_calls_are_checked():
    """torch.ops.equiops.spherical_harmonics* called directly fail cleanly on bad arguments."""
    ops = torch.ops.equiops
    x = torch.randn(4, 3, dtype=torch.float64)
    C = sh_ops.coupling_table(3)
    args = (True, "integral", "cpu")
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\)"):
        ops.spherical_harmonics(torch.randn(4, 2, dtype=torch.float64), C, [0, 1], *args)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\)"):
        ops.spherical_harmonics(torch.randn(2, 4, 3, dtype=torch.float64), C, [0, 1], *args)
    with pytest.raises(TypeError, match=r"x must be float32 or float64"):
        ops.spherical_harmonics(torch.ones(4, 3, dtype=torch.long), C, [0, 1], *args)
    with pytest.raises(TypeError, match=r"x must be float32 or float64"):
        ops.spherical_harmonics(torch.ones(4, 3, dtype=torch.float16), C, [0, 1], *args)
    with pytest.raises(TypeError, match=r"coupling must be float64"):
        ops.spherical_harmonics(x, C.float(), [0, 1], *args)
    with pytest.raises(ValueError, match=r"coupling must have shape \(nnz, 4\)"):
        ops.spherical_harmonics(x, C[:, :3].contiguous(), [0, 1], *args)
    with pytest.raises(ValueError, match=r"coupling must have shape \(nnz, 4\)"):
        ops.spherical_harmonics(x, C.flatten(), [0, 1], *args)
    with pytest.raises(ValueError, match=r"not a valid \(i, j, k, c\) entry"):
        ops.spherical_harmonics(x, torch.full((5, 4), 1e9, dtype=torch.float64), [0, 1], *args)
    with pytest.raises(ValueError, match=r"not a valid \(i, j, k, c\) entry"):
        ops.spherical_harmonics(x, torch.full((5, 4), float("nan"), dtype=torch.float64), [0, 1], *args)
    with pytest.raises(ValueError, match=r"out of order or couples the wrong degrees"):
        ops.spherical_harmonics(x, C.flip(0).contiguous(), [0, 1], *args)
    with pytest.raises(ValueError, match=r"ls\[1\] = 4 is outside the coupling table's degrees 0..3"):
        ops.spherical_harmonics(x, C, [0, 4], *args)
    with pytest.raises(ValueError, match=r"ls\[1\] = -1"):
        ops.spherical_harmonics(x, C, [0, -1], *args)
    with pytest.raises(ValueError, match=r"at least one degree"):
        ops.spherical_harmonics(x, C, [], *args)
    with pytest.raises(ValueError, match=r"normalization must be"):
        ops.spherical_harmonics(x, C, [1], True, "bogus", "cpu")
    with pytest.raises(ValueError, match=r"grad must have shape \(4, 4\), got \[4, 5\]"):
        ops.spherical_harmonics_backward(torch.randn(4, 5, dtype=torch.float64), x, C, [0, 1], *args)
    with pytest.raises(ValueError, match=r"grad must have shape \(4, 4\), got \[3, 4\]"):
        ops.spherical_harmonics_backward(torch.randn(3, 4, dtype=torch.float64), x, C, [0, 1], *args)
    with pytest.raises(TypeError, match=r"grad must have dtype Double like x"):
        ops.spherical_harmonics_backward(torch.randn(4, 4), x, C, [0, 1], *args)
    with pytest.raises(ValueError, match=r"grad_grad_x must have shape \(4, 3\)"):
        ops.spherical_harmonics_double_backward(
            torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64), x, C, [0, 1], *args
        )
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\)"):
        ops.spherical_harmonics_jacobian(torch.randn(4, 4, dtype=torch.float64), C, [0, 1], *args)
    with pytest.raises(TypeError, match=r"coupling must be float64"):
        ops.spherical_harmonics_jacobian(x, C.float(), [0, 1], *args)


# ------------------------------------------------------------------ operator contract
def test_opcheck(dtype):
    g = _gen(16)
    ops = torch.ops.equiops
    ls = [0, 2, 1, 3]
    C = sh_ops.coupling_table(3)
    x = torch.randn(5, 3, dtype=dtype, generator=g, requires_grad=True)
    grad = torch.randn(5, 16, dtype=dtype, generator=g, requires_grad=True)
    v = torch.randn(5, 3, dtype=dtype, generator=g)
    for normalize in (True, False):
        torch.library.opcheck(ops.spherical_harmonics.default, (x, C, ls, normalize, "integral", "cpu"))
        torch.library.opcheck(ops.spherical_harmonics_backward.default, (grad, x, C, ls, normalize, "component", "cpu"))
        # no requires_grad here: the double backward's own derivative (a third derivative) raises
        torch.library.opcheck(
            ops.spherical_harmonics_double_backward.default,
            (v, grad.detach(), x.detach(), C, ls, normalize, "norm", "cpu"),
        )
        torch.library.opcheck(ops.spherical_harmonics_jacobian.default, (x, C, ls, normalize, "integral", "cpu"))


def test_compiled_matches_eager():
    g = _gen(17)
    x = torch.randn(4, 5, 3, generator=g)
    check_compiled_matches_eager(lambda v: equiops.spherical_harmonics([0, 1, 2, 5], v), x)
    check_compiled_matches_eager(
        lambda v: equiops.spherical_harmonics_with_gradients("0e+1o+2e", v, normalize=False), x.double()
    )


def test_compiled_backward_matches_eager():
    """Forward compiled with fullgraph=True, first derivative through the compiled graph.
    (Double backward through a compiled region is a PyTorch 2.13 limitation; the ops'
    double backward is tested eagerly above.)"""
    g = _gen(18)
    ls = [0, 1, 2, 3, 4]
    w = torch.randn(25, dtype=torch.float64, generator=g)
    x0 = torch.randn(20, 3, dtype=torch.float64, generator=g)

    def energy(v):
        return (equiops.spherical_harmonics(ls, v, normalization="component") * w).sum()

    def run(f):
        x = x0.clone().requires_grad_()
        value = f(x)
        (grad,) = torch.autograd.grad(value, x)
        return value.detach(), grad

    torch._dynamo.reset()
    eager = run(energy)
    compiled = run(torch.compile(energy, fullgraph=True))
    assert_close(compiled[0], eager[0], order=1)
    assert_close(compiled[1], eager[1], order=1)


def test_compiled_dynamic_sizes_do_not_recompile():
    import torch._dynamo.testing

    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounter()
    equiops.spherical_harmonics([1, 2], torch.randn(2, 3))  # warm caches: see test_compile_with_cold_coupling_cache
    fn = torch.compile(lambda v: equiops.spherical_harmonics([1, 2], v), backend=counter, fullgraph=True, dynamic=True)
    for n in (5, 9, 13):
        x = torch.randn(n, 3, generator=_gen(n))
        assert_close(fn(x), equiops.spherical_harmonics([1, 2], x))
    assert counter.frame_count == 1


_COLD_START_SCRIPT = r"""
import sys
import torch, equiops

x = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def check(ls, out):
    assert type(out) is torch.Tensor, f"got a {type(out).__name__}"
    torch.testing.assert_close(out, equiops.spherical_harmonics(ls, x, backend="torch"), rtol=1e-12, atol=1e-12)


class Model(torch.nn.Module):
    def __init__(self, ls):
        super().__init__()
        self.ls = ls

    def forward(self, v):
        return equiops.spherical_harmonics(self.ls, v)


def compiled(ls):
    check(ls, torch.compile(lambda v: equiops.spherical_harmonics(ls, v), fullgraph=True)(x))


def exported(ls):
    program = torch.export.export(Model(ls), (x,))
    check(ls, equiops.spherical_harmonics(ls, x))  # no FakeTensor left in a cache by the trace
    check([2, 1], equiops.spherical_harmonics([2, 1], x))
    check(ls, program.module()(x))


fn = compiled if sys.argv[1] == "compile" else exported
# (1) degrees 0..7 built eagerly, not the table of lmax = 3; (2) degrees 8, 9 never built
for name, ls, warm in (("table of lmax 3 cold", [0, 1, 3], True), ("degrees 8, 9 cold", [0, 9], False)):
    try:
        if warm:
            equiops.spherical_harmonics(7, x)
        fn(ls)
        print(f"RESULT {sys.argv[1]}, {name}: ok")
    except Exception as err:
        print(f"RESULT {sys.argv[1]}, {name}: {type(err).__name__}: {str(err).strip().splitlines()[0][:200]}")
"""


def test_compile_and_export_in_a_fresh_process():
    """The first call of a process may be a compiled or exported one: the coupling table must
    not need an earlier eager call to have been built, and tracing must not leave a FakeTensor
    in a cache (coupling table, so3.wigner_3j) that later eager calls would use. Runs in fresh
    processes, so that the caches are really cold whatever their implementation."""
    import subprocess
    import sys

    procs = [
        subprocess.Popen([sys.executable, "-c", _COLD_START_SCRIPT, how], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for how in ("compile", "export")
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        results += [line[len("RESULT "):] for line in out.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 4, results
    failed = [r for r in results if not r.endswith(": ok")]
    assert not failed, "\n".join(failed)


class _Model(torch.nn.Module):
    def __init__(self, irreps):
        super().__init__()
        self.sh = equiops.SphericalHarmonics(irreps, normalize=True, normalization="component")

    def forward(self, x):
        values, jac = self.sh.compute_with_gradients(x)
        return self.sh(x) * 2, values, jac


def test_export():
    x = torch.randn(12, 3, generator=_gen(20))
    model = _Model("0e+1o+2e+3o")
    expected = model(x)
    exported = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("n")},))
    for a, e in zip(exported.module()(x), expected):
        assert_close(a, e)
    for a, e in zip(exported.module()(x[:5]), model(x[:5])):
        assert_close(a, e)


# --------------------------------------------------------------------- e3nn patch
def test_patch_e3nn(float64_default, monkeypatch):
    o3 = _o3()
    g = _gen(22)
    x = torch.randn(4, 5, 3, generator=g)
    module = o3.SphericalHarmonics([0, 2, 1, 7], True, "norm")
    original_forward = o3.SphericalHarmonics.forward
    expected_fn = o3.spherical_harmonics("0e+1o+2e", x, False, "component")
    expected_module = module(x)

    calls = []
    real = equiops.harmonics._ops.spherical_harmonics

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(equiops.harmonics._ops, "spherical_harmonics", counting)
    with equiops.patch_e3nn() as patch:
        assert patch.active
        assert o3.SphericalHarmonics.forward is not original_forward
        out_fn = o3.spherical_harmonics("0e+1o+2e", x, False, "component")
        assert calls == [[0, 1, 2]]
        out_module = module(x)
        assert calls[-1] == [0, 2, 1, 7]
        with pytest.raises(RuntimeError, match=r"already patched"):
            equiops.patch_e3nn()
        # gradients flow through the patched module
        xg = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(module(xg).sum(), xg)
    assert not patch.active
    assert o3.SphericalHarmonics.forward is original_forward
    torch.testing.assert_close(out_fn, expected_fn, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out_module, expected_module, rtol=1e-10, atol=1e-12)
    xg = x.clone().requires_grad_()
    (expected_grad,) = torch.autograd.grad(module(xg).sum(), xg)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)
    n = len(calls)
    module(x)  # restored: e3nn's own code, not our kernel
    assert len(calls) == n
    patch.undo()  # a second undo is harmless
    assert o3.SphericalHarmonics.forward is original_forward

    # without the context manager, and with a backend
    patch = equiops.patch_e3nn(backend="torch")
    try:
        out = module(x)
        assert len(calls) == n  # the reference, not the kernel
        torch.testing.assert_close(out, expected_module, rtol=1e-10, atol=1e-12)
    finally:
        patch.undo()
    patch.undo()
    assert o3.SphericalHarmonics.forward is original_forward
    with pytest.raises(ValueError, match=r"backend must be one of"):
        equiops.patch_e3nn(backend="nope")
    assert o3.SphericalHarmonics.forward is original_forward


# ---------------------------------------------------------------------------- module
def test_module_matches_e3nn_module(float64_default):
    o3 = _o3()
    x = torch.randn(3, 7, 3, generator=_gen(23))
    for irreps in ("0e+1o+2e", [0, 1, 2], "1e+2e", [2, 0, 2, 7], 3, "2x0e+3o+1x1o"):
        for normalize, normalization in ((True, "integral"), (False, "norm")):
            ours = equiops.SphericalHarmonics(irreps, normalize, normalization)
            theirs = o3.SphericalHarmonics(irreps, normalize, normalization)
            assert str(ours.irreps_out) == str(theirs.irreps_out), irreps
            assert str(ours.irreps_in) == str(theirs.irreps_in), irreps
            assert ours.normalize == normalize and ours.normalization == normalization
            out = ours(x)
            assert torch.equal(out, equiops.spherical_harmonics(irreps, x, normalize, normalization))
            assert _max_err_per_degree(out, theirs(x), _degrees(irreps)) < 1e-12
    # an explicit pseudovector input
    ours = equiops.SphericalHarmonics([1, 2], irreps_in="1e")
    theirs = o3.SphericalHarmonics([1, 2], True, irreps_in="1e")
    assert str(ours.irreps_out) == str(theirs.irreps_out) and str(ours.irreps_in) == str(theirs.irreps_in)
    for backend in CPU_BACKENDS:
        module = equiops.SphericalHarmonics("0e+1o+2e", backend=backend)
        assert module.backend == backend
        assert_close(module(x), equiops.spherical_harmonics("0e+1o+2e", x, backend="cpu"))


def test_irreps_objects_accepted(float64_default):
    """l may be an Irreps object (equiops' or e3nn's), not only a string."""
    o3 = _o3()
    x = torch.randn(5, 3, generator=_gen(25))
    expected = equiops.spherical_harmonics("0e+1o+2e", x)
    for irreps in (equiops.Irreps("0e+1o+2e"), o3.Irreps("0e+1o+2e")):
        assert torch.equal(equiops.spherical_harmonics(irreps, x), expected)
        assert torch.equal(equiops.SphericalHarmonics(irreps)(x), expected)
    pseudo = equiops.spherical_harmonics(equiops.Irreps("1e+2e"), x)
    assert torch.equal(pseudo, equiops.spherical_harmonics("1e+2e", x))
    with pytest.raises(ValueError, match=r"inconsistent with the input parity"):
        equiops.spherical_harmonics(equiops.Irreps("1e+2o"), x)


def test_process_default_backend():
    """backend=None follows equiops.use_backend; 'auto' on CPU is the C++ kernel."""
    x = torch.randn(9, 3, dtype=torch.float64, generator=_gen(24))
    cpu = equiops.spherical_harmonics([0, 3, 5], x, backend="cpu")
    assert torch.equal(equiops.spherical_harmonics([0, 3, 5], x, backend="auto"), cpu)
    with equiops.use_backend("torch"):
        ref = equiops.spherical_harmonics([0, 3, 5], x)
    assert torch.equal(ref, sh_ref.spherical_harmonics([0, 3, 5], x, True))
    assert_close(ref, cpu)


def test_generated_cpu_code_is_current():
    """csrc/cpu/sh_generated.h is what scripts/gen_sh_kernels.py makes from the table."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, os.path.join(root, "scripts", "gen_sh_kernels.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr



def test_triton_degree_limit_is_explicit():
    """Beyond TRITON_MAX_DEGREE the CUDA implementation refuses with a clear error
    instead of compiling for minutes (checked before any kernel is built)."""
    limit = sh_ops.TRITON_MAX_DEGREE
    sh_ops.check_triton_degrees(list(range(limit + 1)))
    with pytest.raises(ValueError, match=r"Triton kernels take degrees 0\.\.%d, got \[0, %d\]" % (limit, limit + 1)):
        sh_ops.check_triton_degrees([0, limit + 1])


_ISA_SCRIPT = r"""
import sys, torch, equiops
from equiops.ops import spherical_harmonics as ops
out = {}
g = torch.Generator().manual_seed(5)
for dtype in (torch.float32, torch.float64):
    x = torch.randn(37, 3, generator=g, dtype=torch.float64).to(dtype)  # 37: a partial chunk at the end
    x[3] = 0
    for ls in ([0, 1, 2, 5], [13, 2, 2]):
        t = ops.coupling_table(max(ls))
        K = ops.output_width(ls)
        grad = torch.randn(37, K, generator=g, dtype=torch.float64).to(dtype)
        v = torch.randn(37, 3, generator=g, dtype=torch.float64).to(dtype)
        for normalize in (True, False):
            key = (str(dtype), tuple(ls), normalize)
            e = torch.ops.equiops
            out[key] = (
                e.spherical_harmonics(x, t, ls, normalize, "norm", "cpu"),
                e.spherical_harmonics_backward(grad, x, t, ls, normalize, "norm", "cpu"),
                *e.spherical_harmonics_double_backward(v, grad, x, t, ls, normalize, "norm", "cpu"),
                *e.spherical_harmonics_jacobian(x, t, ls, normalize, "norm", "cpu"),
            )
torch.save(out, sys.argv[1])
"""


def test_generic_and_avx2_kernels_agree(tmp_path):
    """The baseline-ISA build of the CPU kernels (EQUIOPS_CPU_ISA=generic) gives what the
    AVX2 build gives (this machine's default), for every op, dtype and a partial chunk."""
    import os
    import subprocess
    import sys

    results = {}
    for isa in ("generic", "native"):
        path = tmp_path / f"{isa}.pt"
        env = dict(os.environ, EQUIOPS_CPU_ISA=isa)
        done = subprocess.run([sys.executable, "-c", _ISA_SCRIPT, str(path)], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        results[isa] = torch.load(path)
    # The builds round differently (FMA contraction in the AVX2 one), so compare relative
    # to each output's largest magnitude: unnormalized degree-13 values reach |x|^13.
    for key, generic in results["generic"].items():
        for a, b in zip(generic, results["native"][key]):
            bound = 2e-6 if a.dtype == torch.float32 else 1e-13
            assert ((a - b).abs().max() <= bound * b.abs().max()).item(), key
