"""The compile contract over every public op and module, in one place.

For each case: ``torch.compile(fullgraph=True, dynamic=True)`` (Inductor) runs three
problem sizes (different node and edge counts) with exactly one compilation (no graph
break: fullgraph; no recompile: the frame counter stays at 1), outputs equal to eager,
and the backward of the compiled graph (run by ``loss.backward()``, so a compiled
region that silently drops its backward fails here) equal to eager's gradients. Also:
the force-training double backward compiled as one region with dynamic sizes, and a
graph whose edge count is an unbacked size (a radius graph built inside the compiled
region by ``nonzero``).

Per-op suites (test_scatter.py, test_tp_conv.py, ...) test more variants; this file is
the audit that no public entry point is left out (``test_every_entry_point_is_covered``).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import pytest
import torch
import torch._dynamo.testing

import equiops
from equiops import nn as eqnn
from equiops.lie import T
from equiops.nn import egnn_pytorch
from equiops.ops.egnn import MessageConfig, MessageParams, egnn_message
from equiops.ops.pointconv import pointconv

from conftest import assert_close

pytestmark = pytest.mark.slow

# Nodes; edges grow with them (and with the seed). Above 32 nodes: Inductor decomposes a
# matrix product with a dimension <= 32 differently (size guards such as n + 8 <= 32), so
# sizes on both sides of that line compile twice, which is Inductor's choice, not ours.
# Also distinct from every feature width below: dynamic=True "duck-sizes" equal sizes
# into one symbol, so a node count equal to a checked width would be specialised.
SIZES = (37, 44, 53)
DT = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _rand(*shape, seed, scale=1.0):
    return scale * torch.randn(*shape, generator=_gen(seed), dtype=DT)


def _edges(n: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random edges with a duplicate, a self-loop and an isolated receiver; E = 3n + seed % 5."""
    g = _gen(seed)
    E = 3 * n + seed % 5
    src = torch.randint(0, n, (E,), generator=g)
    dst = torch.randint(0, n - 1, (E,), generator=g)
    src[1], dst[1] = src[0], dst[0]
    src[2] = dst[2]
    return src, dst


def _indptr(n_segments: int, rows: int, seed: int) -> torch.Tensor:
    cuts = torch.sort(torch.randint(0, rows + 1, (n_segments - 1,), generator=_gen(seed))).values
    return torch.cat([torch.zeros(1, dtype=torch.long), cuts, torch.full((1,), rows, dtype=torch.long)])


# Each case: make(n, seed) -> (fn, args). Float tensors in args get requires_grad and
# their gradients (and the parameters') are compared. fn's outputs: a tensor or a tuple.
Case = Callable[[int, int], Tuple[Callable, List]]
CASES: Dict[str, Case] = {}


def case(name: str):
    def register(make):
        CASES[name] = make
        return make
    return register


for _reduce in ("sum", "mean", "max", "min"):
    @case(f"scatter-{_reduce}")
    def _scatter(n, seed, reduce=_reduce):
        src, dst = _edges(n, seed)
        return (lambda x, msg, dst: equiops.scatter(msg, dst, dim=0, dim_size=x.shape[0], reduce=reduce),
                [_rand(n, 1, seed=seed), _rand(len(dst), 4, seed=seed + 1), dst])


@case("segment_csr")
def _segment(n, seed):
    rows = 3 * n
    return (lambda src, indptr: equiops.segment_csr(src, indptr, reduce="sum"),
            [_rand(rows, 5, seed=seed), _indptr(n, rows, seed)])


@case("gather_csr")
def _gather(n, seed):
    return (lambda src, indptr: equiops.gather_csr(src, indptr), [_rand(n, 5, seed=seed), _indptr(n, 3 * n, seed)])


for _agg in ("sum", "mean", "max"):
    @case(f"Graph.aggregate-{_agg}")
    def _graph_agg(n, seed, agg=_agg):
        def fn(x, msg, src, dst):
            return equiops.Graph(src, dst, x.shape[0]).aggregate(msg, agg)
        src, dst = _edges(n, seed)
        return fn, [_rand(n, 1, seed=seed), _rand(len(src), 6, seed=seed + 1), src, dst]


@case("spherical_harmonics")
def _sh(n, seed):
    return (lambda v: equiops.spherical_harmonics("0e+1o+2e+3o", v, normalize=True, normalization="component"),
            [_rand(n, 3, seed=seed)])


