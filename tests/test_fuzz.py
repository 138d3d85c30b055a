"""Property tests (hypothesis) of the graph operators against their plain-PyTorch references.

What the hand-written tests of each op fix one case of, drawn at random here:

* the fused convolution (``TensorProductConv``) with random irreps and instructions over
  every connection mode (the problems of ``test_tensor_product.tp_problem``), every
  normalization, per-edge / shared / internal weights and broadcast edge attributes, on
  random graphs: no edges, isolated nodes, duplicate edges, self-loops, one receiver or
  one sender with hundreds of edges, bipartite sizes, given in any order or sorted by
  receiver or sender, with and without a ``Graph``; forward, first and second
  derivatives against ``equiops.reference.tp_conv`` (float64 at conftest's tolerance,
  float32 against float64 at float32's, with hubs of tens of edges rather than hundreds),
  the forward against e3nn in float64;
* ``egnn_message`` with random ``MessageConfig`` options, widths and optional weights on
  the same graphs (forward and all first derivatives; the op is first-order);
* ``pointconv`` with random masks (queries with every neighbour masked), duplicate
  neighbour ids, K in 0..5, bias and mean on or off, NaN in the padding (masked entries,
  unreferenced points) that must reach no output or gradient;
* ``Graph.aggregate`` (sum, mean, max, min at either end), ``segment_csr`` /
  ``gather_csr`` with empty segments, and ``spherical_harmonics`` (random degree lists,
  ``normalize``/``normalization``, zero vectors) against the references and e3nn, also
  in float16/bfloat16 (values only);
* non-contiguous inputs for every op: transposed, sliced, strided and expand()-ed
  (stride-0) views, channels-last 4-D tensors, strided and expanded index tensors. The
  result and the gradients must equal those of ``.contiguous()`` copies bitwise (the same
  kernel runs), and no input may be modified.

The regressions these found are at the end of the file.

Examples are derandomized (the same in every CI run); ``EQUIOPS_FUZZ_SCALE`` multiplies
their number (e.g. ``EQUIOPS_FUZZ_SCALE=20``) and ``EQUIOPS_FUZZ_RANDOM=1`` draws new ones
on every run, to explore further. Run with ``--hypothesis-show-statistics`` to see which
graph features, modes and layouts the examples hit.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import equiops
from equiops.ops.egnn import MessageConfig, MessageParams, egnn_message
from equiops.ops.pointconv import pointconv
from equiops.reference import egnn_message as ref_egnn
from equiops.reference.pointconv import pointconv as ref_pointconv
from equiops.reference.tp_conv import tp_conv as ref_conv
from equiops.reference.spherical_harmonics import spherical_harmonics as ref_sh

from conftest import assert_close, default_dtype
from test_tensor_product import tp_problem  # random problems over every mode (not re-written here)

pytestmark = pytest.mark.skipif(not equiops._extension.available(), reason="C++ extension not built")

_SCALE = float(os.environ.get("EQUIOPS_FUZZ_SCALE", "1"))
_RANDOM = os.environ.get("EQUIOPS_FUZZ_RANDOM") == "1"  # new examples each run (exploring), not CI's fixed ones


def _fuzz(n: int) -> settings:
    return settings(
        max_examples=max(1, int(n * _SCALE)),
        deadline=None,
        derandomize=not _RANDOM,  # the same examples in every CI run; raise EQUIOPS_FUZZ_SCALE to explore
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )


F64, F32 = torch.float64, torch.float32
DTYPES = st.sampled_from([F64, F32])
SEEDS = st.integers(0, 2**31 - 1)


# ------------------------------------------------------------------------- graphs
class G(NamedTuple):
    src: torch.Tensor  # (E,) int64, senders: rows of x
    dst: torch.Tensor  # (E,) int64, receivers: rows of the output
    n_send: int
    n_recv: int

    @property
    def E(self) -> int:
        return self.src.numel()

    def __repr__(self) -> str:  # hypothesis prints failing examples; keep them readable
        return f"G(n_send={self.n_send}, n_recv={self.n_recv}, src={self.src.tolist()}, dst={self.dst.tolist()})"


@st.composite
def graphs(draw, bipartite: bool = True, hub_max: int = 300, hub_min: int = 100):
    """Random edge lists: no edges, isolated receivers, duplicate edges, self-loops, a hub
    receiving or sending hub_min..hub_max edges, bipartite sizes (senders != receivers);
    in random order, or sorted by receiver or by sender."""
    kind = draw(st.sampled_from(["random", "empty", "hub_in", "hub_out"]))
    g = torch.Generator().manual_seed(draw(SEEDS))
    lo = 0 if kind == "empty" else 1
    n_send = draw(st.integers(lo, 9))
    n_recv = draw(st.integers(lo, 9)) if bipartite and draw(st.booleans()) else n_send
    if kind == "empty" or n_send == 0 or n_recv == 0:
        e = torch.zeros(0, dtype=torch.long)
        return G(e, e.clone(), n_send, n_recv)
    isolated = draw(st.integers(0, n_recv - 1))  # the last `isolated` receivers get no edge
    reach = n_recv - isolated
    E = draw(st.integers(1, 30))
    src = torch.randint(0, n_send, (E,), generator=g)
    dst = torch.randint(0, reach, (E,), generator=g)
    if kind in ("hub_in", "hub_out"):
        H = draw(st.integers(hub_min, hub_max))
        hub_src = torch.randint(0, n_send, (H,), generator=g)
        hub_dst = torch.randint(0, reach, (H,), generator=g)
        if kind == "hub_in":
            hub_dst.fill_(int(torch.randint(0, reach, (1,), generator=g)))
        else:
            hub_src.fill_(int(torch.randint(0, n_send, (1,), generator=g)))
        src, dst = torch.cat([src, hub_src]), torch.cat([dst, hub_dst])
    if draw(st.booleans()):  # self-loops (node ids shared by both ends)
        pick = torch.rand(src.numel(), generator=g) < 0.3
        pick &= dst < n_send
        src = torch.where(pick, dst, src)
    if draw(st.booleans()):  # duplicate edges
        dup = torch.randint(0, src.numel(), (draw(st.integers(1, 5)),), generator=g)
        src, dst = torch.cat([src, src[dup]]), torch.cat([dst, dst[dup]])
    perm = torch.randperm(src.numel(), generator=g)
    src, dst = src[perm], dst[perm]
    order = draw(st.sampled_from(["given", "by_dst", "by_src"]))
    if order != "given":
        o = torch.argsort(dst if order == "by_dst" else src, stable=True)
        src, dst = src[o], dst[o]
    return G(src, dst, n_send, n_recv)


# float32 results are held to conftest's float32 tolerance element by element, which allows
# for sums of tens of terms, not the hundreds of a float64 hub (a sequential float32 sum of
# ~300 edge terms is off by ~1e-4 where the terms cancel, in the kernels and in any order):
# float32 examples get hubs of 20..60 edges, float64 ones of 100..300.
def dtype_and_graph(bipartite: bool = True, dtypes=DTYPES):
    return dtypes.flatmap(lambda dt: st.tuples(
        st.just(dt), graphs(bipartite, *((300, 100) if dt == F64 else (60, 20)))))


# Half types: the segment ops and the harmonics take them on the CPU (conftest has their
# forward tolerance only, so their gradients are not compared).
ALL_DTYPES = st.sampled_from([F64, F32, torch.float16, torch.bfloat16])


def _graph_events(graph: G) -> None:
    """Labels in ``--hypothesis-show-statistics``: which graph features the examples hit."""
    if graph.E == 0:
        event("graph: no edges")
        return
    deg_in = torch.bincount(graph.dst, minlength=graph.n_recv)
    deg_out = torch.bincount(graph.src, minlength=graph.n_send)
    for label, hit in (("hub receiver", int(deg_in.max()) >= 20), ("hub sender", int(deg_out.max()) >= 20),
                       ("isolated receiver", bool((deg_in == 0).any())), ("self-loop", bool((graph.src == graph.dst).any())),
                       ("duplicate edge", torch.unique(graph.src * (graph.n_recv + 1) + graph.dst).numel() < graph.E),
                       ("bipartite", graph.n_send != graph.n_recv),
                       ("sorted by dst", bool((graph.dst[1:] >= graph.dst[:-1]).all()))):
        if hit:
            event(f"graph: {label}")


def _randn(g, *shape, dtype=F64, scale=1.0):
    """float64 normals rounded to ``dtype`` (so a float64 reference sees the same values)."""
    return (scale * torch.randn(*shape, generator=g, dtype=F64)).to(dtype)


def _grads(out, leaves, cot, create_graph=False):
    """Gradients of ``sum(out * cot)`` (outputs and cotangents tuples), zeros where unused."""
    outs, cots = (out, cot) if isinstance(out, tuple) else ((out,), (cot,))
    pairs = [(o, c) for o, c in zip(outs, cots) if o.requires_grad]
    if not pairs:
        return [torch.zeros_like(t) for t in leaves]
    gs = torch.autograd.grad([o for o, _ in pairs], leaves, [c for _, c in pairs], allow_unused=True,
                             create_graph=create_graph)
    return [torch.zeros_like(t) if gr is None else gr for t, gr in zip(leaves, gs)]


def _compare(actual, expected, dtype, order, what):
    """conftest's tolerance for ``dtype`` and derivative ``order``; float32 results are
    compared with the float64 reference on the same (float32-rounded) inputs."""
    for k, (a, b) in enumerate(zip(actual, expected)):
        assert a.shape == b.shape, f"{what}[{k}]: shape {tuple(a.shape)} != {tuple(b.shape)}"
        assert a.dtype == dtype, f"{what}[{k}]: dtype {a.dtype}"
        assert_close(a.detach().double(), b.detach().double(), order=order, dtype=dtype, msg=lambda m: f"{what}[{k}]: {m}")


def _assert_bitwise(actual, expected, what):
    """The same bits (NaN where NaN): the same kernel on the same values."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{what}: {m}")


