"""Gate and NormActivation (equiops.nn.gate) against e3nn.nn in float64: irreps, values,
first and second derivatives, state dicts, equivariance, errors, torch.compile."""

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close, assert_equivariant, default_dtype
from equiops import Irreps
from equiops.nn.gate import Activation, Gate, NormActivation, Normalize2mom

e3nn = pytest.importorskip("e3nn")
from e3nn import nn as e3nn_nn  # noqa: E402
from e3nn import o3  # noqa: E402
from e3nn.math import normalize2mom as e3nn_normalize2mom  # noqa: E402

GATE_CASES = {
    "basic": ("16x0e", [F.silu], "8x0e", [torch.sigmoid], "4x1o+4x2e"),
    # odd scalars and gates (parity rules), gated scalars sorted between the other scalars
    "parity-sorted": ("4x0e+2x0o", [F.silu, torch.tanh], "3x0o+2x0e", [torch.abs, torch.sigmoid], "1x1o+2x1e+2x0e"),
    # gate blocks not aligned with gated blocks (the elementwise product splits them)
    "split": ("2x0o+1x0e", [torch.abs, None], "2x0e+3x0o", [torch.tanh, torch.tanh], "3x1e+2x2o"),
    "no-gates": ("4x0e+2x0o", [F.relu, torch.tanh], "", [], ""),
    "no-scalars": ("", [], "2x0e", [torch.sigmoid], "2x1o"),
    "zero-mul": ("0x0e+3x0e", [F.silu, F.silu], "2x0e+0x0o", [torch.sigmoid, torch.tanh], "1x1e+0x2e+1x3o"),
    "module-act": ("3x0e", [torch.nn.SiLU()], "2x0e", [torch.nn.Sigmoid()], "2x1o"),
}


def make_pair(args):
    with default_dtype(torch.float64):
        return Gate(*args), e3nn_nn.Gate(*args)


def value_and_derivatives(module, x, v):
    """``y = module(x)``, ``g = d(y.v)/dx`` and ``h = d|g|^2/dx`` (a second derivative)."""
    x = x.clone().requires_grad_(True)
    y = module(x)
    (g,) = torch.autograd.grad((y * v).sum(), x, create_graph=True)
    (h,) = torch.autograd.grad((g**2).sum(), x)
    return y.detach(), g.detach(), h


