"""The ops and modules under ``torch.func`` transforms and forward-mode AD (float64).

What each op does (table in docs/DISTRIBUTED.md), proven here for scatter (sum, mean, max),
segment_csr, gather_csr, Graph.aggregate, spherical_harmonics, TensorProduct,
TensorProductConv, egnn_message and pointconv on the C++ kernels:

* ``torch.vmap`` works (PyTorch's per-sample fallback): equal to a Python loop, also with
  ordinary autograd through the vmapped call.
* ``torch.func.grad`` / ``jacrev`` raise a clear error naming the op, the transform and the
  alternatives, not PyTorch's internal autograd.Function error.
* ``torch.func.jacfwd`` / ``jvp`` / ``hessian`` and ``torch.autograd.forward_ad`` raise a clear error where
  PyTorch silently returned zero tangents (a wrong Jacobian) before.
* ``backend="torch"`` (the plain-PyTorch references) supports every transform, and its
  ``jacrev`` / ``jacfwd`` equal ``torch.autograd.functional.jacobian`` of the C++ op.

And for the modules: ``torch.func.functional_call`` of a TensorFieldNetwork equals the module
call (outputs and parameter gradients through ordinary autograd), ``torch.func.grad`` of it
raises the clear error on the kernels and equals autograd with ``backend="torch"``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vmap

import equiops
from equiops.ops.egnn import MessageConfig, MessageParams, egnn_message
from equiops.ops.pointconv import pointconv

from conftest import assert_close

pytestmark = pytest.mark.skipif(not equiops._extension.available(), reason="C++ extension not built")

F64 = torch.float64


def _randn(g, *shape, scale=1.0):
    return scale * torch.randn(*shape, generator=g, dtype=F64)


def _cases():
    """name -> (op name expected in the error, builder(backend) -> f(x), x): each op as a
    function of one differentiable float64 input, every other argument fixed."""
    g = torch.Generator().manual_seed(0)
    n, E = 6, 15
    src = torch.randint(0, n, (E,), generator=g)
    dst = torch.randint(0, n - 1, (E,), generator=g)  # node n - 1 receives nothing
    graph = equiops.Graph(src, dst, n)
    indptr = torch.tensor([0, 3, 3, 9, 15])
    x_e = _randn(g, E, 4)

    def scatter(reduce):
        return lambda bk: (lambda x: equiops.scatter(x, dst, dim=0, dim_size=n, reduce=reduce, backend=bk))

    tp = equiops.FullyConnectedTensorProduct("2x0e+1x1o", "0e+1o", "2x0e+1x1o+1x1e", internal_weights=True).double()
    x2 = _randn(g, E, 4)
    irreps_out, ins = equiops.nn.channelwise_instructions("2x0e+1x1o", "0e+1o", "2x0e+1x1o")
    conv = equiops.TensorProductConv("2x0e+1x1o", "0e+1o", irreps_out, ins, shared_weights=False,
                                     internal_weights=False).double()
    conv_w = _randn(g, E, conv.weight_numel)

    def with_module(module, call):
        def build(bk):
            def f(x):
                module.backend = bk
                return call(x)
            return f
        return build

    H1, M, Hc = 5, 4, 6
    node_i, node_j, edge_attr = _randn(g, n, H1), _randn(g, n, H1), _randn(g, E, 2)
    params = MessageParams(w_radial=_randn(g, H1, scale=0.3), w_edge=_randn(g, H1, 2), w2=_randn(g, M, H1, scale=0.4),
                           b2=_randn(g, M), w_att=_randn(g, M), b_att=_randn(g, 1), wc1=_randn(g, Hc, M, scale=0.4),
                           bc1=_randn(g, Hc), wc2=_randn(g, Hc), bc2=_randn(g, 1))
    src_nl = torch.where(src == dst, (src + 1) % n, src)  # no self loops: smooth in the coordinates

    def egnn(bk):
        def f(coord):
            m, t = egnn_message(node_i, node_j, coord, edge_attr, src_nl, dst, params, MessageConfig(), backend=bk)
            return torch.cat([m, t], dim=1)
        return f

    B, m, npts, K, C, ci, co = 1, 4, 5, 3, 2, 3, 2
    penult = _randn(g, B, m, K, C)
    nbhd_idx = torch.randint(0, npts, (B, m, K), generator=g)
    nbhd_mask = torch.rand(B, m, K, generator=g) < 0.8
    pc_w, pc_b = _randn(g, co, C * ci, scale=0.4), _randn(g, co)

    return {
        "scatter_sum": ("scatter_sum", scatter("sum"), x_e),
        "scatter_mean": ("scatter_sum", scatter("mean"), x_e),
        "scatter_max": ("scatter_minmax", scatter("max"), x_e),
        "segment_csr": ("segment_sum", lambda bk: (lambda x: equiops.segment_csr(x, indptr, reduce="sum", backend=bk)),
                        x_e),
        "gather_csr": ("segment_gather", lambda bk: (lambda x: equiops.gather_csr(x, indptr, backend=bk)),
                       _randn(g, 4, 3)),
        "graph_aggregate": ("Graph.aggregate", lambda bk: (lambda x: graph.aggregate(x, "sum", backend=bk)), x_e),
        "spherical_harmonics": ("equiops.spherical_harmonics", lambda bk: (
            lambda v: equiops.spherical_harmonics([0, 1, 2], v, normalize=True, backend=bk)), _randn(g, E, 3)),
        "tensor_product": ("equiops.TensorProduct", with_module(tp, lambda x: tp(x, x2)), _randn(g, E, 5)),
        "tp_conv": ("equiops.TensorProductConv", with_module(conv, lambda x: conv(x, x2, conv_w, src, dst, n)),
                    _randn(g, n, 5)),
        "egnn_message": ("equiops.egnn_message", egnn, _randn(g, n, 3)),
        "pointconv": ("torch.ops.equiops.pointconv", lambda bk: (
            lambda v: pointconv(penult, v, nbhd_idx, nbhd_mask, pc_w, pc_b, backend=bk)), _randn(g, B, npts, ci)),
    }


CASES = _cases()


@pytest.fixture(params=sorted(CASES))
def case(request):
    return CASES[request.param]


def test_vmap_equals_loop(case):
    """vmap (PyTorch's per-sample fallback) equals a loop, with ordinary autograd through it."""
    _, build, x = case
    f = build("cpu")
    xb = torch.stack([x, 0.5 * x + 0.1, -x]).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "performance drop ... batching rule" from the fallback
        out = vmap(f)(xb)
    expected = torch.stack([f(xb[i]) for i in range(xb.shape[0])])
    assert_close(out, expected)
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    (gv,) = torch.autograd.grad(out, xb, cot)
    (ge,) = torch.autograd.grad(expected, xb, cot)
    assert_close(gv, ge, order=1)


def test_spherical_harmonics_have_vmap_rules():
    """The harmonics ops have batching rules (the batch folded into the rows), so they run
    with PyTorch's per-sample fallback switched off: values, the Jacobian op, and autograd
    through vmap to the second order (the force-training pattern) equal a loop."""
    F = torch._C._functorch
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 7, 3, generator=g, dtype=F64).requires_grad_()
    xt = x.detach().transpose(0, 1).contiguous()  # batch in dim 1

    def f(v):
        return equiops.spherical_harmonics([0, 1, 2, 3], v, normalize=True, backend="cpu")

    def f_jac(v):
        return equiops.spherical_harmonics_with_gradients([1, 2], v, backend="cpu")

    enabled = F._is_vmap_fallback_enabled()
    F._set_vmap_fallback_enabled(False)
    try:
        out = vmap(f)(x)
        out_dim1 = vmap(f, in_dims=1)(xt)
        vals, jac = vmap(f_jac)(x.detach())
        cot = torch.randn(out.shape, generator=g, dtype=F64)
        (gx,) = torch.autograd.grad(out, x, cot, create_graph=True)
        cot2 = torch.randn(gx.shape, generator=g, dtype=F64)
        (ggx,) = torch.autograd.grad(gx, x, cot2)
    finally:
        F._set_vmap_fallback_enabled(enabled)
    expected = torch.stack([f(x[i]) for i in range(3)])
    assert_close(out, expected)
    assert_close(out_dim1, expected)
    loop = [f_jac(x[i].detach()) for i in range(3)]
    assert_close(vals, torch.stack([v for v, _ in loop]))
    assert_close(jac, torch.stack([j for _, j in loop]))
    (ge,) = torch.autograd.grad(expected, x, cot, create_graph=True)
    (gge,) = torch.autograd.grad(ge, x, cot2)
    assert_close(gx, ge, order=1)
    assert_close(ggx, gge, order=2)


