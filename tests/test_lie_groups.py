"""Tests of equiops.lie: the Lie groups of LieConv (T, Trivial, SO2, SE2, SO3, SE3).

float64 throughout.  The golden data (recorded with the reference implementation,
mfinzi/LieConv lie_conv/lieGroups.py) is optional: those tests skip without it.
"""

import math
from pathlib import Path

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from equiops import lie
from equiops.lie import SE2, SE3, SO2, SO3, T, Trivial

DT = torch.float64
GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden" / "reference_public.pt"

MATRIX_GROUPS = [SO2(), SE2(), SO3(), SE3(), T(3)]
IDS = ["SO2", "SE2", "SO3", "SE3", "T3"]


def rotation_dims(group):
    """(number of rotation coefficients, size of the rotation block)."""
    return {"SO2": (1, 2), "SE2": (1, 2), "SO3": (3, 3), "SE3": (3, 3), "T": (0, 0)}[type(group).__name__]


def algebra(group, lead, angle, gen, trans_scale=1.0):
    """Random algebra elements whose rotation part has norm ``angle``."""
    a = torch.randn(*lead, group.lie_dim, generator=gen, dtype=DT) * trans_scale
    k, _ = rotation_dims(group)
    if k:
        w = torch.randn(*lead, k, generator=gen, dtype=DT)
        a[..., :k] = w / w.norm(dim=-1, keepdim=True) * angle
    return a


def cloud(lead, d, gen, scale=1.0):
    return torch.randn(*lead, d, generator=gen, dtype=DT) * scale


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


# ------------------------------------------------------------------------------------------
# golden data
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden():
    if not GOLDEN.exists():
        pytest.skip(f"golden data not found at {GOLDEN} (shared/golden/reference_public.pt is not in this checkout)")
    data = torch.load(GOLDEN, weights_only=False)
    if "lie_groups" not in data:
        pytest.skip(f"{GOLDEN} has no 'lie_groups' entry")
    return data["lie_groups"]


def test_golden_so3(golden):
    g = SO3()
    a = golden["so3_algebra"]
    assert torch.count_nonzero(a[0]) == 0 and a[1].abs().max() < 1e-3  # the small-angle rows are there
    R = g.exp(a)
    # exp has no amplification: equal to rounding (bit for bit on the machine that recorded it)
    torch.testing.assert_close(R, golden["so3_exp"], rtol=0, atol=1e-13)
    # log: the largest angle recorded is pi - 0.018, where theta / sin(theta) amplifies a last-bit
    # difference of acos by ~1e2; 1e-11 leaves a margin of 1e3 over that
    torch.testing.assert_close(g.log(R), golden["so3_log_of_exp"], rtol=0, atol=1e-11)


def test_golden_se3(golden):
    g = SE3()
    U = g.exp(golden["se3_algebra"])
    torch.testing.assert_close(U, golden["se3_exp"], rtol=0, atol=1e-13)
    torch.testing.assert_close(g.log(U), golden["se3_log_of_exp"], rtol=0, atol=1e-11)
    pairs = g.elems2pairs(golden["se3_elems"])
    assert pairs.shape == golden["se3_pairs"].shape == (16, 16, 6)
    torch.testing.assert_close(pairs, golden["se3_pairs"], rtol=0, atol=1e-11)


# ------------------------------------------------------------------------------------------
# exp / log
# ------------------------------------------------------------------------------------------

ANGLES = [0.0, 1e-12, 1e-7, 1e-3, 0.0699, 0.0701, 0.5, 2.0, math.pi - 1e-2, math.pi - 1e-4]


def round_trip_tol(angle):
    """Accuracy of log(exp(a)) (the original's, reproduced):
    * below 7e-2 SO3.log uses x / sin(x) ~ 1 + x^2/6 + 7 x^4/360, truncation ~ 2e-3 x^6 relative;
    * near pi, theta = acos((tr R - 1) / 2) is off by ~eps / (pi - theta) and theta / sin(theta)
      amplifies that by ~pi / (pi - theta)^2 (2e-7 at pi - 1e-4)."""
    return 1e-12 + 1e-2 * angle**7 + 1e-13 / (math.pi - angle) ** 2