def randn(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", list(GATE_CASES))
def test_gate_matches_e3nn(case):
    ours, ref = make_pair(GATE_CASES[case])
    assert ours.irreps_in == ref.irreps_in and ours.irreps_out == ref.irreps_out
    assert str(ours.irreps_in) == str(ref.irreps_in) and str(ours.irreps_out) == str(ref.irreps_out)
    assert ours.irreps_scalars == ref.irreps_scalars and ours.irreps_gates == ref.irreps_gates
    assert ours.irreps_gated == ref.irreps_gated
    assert ours.act_scalars.irreps_out == ref.act_scalars.irreps_out
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = randn(5, ours.irreps_in.dim, seed=1)
    v = randn(5, ours.irreps_out.dim, seed=2)
    for a, e in zip(value_and_derivatives(ours, x, v), value_and_derivatives(ref, x, v)):
        assert a.shape == e.shape
        assert_close(a, e, order=2)


def test_gate_normalization_constants_and_shapes():
    ours, ref = make_pair(GATE_CASES["parity-sorted"])
    for a, e in zip(list(ours.act_scalars.acts) + list(ours.act_gates.acts), list(ref.act_scalars.acts) + list(ref.act_gates.acts)):
        assert a.cst == e.cst and a._is_id == e._is_id
    # batch shapes, float32
    g = Gate("4x0e", [F.silu], "2x0e", [torch.sigmoid], "2x1o")
    assert g(torch.randn(2, 3, g.irreps_in.dim)).shape == (2, 3, g.irreps_out.dim)
    assert isinstance(g.irreps_in, Irreps)
    # e3nn Irreps objects are accepted
    g2 = Gate(o3.Irreps("4x0e"), [F.silu], o3.Irreps("2x0e"), [torch.sigmoid], o3.Irreps("2x1o"))
    assert g2.irreps_in == g.irreps_in and g2.irreps_out == g.irreps_out


def test_normalize2mom_matches_e3nn():
    for f in (torch.tanh, F.silu, torch.sigmoid, torch.abs, F.gelu, lambda x: x):
        a, e = Normalize2mom(f), e3nn_normalize2mom(f)
        assert a.cst == e.cst and a._is_id == e._is_id
        x = torch.linspace(-3, 3, 11, dtype=torch.float64)
        assert torch.equal(a(x), e(x))


def test_activation_matches_e3nn():
    args = ("3x0e+2x0o+1x1o", [F.silu, torch.tanh, None])
    with default_dtype(torch.float64):
        ours, ref = Activation(*args), e3nn_nn.Activation(*args)
    assert ours.irreps_out == ref.irreps_out
    x = randn(4, 8)
    assert_close(ours(x), ref(x))


def test_gate_equivariant():
    for case in ("parity-sorted", "split"):
        gate = make_pair(GATE_CASES[case])[0]
        x = randn(6, gate.irreps_in.dim, seed=3)
        assert_equivariant(gate, [gate.irreps_in.D_from_matrix], gate.irreps_out.D_from_matrix, [x])


@pytest.mark.parametrize(
    "args, match",
    [
        (("4x0e", [F.silu], "2x1o", [torch.sigmoid], "2x1o"), "irreps_gates"),
        (("4x1e", [F.silu], "2x0e", [torch.sigmoid], "2x1o"), "irreps_scalars"),
        (("4x0e", [F.silu], "2x0e", [torch.sigmoid], "3x1o"), "different number"),
        (("4x0e+2x0e", [F.silu], "2x0e", [torch.sigmoid], "2x1o"), "number of activation"),
        (("4x0o", [F.silu], "2x0e", [torch.sigmoid], "2x1o"), "parity"),
        (("4x0e", [F.silu], "2x0o", [F.silu], "2x1o"), "parity"),
        (("4x0q", [F.silu], "2x0e", [torch.sigmoid], "2x1o"), "irreps_scalars"),
    ],
)
def test_gate_errors(args, match):
    with pytest.raises(ValueError, match=match):
        Gate(*args)
    if "0q" not in args[0]:  # e3nn raises too, with the same type
        with pytest.raises(ValueError):
            e3nn_nn.Gate(*args)


def test_gate_wrong_input_size():
    g = Gate("4x0e", [F.silu], "2x0e", [torch.sigmoid], "2x1o")
    with pytest.raises(ValueError, match="last dimension"):
        g(torch.randn(3, 5))
    with pytest.raises(ValueError, match="last dimension"):
        NormActivation("2x1o", torch.sigmoid)(torch.randn(3, 5))


# ------------------------------------------------------------------ NormActivation

NORM_IRREPS = "2x0e+3x1o+1x1o+2x2e+1x0o"


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"epsilon": 1e-3}, {"bias": True}, {"bias": True, "epsilon": 0.5}],
    ids=["default", "eps", "bias", "bias-eps"],
)
@pytest.mark.parametrize("act", [torch.sigmoid, F.silu], ids=["sigmoid", "silu"])
def test_norm_activation_matches_e3nn(kwargs, act):
    with default_dtype(torch.float64):
        ours = NormActivation(NORM_IRREPS, act, **kwargs)
        ref = e3nn_nn.NormActivation(o3.Irreps(NORM_IRREPS), act, **kwargs)
    assert ours.irreps_in == ref.irreps_in and ours.irreps_out == ref.irreps_out
    if kwargs.get("bias"):
        with torch.no_grad():
            ref.biases.copy_(randn(ref.biases.shape[0], seed=7))
    ours.load_state_dict(ref.state_dict(), strict=True)
    d = ours.irreps_in.dim
    x = randn(7, d, seed=4)
    # zero-norm and tiny-norm irreps: rows 0 and 1 entirely, and some blocks of row 2
    x[0] = 0
    x[1] *= 1e-9
    x[2, 2:11] = 0
    v = randn(7, d, seed=5)
    ours_vals = value_and_derivatives(ours, x, v)
    for a, e in zip(ours_vals, value_and_derivatives(ref, x, v)):
        assert torch.isfinite(a).all()
        assert_close(a, e, order=2)
    if kwargs.get("bias"):
        gb = torch.autograd.grad((ours(x) * v).sum(), ours.biases)[0]
        gb_ref = torch.autograd.grad((ref(x) * v).sum(), ref.biases)[0]
        assert_close(gb, gb_ref, order=1)