def _reverse_error(name):
    # The op's name, the transform, and both ways out.
    return rf"(?s){name}.*does not support torch\.func's reverse-mode transforms.*torch\.autograd\.grad.*backend='torch'"


def _forward_error(name):
    return rf"(?s){name}.*does not support forward-mode AD.*silently return zero tangents.*backend='torch'"


def test_reverse_transforms_raise_a_clear_error(case):
    name, build, x = case
    f = build("cpu")
    with pytest.raises(RuntimeError, match=_reverse_error(name)):
        grad(lambda y: f(y).square().sum())(x)
    with pytest.raises(RuntimeError, match=_reverse_error(name)):
        jacrev(f)(x)


def test_forward_mode_raises_instead_of_zero_tangents(case):
    """jacfwd / jvp / forward_ad used to return zeros silently (the op has no forward rule)."""
    name, build, x = case
    f = build("cpu")
    with pytest.raises(RuntimeError, match=_forward_error(name)):
        jacfwd(f)(x)
    with pytest.raises(RuntimeError, match=_forward_error(name)):
        jvp(f, (x,), (torch.ones_like(x),))
    with pytest.raises(RuntimeError, match=_forward_error(name)):  # jacfwd(jacrev(...))
        hessian(lambda y: f(y).square().sum())(x)
    import torch.autograd.forward_ad as fwad

    with fwad.dual_level(), pytest.raises(RuntimeError, match=_forward_error(name)):
        f(fwad.make_dual(x, torch.ones_like(x)))