@pytest.mark.parametrize("group", MATRIX_GROUPS, ids=IDS)
def test_exp_in_group_and_log_round_trip(group, gen):
    k, r = rotation_dims(group)
    for angle in ANGLES:
        a = algebra(group, (3, 4), angle, gen)
        G = group.exp(a)
        n = G.shape[-1]
        assert G.shape == (3, 4, n, n)
        if r:
            R = G[..., :r, :r]
            eye = torch.eye(r, dtype=DT).expand_as(R)
            torch.testing.assert_close(R.transpose(-1, -2) @ R, eye, rtol=0, atol=1e-14)
            torch.testing.assert_close(torch.linalg.det(R), torch.ones(3, 4, dtype=DT), rtol=0, atol=1e-14)
        if n > r:  # homogeneous bottom row
            bottom = torch.zeros(n, dtype=DT)
            bottom[-1] = 1
            assert torch.equal(G[..., -1, :], bottom.expand(3, 4, n))
        # matrix exponential of the algebra matrix (independent of the closed forms)
        torch.testing.assert_close(G, torch.linalg.matrix_exp(group.components2matrix(a)), rtol=0, atol=1e-12)
        torch.testing.assert_close(group.log(G), a, rtol=0, atol=round_trip_tol(angle))
        torch.testing.assert_close(group.matrix2components(group.components2matrix(a)), a, rtol=0, atol=0)
        eye = torch.eye(n, dtype=DT).expand_as(G)
        torch.testing.assert_close(group.inv(G) @ G, eye, rtol=0, atol=10 * round_trip_tol(angle))


def test_log_wraps_to_principal_branch(gen):
    # angles above pi come back as the equivalent rotation with angle 2 pi - theta
    w = torch.randn(5, 3, generator=gen, dtype=DT)
    axis = w / w.norm(dim=-1, keepdim=True)
    theta = torch.linspace(3.3, 6.0, 5, dtype=DT)[:, None]
    out = SO3().log(SO3().exp(axis * theta))
    torch.testing.assert_close(out, -axis * (2 * math.pi - theta), rtol=0, atol=1e-12)
    t = torch.tensor([[3.5], [-3.5], [7.0]], dtype=DT)
    torch.testing.assert_close(SO2().log(SO2().exp(t)), torch.remainder(t + math.pi, 2 * math.pi) - math.pi)


def test_exact_zero_and_identity():
    for group in MATRIX_GROUPS:
        a = torch.zeros(2, group.lie_dim, dtype=DT)
        G = group.exp(a)
        assert torch.equal(G, torch.eye(G.shape[-1], dtype=DT).expand_as(G))
        assert torch.equal(group.log(G), a)


# ------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------

GRAD_ANGLES = [0.0, 1e-9, 1e-3, 0.0699, 0.0701, 1.0, 2.5]


@pytest.mark.parametrize("group", MATRIX_GROUPS, ids=IDS)
def test_gradcheck_exp_log(group, gen):
    for angle in GRAD_ANGLES:
        a = algebra(group, (2,), angle, gen).requires_grad_()
        assert gradcheck(group.exp, (a,))
        assert gradcheck(lambda x: group.log(group.exp(x)), (a,))
        grad = torch.autograd.grad(group.log(group.exp(a)).pow(2).sum(), a)[0]
        assert torch.isfinite(grad).all()
        if angle >= 1.0:  # away from the identity: log on arbitrary (off-group) perturbations
            R = group.exp(a).detach().requires_grad_()
            assert gradcheck(group.log, (R,))
    a0 = torch.zeros(2, group.lie_dim, dtype=DT, requires_grad=True)
    assert gradgradcheck(lambda x: group.log(group.exp(x)), (a0,))


