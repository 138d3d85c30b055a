"""Radial bases, cutoffs and the radial MLP (equiops.nn.radial) against e3nn and against
independent straightforward formulas, in float64, to second derivatives."""

import math

import pytest
import torch

from conftest import assert_close, default_dtype
from equiops.nn.radial import (
    BesselBasis,
    CosineCutoff,
    GaussianBasis,
    PolynomialCutoff,
    RadialMLP,
    soft_one_hot_linspace,
    soft_unit_step,
)

e3nn = pytest.importorskip("e3nn")
from e3nn.math import soft_one_hot_linspace as e3nn_soft_one_hot  # noqa: E402
from e3nn.math import soft_unit_step as e3nn_soft_unit_step  # noqa: E402
from e3nn.nn import FullyConnectedNet  # noqa: E402

BASES = ["gaussian", "cosine", "smooth_finite", "fourier", "bessel"]


def derivatives(fn, x, weights=None):
    """``fn(x)`` and the elementwise first and second derivatives of ``(fn(x) * weights)
    summed over the trailing dims`` w.r.t. ``x`` (x elementwise independent)."""
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    w = torch.ones_like(y) if weights is None else weights
    (g,) = torch.autograd.grad((y * w).sum(), x, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), x)
    return y.detach(), g.detach(), h


def rel_close(actual, expected, rtol=1e-10):
    """``|a - e| <= rtol * max(|e|.max(), 1)`` (relative to the scale of the values)."""
    assert torch.isfinite(actual).all()
    scale = max(expected.abs().max().item(), 1.0)
    err = (actual - expected).abs().max().item() if actual.numel() else 0.0
    assert err <= rtol * scale, f"max error {err} vs scale {scale}"


# ------------------------------------------------------------------ soft_one_hot_linspace