def test_reference_backend_supports_every_transform(case):
    """backend='torch' is the path for torch.func users: its jacrev and jacfwd equal the
    Jacobian of the C++ op by ordinary autograd."""
    _, build, x = case
    expected = torch.autograd.functional.jacobian(build("cpu"), x)
    assert float(expected.abs().max()) > 0
    f = build("torch")
    assert_close(jacrev(f)(x), expected, order=1)
    assert_close(jacfwd(f)(x), expected, order=1)


def test_op_inputs_outside_the_transform_are_fine():
    """Only inputs the transform differentiates raise: a constant input inside grad is fine."""
    name, build, x = CASES["scatter_sum"]
    f = build("cpu")

    def loss(a):
        return a * f(x).sum()  # x is not transformed: no functorch wrapper, no error

    a = torch.tensor(2.0, dtype=F64)
    assert_close(grad(loss)(a), f(x).sum())


# ----------------------------------------------------------------------------- modules
def _tfn_and_data(backend=None):
    torch.manual_seed(3)
    model = equiops.nn.TensorFieldNetwork(3, "4x0e+2x1o+1x1e", 2, num_layers=2, r_max=2.5, num_basis=4,
                                          radial_neurons=(8,), avg_num_neighbors=3.0, backend=backend).double()
    g = torch.Generator().manual_seed(4)
    n = 7
    pos = torch.randn(n, 3, generator=g, dtype=F64)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    mask = ((pos[i] - pos[j]).norm(dim=-1) < 2.5) & (i != j)
    species = torch.arange(n) % 3
    return model, (pos, species, j[mask], i[mask])


def test_functional_call_of_tfn_equals_module():
    """functional_call swaps parameters: outputs and (ordinary autograd) parameter
    gradients equal the module's with those parameters loaded."""
    model, data = _tfn_and_data()
    params = {k: (v.detach() * 1.1).requires_grad_() for k, v in model.named_parameters()}
    out = functional_call(model, params, data)
    grads = torch.autograd.grad(out.sum(), list(params.values()))
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(params[k])
    expected = model(*data)
    expected_grads = torch.autograd.grad(expected.sum(), list(model.parameters()))
    assert_close(out, expected)
    for a, b in zip(grads, expected_grads):
        assert_close(a, b, order=1)


def test_func_grad_of_tfn():
    """torch.func.grad over functional_call: a clear error on the kernels; with
    backend='torch' it equals ordinary autograd of the kernels' model."""
    model, data = _tfn_and_data()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, m):
        return functional_call(m, p, data).square().sum()

    with pytest.raises(RuntimeError, match="does not support torch.func's reverse-mode transforms"):
        grad(loss)(params, model)
    ref_model, _ = _tfn_and_data(backend="torch")
    got = grad(loss)(params, ref_model)
    expected = torch.autograd.grad(model(*data).square().sum(), list(model.parameters()))
    for k, e in zip(params, expected):
        assert_close(got[k], e, order=1)


def test_vmap_of_tfn_over_positions():
    """vmap over a batch of position sets (one graph): energies on the kernels equal a loop;
    per-sample forces by vmap(grad) on backend='torch' equal the kernels' autograd forces.
    (The references add into buffers out of place: there the first layer's one-hot features
    are not batched while the harmonics of the batched positions are.)"""
    model, (pos, species, src, dst) = _tfn_and_data()
    ref_model, _ = _tfn_and_data(backend="torch")
    pb = torch.stack([pos, 1.05 * pos, pos + 0.1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        energies = vmap(lambda p: model(p, species, src, dst))(pb)
    expected = torch.stack([model(p, species, src, dst) for p in pb])
    assert_close(energies, expected)
    forces = vmap(grad(lambda p: -ref_model(p, species, src, dst).sum()))(pb)
    for p, f in zip(pb, forces):
        p = p.clone().requires_grad_()
        (expected_grad,) = torch.autograd.grad(model(p, species, src, dst).sum(), p)
        assert_close(f, -expected_grad, order=1)


def test_batched_hessian_vector_products_through_the_kernels():
    """torch.autograd.grad(is_grads_batched=True) vmaps the backward: Hessian-vector
    products of a TFN energy through the kernels' double backward equal a loop."""
    model, (pos, species, src, dst) = _tfn_and_data()
    p = pos.clone().requires_grad_()
    (forces,) = torch.autograd.grad(model(p, species, src, dst).sum(), p, create_graph=True)
    vs = torch.randn(3, *forces.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (hv,) = torch.autograd.grad(forces, p, vs, is_grads_batched=True, retain_graph=True)
    expected = torch.stack([torch.autograd.grad(forces, p, v, retain_graph=True)[0] for v in vs])
    assert float(expected.abs().max()) > 0
    assert_close(hv, expected, order=2)