@pytest.mark.parametrize("group", [SO3(), SE3()], ids=["SO3", "SE3"])
def test_log_gradient_at_identity(group):
    # At R = I: d log / d R is the derivative of the antisymmetric part (uncross), 0 on the
    # diagonal (the original returned NaN here, through acos'(1) = -inf).
    n = group.exp(torch.zeros(group.lie_dim, dtype=DT)).shape[-1]
    R = torch.eye(n, dtype=DT).requires_grad_()
    out = group.log(R)
    for i in range(3):
        g = torch.autograd.grad(out[i], R, retain_graph=True)[0]
        expected = torch.zeros(n, n, dtype=DT)
        j, k = [(2, 1), (0, 2), (1, 0)][i]
        expected[j, k], expected[k, j] = 0.5, -0.5
        torch.testing.assert_close(g, expected, rtol=0, atol=1e-15)


def test_taylor_helpers():
    x = torch.tensor([0.0, 1e-6, 0.03, 0.0699999, 0.0700001, 0.5, 2.0], dtype=DT)
    xs = x[1:]
    closed = {
        "sinc": xs.sin() / xs,
        "sincc": (xs - xs.sin()) / xs**3,
        "cosc": (1 - xs.cos()) / xs**2,
        "coscc": (1 - xs * xs.sin() / (2 * (1 - xs.cos()))) / xs**2,
        "sinc_inv": xs / xs.sin(),
    }
    limits = {"sinc": 1.0, "sincc": 1 / 6, "cosc": 0.5, "coscc": 1 / 12, "sinc_inv": 1.0}
    for name, ref in closed.items():
        f = getattr(lie, name)
        out = f(x)
        assert out[0] == limits[name]
        # the closed forms cancel catastrophically at 1e-6, so compare from 0.03 on
        torch.testing.assert_close(out[2:], ref[1:], rtol=1e-9, atol=0)
        # branch switch at 7e-2: closed form just above, polynomial just below
        assert out[4] == ref[3]
        assert lie.thresh == lie.TAYLOR_THRESHOLD == 7e-2
        xg = torch.tensor([0.0, 0.01, 0.0699, 0.0701, 1.0], dtype=DT, requires_grad=True)
        assert gradcheck(f, (xg,))
    # the polynomial branch is the original's
    t = torch.tensor(0.05, dtype=DT)
    t2 = t * t
    assert lie.sinc_inv(t) == 1 + (1 / 6) * t**2 + (7 / 360) * t**4
    assert lie.coscc(t) == 1 / 12 * (1 + t2 / 60 * (1 + t2 / 42 * (1 + t2 / 40)))


def test_bracket_and_bch(gen):
    for group in [SO3(), SE3(), SE2(), SO2()]:
        a = 0.05 * torch.randn(4, group.lie_dim, generator=gen, dtype=DT)
        b = 0.05 * torch.randn(4, group.lie_dim, generator=gen, dtype=DT)
        A, B = group.components2matrix(a), group.components2matrix(b)
        torch.testing.assert_close(group.components2matrix(group.bracket(a, b)), A @ B - B @ A)
        exact = group.log(group.exp(a) @ group.exp(b))
        errs = [(group.BCH(a, b, order) - exact).abs().max().item() for order in (1, 2, 3, 4)]
        assert errs[3] < 1e-6 and errs[3] <= errs[1]
    with pytest.raises(ValueError, match="order"):
        SO3().BCH(a[:, :3], b[:, :3], order=5)


# ------------------------------------------------------------------------------------------
# pairs, distances, lifts
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("group", [SO2(), SE2(), SO3(), SE3()], ids=["SO2", "SE2", "SO3", "SE3"])
def test_elems2pairs_convention(group, gen):
    a = algebra(group, (2, 5), 1.3, gen)
    pairs = group.elems2pairs(a)
    assert pairs.shape == (2, 5, 5, group.lie_dim)
    # pair (i, j) = log(exp(-a_j) exp(a_i))
    for i, j in [(0, 1), (3, 2), (4, 4)]:
        ref = group.log(group.exp(-a[:, j]) @ group.exp(a[:, i]))
        torch.testing.assert_close(pairs[:, i, j], ref, rtol=0, atol=0)
        torch.testing.assert_close(group.exp(pairs[:, i, j]), torch.linalg.inv(group.exp(a[:, j])) @ group.exp(a[:, i]))
    torch.testing.assert_close(pairs.diagonal(dim1=1, dim2=2), torch.zeros(2, group.lie_dim, 5, dtype=DT), rtol=0, atol=1e-14)