@case("spherical_harmonics_with_gradients")
def _sh_grad(n, seed):
    return lambda v: equiops.spherical_harmonics_with_gradients([0, 1, 2], v), [_rand(n, 3, seed=seed)]


@case("SphericalHarmonics")
def _sh_module(n, seed):
    return equiops.SphericalHarmonics("0e+1o+2e", normalize=True), [_rand(n, 3, seed=seed)]


@case("FullyConnectedTensorProduct")
def _fctp(n, seed):
    torch.manual_seed(0)
    tp = equiops.FullyConnectedTensorProduct("4x0e+2x1o", "0e+1o", "3x0e+2x1o+1x2e").double()
    return tp, [_rand(n, 10, seed=seed), _rand(n, 4, seed=seed + 1)]


@case("ChannelWiseTensorProduct")
def _cwtp(n, seed):
    torch.manual_seed(0)
    tp = equiops.ChannelWiseTensorProduct("4x0e+4x1o", "0e+1o+2e", "4x0e+4x1o+4x2e", shared_weights=False).double()
    return tp, [_rand(n, 16, seed=seed), _rand(n, 9, seed=seed + 1), _rand(n, tp.weight_numel, seed=seed + 2)]


def _conv():
    torch.manual_seed(0)
    irreps_out, ins = eqnn.channelwise_instructions("4x0e+2x1o", "0e+1o+2e", "4x0e+2x1o+2x1e")
    return equiops.TensorProductConv("4x0e+2x1o", "0e+1o+2e", irreps_out, ins, shared_weights=False,
                                     internal_weights=False).double()


@case("TensorProductConv")
def _tp_conv(n, seed):
    conv = _conv()
    src, dst = _edges(n, seed)
    return (lambda x, sh, w, src, dst: conv(x, sh, w, src, dst),
            [_rand(n, 10, seed=seed), _rand(len(src), 9, seed=seed + 1), _rand(len(src), conv.weight_numel, seed=seed + 2),
             src, dst])


@case("TensorProductConv-graph")
def _tp_conv_graph(n, seed):
    conv = _conv()

    def fn(x, sh, w, src, dst):
        return conv(x, sh, w, src, dst, graph=equiops.Graph(src, dst, x.shape[0]))
    src, dst = _edges(n, seed)
    return fn, [_rand(n, 10, seed=seed), _rand(len(src), 9, seed=seed + 1), _rand(len(src), conv.weight_numel, seed=seed + 2),
                src, dst]


@case("tensor_product_conv")
def _tp_conv_fn(n, seed):
    conv = _conv()
    src, dst = _edges(n, seed)

    def fn(x, sh, w, src, dst):
        return equiops.tensor_product_conv(x, sh, w, src, dst, conv.problem)
    return fn, [_rand(n, 10, seed=seed), _rand(len(src), 9, seed=seed + 1), _rand(len(src), conv.weight_numel, seed=seed + 2),
                src, dst]


@case("egnn_message")
def _egnn_message(n, seed):
    H1, M, Hc, D = 8, 6, 10, 2
    params = MessageParams(w_radial=_rand(H1, seed=1), w_edge=_rand(H1, D, seed=2), w2=_rand(M, H1, seed=3, scale=0.4),
                           b2=_rand(M, seed=4), w_att=_rand(M, seed=5), b_att=_rand(1, seed=6),
                           wc1=_rand(Hc, M, seed=7, scale=0.4), bc1=_rand(Hc, seed=8), wc2=_rand(Hc, seed=9), bc2=None)
    src, dst = _edges(n, seed)
    config = MessageConfig(coord_norm="detached", tanh=True)

    def fn(node_i, node_j, coord, edge_attr, src, dst):
        return egnn_message(node_i, node_j, coord, edge_attr, src, dst, params, config)
    return fn, [_rand(n, H1, seed=seed), _rand(n, H1, seed=seed + 1), _rand(n, 3, seed=seed + 2),
                _rand(len(src), D, seed=seed + 3), src, dst]


@case("pointconv")
def _pointconv(n, seed):
    B, K, C, ci, co = 2, 4, 3, 5, 6
    g = _gen(seed)
    idx = torch.randint(0, n, (B, n, K), generator=g)
    mask = torch.rand(B, n, K, generator=g) < 0.7
    weight, bias = _rand(co, C * ci, seed=1), _rand(co, seed=2)
    return (lambda penult, values, idx, mask: pointconv(penult, values, idx, mask, weight, bias, mean=True),
            [_rand(B, n, K, C, seed=seed), _rand(B, n, ci, seed=seed + 1), idx, mask])


