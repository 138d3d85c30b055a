"""The fused tensor-product convolution (CPU kernels, op layer, module).

Checked against e3nn's TensorProduct on gathered edges + ``index_add_`` (float64, 1e-10
relative) in forward, backward and the force-training double backward, against our
reference for every connection mode, and for determinism, opcheck, compile and bad input.
"""

from __future__ import annotations

import pytest
import torch

import equiops
from equiops.nn.tp_conv import tensor_product_conv
from equiops.reference.tp_conv import tp_conv as ref_conv
from equiops.tp_problem import build_problem
from tp_cases import ALL_MODES, FULLY_CONNECTED

from conftest import default_dtype

pytestmark = pytest.mark.skipif(not equiops._extension.available(), reason="C++ extension not built")

CHANNELWISE = ("8x0e+8x1o+4x2e", "0e+1o+2e")


def _rel(a, b):
    a, b = a.detach(), b.detach()
    scale = b.abs().max().clamp_min(1e-300)
    return float((a - b).abs().max() / scale)


def _graph(n, E, seed, isolated=3):
    """Random edges with self-loops, duplicates and `isolated` nodes that receive nothing."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (E,), generator=g)
    dst = torch.randint(0, n - isolated, (E,), generator=g)
    if E >= 4:
        src[0], dst[0] = 2, 2  # a self-loop
        src[1], dst[1] = src[2], dst[2]  # a duplicate edge
    return src, dst


def _channelwise_conv(dtype=torch.float64, shared=False):
    a, b = CHANNELWISE
    return equiops.TensorProductConv(
        a, b, *equiops.nn.channelwise_instructions(a, b, "0e+1o+1e+2e+3o"), shared_weights=shared,
        internal_weights=shared,
    ).to(dtype)


def _inputs(conv, n, E, dtype, seed, shared):
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(n, conv.irreps_in1.dim, generator=g, dtype=dtype)
    attr = torch.randn(E, conv.irreps_in2.dim, generator=g, dtype=dtype)
    w = None if shared else torch.randn(E, conv.weight_numel, generator=g, dtype=dtype)
    return x, attr, w


# ----------------------------------------------------------------------- against e3nn
def _e3nn_pair(shared):
    o3 = pytest.importorskip("e3nn.o3")
    with default_dtype(torch.float64):
        a, b = CHANNELWISE
        irreps_out, ins = equiops.nn.channelwise_instructions(a, b, "0e+1o+1e+2e+3o")
        theirs = o3.TensorProduct(a, b, irreps_out, ins, shared_weights=shared, internal_weights=shared)
        ours = equiops.TensorProductConv(a, b, irreps_out, ins, shared_weights=shared, internal_weights=shared)
        if shared:
            ours.weight.data.copy_(theirs.weight.data)
    return ours.double(), theirs


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("use_graph", [False, True])
def test_matches_e3nn_forward_backward(shared, use_graph):
    ours, theirs = _e3nn_pair(shared)
    n, E = 23, 90
    src, dst = _graph(n, E, 0)
    x, attr, w = _inputs(ours, n, E, torch.float64, 0, shared)
    graph = equiops.Graph(src, dst, n) if use_graph else None
    leaves = [t.requires_grad_() for t in (x, attr) + (() if shared else (w,))]
    out = ours(x, attr, w, src, dst, graph=graph)
    msg = theirs(x[src], attr) if shared else theirs(x[src], attr, w)
    want = torch.zeros(n, msg.shape[1], dtype=torch.float64).index_add_(0, dst, msg)
    assert out.shape == want.shape and _rel(out, want) < 1e-10
    assert (out[n - 3 :] == 0).all()  # receivers without edges
    cot = torch.randn_like(out)
    params = list(ours.parameters()) if shared else []
    g_ours = torch.autograd.grad(out, leaves + params, cot)
    g_theirs = torch.autograd.grad(want, leaves + (list(theirs.parameters()) if shared else []), cot)
    for a, b in zip(g_ours, g_theirs):
        assert _rel(a, b) < 1e-10


def test_force_training_double_backward_matches_e3nn():
    """Energy from the conv of harmonics of pos[dst] - pos[src]; forces by autograd with
    create_graph; a loss on forces; its gradient w.r.t. the weights and the features."""
    ours, theirs = _e3nn_pair(False)
    o3 = pytest.importorskip("e3nn.o3")
    n, E = 17, 70
    src, dst = _graph(n, E, 5, isolated=2)
    g = torch.Generator().manual_seed(9)
    pos = torch.randn(n, 3, generator=g, dtype=torch.float64)
    x = torch.randn(n, ours.irreps_in1.dim, generator=g, dtype=torch.float64)
    w = torch.randn(E, ours.weight_numel, generator=g, dtype=torch.float64)
    readout = torch.randn(ours.irreps_out.dim, generator=g, dtype=torch.float64)
    graph = equiops.Graph(src, dst, n)

    def loss(conv_fn, pos, x, w):
        vec = pos[dst] - pos[src] + 0.1  # self-loops get a non-zero vector
        sh = o3.spherical_harmonics("0e+1o+2e", vec, normalize=True, normalization="component")
        energy = (conv_fn(x, sh, w) * readout).sum()
        forces = -torch.autograd.grad(energy, pos, create_graph=True)[0]
        return (forces**2).sum() + energy

    def ours_fn(x, sh, w):
        return ours(x, sh, w, src, dst, graph=graph)

    def theirs_fn(x, sh, w):
        return torch.zeros(n, ours.irreps_out.dim, dtype=torch.float64).index_add_(0, dst, theirs(x[src], sh, w))

    results = []
    for fn in (ours_fn, theirs_fn):
        p, xx, ww = (t.clone().requires_grad_() for t in (pos, x, w))
        L = loss(fn, p, xx, ww)
        results.append((L.detach(),) + torch.autograd.grad(L, (p, xx, ww)))
    for a, b in zip(*results):
        assert _rel(a, b) < 1e-10


# ------------------------------------------------------------- every mode, the reference
@pytest.mark.parametrize("case", ["all_modes", "fully_connected_shared"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_all_modes_against_reference(case, dtype):
    args = ALL_MODES if case == "all_modes" else FULLY_CONNECTED
    shared = case != "all_modes"
    p = build_problem(*args)
    s = p.encode()
    n, E = 13, 61
    src, dst = _graph(n, E, 3)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(n, p.dim1, generator=g, dtype=torch.float64)
    attr = torch.randn(E, p.dim2, generator=g, dtype=torch.float64)
    w = torch.randn(1 if shared else E, p.dim_w, generator=g, dtype=torch.float64)
    cot = torch.randn(n, p.dim_out, generator=g, dtype=torch.float64)
    ins = [t.clone().requires_grad_() for t in (x, attr, w)]
    want = ref_conv(*ins, src, dst, n, s)
    want_g = torch.autograd.grad(want, ins, cot)
    got_in = [t.to(dtype).requires_grad_() for t in (x, attr, w)]
    got = tensor_product_conv(*got_in, src, dst, s, n, backend="cpu")
    got_g = torch.autograd.grad(got, got_in, cot.to(dtype))
    tol = 1e-10 if dtype == torch.float64 else 3e-5
    assert got.dtype == dtype and _rel(got.double(), want) < tol
    for a, b in zip(got_g, want_g):
        assert a.shape == b.shape and _rel(a.double(), b) < tol


def test_gradcheck_and_gradgradcheck():
    p = build_problem(*ALL_MODES)
    s = p.encode()
    n, E = 5, 9
    src, dst = _graph(n, E, 8, isolated=1)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, p.dim1, generator=g, dtype=torch.float64, requires_grad=True)
    attr = torch.randn(E, p.dim2, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(E, p.dim_w, generator=g, dtype=torch.float64, requires_grad=True)
    graph = equiops.Graph(src, dst, n)

    def f(x, a, w):
        return tensor_product_conv(x, a, w, src, dst, s, n, graph=graph, backend="cpu")

    assert torch.autograd.gradcheck(f, (x, attr, w))
    assert torch.autograd.gradgradcheck(f, (x, attr, w))


# ------------------------------------------------------------------ graph shapes
@pytest.mark.parametrize("variant", ["sorted_by_dst", "empty", "no_nodes_receive", "bipartite", "broadcast_attr"])
def test_graph_variants(variant):
    conv = _channelwise_conv()
    n, E = 11, 40
    src, dst = _graph(n, E, 6)
    num_nodes = n
    if variant == "sorted_by_dst":
        order = torch.argsort(dst, stable=True)
        src, dst = src[order], dst[order]
    elif variant == "empty":
        src, dst = src[:0], dst[:0]
        E = 0
    elif variant == "bipartite":
        num_nodes = 4  # receivers differ from the senders (x's rows)
        dst = dst % num_nodes
    x, attr, w = _inputs(conv, n, E, torch.float64, 6, False)
    if variant == "broadcast_attr":
        attr = attr[:1]
    graph = equiops.Graph(src, dst, n) if variant in ("sorted_by_dst", "empty") else None
    ins = [t.clone().requires_grad_() for t in (x, attr, w)]
    out = conv(*ins, src, dst, num_nodes, graph=graph)
    want = ref_conv(*(t.detach().requires_grad_() for t in ins), src, dst, num_nodes, conv.problem)
    assert out.shape == (num_nodes, conv.irreps_out.dim)
    if E == 0:
        assert (out == 0).all()
    assert _rel(out, want) < 1e-10 if E else True
    if E:
        cot = torch.randn_like(out)
        ga = torch.autograd.grad(out, ins, cot)
        ref_ins = [t.detach().requires_grad_() for t in (x, attr, w)]
        gb = torch.autograd.grad(ref_conv(*ref_ins, src, dst, num_nodes, conv.problem), ref_ins, cot)
        for a, b in zip(ga, gb):
            assert a.shape == b.shape and _rel(a, b) < 1e-10
    else:
        out.sum().backward()
        assert all(t.grad is not None and (t.grad == 0).all() for t in ins)


# ------------------------------------------------------------------ determinism
def test_bitwise_reproducible_and_thread_count_independent():
    conv = _channelwise_conv(torch.float32)
    n, E = 300, 6000
    src, dst = _graph(n, E, 7, isolated=5)
    x, attr, w = _inputs(conv, n, E, torch.float32, 7, False)
    graph = equiops.Graph(src, dst, n)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (threads, threads, 1):
            torch.set_num_threads(t)
            ins = [v.clone().requires_grad_() for v in (x, attr, w)]
            out = conv(*ins, graph=graph)
            grads = torch.autograd.grad(out, ins, torch.ones_like(out))
            results.append((out,) + grads)
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


# ------------------------------------------------------------------ compile, opcheck
def test_opcheck():
    p = build_problem(*ALL_MODES)
    s = p.encode()
    n, E = 6, 14
    src, dst = _graph(n, E, 10, isolated=1)
    g = equiops.Graph(src, dst, n)
    x = torch.randn(n, p.dim1, dtype=torch.float64, requires_grad=True)
    attr = torch.randn(E, p.dim2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(E, p.dim_w, dtype=torch.float64, requires_grad=True)
    views = (g.dst_perm, g.dst_indptr, g.src_perm, g.src_indptr)
    torch.library.opcheck(torch.ops.equiops.tp_conv, (x, attr, w, src, dst, *views, n, s, "cpu"))
    torch.library.opcheck(torch.ops.equiops.tp_conv, (x, attr, w, src, dst, None, None, None, None, n, s, "cpu"))
    go = torch.randn(n, p.dim_out, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(
        torch.ops.equiops.tp_conv_backward, (go, x, attr, w, src, dst, *views, [True, True, True], s, "cpu")
    )


def test_compiled_force_training_equals_eager():
    """The force-training pattern: energy from the conv of harmonics of pos[dst] - pos[src],
    forces by autograd with create_graph, compiled as one region (fullgraph, with
    trace_autograd_ops: PyTorch cannot run a double backward through a compiled region,
    ARCHITECTURE.md "Known limits"); the loss on the forces is differentiated outside,
    w.r.t. the features and the per-edge weights. Equal to eager."""
    import torch._dynamo.testing

    conv = _channelwise_conv()
    n, E = 15, 50
    src, dst = _graph(n, E, 11)
    graph = equiops.Graph(src, dst, n)
    g = torch.Generator().manual_seed(3)
    pos = torch.randn(n, 3, generator=g, dtype=torch.float64)
    x = torch.randn(n, conv.irreps_in1.dim, generator=g, dtype=torch.float64)
    w = torch.randn(E, conv.weight_numel, generator=g, dtype=torch.float64)

    def forces(pos, x, w):
        sh = equiops.spherical_harmonics([0, 1, 2], pos[dst] - pos[src] + 0.1, True, "component")
        energy = conv(x, sh, w, graph=graph).sum()
        return -torch.autograd.grad(energy, pos, create_graph=True)[0]

    def run(f):
        p, xx, ww = pos.clone().requires_grad_(), x.clone().requires_grad_(), w.clone().requires_grad_()
        F = f(p, xx, ww)
        return (F.detach(),) + torch.autograd.grad((F**2).sum(), (xx, ww))

    eager = run(forces)
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        compiled = run(torch.compile(forces, backend=counter, fullgraph=True))
    assert counter.frame_count == 1
    for a, b in zip(eager, compiled):
        assert _rel(b, a) < 1e-10


def test_compiled_forward_backward_dynamic_shapes():
    """fullgraph compile of the module with dynamic node and edge counts: first-order
    gradients equal eager, and new sizes do not recompile."""
    import torch._dynamo.testing

    conv = _channelwise_conv()
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    f = torch.compile(lambda x, a, w, s, d: conv(x, a, w, s, d),
                      backend=counter, fullgraph=True, dynamic=True)
    # Sizes differ from every width (duck shaping would tie a size to an equal width).
    for n, E, seed in ((10, 30, 1), (14, 57, 2), (21, 80, 3)):
        src, dst = _graph(n, E, seed)
        ins = _inputs(conv, n, E, torch.float64, seed, False)
        cot = torch.randn(n, conv.irreps_out.dim, dtype=torch.float64)
        res = []
        for fn in (lambda *t: conv(*t, src, dst), lambda *t: f(*t, src, dst)):
            leaves = [t.clone().requires_grad_() for t in ins]
            out = fn(*leaves)
            res.append((out.detach(),) + torch.autograd.grad(out, leaves, cot))
        for a, b in zip(*res):
            assert _rel(b, a) < 1e-10
    assert counter.frame_count == 1


# ------------------------------------------------------------------ bad input
def test_bad_input():
    conv = _channelwise_conv()
    n, E = 8, 20
    src, dst = _graph(n, E, 12, isolated=1)
    x, attr, w = _inputs(conv, n, E, torch.float64, 12, False)
    with pytest.raises(IndexError, match="edge_src"):
        conv(x, attr, w, src + n, dst)
    with pytest.raises(IndexError, match="edge_dst"):
        conv(x, attr, w, src, dst - n)
    with pytest.raises(TypeError, match="edge_src"):
        conv(x, attr, w, src.float(), dst)
    with pytest.raises(ValueError, match="edge_attr"):
        conv(x, attr[:-1], w, src, dst)
    with pytest.raises(ValueError, match="weight"):
        conv(x, attr, w[:-1], src, dst)
    with pytest.raises(TypeError, match="dtype"):
        conv(x, attr.float(), w, src, dst)
    with pytest.raises(ValueError, match="same length"):
        conv(x, attr, w, src[:-1], dst)
    with pytest.raises(ValueError, match="x must have shape"):
        conv(x[:, :-1], attr, w, src, dst)
    with pytest.raises(ValueError, match="edge_src and edge_dst, or a graph"):
        conv(x, attr, w)
    with pytest.raises(ValueError, match="graph of"):
        conv(x[:-1], attr, w, graph=equiops.Graph(src, dst, n))
    # Direct op calls: out-of-range indices and a stale view are errors, not crashes.
    s = conv.problem
    g = equiops.Graph(src, dst, n)
    views = (g.dst_perm, g.dst_indptr, g.src_perm, g.src_indptr)
    op = torch.ops.equiops.tp_conv
    with pytest.raises(IndexError, match="dst"):
        op(x, attr, w, src, dst + n, None, None, None, None, n, s, "cpu")
    stale = dst.roll(1)
    with pytest.raises(ValueError, match="does not match dst"):
        op(x, attr, w, src, stale, *views, n, s, "cpu")
    bad_perm = g.dst_perm.clone()
    bad_perm[0] = E + 5
    with pytest.raises(IndexError, match="permutation"):
        op(x, attr, w, src, dst, bad_perm, g.dst_indptr, None, None, n, s, "cpu")
    with pytest.raises(ValueError, match="indptr"):
        op(x, attr, w, src, dst, g.dst_perm, g.dst_indptr[:-1], None, None, n, s, "cpu")