def test_T(gen):
    g = T(3)
    assert (g.lie_dim, g.rep_dim, g.q_dim, g.alpha) == (3, 3, 0, 0.2)
    assert str(g) == "T" and str(T) == "T"
    x = cloud((2, 6), 3, gen)
    v = torch.randn(2, 6, 4, generator=gen, dtype=DT)
    m = torch.rand(2, 6, generator=gen) > 0.3
    a, q = g.lifted_elems(x, 1)
    assert a is x and q is None
    pairs, vv, mm = g.lift((x, v, m), 1)
    torch.testing.assert_close(pairs, x[:, :, None, :] - x[:, None, :, :], rtol=0, atol=0)
    assert vv.shape == v.shape and torch.equal(vv, v) and torch.equal(mm, m)
    torch.testing.assert_close(g.distance(pairs), 0.2 * (x[:, :, None] - x[:, None]).norm(dim=-1), rtol=1e-15, atol=1e-15)
    # exp/log in homogeneous coordinates, and pairs agree with the group law
    e = g.exp(a)
    assert e.shape == (2, 6, 4, 4)
    torch.testing.assert_close(e[..., :3, 3], x)
    torch.testing.assert_close(g.log(torch.linalg.inv(e[:, None]) @ e[:, :, None]), pairs)
    with pytest.raises(ValueError, match="nsamples"):
        g.lift((x, v, m), 2)
    for k in (1, 2, 5):
        assert T(k).lifted_elems(cloud((3,), k, gen), 1)[0].shape == (3, k)


def test_trivial(gen):
    g = Trivial(3)
    assert (g.lie_dim, g.rep_dim, g.q_dim) == (0, 3, 3) and str(g) == "Trivial"
    assert Trivial().rep_dim == 2
    x = cloud((2, 5), 3, gen)
    v = torch.randn(2, 5, 4, generator=gen, dtype=DT)
    m = torch.ones(2, 5, dtype=torch.bool)
    q, vv, mm = g.lift((x, v, m), 1)
    assert q.shape == (2, 5, 5, 6) and vv is v and mm is m
    assert torch.equal(q[:, 1, 3], torch.cat([x[:, 1], x[:, 3]], dim=-1))
    torch.testing.assert_close(g.distance(q), 0.8 * (x[:, :, None] - x[:, None]).norm(dim=-1))
    # the generic route (extension) gives the same embedding
    assert torch.equal(LieGroupLift(g, (x, v, m))[0], q)
    with pytest.raises(ValueError, match="nsamples"):
        g.lift((x, v, m), 3)


def LieGroupLift(group, x):
    return lie.LieGroup.lift(group, x, 1)


def test_SO2(gen):
    g = SO2()
    assert (g.lie_dim, g.rep_dim, g.q_dim) == (1, 2, 1)
    x = cloud((2, 5), 2, gen)
    x[0, 0] = torch.tensor([-1.5, 0.0], dtype=DT)  # on the branch cut
    a, q = g.lifted_elems(x, 1)
    assert a.shape == (2, 5, 1) and q.shape == (2, 5, 1)
    torch.testing.assert_close(q[..., 0], x.norm(dim=-1))
    torch.testing.assert_close(q * g.exp(a)[..., :, 0], x)  # |p| R(theta) e_x = p
    v = torch.randn(2, 5, 3, generator=gen, dtype=DT)
    m = torch.ones(2, 5, dtype=torch.bool)
    abq, vv, mm = g.lift((x, v, m), 1)
    assert abq.shape == (2, 5, 5, 3) and torch.equal(vv, v) and torch.equal(mm, m)
    th = torch.atan2(x[..., 1], x[..., 0])
    d = th[:, :, None] - th[:, None, :]
    wrapped = torch.atan2(d.sin(), d.cos())
    torch.testing.assert_close(abq[..., 0], wrapped)
    r = x.norm(dim=-1)
    torch.testing.assert_close(abq[..., 1], r[:, :, None].expand(2, 5, 5))
    torch.testing.assert_close(abq[..., 2], r[:, None, :].expand(2, 5, 5))
    ref = 0.2 * wrapped.abs() + 0.8 * (r[:, :, None] - r[:, None]).abs() / (r[:, :, None] + r[:, None] + 1e-3)
    torch.testing.assert_close(g.distance(abq), ref)
    torch.testing.assert_close(SO2(alpha=0.7).distance(abq[0, 1, 2]), 0.7 * abq[0, 1, 2, 0].abs()
                               + 0.3 * (abq[0, 1, 2, 1] - abq[0, 1, 2, 2]).abs() / (abq[0, 1, 2, 1] + abq[0, 1, 2, 2] + 1e-3))
    with pytest.raises(ValueError, match="nsamples"):
        g.lifted_elems(x, 2)