def norm_activation_reference(irreps, act, x, normalize):
    """Straightforward per-irrep loop: ``act(|x_u|) x_u (/ |x_u|)``."""
    out = []
    i = 0
    for mul, ir in Irreps(irreps):
        for _ in range(mul):
            xu = x[..., i : i + ir.dim]
            n = xu.norm(dim=-1, keepdim=True)
            s = act(n) / n if normalize else act(n)
            out.append(s * xu)
            i += ir.dim
    return torch.cat(out, dim=-1)


def test_norm_activation_without_normalize():
    """e3nn 0.6 cannot build it (TypeError); check against the plain formula and at 0."""
    ours = NormActivation(NORM_IRREPS, torch.sigmoid, normalize=False)
    d = ours.irreps_in.dim
    x = randn(4, d, seed=6)
    v = randn(4, d, seed=8)
    ref = lambda t: norm_activation_reference(NORM_IRREPS, torch.sigmoid, t, False)  # noqa: E731
    for a, e in zip(value_and_derivatives(ours, x, v), value_and_derivatives(ref, x, v)):
        assert_close(a, e, order=2)
    # at zero features: value 0, Jacobian sigmoid(0) * I, finite second derivatives
    z = torch.zeros(1, d, dtype=torch.float64, requires_grad=True)
    y = ours(z)
    assert torch.equal(y, torch.zeros_like(y))
    jac = torch.autograd.functional.jacobian(lambda t: ours(t), z[0].detach(), create_graph=True)
    assert_close(jac, 0.5 * torch.eye(d, dtype=torch.float64))
    (g,) = torch.autograd.grad((ours(z) * v[:1]).sum(), z, create_graph=True)
    (h,) = torch.autograd.grad((g**2).sum(), z)
    assert torch.isfinite(g).all() and torch.isfinite(h).all()


def test_norm_activation_equivariant():
    for kwargs in ({}, {"normalize": False}):
        m = NormActivation(NORM_IRREPS, F.silu, **kwargs)
        x = randn(5, m.irreps_in.dim, seed=9)
        assert_equivariant(m, [m.irreps_in.D_from_matrix], m.irreps_out.D_from_matrix, [x])


def test_norm_activation_errors_and_state_dict():
    with pytest.raises(ValueError, match="epsilon"):
        NormActivation("2x1o", torch.sigmoid, normalize=False, epsilon=1e-3)
    for eps in (0.0, -1.0):
        with pytest.raises(ValueError, match="epsilon"):
            NormActivation("2x1o", torch.sigmoid, epsilon=eps)
        with pytest.raises(ValueError):
            e3nn_nn.NormActivation("2x1o", torch.sigmoid, epsilon=eps)
    with pytest.raises(ValueError, match="irreps_in"):
        NormActivation("2x1q", torch.sigmoid)
    m = NormActivation("2x1o+3x0e", torch.sigmoid, bias=True)  # a string works with bias (e3nn 0.6: no)
    assert list(m.state_dict()) == ["biases"] and m.biases.shape == (5,)
    assert list(NormActivation("2x1o", torch.sigmoid).state_dict()) == []


# ------------------------------------------------------------------ torch.compile


def test_compiled_matches_eager():
    with default_dtype(torch.float64):
        gate = Gate(*GATE_CASES["parity-sorted"])
        norm = NormActivation(gate.irreps_out, torch.sigmoid, bias=True)
    with torch.no_grad():
        norm.biases.copy_(randn(norm.biases.shape[0], seed=10))

    def fn(x):
        return norm(gate(x))

    x = randn(6, gate.irreps_in.dim, seed=11)
    x[0] = 0
    # inductor for the values; the gradients through AOTAutograd without code generation
    # (the same fullgraph trace and backward graph, and no C++ compilation time)
    torch._dynamo.reset()
    assert_close(torch.compile(fn, fullgraph=True)(x), fn(x))
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    results = []
    for f in (fn, compiled):
        xx = x.clone().requires_grad_(True)
        y = f(xx)
        results.append([y, *torch.autograd.grad(y.pow(2).sum(), [xx, norm.biases])])
    for a, e in zip(*results):
        assert torch.isfinite(a).all()
        assert_close(a, e, order=1)