@case("nn.Linear")
def _linear(n, seed):
    torch.manual_seed(0)
    return eqnn.Linear("4x0e+2x1o+1x2e", "3x0e+3x1o").double(), [_rand(n, 15, seed=seed)]


@case("nn.Gate")
def _gate(n, seed):
    gate = eqnn.Gate("4x0e", [torch.nn.functional.silu], "2x0e", [torch.sigmoid], "1x1o+1x1e")
    return gate, [_rand(n, 12, seed=seed)]


@case("nn.RadialMLP")
def _radial(n, seed):
    torch.manual_seed(0)
    return eqnn.RadialMLP([8, 16, 5], torch.nn.functional.silu).double(), [_rand(n, 8, seed=seed)]


def _structure(n, seed, species=3):
    pos = torch.rand(n, 3, generator=_gen(seed), dtype=DT) * 3.0
    spec = torch.randint(0, species, (n,), generator=_gen(seed + 1))
    src, dst = _edges(n, seed)
    keep = src != dst
    return pos, spec, src[keep], dst[keep]


@case("nn.TFNConv")
def _tfnconv(n, seed):
    torch.manual_seed(0)
    layer = eqnn.TFNConv("3x0e+1x1o", "4x0e+2x1o+1x2e", 2, r_max=4.0, avg_num_neighbors=3.0).double()
    pos, _, src, dst = _structure(n, seed)
    return layer, [_rand(n, 6, seed=seed), pos, src, dst]


@case("nn.InteractionBlock")
def _interaction(n, seed):
    torch.manual_seed(0)
    block = eqnn.InteractionBlock("3x0e+1x1o", "4x0e+2x1o", "2x0e", 2, r_max=4.0, avg_num_neighbors=3.0).double()
    pos, _, src, dst = _structure(n, seed)
    return block, [_rand(n, 6, seed=seed), _rand(n, 2, seed=seed + 1), pos, src, dst]


def _tfn():
    torch.manual_seed(0)
    return eqnn.TensorFieldNetwork(3, "6x0e+2x1o+2x1e", 2, num_layers=2, r_max=4.0, avg_num_neighbors=3.0).double()


@case("nn.TensorFieldNetwork")
def _tfn_case(n, seed):
    return _tfn(), list(_structure(n, seed))


@case("nn.EGNN")
def _egnn(n, seed):
    torch.manual_seed(0)
    model = eqnn.EGNN(in_node_nf=4, hidden_nf=8, out_node_nf=3, in_edge_nf=1, n_layers=2, attention=True,
                      normalize=True).double()
    src, dst = _edges(n, seed)
    return (lambda h, x, row, col, a: model(h, x, [row, col], a),
            [_rand(n, 4, seed=seed), _rand(n, 3, seed=seed + 1), dst, src, _rand(len(src), 1, seed=seed + 2)])


@case("nn.E_GCL")
def _egcl(n, seed):
    torch.manual_seed(0)
    layer = eqnn.E_GCL(4, 4, 8, edges_in_d=1, attention=True).double()
    src, dst = _edges(n, seed)
    return (lambda h, x, row, col, a: layer(h, [row, col], x, a),
            [_rand(n, 4, seed=seed), _rand(n, 3, seed=seed + 1), dst, src, _rand(len(src), 1, seed=seed + 2)])


@case("nn.EGNN_vel")
def _egnn_vel(n, seed):
    torch.manual_seed(0)
    model = eqnn.EGNN_vel(in_node_nf=1, in_edge_nf=2, hidden_nf=8, n_layers=2, recurrent=True).double()
    src, dst = _edges(n, seed)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    return (lambda h, x, row, col, v, a: model(h, x, [row, col], v, a),
            [_rand(n, 1, seed=seed), _rand(n, 3, seed=seed + 1), dst, src, _rand(n, 3, seed=seed + 2),
             _rand(len(src), 2, seed=seed + 3)])


@case("nn.E_GCL_vel")
def _egcl_vel(n, seed):
    torch.manual_seed(0)
    layer = eqnn.E_GCL_vel(4, 4, 8, edges_in_d=1).double()
    src, dst = _edges(n, seed)
    return (lambda h, x, row, col, v, a: layer(h, [row, col], x, v, a),
            [_rand(n, 4, seed=seed), _rand(n, 3, seed=seed + 1), dst, src, _rand(n, 3, seed=seed + 2),
             _rand(len(src), 1, seed=seed + 3)])