@pytest.mark.parametrize("cutoff", [False, True])
@pytest.mark.parametrize("basis", BASES)
def test_soft_one_hot_matches_e3nn(basis, cutoff):
    start, end, number = -0.5, 1.5, 6
    x = torch.linspace(-1.3, 2.7, 157, dtype=torch.float64)
    x = x[(x - start).abs() > 1e-3]  # e3nn's bessel is 0/0 at x = start
    v = torch.randn(number, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with default_dtype(torch.float64):
        ours = derivatives(lambda t: soft_one_hot_linspace(t, start, end, number, basis, cutoff), x, v)
        ref = derivatives(lambda t: e3nn_soft_one_hot(t, start, end, number, basis=basis, cutoff=cutoff), x, v)
    for a, e in zip(ours, ref):
        rel_close(a, e)
    module = GaussianBasis(start, end, number, basis=basis, cutoff=cutoff)
    assert torch.equal(module(x), soft_one_hot_linspace(x, start, end, number, basis, cutoff))


def test_soft_unit_step_matches_e3nn():
    x = torch.linspace(-2, 3, 101, dtype=torch.float64)
    for a, e in zip(derivatives(soft_unit_step, x), derivatives(e3nn_soft_unit_step, x)):
        rel_close(a, e)


def test_soft_one_hot_float32_and_shapes():
    x = torch.rand(3, 4) * 2
    out = soft_one_hot_linspace(x, 0.0, 2.0, 5, "gaussian", False)
    assert out.shape == (3, 4, 5) and out.dtype == torch.float32
    torch.testing.assert_close(out, e3nn_soft_one_hot(x, 0.0, 2.0, 5, basis="gaussian", cutoff=False))
    assert GaussianBasis(0.0, 2.0, 5)(x).shape == (3, 4, 5)


@pytest.mark.parametrize("cutoff", [False, True])
def test_soft_one_hot_bessel_at_start(cutoff):
    start, end, number = 0.0, 2.0, 4
    x = torch.tensor([start], dtype=torch.float64)
    y, g, h = derivatives(lambda t: soft_one_hot_linspace(t, start, end, number, "bessel", cutoff), x)
    c = end - start
    roots = torch.arange(1, number + 1, dtype=torch.float64) * math.pi
    if cutoff:
        assert torch.equal(y, torch.zeros(1, number, dtype=torch.float64))
        assert torch.equal(g, torch.zeros(1, dtype=torch.float64))
    else:
        rel_close(y[0], math.sqrt(2 / c) * roots / c, 1e-14)
        assert g.abs().max() < 1e-15
        # d2/dx2 sin(a x)/x at 0 = -a^3 / 3
        rel_close(h, (math.sqrt(2 / c) * -((roots / c) ** 3) / 3).sum().reshape(1), 1e-12)
    assert torch.isfinite(h).all()


def test_soft_one_hot_cutoff_zero_outside():
    x = torch.tensor([-3.0, -0.5, 1.5, 4.0], dtype=torch.float64)
    for basis in ["cosine", "smooth_finite", "fourier", "bessel"]:
        y, g, h = derivatives(lambda t, b=basis: soft_one_hot_linspace(t, -0.5, 1.5, 5, b, True), x)
        # strictly outside: exactly 0; at the ends: 0 up to the rounding of the grid (e3nn's too)
        assert torch.equal(y[[0, 3]], torch.zeros_like(y[[0, 3]])), basis
        assert torch.equal(g[[0, 3]], torch.zeros(2, dtype=g.dtype)) and torch.equal(h[[0, 3]], torch.zeros(2, dtype=h.dtype))
        assert y.abs().max() < 1e-15, basis
        ref = e3nn_soft_one_hot(x[1:3], -0.5, 1.5, 5, basis=basis, cutoff=True)
        if basis != "bessel":
            rel_close(y[1:3], ref)


# ------------------------------------------------------------------ BesselBasis


def bessel_reference(w, r, r_max):
    return 2.0 / r_max * torch.sin(w * r[..., None] / r_max) / r[..., None]


@pytest.mark.parametrize("r_max", [1.0, 5.0])
def test_bessel_matches_formula(r_max):
    basis = BesselBasis(r_max, num_basis=8).double()
    w = basis.bessel_weights.detach()
    # away from 0 the straightforward formula is well conditioned; 1.6 r_max: outside
    r = torch.linspace(0.05, 1.6, 211, dtype=torch.float64) * r_max
    v = torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ours = derivatives(basis, r, v)
    ref = derivatives(lambda t: bessel_reference(w, t, r_max), r, v)
    for a, e in zip(ours, ref):
        rel_close(a, e)
    assert ours[0].shape == (211, 8)
    # gradient w.r.t. the trainable weights
    (gw,) = torch.autograd.grad((basis(r) * v).sum(), basis.bessel_weights)
    wr = w.clone().requires_grad_(True)
    (gw_ref,) = torch.autograd.grad((bessel_reference(wr, r, r_max) * v).sum(), wr)
    rel_close(gw, gw_ref)


def test_bessel_at_zero():
    r_max = 4.0
    basis = BesselBasis(r_max, num_basis=6).double()
    w = basis.bessel_weights.detach()
    a = w / r_max
    pref = 2.0 / r_max
    r = torch.zeros(1, dtype=torch.float64)
    eye = torch.eye(6, dtype=torch.float64)
    for n in range(6):
        y, g, h = derivatives(basis, r, eye[n])
        rel_close(y[0], pref * a, 1e-14)
        assert g.abs().max() == 0
        rel_close(h, (pref * -a[n] ** 3 / 3).reshape(1), 1e-13)
    # just above 0: the Taylor expansion sin(a r)/r = a (1 - (a r)^2/6 + (a r)^4/120 - ...)
    r = torch.tensor([1e-4, 1e-3], dtype=torch.float64)
    ar = a * r[:, None]
    expected = pref * a * (1 - ar**2 / 6 + ar**4 / 120)
    rel_close(basis(r).detach(), expected, 1e-14)
    # mixed second derivatives (force training: d/dw of d/dr) finite at r = 0
    r = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    (gr,) = torch.autograd.grad(basis(r).sum(), r, create_graph=True)
    (gw,) = torch.autograd.grad(gr.sum(), basis.bessel_weights)
    assert torch.equal(gw, torch.zeros_like(gw))
    (gw,) = torch.autograd.grad(basis(r).sum(), basis.bessel_weights)
    rel_close(gw, torch.full_like(gw, 3 * pref / r_max), 1e-14)


def test_bessel_branch_boundary():
    """Around |w r / r_max| = 1, where the series hands over to the quotient."""
    r_max = 1.0
    basis = BesselBasis(r_max, num_basis=3).double()
    w = basis.bessel_weights.detach()
    r = torch.cat([1 / w - 1e-9, 1 / w, 1 / w + 1e-9, 1 / w - 0.2, 1 / w + 0.2])
    ours = derivatives(basis, r)
    ref = derivatives(lambda t: bessel_reference(w, t, r_max), r)
    for a, e in zip(ours, ref):
        rel_close(a, e, 1e-12)


def test_tensor_and_numpy_scalars_accepted():
    np = pytest.importorskip("numpy")
    assert BesselBasis(torch.tensor(5.0)).r_max == 5.0
    assert PolynomialCutoff(np.float64(2.0), p=np.int64(5)).p == 5.0
    x = torch.linspace(0, 1, 5, dtype=torch.float64)
    assert torch.equal(soft_one_hot_linspace(x, torch.tensor(0.0), 1.0, 4, "cosine", True),
                       soft_one_hot_linspace(x, 0.0, 1.0, 4, "cosine", True))


def test_bessel_trainable_flag_and_state_dict():
    b = BesselBasis(3.0, num_basis=5, trainable=False)
    assert "bessel_weights" in dict(b.named_buffers()) and len(list(b.parameters())) == 0
    assert torch.equal(b.bessel_weights, torch.arange(1, 6, dtype=torch.get_default_dtype()) * math.pi)
    bt = BesselBasis(3.0, num_basis=5, trainable=True)
    assert [n for n, _ in bt.named_parameters()] == ["bessel_weights"]
    bt.load_state_dict(b.state_dict(), strict=True)
    x = torch.tensor([0.0, 0.5, 3.5])
    assert torch.isfinite(b(x)).all() and b(x).shape == (3, 5)


# ------------------------------------------------------------------ cutoffs


@pytest.mark.parametrize("p", [1, 2, 3, 6, 9.0])
def test_polynomial_cutoff(p):
    r_max = 2.5
    f = PolynomialCutoff(r_max, p=p)
    r = torch.cat([torch.linspace(0.0, 1.4, 141, dtype=torch.float64) * r_max, torch.tensor([r_max], dtype=torch.float64)])
    y, g, h = derivatives(f, r)
    u = r / r_max
    inside = u < 1
    p = float(p)
    c = p * (p + 1) * (p + 2) / 2
    ref_y = torch.where(inside, 1 - (p + 1) * (p + 2) / 2 * u**p + p * (p + 2) * u ** (p + 1) - p * (p + 1) / 2 * u ** (p + 2), 0.0)
    # independent closed forms: f'(u) = -c u^(p-1) (1-u)^2, f''(u) = -c ((p-1) u^(p-2) (1-u)^2 - 2 u^(p-1) (1-u))
    ref_g = torch.where(inside, -c * u ** (p - 1) * (1 - u) ** 2, 0.0) / r_max
    up2 = torch.where(u > 0, u ** (p - 2), 0.0 if p > 2 else (1.0 if p == 2 else 0.0))
    ref_h = torch.where(inside, -c * ((p - 1) * up2 * (1 - u) ** 2 - 2 * u ** (p - 1) * (1 - u)), 0.0) / r_max**2
    rel_close(y, ref_y)
    rel_close(g, ref_g)
    rel_close(h, ref_h, 1e-9 if p == 1 else 1e-10)
    assert y[0] == 1 and y[-1] == 0 and g[-1] == 0 and h[-1] == 0
    # smooth at u = 1 from below: value, first and second derivative tend to 0
    rb = torch.tensor([r_max * (1 - 1e-6)], dtype=torch.float64)
    yb, gb, hb = derivatives(f, rb)
    assert yb.abs() < 1e-12 and gb.abs() < 1e-8 and hb.abs() < 1e-3


def test_cosine_cutoff():
    r_max = 3.0
    f = CosineCutoff(r_max)
    r = torch.linspace(0, 2 * r_max, 97, dtype=torch.float64)
    y, g, h = derivatives(f, r)
    inside = r < r_max
    k = math.pi / r_max
    rel_close(y, torch.where(inside, 0.5 * (torch.cos(k * r) + 1), 0.0))
    rel_close(g, torch.where(inside, -0.5 * k * torch.sin(k * r), 0.0))
    rel_close(h, torch.where(inside, -0.5 * k**2 * torch.cos(k * r), 0.0))
    assert y[0] == 1 and torch.equal(y[~inside], torch.zeros_like(y[~inside]))


# ------------------------------------------------------------------ RadialMLP


@pytest.mark.parametrize(
    "hs, act, kwargs",
    [
        ([8, 16, 16, 12], torch.nn.functional.silu, {}),
        ([8, 32, 5], torch.tanh, {"variance_in": 2, "variance_out": 3}),
        ([6, 7, 4], torch.nn.functional.silu, {"out_act": True}),
        ([5, 3], None, {}),
        ([4, 9, 3], torch.nn.SiLU(), {}),
        ([4, 9, 3], torch.abs, {}),
    ],
)
def test_radial_mlp_matches_e3nn(hs, act, kwargs):
    with default_dtype(torch.float64):
        ref = FullyConnectedNet(hs, act, **kwargs)
        ours = RadialMLP(hs, act, **kwargs)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)
    for i in range(len(hs) - 1):
        la, lb = getattr(ours, f"layer{i}"), getattr(ref, f"layer{i}")
        assert (la.act is None) == (lb.act is None)
        if la.act is not None:  # the same normalisation constant, bit for bit
            assert la.act.cst == lb.act.cst and la.act._is_id == lb.act._is_id
    x = torch.randn(10, hs[0], dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    v = torch.randn(10, hs[-1], dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    results = []
    for net in (ours, ref):
        xx = x.clone().requires_grad_(True)
        y = net(xx)
        gx, *gw = torch.autograd.grad((y * v).sum(), [xx, *net.parameters()], create_graph=True)
        hx = torch.autograd.grad((gx**2).sum(), [xx, *net.parameters()], allow_unused=True, materialize_grads=True)
        results.append([y, gx, *gw, *hx])
    for a, e in zip(*results):
        assert_close(a, e, order=2)


def test_radial_mlp_float32_load_and_shapes():
    ref = FullyConnectedNet([3, 4, 2], torch.nn.functional.silu)
    ours = RadialMLP([3, 4, 2], torch.nn.functional.silu)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 5, 3)
    assert ours(x).shape == (2, 5, 2)
    torch.testing.assert_close(ours(x), ref(x))
    assert repr(ours) == "RadialMLP[3, 4, 2]"


def test_radial_pipeline_compiled_matches_eager():
    """Edge lengths -> Bessel basis * cutoff -> MLP: compiled (fullgraph) equals eager,
    values and gradients."""
    with default_dtype(torch.float64):
        basis = BesselBasis(4.0, num_basis=8)
        cut = PolynomialCutoff(4.0, p=6)
        mlp = RadialMLP([8, 16, 6], torch.nn.functional.silu)

    def fn(r):
        return mlp(basis(r) * cut(r).unsqueeze(-1))

    r = torch.tensor([0.0, 0.3, 1.2, 3.9, 4.0, 5.5], dtype=torch.float64)
    # inductor for the values; the gradients through AOTAutograd without code generation
    # (the same fullgraph trace and backward graph, and no C++ compilation time)
    torch._dynamo.reset()
    assert_close(torch.compile(fn, fullgraph=True)(r), fn(r))
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    results = []
    for f in (fn, compiled):
        rr = r.clone().requires_grad_(True)
        y = f(rr)
        results.append([y, *torch.autograd.grad(y.sum(), [rr, basis.bessel_weights, *mlp.parameters()])])
    for a, e in zip(*results):
        assert_close(a, e, order=1)
    assert all(torch.isfinite(t).all() for t in results[0])


# ------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: BesselBasis(0.0), "r_max"),
        (lambda: BesselBasis(-1.0), "r_max"),
        (lambda: BesselBasis(float("nan")), "r_max"),
        (lambda: BesselBasis(5.0, num_basis=0), "num_basis"),
        (lambda: BesselBasis(5.0, num_basis=2.5), "num_basis"),
        (lambda: BesselBasis("5"), "r_max"),
        (lambda: PolynomialCutoff(0.0), "r_max"),
        (lambda: PolynomialCutoff(5.0, p=0), "p=0"),
        (lambda: PolynomialCutoff(5.0, p=0.5), "p=0.5"),
        (lambda: CosineCutoff(-2.0), "r_max=-2.0"),
        (lambda: GaussianBasis(0.0, 1.0, 4, basis="gauss"), "basis='gauss'"),
        (lambda: GaussianBasis(0.0, 1.0, 0), "number=0"),
        (lambda: GaussianBasis(0.0, 1.0, 1), "number=1"),
        (lambda: GaussianBasis(1.0, 1.0, 4), "start"),
        (lambda: GaussianBasis(0.0, 1.0, 4, cutoff=None), "cutoff=None"),
        (lambda: soft_one_hot_linspace(torch.zeros(2), 0.0, 1.0, 4, "wavelet", False), "basis='wavelet'"),
        (lambda: soft_one_hot_linspace(torch.zeros(2), 0.0, 1.0, 4, "gaussian"), "cutoff"),
        (lambda: RadialMLP([]), "hs"),
        (lambda: RadialMLP([4, 0, 2]), "hs"),
        (lambda: RadialMLP([4, 2], act="relu"), "act"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()