def _snapshot(ts):
    return [t.clone() for t in ts if isinstance(t, torch.Tensor)]


def _assert_unmodified(ts, before, what):
    for t, b in zip([t for t in ts if isinstance(t, torch.Tensor)], before):
        torch.testing.assert_close(t, b, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"{what} modified an input: {m}")


# --------------------------------------------------------------------- strided views
LAYOUTS = ("contiguous", "transposed", "col_strided", "row_strided")


def _view(t: torch.Tensor, how: str) -> torch.Tensor:
    """A view holding ``t``'s values with other strides. Cells of the underlying buffer
    outside the view hold NaN (floats) or -7 (indices), so reading them shows."""
    if how == "contiguous" or t.dim() == 0:
        return t
    if how == "expanded":  # the first row repeated (stride 0); other rows' values are dropped
        return _expanded_rows(t) if t.shape[0] else t
    fill = float("nan") if t.is_floating_point() else -7
    if how == "transposed":  # column-major (2-D: the channels-last analogue)
        return t.transpose(0, -1).contiguous().transpose(0, -1)
    if how == "col_strided":  # every other column of a wider buffer, offset by one
        big = t.new_full(t.shape[:-1] + (2 * t.shape[-1] + 1,), fill)
        big[..., 1::2] = t
        return big[..., 1::2]
    if how == "row_strided":  # every third row
        big = t.new_full((3 * t.shape[0] + 1,) + t.shape[1:], fill)
        big[1::3] = t
        return big[1::3]
    raise ValueError(how)


