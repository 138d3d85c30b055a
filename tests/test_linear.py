"""equiops.nn.linear.Linear against e3nn.o3.Linear (weights copied): outputs and
derivatives to second order (float64 to 1e-10 relative, float32), shared / unshared /
external weights, biases, custom instructions, both path normalizations, f_in/f_out,
state_dict both ways, from_e3nn, equivariance, compile and export, bad input."""

from __future__ import annotations

import copy

import pytest
import torch

import equiops
from equiops.nn.linear import Linear

from conftest import assert_equivariant, default_dtype

o3 = pytest.importorskip("e3nn.o3")

F64_TOL = 1e-10
F32_TOL = 2e-5

# (irreps_in, irreps_out, kwargs): several blocks of one irrep, outputs no instruction
# reaches, biases on/off/per output, custom (sparse, repeated) instructions, both path
# normalizations, feature axes, multiplicity 0.
CASES = [
    ("2x0e+1x1o", "3x0e+1x1o", {}),
    ("4x0e+3x0e+2x1o+5x1o+1x2e", "2x0e+4x1o+3x0e+1x1e", {"biases": True}),
    ("8x0e+8x1o+8x0e", "8x0e+8x1o+8x1o+8x0e", {"path_normalization": "path"}),
    ("4x0e+3x0e", "4x0e+3x0e", {"instructions": [(0, 0), (1, 1)]}),
    ("4x0e+3x0e+2x2o", "4x0e+3x0e+1x2o", {"instructions": [(0, 0), (1, 1), (0, 1), (2, 2)], "path_normalization": "path"}),
    ("2x0e+3x0e", "3x0e+2x0e", {"instructions": [(0, 0), (0, 0), (1, 0)], "biases": [True, False]}),
    ("5x0e+1x1o+2x0e", "1x0e+3x1o+2x0o", {"instructions": [(0, 0), (1, 1)], "biases": [True, False, False]}),
    ("2x0e+1x1o", "3x0e+1x1o+2x0e", {"f_in": 4, "f_out": 3, "biases": [True, False, True]}),
    ("2x0e+0x1o", "3x0e+2x1o+0x0e", {"biases": True}),
    ("3x1e+2x0o", "2x1e+1x0o", {}),
    # a sparse chain (7 of 16 blocks): one product per input block
    ("2x1o+3x1o+1x1o+2x1o", "1x1o+2x1o+3x1o+2x1o",
     {"instructions": [(0, 0), (1, 0), (1, 1), (2, 1), (2, 2), (3, 2), (3, 3)], "biases": True}),
]
IDS = [f"{a}->{b}" + ("|" + ",".join(sorted(k)) if k else "") for a, b, k in CASES]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0, dtype=torch.float64, requires_grad=False):
    t = torch.randn(*shape, generator=_gen(seed), dtype=torch.float64).to(dtype)
    return t.requires_grad_(requires_grad)


def _pair(irreps_in, irreps_out, seed=0, **kwargs):
    """(e3nn module, ours) with equal random weights and biases, both float64."""
    e3nn_kwargs = dict(kwargs)
    if kwargs.get("shared_weights") is False and kwargs.get("biases"):
        e3nn_kwargs["_optimize_einsums"] = False  # e3nn's einsum optimizer fails on this case
    with default_dtype(torch.float64):
        theirs = o3.Linear(irreps_in, irreps_out, **e3nn_kwargs)
        ours = Linear(irreps_in, irreps_out, **kwargs)
    with torch.no_grad():
        if isinstance(theirs.weight, torch.nn.Parameter):
            theirs.weight.copy_(_randn(*theirs.weight.shape, seed=seed))
        if isinstance(theirs.bias, torch.nn.Parameter):
            theirs.bias.copy_(_randn(*theirs.bias.shape, seed=seed + 1))
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs, ours


def _assert_rel(actual, expected, tol):
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = expected.abs().max().item() if expected.numel() else 0.0
    err = (actual.double() - expected.double()).abs().max().item() if expected.numel() else 0.0
    assert err <= tol * max(scale, 1e-300) or err == 0.0, f"max error {err} vs scale {scale}"


def _x_shape(kwargs, lead=(5, 3)):
    return lead + ((kwargs["f_in"],) if kwargs.get("f_in") else ())