@pytest.mark.parametrize("ns", [1, 4])
def test_SE2_lift(ns, gen):
    g = SE2()
    assert (g.lie_dim, g.rep_dim, g.q_dim) == (3, 3, 0)
    x = cloud((2, 5), 2, gen, scale=2.0)
    v = torch.randn(2, 5, 3, generator=gen, dtype=DT)
    m = torch.rand(2, 5, generator=gen) > 0.3
    torch.manual_seed(7)
    abq, vv, mm = g.lift((x, v, m), ns)
    N = 5 * ns
    assert abq.shape == (2, N, N, 3) and vv.shape == (2, N, 3) and mm.shape == (2, N)
    assert abq.dtype == DT  # the original returned float32 here
    assert torch.equal(vv, v.repeat_interleave(ns, dim=1)) and torch.equal(mm, m.repeat_interleave(ns, dim=1))
    torch.manual_seed(7)
    a, q = g.lifted_elems(x, ns)
    assert q is None and a.shape == (2, N, 3)
    torch.testing.assert_close(g.elems2pairs(a), abq, rtol=0, atol=0)
    G = g.exp(a)
    # every lift maps the origin to its point: exp(a) [0, 0, 1] = [p, 1]
    torch.testing.assert_close(G[..., :2, 2], x.repeat_interleave(ns, dim=1))
    # the sampled angles: -pi + 2 pi s / ns + 2 pi U, one U per point (CPU generator, default dtype)
    torch.manual_seed(7)
    U = torch.rand(2, 5, 1)
    phi = (torch.linspace(-math.pi, math.pi, ns + 1)[1:] + U * 2 * math.pi).to(DT).reshape(2, N)
    d = a[..., 0] - phi
    torch.testing.assert_close(torch.atan2(d.sin(), d.cos()), torch.zeros_like(d), rtol=0, atol=1e-12)
    ref = 0.2 * abq[..., 0].abs() + 0.8 * abq[..., 1:].norm(dim=-1)
    torch.testing.assert_close(g.distance(abq), ref)


def _rotation_about(axis, angle):
    """Rodrigues' rotation by ``angle`` about unit ``axis`` (independent reference)."""
    K = torch.zeros(*axis.shape[:-1], 3, 3, dtype=axis.dtype)
    K[..., 0, 1], K[..., 0, 2], K[..., 1, 2] = -axis[..., 2], axis[..., 1], -axis[..., 0]
    K = K - K.transpose(-1, -2)
    s, c = angle.sin()[..., None, None], angle.cos()[..., None, None]
    return torch.eye(3, dtype=axis.dtype) + s * K + (1 - c) * (K @ K)


def _quaternion_matrix(q):
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*q.shape[:-1], 3, 3)