@case("egnn_pytorch.EGNN")
def _egnn_pt(n, seed):
    torch.manual_seed(0)
    layer = egnn_pytorch.EGNN(dim=6, edge_dim=2, m_dim=8).double()
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, -2:] = False
    return (lambda f, c, e, m: layer(f, c, edges=e, mask=m),
            [_rand(2, n, 6, seed=seed), _rand(2, n, 3, seed=seed + 1), _rand(2, n, n, 2, seed=seed + 2), mask])


@case("egnn_pytorch.EGNN_Network")
def _egnn_net(n, seed):
    torch.manual_seed(0)
    net = egnn_pytorch.EGNN_Network(num_tokens=5, dim=6, depth=2, num_nearest_neighbors=4).double()
    tokens = torch.randint(0, 5, (2, n), generator=_gen(seed))
    return (lambda t, c: net(t, c), [tokens, _rand(2, n, 3, seed=seed + 1)])


@case("nn.LieConv")
def _lieconv(n, seed):
    torch.manual_seed(0)
    layer = eqnn.LieConv(3, 4, mc_samples=4, ds_frac=1, bn=False, act="swish", mean=True, group=T(3), fill=0.5,
                         cache=False, knn=True).double()
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, -2:] = False
    return (lambda x, v, m: layer((x, v, m))[1],  # T(3): the lifted points are the coordinates
            [_rand(2, n, 3, seed=seed), _rand(2, n, 3, seed=seed + 1), mask])


@case("nn.LieResNet")
def _lieresnet(n, seed):
    torch.manual_seed(0)
    model = eqnn.LieResNet(chin=2, num_outputs=1, k=8, nbhd=4, num_layers=2, group=T(3), knn=True, bn=False).double()
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, -2:] = False
    return (lambda x, v, m: model((x, v, m)), [_rand(2, n, 3, seed=seed), _rand(2, n, 2, seed=seed + 1), mask])


# --------------------------------------------------------------------------- the test
def _grads(outputs, leaves):
    total = sum((o.double() * torch.linspace(0.5, 1.5, o.numel(), dtype=DT).reshape(o.shape)).sum()
                for o in outputs if o.is_floating_point() and o.requires_grad)
    return torch.autograd.grad(total, leaves, allow_unused=True)


def _run(fn, args):
    args = [a.detach().clone().requires_grad_() if a.is_floating_point() else a for a in args]
    params = list(fn.parameters()) if isinstance(fn, torch.nn.Module) else []
    out = fn(*args)
    outs = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    leaves = [a for a in args if a.is_floating_point()] + params
    return [o.detach() for o in outs], _grads(outs, leaves)