# --------------------------------------------------------------------------- values
@pytest.mark.parametrize("irreps_in,irreps_out,kwargs", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_matches_e3nn_with_gradients(irreps_in, irreps_out, kwargs, dtype):
    theirs, ours = _pair(irreps_in, irreps_out, **kwargs)
    ours = ours.to(dtype)
    tol = F64_TOL if dtype == torch.float64 else F32_TOL
    assert [tuple(i) for i in ours.instructions] == [tuple(i) for i in theirs.instructions]
    assert (ours.weight_numel, ours.bias_numel) == (theirs.weight_numel, theirs.bias_numel)
    assert torch.equal(ours.output_mask.double(), theirs.output_mask)
    assert repr(ours) == repr(theirs)

    x64 = _randn(*_x_shape(kwargs), o3.Irreps(irreps_in).dim, seed=3, requires_grad=True)
    x = x64.detach().to(dtype).requires_grad_()
    expected, actual = theirs(x64), ours(x)
    assert actual.dtype == dtype
    _assert_rel(actual, expected, tol)

    g = _randn(*expected.shape, seed=4)
    params_t = [p for p in (theirs.weight, theirs.bias) if isinstance(p, torch.nn.Parameter)]
    params_o = [p for p in (ours.weight, ours.bias) if isinstance(p, torch.nn.Parameter)]
    grads_t = torch.autograd.grad(expected, [x64] + params_t, g, allow_unused=True)
    grads_o = torch.autograd.grad(actual, [x] + params_o, g.to(dtype), allow_unused=True)
    for a, e in zip(grads_o, grads_t):
        if e is None:
            assert a is None or not a.any()
        else:
            _assert_rel(a, e, tol)


def test_same_seed_same_weights():
    with default_dtype(torch.float64):
        torch.manual_seed(7)
        theirs = o3.Linear("4x0e+2x1o", "3x0e+2x1o", f_in=2, f_out=3, biases=True)
        torch.manual_seed(7)
        ours = Linear("4x0e+2x1o", "3x0e+2x1o", f_in=2, f_out=3, biases=True)
    assert torch.equal(theirs.weight, ours.weight) and torch.equal(theirs.bias, ours.bias)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight", "bias", "output_mask"]


@pytest.mark.parametrize("irreps_in,irreps_out,kwargs", [c for c in CASES if not c[2].get("f_in")], ids=[
    i for i, c in zip(IDS, CASES) if not c[2].get("f_in")])
def test_second_derivatives_match_e3nn(irreps_in, irreps_out, kwargs):
    """d/d(x, weight) of <grad_x(out . g), v>: the force-training pattern."""
    theirs, ours = _pair(irreps_in, irreps_out, **kwargs)
    results = []
    for mod in (theirs, ours):
        x = _randn(4, o3.Irreps(irreps_in).dim, seed=5, requires_grad=True)
        out = mod(x)
        g = _randn(*out.shape, seed=6)
        (gx,) = torch.autograd.grad(out, x, g, create_graph=True)
        v = _randn(*gx.shape, seed=7)
        params = [p for p in (mod.weight,) if isinstance(p, torch.nn.Parameter)]
        if not params or not gx.requires_grad:
            results.append(None)
            continue
        results.append(torch.autograd.grad((gx * v).sum(), params))
    if results[0] is None:
        return
    for a, e in zip(results[1], results[0]):
        _assert_rel(a, e, F64_TOL)


@pytest.mark.parametrize("f", [False, True], ids=["plain", "f_in_f_out"])
def test_unshared_weights_match_e3nn(f):
    irreps_in, irreps_out = "3x0e+2x1o+1x0e", "2x0e+3x1o"
    kw = {"f_in": 2, "f_out": 3} if f else {}
    theirs, ours = _pair(irreps_in, irreps_out, shared_weights=False, **kw)
    assert not ours.internal_weights and not ours.shared_weights
    assert ours.weight.numel() == 0
    feat = (2, 3) if f else ()
    x = _randn(2, 3, *feat[:1], o3.Irreps(irreps_in).dim, seed=1, requires_grad=True)
    # one row of weights per batch element (given with the batch shape, or flattened)
    for w_shape in [(2, 3), (6,), (1,), ()]:
        w = _randn(*w_shape, *feat, ours.weight_numel, seed=2, requires_grad=True)
        expected = theirs(x, w)
        actual = ours(x, w)
        _assert_rel(actual, expected, F64_TOL)
        g = _randn(*expected.shape, seed=3)
        for a, e in zip(torch.autograd.grad(actual, (x, w), g), torch.autograd.grad(expected, (x, w), g)):
            _assert_rel(a, e, F64_TOL)


def test_unshared_weights_with_bias():
    theirs, ours = _pair("3x0e+1x1o", "2x0e+1x1o", shared_weights=False, biases=True)
    x = _randn(5, 6, seed=1)
    w = _randn(5, ours.weight_numel, seed=2)
    b = _randn(ours.bias_numel, seed=3)
    _assert_rel(ours(x, w, b), theirs(x, w, b), F64_TOL)
    with pytest.raises(ValueError, match="bias must be given"):
        ours(x, w)


def test_external_shared_weights():
    theirs, ours = _pair("3x0e+1x1o", "2x0e+1x1o", internal_weights=False, biases=True)
    assert ours.shared_weights and not ours.internal_weights
    x = _randn(4, 6, seed=1)
    w, b = _randn(ours.weight_numel, seed=2), _randn(ours.bias_numel, seed=3)
    _assert_rel(ours(x, w, b), theirs(x, w, b), F64_TOL)
    _assert_rel(ours(x, w[None], b[None]), theirs(x, w, b), F64_TOL)
    with pytest.raises(ValueError, match="weight must be given"):
        ours(x)


def test_explicit_weight_overrides_internal():
    theirs, ours = _pair("3x0e+1x1o", "2x0e+1x1o", biases=True)
    x = _randn(4, 6, seed=1)
    w, b = _randn(ours.weight_numel, seed=2), _randn(ours.bias_numel, seed=3)
    _assert_rel(ours(x, w, b), theirs(x, w, b), F64_TOL)


def test_bias_only_outputs():
    """Outputs reached only by a bias are the bias broadcast (e3nn 0.6 fails to reshape
    this case; the semantics are its documented ones)."""
    lin = Linear("2x1o", "3x0e+1x1o", biases=True)
    with torch.no_grad():
        lin.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    x = torch.randn(4, 6)
    out = lin(x)
    assert torch.equal(out[:, :3], torch.tensor([1.0, 2.0, 3.0]).expand(4, 3))
    torch.testing.assert_close(out[:, 3:], torch.einsum("uw,zui->zwi", lin.weight.view(2, 1), x.view(4, 2, 3)).reshape(4, 3)
                               * 2 ** -0.5)


# --------------------------------------------------------------------------- shapes
def test_non_contiguous_input():
    theirs, ours = _pair("3x0e+2x1o", "2x0e+2x1o")
    x = _randn(9, 4, seed=1).t()[:, :9]
    assert not x.is_contiguous()
    _assert_rel(ours(x), theirs(x), F64_TOL)


@pytest.mark.parametrize("lead", [(), (0,), (7,), (2, 3, 4)], ids=lambda s: str(s))
def test_leading_dimensions(lead):
    theirs, ours = _pair("2x0e+1x1o", "3x0e+1x1o", biases=True)
    x = _randn(*lead, 5, seed=1)
    expected = theirs(x)
    actual = ours(x)
    assert actual.shape == expected.shape == lead + (6,)
    _assert_rel(actual, expected, F64_TOL)


def test_empty_irreps_and_no_instructions():
    for irreps_in, irreps_out in [("2x0e", ""), ("2x0e", "3x1o"), ("0x0e", "2x0e"), ("2x0e+1x1o", "1x2e+0x0e")]:
        theirs, ours = _pair(irreps_in, irreps_out)
        x = _randn(3, o3.Irreps(irreps_in).dim, seed=1)
        out = ours(x)
        assert out.shape == (3, o3.Irreps(irreps_out).dim)
        assert not out.any()
        assert ours.weight_numel == theirs.weight_numel
        assert torch.equal(ours.output_mask.double(), theirs.output_mask)


def test_irreps_argument_types():
    a = Linear("2x0e+1x1o", "3x0e")
    b = Linear(equiops.Irreps("2x0e+1x1o"), equiops.Irreps("3x0e"))
    c = Linear(o3.Irreps("2x0e+1x1o"), o3.Irreps("3x0e"))
    assert a.irreps_in == b.irreps_in == c.irreps_in and isinstance(c.irreps_in, equiops.Irreps)
    assert a.weight_numel == b.weight_numel == c.weight_numel == 6


def test_weight_views_match_e3nn():
    theirs, ours = _pair("4x0e+3x0e+2x1o", "2x0e+1x1o", f_in=2, f_out=3)
    views_t = list(theirs.weight_views(yield_instruction=True))
    views_o = list(ours.weight_views(yield_instruction=True))
    assert len(views_t) == len(views_o) == 3
    for (kt, it, vt), (ko, io, vo) in zip(views_t, views_o):
        assert kt == ko and tuple(it) == tuple(io) and torch.equal(vt, vo)
    assert torch.equal(ours.weight_view_for_instruction(1), theirs.weight_view_for_instruction(1))
    w = _randn(5, ours.weight_numel, seed=1)
    for vt, vo in zip(theirs.weight_views(w), ours.weight_views(w)):
        assert torch.equal(vt, vo)
    with_bias = Linear("2x0e", "3x0e", biases=True)
    assert [v.shape for v in with_bias.weight_views()] == [(2, 3)]
    with pytest.raises(ValueError, match="is a bias"):
        with_bias.weight_view_for_instruction(1)


def test_grouping_plan():
    """The default instructions of one irrep are one dense product; a block-diagonal
    instruction set is one product per block; layout-preserving cases need no gather."""
    assert len(Linear("8x0e+8x0e", "16x0e")._groups) == 1
    assert len(Linear("8x0e+4x1o+8x0e", "8x0e+4x1o+8x0e")._groups) == 2
    chain = Linear("2x1o+3x1o+1x1o+2x1o", "1x1o+2x1o+3x1o+2x1o",
                   instructions=[(0, 0), (1, 0), (1, 1), (2, 1), (2, 2), (3, 2), (3, 3)])
    assert len(chain._groups) == 4 and chain._gather and not chain._padded
    diag = Linear("4x0e+3x0e", "4x0e+3x0e", instructions=[(0, 0), (1, 1)])
    assert len(diag._groups) == 2 and not diag._gather
    assert not Linear("8x0e+4x1o", "8x0e+4x1o")._gather


# --------------------------------------------------------------------------- interop
@pytest.mark.parametrize("irreps_in,irreps_out,kwargs", CASES, ids=IDS)
def test_state_dict_and_from_e3nn(irreps_in, irreps_out, kwargs):
    theirs, ours = _pair(irreps_in, irreps_out, **kwargs)
    # ours -> e3nn, strictly
    with default_dtype(torch.float64):
        fresh = o3.Linear(irreps_in, irreps_out, **kwargs)
    fresh.load_state_dict(ours.state_dict(), strict=True)
    x = _randn(*_x_shape(kwargs), o3.Irreps(irreps_in).dim, seed=1)
    _assert_rel(fresh(x), ours(x), F64_TOL)
    # from_e3nn
    conv = Linear.from_e3nn(theirs)
    assert isinstance(conv.weight, torch.nn.Parameter) == isinstance(theirs.weight, torch.nn.Parameter)
    assert [tuple(i) for i in conv.instructions] == [tuple(i) for i in theirs.instructions]
    assert conv.weight.dtype == torch.float64
    _assert_rel(conv(x), theirs(x), F64_TOL)


def test_from_e3nn_external_weights_and_dtype():
    with default_dtype(torch.float64):
        theirs = o3.Linear("3x0e+1x1o", "2x0e+1x1o", shared_weights=False, f_in=2, f_out=3)
    with pytest.raises(ValueError, match="f_in and f_out"):
        Linear.from_e3nn(theirs)
    state = torch.random.get_rng_state()
    conv = Linear.from_e3nn(theirs, f_in=2, f_out=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    x = _randn(4, 2, 6, seed=1)
    w = _randn(4, 2, 3, conv.weight_numel, seed=2)
    _assert_rel(conv(x, w), theirs(x, w), F64_TOL)
    f32 = o3.Linear("3x0e", "2x0e")  # float32 default dtype
    assert Linear.from_e3nn(f32).weight.dtype == torch.float32
    with pytest.raises(TypeError, match="e3nn.o3.Linear"):
        Linear.from_e3nn(torch.nn.Linear(2, 3))


def test_dtype_round_trip_keeps_path_weights_exact():
    theirs, ours = _pair("3x0e+4x0e+2x1o", "5x0e+1x1o")
    ours.float().half().double()
    theirs_w = ours.weight.detach().clone()
    with torch.no_grad():
        theirs.weight.copy_(theirs_w)
    x = _randn(6, ours.irreps_in.dim, seed=1)
    _assert_rel(ours(x), theirs(x), F64_TOL)
    assert ours._w_scale.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types(dtype):
    _, ours = _pair("4x0e+2x1o", "3x0e+2x1o", biases=True)
    x = _randn(8, ours.irreps_in.dim, seed=1)
    expected = ours(x)
    actual = copy.deepcopy(ours).to(dtype)(x.to(dtype))
    assert actual.dtype == dtype
    _assert_rel(actual, expected, 2e-2)


# --------------------------------------------------------------------------- properties
def test_equivariance():
    _, ours = _pair("3x0e+2x1o+1x1e+2x2e+1x0o", "2x0e+3x1o+1x1e+1x2e+2x0o", biases=True)
    x = _randn(10, ours.irreps_in.dim, seed=1)
    assert_equivariant(ours, [ours.irreps_in.D_from_matrix], ours.irreps_out.D_from_matrix, [x])


def test_gradcheck_and_gradgradcheck():
    _, ours = _pair("2x0e+1x1o+1x0e", "2x0e+2x1o", biases=True, internal_weights=False)
    x = _randn(3, ours.irreps_in.dim, seed=1, requires_grad=True)
    w = _randn(ours.weight_numel, seed=2, requires_grad=True)
    b = _randn(ours.bias_numel, seed=3, requires_grad=True)
    assert torch.autograd.gradcheck(ours, (x, w, b))
    assert torch.autograd.gradgradcheck(ours, (x, w, b))
    _, unshared = _pair("2x0e+1x1o", "1x0e+1x1o", shared_weights=False)
    w = _randn(3, unshared.weight_numel, seed=4, requires_grad=True)
    assert torch.autograd.gradgradcheck(unshared, (x[:, :5], w))


def test_compile_fullgraph_matches_eager():
    """Compiled forward and first-order backward (unshared weights included) equal eager."""
    for kwargs in ({"biases": True, "path_normalization": "path"}, {"shared_weights": False}):
        torch._dynamo.reset()
        _, ours = _pair("4x0e+3x0e+2x1o", "2x0e+3x1o+1x0e", **kwargs)
        x = _randn(6, ours.irreps_in.dim, seed=1, requires_grad=True)
        args = (x,) if ours.internal_weights else (x, _randn(6, ours.weight_numel, seed=2, requires_grad=True))
        compiled = torch.compile(ours, fullgraph=True)
        out_c, out_e = compiled(*args), ours(*args)
        _assert_rel(out_c, out_e, 1e-12)
        g = _randn(*out_e.shape, seed=3)
        inputs = list(args) + [p for p in ours.parameters()]
        for a, e in zip(torch.autograd.grad(out_c, inputs, g), torch.autograd.grad(out_e, inputs, g)):
            _assert_rel(a, e, 1e-12)


def test_compiled_force_computation_with_traced_autograd():
    """Forward and the create_graph first derivative compiled as one region, then
    differentiated again outside (the force-training pattern)."""
    _, ours = _pair("4x0e+3x0e+2x1o", "2x0e+3x1o+1x0e", biases=True)
    x = _randn(6, ours.irreps_in.dim, seed=1, requires_grad=True)
    v = _randn(6, ours.irreps_in.dim, seed=2)

    def force(a):
        out = ours(a)
        return torch.autograd.grad(out.pow(2).sum(), a, create_graph=True)[0]

    torch._dynamo.reset()
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled = torch.compile(force, fullgraph=True)(x)
    eager = force(x)
    _assert_rel(compiled, eager, 1e-12)
    inputs = (x, ours.weight)
    for a, e in zip(torch.autograd.grad((compiled * v).sum(), inputs), torch.autograd.grad((eager * v).sum(), inputs)):
        _assert_rel(a, e, 1e-12)


def test_export():
    _, ours = _pair("4x0e+2x1o", "3x0e+2x1o", f_in=2, f_out=3, biases=True)
    x = _randn(5, 2, ours.irreps_in.dim, seed=1)
    n = torch.export.Dim("n")
    program = torch.export.export(ours, (x,), dynamic_shapes=({0: n},))
    x2 = _randn(7, 2, ours.irreps_in.dim, seed=2)
    _assert_rel(program.module()(x2), ours(x2), 1e-12)


# --------------------------------------------------------------------------- bad input
def test_bad_constructor_arguments():
    cases = [
        (ValueError, "irreps_in", dict(irreps_in="2x0q", irreps_out="1x0e")),
        (TypeError, "irreps_out", dict(irreps_in="2x0e", irreps_out=3.5)),
        (ValueError, "path_normalization", dict(path_normalization="none")),
        (ValueError, "f_in and f_out", dict(f_in=2)),
        (ValueError, "f_out", dict(f_in=2, f_out=0)),
        (ValueError, "internal_weights=True", dict(internal_weights=True, shared_weights=False)),
        (ValueError, "i_in=2 is not a valid index", dict(instructions=[(2, 0)])),
        (ValueError, "i_out=-1 is not a valid index", dict(instructions=[(0, -1)])),
        (ValueError, "connects different irreps", dict(instructions=[(1, 0)])),
        (ValueError, "must be a pair", dict(instructions=[(0, 0, 1)])),
        (TypeError, "instructions must be a list", dict(instructions="00")),
        (ValueError, "one entry per block", dict(biases=[True])),
        (ValueError, r"biases\[1\] is True", dict(biases=[True, True])),
        (TypeError, "biases must be a bool", dict(biases=[1, 0])),
        (ValueError, "backend", dict(backend="gpu")),
    ]
    for err, match, kw in cases:
        args = {"irreps_in": "2x0e+1x1o", "irreps_out": "3x0e+1x1o", **kw}
        with pytest.raises(err, match=match):
            Linear(args.pop("irreps_in"), args.pop("irreps_out"), **args)


def test_bad_forward_arguments():
    lin = Linear("2x0e+1x1o", "3x0e+1x1o", biases=True)
    x = torch.randn(4, 5)
    with pytest.raises(TypeError, match="features must be a tensor"):
        lin([1.0] * 5)
    with pytest.raises(ValueError, match=r"features must have shape \(\.\.\., 5\).*got \(4, 6\)"):
        lin(torch.randn(4, 6))
    with pytest.raises(TypeError, match="floating-point"):
        lin(torch.ones(4, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="weight has dtype torch.float32 but features has torch.float64"):
        lin(x.double())
    with pytest.raises(ValueError, match=r"shared weight must have shape \(7,\), got \(8,\)"):
        lin(x, torch.randn(8))
    with pytest.raises(ValueError, match=r"shared weight must have shape \(7,\), got \(2, 7\)"):
        lin(x, torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\), got \(4,\)"):
        lin(x, None, torch.randn(4))
    with pytest.raises(TypeError, match="bias has dtype"):
        lin(x, None, torch.randn(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="weight must be a tensor"):
        lin(x, [0.0] * 7)
    feat = Linear("2x0e", "3x0e", f_in=2, f_out=4)
    with pytest.raises(ValueError, match=r"features must have shape \(\.\.\., 2, 2\)"):
        feat(torch.randn(3, 2))
    unshared = Linear("2x0e", "3x0e", shared_weights=False)
    with pytest.raises(ValueError, match="weight has 3 rows of weights but features has 4 rows"):
        unshared(torch.randn(4, 2), torch.randn(3, 6))
    with pytest.raises(ValueError, match=r"weight must have shape \(batch\.\.\., 6\), got \(4, 5\)"):
        unshared(torch.randn(4, 2), torch.randn(4, 5))
    with pytest.raises(ValueError, match="weight is on cpu but features is on meta"):
        lin(x.to("meta"))