@pytest.mark.parametrize("ns", [1, 3])
def test_SO3_lift(ns, gen):
    g = SO3()
    assert (g.lie_dim, g.rep_dim, g.q_dim) == (3, 3, 1)
    x = cloud((2, 6), 3, gen, scale=1.5)
    x[0, 0] = torch.tensor([0.7, 0.0, 0.0], dtype=DT)  # on the +x axis: Rp = I
    v = torch.randn(2, 6, 2, generator=gen, dtype=DT)
    m = torch.rand(2, 6, generator=gen) > 0.3
    torch.manual_seed(3)
    a, q = g.lifted_elems(x, ns)
    N = 6 * ns
    assert a.shape == (2, N, 3) and q.shape == (2, N, 1)
    xr = x.repeat_interleave(ns, dim=1)
    torch.testing.assert_close(q[..., 0], xr.norm(dim=-1))
    # the invariant LieConv relies on: |p| exp(a) e_x = p, so q and a recover the point
    R = g.exp(a)
    # (1e-8: random angles come close to pi, where the log loses ~eps / (pi - theta)^2)
    torch.testing.assert_close(q * R[..., :, 0], xr, rtol=0, atol=1e-8)
    # the random part: a rotation about e_x by the angle of the normalised randn quaternion
    torch.manual_seed(3)
    quat = torch.randn(2, 6, ns, 4, dtype=DT)
    quat = quat / quat.norm(dim=-1, keepdim=True)
    phi = (2 * torch.atan2(quat[..., 1:].norm(dim=-1), quat[..., 0])).reshape(2, N)
    ex = torch.tensor([1.0, 0.0, 0.0], dtype=DT)
    phat = xr / xr.norm(dim=-1, keepdim=True)
    w = torch.linalg.cross(ex.expand_as(phat), phat)
    Rp = _rotation_about(w / w.norm(dim=-1, keepdim=True).clamp(min=1e-300), torch.atan2(w.norm(dim=-1), phat[..., 0]))
    Rx = _rotation_about(ex.expand_as(phat), phi)
    torch.testing.assert_close(R, Rp @ Rx, rtol=0, atol=1e-8)
    # lift: pairs plus q_i, q_j; values and mask repeated per sample
    torch.manual_seed(3)
    abq, vv, mm = g.lift((x, v, m), ns)
    assert abq.shape == (2, N, N, 5)
    torch.testing.assert_close(abq[..., :3], g.elems2pairs(a), rtol=0, atol=0)
    assert torch.equal(abq[..., 3], q[..., 0][:, :, None].expand(2, N, N))
    assert torch.equal(abq[..., 4], q[..., 0][:, None, :].expand(2, N, N))
    assert torch.equal(vv, v.repeat_interleave(ns, dim=1)) and torch.equal(mm, m.repeat_interleave(ns, dim=1))
    ref = 0.2 * abq[..., :3].norm(dim=-1) + 0.8 * (abq[..., 3] - abq[..., 4]).abs()
    torch.testing.assert_close(g.distance(abq), ref)
    # any leading shape, and torch.cross along the coordinate axis even with a batch of 3
    torch.manual_seed(3)
    a3, _ = g.lifted_elems(cloud((3, 3), 3, gen), 3)
    assert a3.shape == (3, 9, 3)


@pytest.mark.parametrize("ns", [1, 3])
@pytest.mark.parametrize("per_point", [True, False])
def test_SE3_lift(ns, per_point, gen):
    g = SE3(per_point=per_point)
    assert (g.lie_dim, g.rep_dim, g.q_dim, g.per_point) == (6, 4, 0, per_point)
    x = cloud((2, 5), 3, gen, scale=2.0)
    v = torch.randn(2, 5, 2, generator=gen, dtype=DT)
    m = torch.rand(2, 5, generator=gen) > 0.3
    torch.manual_seed(5)
    a, q = g.lifted_elems(x, ns)
    N = 5 * ns
    assert q is None and a.shape == (2, N, 6)
    G = g.exp(a)
    # g 0 = p (1e-8: random angles come close to pi, where the log loses ~eps / (pi - theta)^2)
    torch.testing.assert_close(G[..., :3, 3], x.repeat_interleave(ns, dim=1), rtol=0, atol=1e-8)
    # the rotations are the normalised randn quaternions (per point, or shared)
    torch.manual_seed(5)
    quat = torch.randn(2, 5 if per_point else 1, ns, 4, dtype=DT)
    Rq = _quaternion_matrix(quat).expand(2, 5, ns, 3, 3).reshape(2, N, 3, 3)
    torch.testing.assert_close(G[..., :3, :3], Rq, rtol=0, atol=1e-8)
    torch.manual_seed(5)
    abq, vv, mm = g.lift((x, v, m), ns)
    assert abq.shape == (2, N, N, 6) and vv.shape == (2, N, 2) and mm.shape == (2, N)
    torch.testing.assert_close(abq, g.elems2pairs(a), rtol=0, atol=0)
    assert torch.equal(mm, m.repeat_interleave(ns, dim=1))
    ref = 0.2 * abq[..., :3].norm(dim=-1) + 0.8 * abq[..., 3:].norm(dim=-1)
    torch.testing.assert_close(g.distance(abq), ref)
    torch.testing.assert_close(SE3(alpha=0.5).distance(abq), 0.5 * abq[..., :3].norm(dim=-1) + 0.5 * abq[..., 3:].norm(dim=-1))