# Known limit: LieConv's neighbour search computes chunk sizes and candidate counts from
# the point count in Python (memory-bounded query chunks), so a compiled LieConv is
# specialised to the cloud size: one compilation per size (pad clouds to a few sizes;
# the mask makes padding free). Tested as such: a repeated size must not recompile.
SPECIALISED_TO_SIZE = {"nn.LieConv", "nn.LieResNet"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_fullgraph_dynamic_no_recompile(name):
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    fn, _ = CASES[name](SIZES[0], seed=0)  # one module instance for every size
    compiled = torch.compile(fn, fullgraph=True, dynamic=True, backend=counter)
    first = None
    sizes = SIZES[:1] if name in SPECIALISED_TO_SIZE else SIZES
    for i, n in enumerate(sizes):
        _, args = CASES[name](n, seed=10 * i + n)
        out_e, grads_e = _run(fn, args)
        out_c, grads_c = _run(compiled, args)
        for a, e in zip(out_c, out_e):
            if e.is_floating_point():
                assert_close(a, e, order=0)
            else:
                assert torch.equal(a, e)
        for a, e in zip(grads_c, grads_e):
            assert (a is None) == (e is None)
            if e is not None:
                assert_close(a, e, order=1)
        # The first size may count twice: Dynamo restarts its analysis once when it turns
        # Python float scalars into tensors ("tensorify python scalars"); no new graph after.
        first = counter.frame_count if first is None else first
    if name in SPECIALISED_TO_SIZE:
        before = counter.frame_count
        _, args = CASES[name](SIZES[0], seed=99)
        assert_close(_run(compiled, args)[0][0], _run(fn, args)[0][0])
        assert counter.frame_count == before, f"{name}: recompiled for a size it was compiled for"
        return
    assert counter.frame_count == first, f"{name}: recompiled for new sizes ({counter.frame_count} > {first} compilations)"


def test_force_training_double_backward_compiled_dynamic():
    """The force-training step (forces by create_graph=True, a loss on them, its gradient
    w.r.t. the parameters) compiled as one region over three sizes, no recompile."""
    model = _tfn()
    params = list(model.parameters())

    def step(pos, species, src, dst):  # pos requires grad (set outside: Dynamo cannot)
        energy = model(pos, species, src, dst)
        forces = -torch.autograd.grad(energy.sum(), pos, create_graph=True)[0]
        loss = energy.pow(2).sum() + forces.pow(2).sum()
        return (loss.detach(),) + torch.autograd.grad(loss, params)

    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled = torch.compile(step, fullgraph=True, dynamic=True, backend=counter)
        for i, n in enumerate(SIZES):
            pos, species, src, dst = _structure(n, seed=20 + n)
            expected = step(pos.clone().requires_grad_(), species, src, dst)
            actual = compiled(pos.clone().requires_grad_(), species, src, dst)
            for a, e in zip(actual, expected):
                assert_close(a, e, order=2)
            if i == 0:
                first = counter.frame_count
    assert counter.frame_count == first


def test_unbacked_edge_count_radius_graph_inside_the_compiled_region():
    """Edges chosen by a cutoff inside the region: E is an unbacked size (``nonzero``)."""
    model = _tfn()

    def energy(pos, species):
        n = pos.shape[0]
        d = (pos[:, None, :] - pos[None, :, :]).pow(2).sum(-1)
        close = (d < 4.0) & ~torch.eye(n, dtype=torch.bool)
        src, dst = close.nonzero(as_tuple=True)
        return model(pos, species, src, dst)

    torch._dynamo.reset()
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        compiled = torch.compile(energy, fullgraph=True, dynamic=True)
        for n in SIZES:
            pos, species, _, _ = _structure(n, seed=30 + n)
            p_e, p_c = pos.clone().requires_grad_(), pos.clone().requires_grad_()
            e_e, e_c = energy(p_e, species), compiled(p_c, species)
            assert_close(e_c, e_e)
            (g_e,), (g_c,) = torch.autograd.grad(e_e.sum(), p_e), torch.autograd.grad(e_c.sum(), p_c)
            assert_close(g_c, g_e, order=1)


def test_every_entry_point_is_covered():
    """Every public op and module has a case above (or a stated reason not to)."""
    covered = {name.split("-")[0] for name in CASES}
    not_ops = {  # no tensor computation to compile, or covered through another entry
        "Irrep", "Irreps", "as_irreps", "so3", "backend", "deterministic", "get_backend", "is_deterministic",
        "set_backend", "set_deterministic", "use_backend", "patch_e3nn", "from_e3nn", "replace_e3nn_tensor_products",
        "Graph",  # built inside the Graph.aggregate and TensorProductConv-graph cases
    }
    aliases = {"scatter_add", "scatter_sum", "scatter_mean", "scatter_max", "scatter_min", "segment_add_csr",
               "segment_sum_csr", "segment_mean_csr", "segment_max_csr", "segment_min_csr"}  # scatter / segment_csr
    subclasses = {"TensorProduct", "FullTensorProduct", "ElementwiseTensorProduct"}  # FullyConnected's path
    missing = [n for n in equiops.__all__ if n not in covered | not_ops | aliases | subclasses]
    assert not missing, f"no compile case for equiops.{missing}"
    nn_exempt = {  # parts of the modules above, or element-wise helpers without our ops
        "Activation", "NormActivation", "BesselBasis", "GaussianBasis", "PolynomialCutoff", "CosineCutoff",
        "soft_one_hot_linspace", "normalize2mom", "channelwise_instructions", "RadialEmbedding", "PointConv",
        "BottleBlock", "GlobalPool", "MaskBatchNormNd", "LieConvBNrelu", "Swish", "Pass", "FPSsubsample",
        "FPSindices", "TensorProductConv", "tensor_product_conv", "TensorProduct", "FullyConnectedTensorProduct",
        "ChannelWiseTensorProduct", "ElementwiseTensorProduct", "FullTensorProduct", "from_e3nn",
        "replace_e3nn_tensor_products",
    }
    missing_nn = [n for n in eqnn.__all__ if f"nn.{n}" not in covered and n not in nn_exempt]
    assert not missing_nn, f"no compile case for equiops.nn.{missing_nn}"