def _strided_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` as every other element of a buffer along its last dim (stride 2 there)."""
    big = t.new_full(t.shape + (2,), -7 if t.dtype == torch.int64 else 0)
    big[..., 0] = t
    return big[..., 0]


def _expanded_rows(t: torch.Tensor) -> torch.Tensor:
    """``t``'s first row repeated over its rows as a stride-0 expand() (no copy)."""
    return t[:1].expand(t.shape)


# ============================================================== fused convolution
NORMS = st.tuples(st.sampled_from(["component", "norm", "none"]), st.sampled_from(["element", "path", "none"]))


def _make_conv(problem, norms, weights, dtype):
    in1, in2, out, instructions, kwargs = problem
    shared = weights in ("shared", "internal")
    with default_dtype(F64):
        conv = equiops.TensorProductConv(in1, in2, out, instructions, shared_weights=shared,
                                         internal_weights=weights == "internal", irrep_normalization=norms[0],
                                         path_normalization=norms[1], **kwargs)
    return conv.to(dtype)


def _conv_inputs(conv, graph, weights, attr_one_row, g, dtype):
    x = _randn(g, graph.n_send, conv.irreps_in1.dim, dtype=dtype)
    a = _randn(g, 1 if attr_one_row else graph.E, conv.irreps_in2.dim, dtype=dtype)
    wn = conv.weight_numel
    if wn == 0:
        w = None
    elif weights == "internal":
        with torch.no_grad():
            conv.weight.copy_(_randn(g, wn, dtype=dtype))
        w = None
    else:
        w = _randn(g, *{"edge": (graph.E, wn), "edge_one_row": (1, wn), "shared": (wn,)}[weights], dtype=dtype)
    return x, a, w


def _conv_derivatives(fn, leaves, g, second):
    """``[out, d out . cot / d leaves..., (d/d leaves of the first derivatives . dirs)...]``."""
    out = fn(*leaves)
    cot = _randn(g, *out.shape, dtype=out.dtype)
    first = _grads(out, leaves, cot, create_graph=second)
    result = [out] + first
    if second:
        # The force-training pattern: a loss on the first derivatives, differentiated again.
        dirs = [_randn(g, *t.shape, dtype=t.dtype) for t in first]
        terms = [(f * d).sum() for f, d in zip(first, dirs) if f.requires_grad]
        if terms:
            result += _grads(sum(terms), leaves, torch.ones((), dtype=out.dtype))
        else:
            result += [torch.zeros_like(t) for t in leaves]
    return [r.detach() for r in result]


# The main categorical axes are parametrized (hypothesis' few examples would not spread over them).
@pytest.mark.parametrize("weights", ["edge", "edge_one_row", "shared", "internal"])
@_fuzz(10)
@given(problem=tp_problem(), norms=NORMS, case=dtype_and_graph(), attr_one_row=st.booleans(), use_graph=st.booleans(),
       seed=SEEDS)
def test_conv_matches_reference(weights, problem, norms, case, attr_one_row, use_graph, seed):
    """TensorProductConv == reference (zeros.index_add_(dst, tp(x[src], attr, w))): output,
    first and second derivatives w.r.t. x, edge_attr and the weights; receivers without
    edges exactly 0; float64 also against e3nn's TensorProduct on the gathered edges."""
    dtype, graph = case
    _graph_events(graph)
    for ins in problem[3]:
        event(f"mode {ins[3]}")
    event(f"{dtype}, graph {use_graph}")
    conv = _make_conv(problem, norms, weights, dtype)
    g = torch.Generator().manual_seed(seed)
    x, a, w = _conv_inputs(conv, graph, weights, attr_one_row, g, dtype)
    use_graph = use_graph and graph.n_send == graph.n_recv  # a Graph has one node set
    gr = equiops.Graph(graph.src, graph.dst, graph.n_recv) if use_graph else None
    if weights == "internal" and conv.weight_numel:
        conv.weight.requires_grad_(True)
        leaves = [x.detach().requires_grad_(), a.detach().requires_grad_(), conv.weight]
    else:
        leaves = [t.detach().requires_grad_() for t in (x, a, w) if t is not None]  # shares x's memory

    def ours(x, a, *w):
        wt = None if weights == "internal" or not w else w[0]
        return conv(x, a, wt, graph.src, graph.dst, graph.n_recv, graph=gr)

    def reference(x, a, *w):
        w2d = x.new_zeros(1, 0) if not w else w[0].reshape(1, -1) if weights in ("shared", "internal") else w[0]
        return ref_conv(x, a, w2d, graph.src, graph.dst, graph.n_recv, conv.problem)

    inputs = leaves + [graph.src, graph.dst]
    before = _snapshot(inputs)
    got = _conv_derivatives(ours, leaves, torch.Generator().manual_seed(seed + 1), second=True)
    _assert_unmodified(inputs, before, "TensorProductConv")
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    want = _conv_derivatives(reference, ref_leaves, torch.Generator().manual_seed(seed + 1), second=True)
    n = len(leaves)
    _compare(got[:1], want[:1], dtype, 0, "out")
    _compare(got[1:1 + n], want[1:1 + n], dtype, 1, "d1")
    _compare(got[1 + n:], want[1 + n:], dtype, 2, "d2")
    in_degree = torch.bincount(graph.dst, minlength=graph.n_recv)
    assert torch.all(got[0][in_degree == 0] == 0), "a receiver without edges got a non-zero sum"

    if dtype == F64 and graph.E > 0:  # the forward against e3nn itself
        o3 = pytest.importorskip("e3nn.o3")
        in1, in2, out, instructions, kwargs = problem
        shared = weights in ("shared", "internal")
        with default_dtype(F64):
            theirs = o3.TensorProduct(in1, in2, out, instructions, shared_weights=shared, internal_weights=False,
                                      irrep_normalization=norms[0], path_normalization=norms[1], **kwargs)
        wt = None if conv.weight_numel == 0 else conv.weight.detach() if weights == "internal" else w
        msg = theirs(x[graph.src], a.expand(graph.E, -1), *([] if wt is None else [wt]))
        e3 = msg.new_zeros(graph.n_recv, msg.shape[1]).index_add_(0, graph.dst, msg)
        assert_close(got[0], e3.detach())


@pytest.mark.parametrize("weights", ["edge", "edge_expanded", "shared"])
@_fuzz(8)
@given(problem=tp_problem(), graph=graphs(hub_max=150),
       layouts=st.tuples(st.sampled_from(LAYOUTS + ("expanded",)), st.sampled_from(LAYOUTS),
                         st.sampled_from(["contiguous", "row_strided", "int32", "dst_expanded"])),
       use_graph=st.booleans(), seed=SEEDS)
def test_conv_noncontiguous_inputs(weights, problem, graph, layouts, use_graph, seed):
    """Strided / transposed / expand()-ed x, edge_attr, weights and indices give bitwise
    the result and gradients of contiguous copies (and the reference's at tolerance);
    no input is modified."""
    a_how, x_how, idx_how = layouts
    _graph_events(graph)
    for label in (f"edge_attr {a_how}", f"x {x_how}", f"indices {idx_how}"):
        event(label)
    conv = _make_conv(problem, ("component", "element"), "shared" if weights == "shared" else "edge", F64)
    g = torch.Generator().manual_seed(seed)
    src, dst = graph.src, graph.dst
    if idx_how == "dst_expanded" and graph.E:  # every edge into one receiver, stride 0
        dst = dst[:1].expand(graph.E)
    graph = G(src.contiguous(), dst.contiguous(), graph.n_send, graph.n_recv)
    x, a, w = _conv_inputs(conv, graph, "shared" if weights == "shared" else "edge", False, g, F64)
    xv = _view(x, x_how)
    av = _view(a, a_how)
    if w is None:
        wv = None
    elif weights == "shared":
        wv = _view(w[None], "col_strided")[0]  # a 1-D view with stride 2
    elif weights == "edge_expanded":
        wv = _expanded_rows(w)
    else:
        wv = _view(w, "transposed")
    if idx_how == "dst_expanded" and graph.E:
        sv, dv = src, dst[:1].expand(graph.E)
    elif idx_how == "int32":
        sv, dv = src.int(), dst.int()
    elif idx_how == "row_strided":
        sv, dv = _view(src, "row_strided"), _view(dst, "row_strided")
    else:
        sv, dv = src, dst
    use_graph = use_graph and graph.n_send == graph.n_recv

    def run(x, a, w, s, d):
        leaves = [t.detach().requires_grad_() for t in (x, a, w) if t is not None]
        gr = equiops.Graph(s, d, graph.n_recv) if use_graph else None
        inputs = [t.detach() for t in (x, a, w, s, d) if t is not None]
        before = _snapshot(inputs)
        res = _conv_derivatives(lambda x, a, *w: conv(x, a, w[0] if w else None, s, d, graph.n_recv, graph=gr),
                                leaves, torch.Generator().manual_seed(seed + 1), second=False)
        _assert_unmodified(inputs, before, "TensorProductConv")
        return res

    got = run(xv, av, wv, sv, dv)
    contig = run(xv.contiguous(), av.contiguous(), None if wv is None else wv.contiguous(), sv.long().contiguous(),
                 dv.long().contiguous())
    for k, (p, q) in enumerate(zip(got, contig)):
        _assert_bitwise(p, q, f"output {k} vs the contiguous inputs' ({layouts}, {weights})")
    w2d = None if wv is None else wv.reshape(1, -1) if weights == "shared" else wv
    ref_leaves = [t.detach().clone().requires_grad_() for t in (xv, av, w2d) if t is not None]
    ref = _conv_derivatives(
        lambda x, a, *w: ref_conv(x, a, w[0] if w else x.new_zeros(1, 0), src, dst, graph.n_recv, conv.problem),
        ref_leaves, torch.Generator().manual_seed(seed + 1), second=False)
    if weights == "shared" and wv is not None:
        ref[-1] = ref[-1].reshape(-1)
    _compare(got[:1], ref[:1], F64, 0, "out")
    _compare(got[1:], ref[1:], F64, 1, "d1")


# ===================================================================== EGNN message
COORD_NORMS = ["none", "detached", "plus_one", "clamped"]


@st.composite
def egnn_options(draw, coord_norm=None):
    config = MessageConfig(
        act=draw(st.sampled_from(["silu", "relu"])),
        coord_norm=coord_norm or draw(st.sampled_from(COORD_NORMS)),
        tanh=draw(st.booleans()),
        c_clamp=draw(st.sampled_from([0.0, 0.0, 0.3, 2.0])),
        trans_clamp=draw(st.sampled_from([0.0, 0.0, 0.5, 3.0])),
    )
    dims = dict(H1=draw(st.integers(1, 20)), M=draw(st.integers(1, 20)), Hc=draw(st.integers(1, 20)),
                D=draw(st.integers(0, 3)))
    return config, dims, draw(st.booleans()), draw(st.booleans())  # config, widths, gate, bc2


def _egnn_inputs(graph, dims, att, bc2, g, dtype):
    n, H1, M, Hc, D = graph.n_send, dims["H1"], dims["M"], dims["Hc"], dims["D"]

    def t(*shape, scale=1.0):
        return _randn(g, *shape, dtype=dtype, scale=scale)

    tensors = [t(n, H1), t(n, H1), t(n, 3), t(graph.E, D)]
    params = MessageParams(w_radial=t(H1, scale=0.3), w_edge=t(H1, D), w2=t(M, H1, scale=0.4), b2=t(M),
                           w_att=t(M) if att else None, b_att=t(1) if att else None, wc1=t(Hc, M, scale=0.4),
                           bc1=t(Hc), wc2=t(Hc), bc2=t(1) if bc2 else None)
    return tensors, params


def _egnn_reference(tensors, params, src, dst, config):
    """The reference with the self-loops' coordinate path detached. A loop's difference
    vector is identically 0, so its coordinate derivative is exactly 0, but the reference's
    autograd gives rounding residues (x/1e-8 - x/1e-8 for the detached and clamped norms)
    or NaN (sqrt'(0) for plus_one) there; the fused kernel drops that path. Summing the
    two edge sets separately is the same function."""
    node_i, node_j, coord, edge_attr = tensors
    loop = src == dst
    outs = []
    for sel, c in ((~loop, coord), (loop, coord.detach())):
        outs.append(ref_egnn.egnn_message(node_i, node_j, c, edge_attr[sel], src[sel], dst[sel], *params.tensors(),
                                          config.act, config.coord_norm, config.tanh, config.c_clamp,
                                          config.trans_clamp))
    return outs[0][0] + outs[1][0], outs[0][1] + outs[1][1]


def _egnn_derivatives(fn, tensors, params, g):
    leaves = [t.detach().requires_grad_() for t in tensors]  # detach(): the same memory, so that the
    p = MessageParams(*(None if v is None else v.detach().requires_grad_() for v in params.tensors()))  # check sees writes
    m, t = fn(leaves, p)
    cot = (_randn(g, *m.shape, dtype=m.dtype), _randn(g, *t.shape, dtype=t.dtype))
    all_leaves = leaves + [v for v in p.tensors() if v is not None]
    return [m.detach(), t.detach()] + [gr.detach() for gr in _grads((m, t), all_leaves, cot)]


@pytest.mark.parametrize("coord_norm", COORD_NORMS)
@_fuzz(10)
@given(case=dtype_and_graph(bipartite=False), data=st.data(), use_graph=st.booleans(), seed=SEEDS)
def test_egnn_message_matches_reference(coord_norm, case, data, use_graph, seed):
    """egnn_message (C++) == its reference: both sums and all first derivatives (node
    tensors, coordinates, edge features, every weight), for random options and widths.
    float32: the sums and the node/edge gradients; the weight gradients, sums over every
    edge whose terms cancel, are compared in float64 only (in float32 both the kernel's
    sums and PyTorch's float32 reference exceed an element-wise tolerance now and then, in
    elements ~1e4 times smaller than their terms: the kernel in 1-2 of 40 random cases of
    30..100 edges, by up to 13x, the reference in 0-1 of 40, by up to 8x)."""
    dtype, graph = case
    config, dims, att, bc2 = data.draw(egnn_options(coord_norm), label="options")
    _graph_events(graph)
    event(f"{dtype}, {config.act}, tanh {config.tanh}, c_clamp {config.c_clamp}, trans_clamp {config.trans_clamp}")
    g = torch.Generator().manual_seed(seed)
    tensors, params = _egnn_inputs(graph, dims, att, bc2, g, dtype)
    gr = equiops.Graph(graph.src, graph.dst, graph.n_recv) if use_graph else None
    inputs = tensors + [v for v in params.tensors() if v is not None] + [graph.src, graph.dst]
    before = _snapshot(inputs)
    got = _egnn_derivatives(lambda ts, p: egnn_message(*ts, graph.src, graph.dst, p, config, graph=gr, backend="cpu"),
                            tensors, params, torch.Generator().manual_seed(seed + 1))
    _assert_unmodified(inputs, before, "egnn_message")
    t64 = [t.double() for t in tensors]
    p64 = MessageParams(*(None if v is None else v.double() for v in params.tensors()))
    want = _egnn_derivatives(lambda ts, p: _egnn_reference(ts, p, graph.src, graph.dst, config), t64, p64,
                             torch.Generator().manual_seed(seed + 1))
    _compare(got[:2], want[:2], dtype, 0, "sums")
    _compare(got[2:6], want[2:6], dtype, 1, "d1 node/edge")
    if dtype == F64:
        _compare(got[6:], want[6:], dtype, 1, "d1 weights")


@_fuzz(20)
@given(graph=graphs(bipartite=False, hub_max=150), options=egnn_options(),
       layouts=st.tuples(st.sampled_from(LAYOUTS), st.sampled_from(LAYOUTS + ("expanded",)),
                         st.sampled_from(LAYOUTS + ("expanded",)), st.sampled_from(["contiguous", "row_strided"])),
       seed=SEEDS)
def test_egnn_message_noncontiguous_inputs(graph, options, layouts, seed):
    """Views of the node tensors, coordinates, edge features (also expand()-ed), weights
    and indices give bitwise the contiguous copies' sums and gradients."""
    config, dims, att, bc2 = options
    node_how, attr_how, w_how, idx_how = layouts
    tensors, params = _egnn_inputs(graph, dims, att, bc2, torch.Generator().manual_seed(seed), F64)
    views = [_view(tensors[0], node_how), _view(tensors[1], node_how), _view(tensors[2], node_how),
             _view(tensors[3], attr_how)]
    pviews = MessageParams(*(None if v is None else _view(v, w_how) for v in params.tensors()))
    sv, dv = (_view(graph.src, idx_how), _view(graph.dst, idx_how))
    before = _snapshot(views + list(pviews.tensors()) + [sv, dv])
    got = _egnn_derivatives(lambda ts, p: egnn_message(*ts, sv, dv, p, config, backend="cpu"), views, pviews,
                            torch.Generator().manual_seed(seed + 1))
    _assert_unmodified(views + list(pviews.tensors()) + [sv, dv], before, "egnn_message")
    contig = _egnn_derivatives(
        lambda ts, p: egnn_message(*ts, sv.contiguous(), dv.contiguous(), p, config, backend="cpu"),
        [t.contiguous() for t in views], MessageParams(*(None if v is None else v.contiguous() for v in pviews.tensors())),
        torch.Generator().manual_seed(seed + 1))
    for k, (p, q) in enumerate(zip(got, contig)):
        _assert_bitwise(p, q, f"output {k} vs the contiguous inputs' ({layouts})")
    want = _egnn_derivatives(lambda ts, p: _egnn_reference(ts, p, graph.src, graph.dst, config), views, pviews,
                             torch.Generator().manual_seed(seed + 1))
    _compare(got[:2], want[:2], F64, 0, "sums")
    _compare(got[2:], want[2:], F64, 1, "d1")


# ========================================================================= PointConv
MASKS = ["random", "none_masked", "all_masked", "some_rows_masked"]


@st.composite
def pointconv_case(draw, mask_kind=None):
    B, m, K, n = draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(0, 5)), draw(st.integers(1, 8))
    C, ci, co = draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 6))
    mask_kind = mask_kind or draw(st.sampled_from(MASKS))
    return dict(shape=(B, m, K, n, C, ci, co), mask_kind=mask_kind, dup=draw(st.booleans()),
                bias=draw(st.booleans()), mean=draw(st.booleans()), nan_padding=draw(st.booleans()))


def _pointconv_inputs(case, g, dtype):
    B, m, K, n, C, ci, co = case["shape"]
    penult, values = _randn(g, B, m, K, C, dtype=dtype), _randn(g, B, n, ci, dtype=dtype)
    idx = torch.randint(0, n, (B, m, K), generator=g)
    if case["dup"] and K > 1:
        idx[..., 1] = idx[..., 0]  # the same neighbour twice
    mask = {
        "random": torch.rand(B, m, K, generator=g) < 0.6,
        "none_masked": torch.ones(B, m, K, dtype=torch.bool),
        "all_masked": torch.zeros(B, m, K, dtype=torch.bool),
        "some_rows_masked": (torch.rand(B, m, 1, generator=g) < 0.5).expand(B, m, K).clone(),
    }[case["mask_kind"]]
    if case["nan_padding"]:
        # NaN where only padding reads: masked penult entries, points no valid neighbour
        # names (LieConv pads clouds so); they must not reach any output or gradient.
        penult[~mask] = float("nan")
        used = torch.zeros(B, n, dtype=torch.bool)
        batch = torch.arange(B).view(B, 1, 1).expand(B, m, K)
        used[batch[mask], idx[mask]] = True
        values[~used] = float("nan")
    weight = _randn(g, co, C * ci, dtype=dtype, scale=0.5)
    bias = _randn(g, co, dtype=dtype) if case["bias"] else None
    return [penult, values, idx, mask, weight, bias]


def _pointconv_derivatives(fn, inputs, mean, g):
    penult, values, idx, mask, weight, bias = inputs
    leaves = [t.detach().requires_grad_() for t in (penult, values, weight) + ((bias,) if bias is not None else ())]
    out = fn(leaves[0], leaves[1], idx, mask, leaves[2], leaves[3] if bias is not None else None, mean)
    return [out.detach()] + [gr.detach() for gr in _grads(out, leaves, _randn(g, *out.shape, dtype=out.dtype))]


@pytest.mark.parametrize("mask_kind", MASKS)
@_fuzz(10)
@given(data=st.data(), dtype=DTYPES, seed=SEEDS)
def test_pointconv_matches_reference(mask_kind, data, dtype, seed):
    """pointconv (C++) == reference, output and the gradients of penult, values, weight,
    bias; a query with every neighbour masked gives exactly the bias (or 0)."""
    case = data.draw(pointconv_case(mask_kind), label="case")
    event(f"K = {case['shape'][2]}, dup {case['dup']}, bias {case['bias']}, mean {case['mean']}, "
          f"NaN padding {case['nan_padding']}")
    inputs = _pointconv_inputs(case, torch.Generator().manual_seed(seed), dtype)
    before = _snapshot(inputs)
    got = _pointconv_derivatives(lambda *a: pointconv(*a, backend="cpu"), inputs, case["mean"],
                                 torch.Generator().manual_seed(seed + 1))
    _assert_unmodified(inputs, before, "pointconv")
    want = _pointconv_derivatives(ref_pointconv, [t if t is None or not t.is_floating_point() else t.double()
                                                  for t in inputs], case["mean"], torch.Generator().manual_seed(seed + 1))
    _compare(got[:1], want[:1], dtype, 0, "out")
    _compare(got[1:], want[1:], dtype, 1, "d1")
    assert not any(t.isnan().any() for t in got), "NaN padding reached an output or a gradient"
    empty = ~inputs[3].any(-1)  # (B, m) queries without a valid neighbour
    bias = inputs[5] if inputs[5] is not None else torch.zeros(got[0].shape[-1], dtype=dtype)
    assert torch.equal(got[0][empty], bias.expand(int(empty.sum()), -1)), "an all-masked query is not the bias"


@_fuzz(24)
@given(case=pointconv_case(),
       layouts=st.tuples(st.sampled_from(["contiguous", "channels_last", "permuted", "expanded"]),
                         st.sampled_from(LAYOUTS), st.sampled_from(["contiguous", "strided", "expanded"]),
                         st.sampled_from(LAYOUTS + ("expanded",))),
       seed=SEEDS)
def test_pointconv_noncontiguous_inputs(case, layouts, seed):
    """Channels-last / permuted / expand()-ed penult, strided values, strided or
    batch-expanded indices and masks, transposed weights give bitwise the contiguous
    copies' output and gradients."""
    p_how, v_how, i_how, w_how = layouts
    penult, values, idx, mask, weight, bias = _pointconv_inputs(case, torch.Generator().manual_seed(seed), F64)
    if p_how == "channels_last":
        pv = penult.contiguous(memory_format=torch.channels_last)
    elif p_how == "permuted":  # (B, m, K, C) stored as (C, K, m, B)
        pv = penult.permute(3, 2, 1, 0).contiguous().permute(3, 2, 1, 0)
    elif p_how == "expanded":  # every query of a batch the same penult rows
        pv = penult[:, :1].expand(penult.shape)
    else:
        pv = penult
    if i_how == "expanded":  # one batch's neighbourhoods for every batch, stride 0
        iv, mv = idx[:1].expand(idx.shape), mask[:1].expand(mask.shape)
    elif i_how == "strided":
        iv, mv = _strided_last(idx), _strided_last(mask)
    else:
        iv, mv = idx, mask
    views = [pv, _view(values, v_how), iv, mv, _view(weight, w_how),
             None if bias is None else _view(bias[None], "col_strided")[0]]
    before = _snapshot(views)
    got = _pointconv_derivatives(lambda *a: pointconv(*a, backend="cpu"), views, case["mean"],
                                 torch.Generator().manual_seed(seed + 1))
    _assert_unmodified(views, before, "pointconv")
    contig = _pointconv_derivatives(lambda *a: pointconv(*a, backend="cpu"),
                                    [None if t is None else t.contiguous() for t in views], case["mean"],
                                    torch.Generator().manual_seed(seed + 1))
    for k, (p, q) in enumerate(zip(got, contig)):
        _assert_bitwise(p, q, f"output {k} vs the contiguous inputs' ({layouts})")
    want = _pointconv_derivatives(ref_pointconv, views, case["mean"], torch.Generator().manual_seed(seed + 1))
    _compare(got[:1], want[:1], F64, 0, "out")
    _compare(got[1:], want[1:], F64, 1, "d1")


# ============================================================ Graph and segment ops
@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
@_fuzz(12)
@given(case=dtype_and_graph(bipartite=False, dtypes=ALL_DTYPES),
       trailing=st.sampled_from([(), (1,), (3,), (16,), (20,), (2, 9)]),
       at=st.sampled_from(["dst", "src"]), layout=st.sampled_from(LAYOUTS + ("expanded",)), seed=SEEDS)
def test_graph_aggregate(reduce, case, trailing, at, layout, seed):
    """Graph.aggregate == index_add_ / scatter_reduce by the chosen end and == the torch
    backend (values; gradients of sum and mean), nodes without edges 0; strided,
    transposed and expand()-ed values give bitwise the contiguous copy's result."""
    dtype, graph = case
    _graph_events(graph)
    event(f"{dtype}, {at}, values {layout} {trailing}")
    g = torch.Generator().manual_seed(seed)
    gr = equiops.Graph(graph.src, graph.dst, graph.n_recv)
    node = graph.dst if at == "dst" else graph.src
    values = _randn(g, graph.E, *trailing, dtype=dtype)
    if layout == "expanded":
        values = _expanded_rows(values) if graph.E else values
    else:
        values = _view(values, layout)
    before = _snapshot([values, graph.src, graph.dst])
    leaf = values.detach().requires_grad_()
    out = gr.aggregate(leaf, reduce, at, backend="cpu")
    _assert_unmodified([values, graph.src, graph.dst], before, "Graph.aggregate")
    c_leaf = values.contiguous().requires_grad_()
    contig = gr.aggregate(c_leaf, reduce, at, backend="cpu")
    _assert_bitwise(out, contig, "aggregate vs the contiguous values'")
    r_leaf = values.detach().double().requires_grad_()
    ref = gr.aggregate(r_leaf, reduce, at, backend="torch")
    _compare([out], [ref], dtype, 0, "aggregate vs torch backend")
    shape = (graph.n_recv,) + tuple(trailing)
    index = node.view((-1,) + (1,) * len(trailing)).expand(values.shape)
    if reduce in ("sum", "mean"):
        plain = values.double().new_zeros(shape).index_add_(0, node, values.double())
        if reduce == "mean":
            deg = torch.bincount(node, minlength=graph.n_recv).clamp(min=1)
            plain = plain / deg.double().view((-1,) + (1,) * len(trailing))
    if reduce in ("sum", "mean") and dtype in (F32, F64):
        cot = _randn(g, *shape, dtype=dtype)
        got_g = _grads(out, [leaf], cot)
        _compare(got_g, _grads(ref, [r_leaf], cot.double()), dtype, 1, "d aggregate")
        _assert_bitwise(got_g[0], _grads(contig, [c_leaf], cot)[0], "d aggregate vs the contiguous values'")
    if reduce in ("max", "min"):
        plain = values.double().new_zeros(shape).scatter_reduce(0, index, values.double(),
                                                                "amax" if reduce == "max" else "amin",
                                                                include_self=False)
    _compare([out], [plain], dtype, 0, "aggregate vs index_add_/scatter_reduce")


@st.composite
def segments(draw):
    """src (lead, rows, width) as a view of the given layout, indptr with empty segments
    (leading dims 1 or lead), and rows before the first and after the last segment."""
    counts = draw(st.lists(st.sampled_from([0, 0, 1, 2, 5]), min_size=0, max_size=7))
    start, tail = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    lead, width = draw(st.integers(1, 3)), draw(st.integers(1, 17))
    per_batch = draw(st.booleans()) and lead > 1
    return counts, start, tail, lead, width, per_batch


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
@_fuzz(12)
@given(case=segments(), layout=st.sampled_from(LAYOUTS + ("middle",)), dtype=ALL_DTYPES, seed=SEEDS)
def test_segment_and_gather_csr(reduce, case, layout, dtype, seed):
    """segment_csr and gather_csr (C++) == the torch backend with empty segments, values
    and gradients (sum, mean; gather), for strided and transposed src (bitwise equal to
    the contiguous copy's)."""
    counts, start, tail, lead, width, per_batch = case
    event(f"{dtype}, src {layout}, per-batch indptr {per_batch}, empty segment {0 in counts}")
    g = torch.Generator().manual_seed(seed)
    offsets = torch.tensor([start] + counts).cumsum(0)
    rows = int(offsets[-1]) + tail
    indptr = offsets[None].repeat(lead if per_batch else 1, 1)
    if per_batch and len(counts) > 1:  # another partition of the same rows per batch (empty segments likely)
        inner = torch.randint(start, int(offsets[-1]) + 1, (lead - 1, len(counts) - 1), generator=g)
        indptr[1:, 1:-1] = torch.sort(inner, dim=1).values
    src = _randn(g, lead, rows, width, dtype=dtype)
    if layout == "middle":  # the reduced dim not the slowest-moving
        src = src.permute(1, 0, 2).contiguous().permute(1, 0, 2)
    else:
        src = _view(src, layout)
    before = _snapshot([src, indptr])
    leaf = src.detach().requires_grad_()
    out = equiops.segment_csr(leaf, indptr, reduce=reduce, backend="cpu")
    _assert_unmodified([src, indptr], before, "segment_csr")
    contig_leaf = src.contiguous().requires_grad_()
    contig = equiops.segment_csr(contig_leaf, indptr, reduce=reduce, backend="cpu")
    _assert_bitwise(out, contig, "segment_csr vs the contiguous src's")
    r_leaf = src.detach().double().requires_grad_()
    ref = equiops.segment_csr(r_leaf, indptr, reduce=reduce, backend="torch")
    _compare([out], [ref], dtype, 0, "segment_csr")
    if reduce in ("sum", "mean") and dtype in (F32, F64):
        cot = _randn(g, *out.shape, dtype=dtype)
        got_g = _grads(out, [leaf], cot)
        _compare(got_g, _grads(ref, [r_leaf], cot.double()), dtype, 1, "d segment_csr")
        _assert_bitwise(got_g[0], _grads(contig, [contig_leaf], cot)[0], "d segment_csr vs the contiguous src's")
    # gather_csr, the transpose: segment values (a view too) repeated over their rows
    seg = _view(_randn(g, lead, len(counts), width, dtype=dtype), layout if layout != "middle" else "transposed")
    s_leaf = seg.detach().requires_grad_()
    gathered = equiops.gather_csr(s_leaf, indptr, backend="cpu")
    _assert_bitwise(gathered, equiops.gather_csr(seg.contiguous(), indptr, backend="cpu"), "gather_csr vs contiguous")
    rs_leaf = seg.detach().double().requires_grad_()
    gref = equiops.gather_csr(rs_leaf, indptr, backend="torch")
    _compare([gathered], [gref], dtype, 0, "gather_csr")
    if dtype in (F32, F64):
        cot = _randn(g, *gathered.shape, dtype=dtype)
        _compare(_grads(gathered, [s_leaf], cot), _grads(gref, [rs_leaf], cot.double()), dtype, 1, "d gather_csr")


# =============================================================== spherical harmonics
@pytest.mark.parametrize("normalize", [True, False])
@_fuzz(20)
@given(ls=st.lists(st.integers(0, 10), min_size=1, max_size=4),
       normalization=st.sampled_from(["integral", "component", "norm"]), rows=st.integers(0, 12),
       zeros=st.booleans(), layout=st.sampled_from(["contiguous", "transposed", "row_strided", "col_strided",
                                                      "expanded", "batched"]),
       dtype=ALL_DTYPES, seed=SEEDS)
def test_spherical_harmonics(normalize, ls, normalization, rows, zeros, layout, dtype, seed):
    """spherical_harmonics (C++) == the reference and e3nn (float64): values, first and
    second derivatives (second: rows with a zero vector excluded under normalize, where the
    reference's autograd and ours differ by design); zero vectors give Y = 0 for l >= 1
    under normalize; views of x give bitwise the contiguous copy's values and gradients.
    Half types (computed in float32, rounded at the end): values only."""
    event(f"{dtype}, {normalization}, x {layout}, l max {max(ls)}, zero rows {zeros and rows > 0}")
    g = torch.Generator().manual_seed(seed)
    x = _randn(g, rows, 3, dtype=F64, scale=0.7)
    if not normalize:
        # Inside the unit ball: solid harmonics grow as |x|^l, and conftest's element-wise
        # float32 tolerance is for O(1) values (at |x| ~ 2, l = 10, the float32 reference
        # itself is off by ~1e-3 on Jacobian entries of ~1e3).
        x = x / x.norm(dim=-1, keepdim=True).clamp(min=1.0)
    x = x.to(dtype)
    if zeros and rows:
        x[::3] = 0
    if layout == "expanded":
        x = _expanded_rows(x) if rows else x
    elif layout == "batched":  # (2, rows, 3) read through a permutation
        x = torch.stack([x, x.flip(0)]).permute(1, 0, 2).contiguous().permute(1, 0, 2)
    else:
        x = _view(x, layout)
    before = _snapshot([x])

    def derivs(fn, x, second):
        leaf = x.detach().requires_grad_()
        y = fn(leaf)
        gg = torch.Generator().manual_seed(seed + 1)
        cot = _randn(gg, *y.shape, dtype=y.dtype)
        (d1,) = _grads(y, [leaf], cot, create_graph=second)
        res = [y.detach(), d1.detach()]
        if second:
            direction = _randn(gg, *d1.shape, dtype=d1.dtype)
            res += _grads((d1 * direction).sum(), [leaf], torch.ones((), dtype=y.dtype)) if d1.requires_grad \
                else [torch.zeros_like(leaf)]
        return res

    def ours(t):
        return equiops.spherical_harmonics(ls, t, normalize, normalization, backend="cpu")

    full = dtype in (F32, F64)
    got = derivs(ours, x, second=full)
    _assert_unmodified([x], before, "spherical_harmonics")
    want = derivs(lambda t: ref_sh(ls, t, normalize, normalization), x.double(), second=full)
    _compare(got[:1], want[:1], dtype, 0, "Y")
    flat = x.reshape(-1, 3)
    keep = (flat != 0).any(-1) if normalize else torch.ones(flat.shape[0], dtype=torch.bool)
    if full:
        _compare(got[1:2], want[1:2], dtype, 1, "dY")
        _compare([got[2].reshape(-1, 3)[keep]], [want[2].reshape(-1, 3)[keep]], dtype, 2, "d2Y")
    if normalize:
        zero_rows = got[0].reshape(-1, got[0].shape[-1])[~keep]
        widths = [2 * lv + 1 for lv in ls]
        cols = torch.cat([torch.full((w,), lv != 0) for w, lv in zip(widths, ls)])
        assert torch.all(zero_rows[:, cols] == 0), "a zero vector gave non-zero harmonics of degree >= 1"
    contig = derivs(ours, x.contiguous(), second=False)
    for k, (p, q) in enumerate(zip(got[:2], contig)):
        _assert_bitwise(p, q, f"output {k} vs the contiguous x's ({layout})")
    if dtype == F64:
        o3 = pytest.importorskip("e3nn.o3")
        assert_close(got[0], o3.spherical_harmonics(ls, x, normalize, normalization))


# ====================================================== regressions found by the fuzzing
def _strided_index(values, fill=-7):
    """``values`` as a stride-3 view of a buffer whose other cells hold ``fill``."""
    buf = torch.full((3 * len(values) + 1,), fill, dtype=torch.long)
    buf[1::3] = torch.tensor(values)
    return buf[1::3]


def test_strided_indices_conv_and_egnn_modules():
    """Found by test_conv_noncontiguous_inputs: a strided edge_src (a view of a larger
    index buffer) raised "src[1] = -7 is not a node id", the C++ index check reading
    the view's memory as if dense. The Python layer now passes contiguous indices."""
    from equiops.tp_problem import build_problem

    p = build_problem("2x0e", "2x0e", "1x0e", [(0, 0, 0, "uvw", True)]).encode()
    g = torch.Generator().manual_seed(0)
    x, a, w = _randn(g, 2, 2), _randn(g, 2, 2), _randn(g, 2, 4)
    src, dst = _strided_index([1, 0]), _strided_index([0, 0])
    from equiops.nn.tp_conv import tensor_product_conv

    got = tensor_product_conv(x, a, w, src, dst, p, 2, backend="cpu")
    assert torch.equal(got, tensor_product_conv(x, a, w, src.contiguous(), dst.contiguous(), p, 2, backend="cpu"))
    assert_close(got, ref_conv(x, a, w, src, dst, 2, p))
    tensors, params = _egnn_inputs(G(src, dst, 2, 2), dict(H1=3, M=2, Hc=2, D=1), True, True, g, F64)
    m, t = egnn_message(*tensors, src, dst, params, backend="cpu")
    m_c, t_c = egnn_message(*tensors, src.contiguous(), dst.contiguous(), params, backend="cpu")
    assert torch.equal(m, m_c) and torch.equal(t, t_c)


@pytest.mark.parametrize("op", ["tp_conv", "egnn_message"])
def test_raw_ops_take_strided_indices(op):
    """The raw ops with a strided (valid) index: equal to the contiguous index's result.
    Found by the fuzzer: csrc/cpu/graph_view.h's check_index read a strided src/dst as if
    dense (a false IndexError, or a bad index let through); it now reads a dense copy."""
    g = torch.Generator().manual_seed(0)
    src, dst = _strided_index([1, 0]), _strided_index([0, 0])
    if op == "tp_conv":
        from equiops.tp_problem import build_problem

        p = build_problem("2x0e", "2x0e", "1x0e", [(0, 0, 0, "uvw", True)]).encode()
        x, a, w = _randn(g, 2, 2), _randn(g, 2, 2), _randn(g, 2, 4)

        def run(s, d):
            return torch.ops.equiops.tp_conv(x, a, w, s, d, None, None, None, None, 2, p, "cpu")
    else:
        tensors, params = _egnn_inputs(G(src, dst, 2, 2), dict(H1=3, M=2, Hc=2, D=1), True, True, g, F64)

        def run(s, d):
            return torch.ops.equiops.egnn_message(*tensors, s, d, None, None, None, None, *params.tensors(), "silu",
                                                  "none", False, 0.0, 0.0, "cpu")[0]
    assert torch.equal(run(src, dst), run(src.contiguous(), dst.contiguous()))


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("trailing", [(), (4,), (2, 3)])
def test_graph_aggregate_without_edges(reduce, trailing):
    """Found by test_graph_aggregate: a Graph with no edges raised "cannot reshape tensor
    of 0 elements into shape [1, 0, -1]" (graph.py reshaped the values with -1); now
    every node gets 0, with a zero gradient."""
    e = torch.zeros(0, dtype=torch.long)
    graph = equiops.Graph(e, e, 3)
    for backend in ("cpu", "torch"):
        values = torch.zeros((0,) + trailing, dtype=F64, requires_grad=True)
        out = graph.aggregate(values, reduce, backend=backend)
        assert out.shape == (3,) + trailing and not out.any()
        if reduce in ("sum", "mean"):
            (grad,) = torch.autograd.grad(out.sum(), values)
            assert grad.shape == values.shape