def test_lift_is_differentiable(gen):
    x = cloud((1, 3), 3, gen).requires_grad_()
    x2 = cloud((1, 3), 2, gen).requires_grad_()
    v = torch.zeros(1, 3, 1, dtype=DT)
    m = torch.ones(1, 3, dtype=torch.bool)
    for group, pts in [(SE3(), x), (SO3(), x), (SE2(), x2), (SO2(), x2), (T(3), x)]:
        def f(p, group=group):
            with torch.random.fork_rng():
                torch.manual_seed(11)
                return group.lift((p, v, m), 1)[0]
        assert gradcheck(f, (pts,)), group


def test_sample_and_str():
    R = SO3().sample(4, 2, dtype=DT)
    assert R.shape == (4, 2, 3, 3)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, torch.eye(3, dtype=DT).expand_as(R))
    assert str(SE3()) == "SE3" and repr(SO3()) == "SO3" and str(SE3(alpha=0.5)) == "SE3(0.5)"
    assert str(SE2) == "SE2" and SE2().alpha == 0.2 and SO3(0.3).alpha == 0.3


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------


def test_bad_input(gen):
    v = torch.zeros(2, 4, 1, dtype=DT)
    m = torch.ones(2, 4, dtype=torch.bool)
    pts2 = cloud((2, 4), 2, gen)
    pts3 = cloud((2, 4), 3, gen)
    with pytest.raises(ValueError, match=r"SE3\.lift: `x\[0\] \(coords\)` must have shape \(\*, n, 3\).*rep_dim=4.*\(2, 4, 2\)"):
        SE3().lift((pts2, v, m), 1)
    with pytest.raises(ValueError, match=r"SO3\.lifted_elems: `pt` must have shape \(\*, n, 3\).*rep_dim=3"):
        SO3().lifted_elems(pts2, 1)
    with pytest.raises(ValueError, match=r"SE2\.lift: `x\[0\] \(coords\)` .*\(\*, n, 2\).*rep_dim=3"):
        SE2().lift((pts3, v, m), 1)
    with pytest.raises(ValueError, match=r"SO2\.lifted_elems: `pt` .*rep_dim=2"):
        SO2().lifted_elems(pts3, 1)
    with pytest.raises(ValueError, match=r"T\.lifted_elems: `xyz` .*rep_dim=3"):
        T(3).lifted_elems(pts2, 1)
    with pytest.raises(ValueError, match=r"Trivial\.lift: .*rep_dim=2"):
        Trivial().lift((pts3, v, m), 1)
    with pytest.raises(ValueError, match=r"`pt` must have shape"):
        SE3().lifted_elems(torch.zeros(3, dtype=DT), 1)
    with pytest.raises(ValueError, match=r"`x\[2\]` \(mask\)"):
        SE3().lift((pts3, v, m[:, :3]), 1)
    with pytest.raises(ValueError, match=r"`x\[1\]` \(values\)"):
        SE3().lift((pts3, v[:1], m), 1)
    with pytest.raises(ValueError, match="tuple"):
        SE3().lift(pts3, 1)
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="nsamples"):
            SE3().lifted_elems(pts3, bad)
    with pytest.raises(ValueError, match="`k`"):
        T(0)
