"""The fused EGNN message block on the CPU (csrc/cpu/egnn_cpu.cpp) against its
plain-PyTorch reference (equiops.reference.egnn_message), which the module tests
(test_egnn.py, test_nbody.py, test_egnn_pytorch.py) check against the originals.

Forward and all fourteen gradients in float64 to 1e-10 and float32 to float32's
accuracy, for every option (activations, coordinate norms, gate, tanh, clamps, edge
features or none, widths that are not multiples of the vector width), on graphs with
isolated receivers, duplicate edges and self loops; the baseline-ISA build
(EQUIOPS_CPU_ISA=generic, in a subprocess); bitwise determinism across runs and thread
counts; given and stale graph views; empty graphs; opcheck; compiled EGNN training
equal to eager with dynamic shapes; bad input of the public function and the raw op.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import equiops
from equiops.ops.egnn import MessageConfig, MessageParams, egnn_message
from equiops.reference import egnn_message as ref
from conftest import num_threads

TOL = {torch.float64: 1e-10, torch.float32: 5e-5}


def _rel(a, b):
    if b.numel() == 0:
        return 0.0
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def _graph(n, E, seed, loops=True, isolated=2):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n, (E,), generator=g)
    dst = torch.randint(0, n - isolated, (E,), generator=g)  # the last nodes receive nothing
    if E > 3:
        src[1], dst[1] = src[0], dst[0]  # a duplicate edge
        if loops:
            src[2] = dst[2]
    if not loops:
        src = torch.where(src == dst, (src + 1) % n, src)
    return src, dst


def _problem(dtype, n=9, E=41, H1=16, M=12, Hc=20, D=2, att=True, bc2=True, seed=0, loops=True):
    g = torch.Generator().manual_seed(seed)

    def t(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)

    src, dst = _graph(n, E, seed + 1, loops=loops)
    tensors = dict(node_i=t(n, H1), node_j=t(n, H1), coord=t(n, 3), edge_attr=t(E, D))
    params = MessageParams(
        w_radial=t(H1, scale=0.3), w_edge=t(H1, D), w2=t(M, H1, scale=0.4), b2=t(M),
        w_att=t(M) if att else None, b_att=t(1) if att else None, wc1=t(Hc, M, scale=0.4), bc1=t(Hc),
        wc2=t(Hc), bc2=t(1) if bc2 else None,
    )
    return tensors, params, src, dst


def _leaves(tensors, params):
    tensors = {k: v.clone().requires_grad_() for k, v in tensors.items()}
    p = MessageParams(*(None if v is None else v.clone().requires_grad_() for v in params.tensors()))
    return tensors, p


def _run(tensors, params, src, dst, config, backend, graph=None, seed=5):
    tensors, params = _leaves(tensors, params)
    m, t = egnn_message(*tensors.values(), src, dst, params, config, graph=graph, backend=backend)
    g = torch.Generator().manual_seed(seed)
    cm = torch.randn(m.shape, generator=g, dtype=torch.float64).to(m.dtype)
    ct = torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)
    leaves = list(tensors.values()) + [v for v in params.tensors() if v is not None]
    grads = torch.autograd.grad((m * cm).sum() + (t * ct).sum(), leaves, allow_unused=True)
    grads = [torch.zeros_like(x) if gr is None else gr for x, gr in zip(leaves, grads)]
    return [m.detach(), t.detach()] + [gr.detach() for gr in grads]


CONFIGS = {
    "silu": (dict(), dict()),
    "relu": (dict(act="relu"), dict()),
    "detached+tanh": (dict(coord_norm="detached", tanh=True), dict(loops=False)),
    "plus_one+trans_clamp": (dict(coord_norm="plus_one", trans_clamp=0.5), dict(loops=False)),
    "clamped+c_clamp": (dict(coord_norm="clamped", c_clamp=0.3), dict(loops=False)),
    "no_gate_no_bc2_no_edge_attr": (dict(), dict(att=False, bc2=False, D=0)),
    "odd_widths": (dict(coord_norm="clamped"), dict(H1=13, M=21, Hc=7, D=3, loops=False, E=77)),
    "wide": (dict(tanh=True), dict(H1=72, M=40, Hc=96, E=70)),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_reference(name, dtype):
    cfg, shape = CONFIGS[name]
    config = MessageConfig(**cfg)
    tensors, params, src, dst = _problem(torch.float64, **shape)
    expected = _run(tensors, params, src, dst, config, "torch")
    if cfg.get("trans_clamp"):
        m, t = ref.edge_messages(*tensors.values(), src, dst, *params.tensors(), **cfg)
        assert (t.abs() >= 0.5).any() and (t.abs() < 0.5).any()  # the clamp acts on some components
    if cfg.get("c_clamp"):
        assert 0.0 < float((_run(tensors, params, src, dst, config, "torch")[1]).abs().max())
    low = ({k: v.to(dtype) for k, v in tensors.items()},
           MessageParams(*(None if v is None else v.to(dtype) for v in params.tensors())))
    got = _run(*low, src, dst, config, "cpu")
    for k, (a, b) in enumerate(zip(got, expected)):
        assert a.dtype == dtype
        assert _rel(a.double(), b) < TOL[dtype], f"output {k}"


def test_clamps_act():
    """The clamp cases above exercise both sides of each clamp."""
    tensors, params, src, dst = _problem(torch.float64, loops=False)
    _, t = ref.edge_messages(*tensors.values(), src, dst, *params.tensors(), coord_norm="plus_one")
    assert (t.abs() > 0.5).any() and (t.abs() < 0.5).any()
    m, _ = ref.edge_messages(*tensors.values(), src, dst, *params.tensors())
    c = torch.nn.functional.silu(m @ params.wc1.t() + params.bc1) @ params.wc2 + params.bc2
    assert (c.abs() > 0.3).any() and (c.abs() < 0.3).any()


def test_self_loop_coordinate_gradient_is_exactly_zero():
    """With the detached norm a self loop's coordinate gradient is +-1/(0 + 1e-8) c: it
    cancels exactly in exact arithmetic, and the kernel drops it rather than leaving a
    rounding residue. Compared with the reference on the same graph without the loop's
    coordinate path (its difference is exactly 0 either way)."""
    tensors, params, src, dst = _problem(torch.float64, loops=False)
    src[5] = dst[5]
    config = MessageConfig(coord_norm="detached")
    got = _run(tensors, params, src, dst, config, "cpu")
    expected = _run(tensors, params, src, dst, config, "torch")
    for k, (a, b) in enumerate(zip(got, expected)):
        if k != 4:  # all but the coordinate gradient match as usual
            assert _rel(a, b) < 1e-10, f"output {k}"
    # The reference's coordinate gradient of the loop alone is rounding noise of ~1e-8.
    assert _rel(got[4], expected[4]) < 1e-6


def test_graph_views_and_determinism():
    tensors, params, src, dst = _problem(torch.float64, n=40, E=900, seed=3)
    config = MessageConfig(tanh=True)
    base = _run(tensors, params, src, dst, config, "cpu")
    graph = equiops.Graph(src, dst, 40)
    with_graph = _run(tensors, params, src, dst, config, "cpu", graph=graph)
    for a, b in zip(base, with_graph):
        assert torch.equal(a, b)
    # Edges already sorted by receiver: the views without perm.
    order = torch.argsort(dst, stable=True)
    tensors_sorted = dict(tensors, edge_attr=tensors["edge_attr"][order])
    sorted_graph = equiops.Graph(src[order], dst[order], 40)
    assert sorted_graph.dst_sorted
    res = _run(tensors_sorted, params, src[order], dst[order], config, "cpu", graph=sorted_graph)
    for k, (a, b) in enumerate(zip(res, base)):
        b = b[order] if k == 5 else b  # grad edge_attr is per edge
        assert _rel(a, b) < 1e-12
    # Bitwise reproducible across thread counts.
    with num_threads(1):
        single = _run(tensors, params, src, dst, config, "cpu")
    for a, b in zip(single, base):
        assert torch.equal(a, b)


def test_stale_graph_view_is_an_error():
    tensors, params, src, dst = _problem(torch.float64, n=9, E=30)
    graph = equiops.Graph(src, dst, 9)
    other = dst.flip(0)
    views = (graph.dst_perm, graph.dst_indptr, graph.src_perm, graph.src_indptr)
    with pytest.raises(ValueError, match="does not match dst"):
        torch.ops.equiops.egnn_message(*tensors.values(), src, other, *views, *params.tensors(), "silu", "none",
                                       False, 0.0, 0.0, "cpu")


def test_empty_graph_and_isolated_nodes():
    tensors, params, src, dst = _problem(torch.float64, n=5, E=0)
    m, t = egnn_message(*tensors.values(), src, dst, params, backend="cpu")
    assert m.shape == (5, 12) and t.shape == (5, 3) and not m.any() and not t.any()
    got = _run(tensors, params, src, dst, MessageConfig(), "cpu")
    assert all(not g.any() for g in got)
    tensors, params, src, dst = _problem(torch.float64, n=9, E=20, seed=4)
    m, t = egnn_message(*tensors.values(), src, dst, params, backend="cpu")
    assert not m[-2:].any() and not t[-2:].any()  # the last two nodes receive nothing


_ISA_SCRIPT = r"""
import sys, torch
sys.path.insert(0, %(tests)r)
import test_egnn_message as T
worst = 0.0
for name in ("silu", "detached+tanh", "odd_widths", "wide"):
    cfg, shape = T.CONFIGS[name]
    for dtype in (torch.float64, torch.float32):
        tensors, params, src, dst = T._problem(torch.float64, **shape)
        expected = T._run(tensors, params, src, dst, T.MessageConfig(**cfg), "torch")
        low = ({k: v.to(dtype) for k, v in tensors.items()},
               T.MessageParams(*(None if v is None else v.to(dtype) for v in params.tensors())))
        got = T._run(*low, src, dst, T.MessageConfig(**cfg), "cpu")
        for a, b in zip(got, expected):
            assert T._rel(a.double(), b) < T.TOL[dtype], (name, dtype)
print("ok")
"""


def test_generic_isa_kernels():
    """The baseline-ISA build (chosen once per process: a subprocess) against the reference."""
    env = dict(os.environ, EQUIOPS_CPU_ISA="generic", OMP_NUM_THREADS="1")
    script = _ISA_SCRIPT % {"tests": os.path.dirname(__file__)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_opcheck():
    tensors, params, src, dst = _problem(torch.float64, n=7, E=19)
    graph = equiops.Graph(src, dst, 7)
    views = (graph.dst_perm, graph.dst_indptr, graph.src_perm, graph.src_indptr)
    tensors, params = _leaves(tensors, params)
    args = (*tensors.values(), src, dst, *views, *params.tensors(), "silu", "detached", True, 0.0, 0.0, "cpu")
    torch.library.opcheck(torch.ops.equiops.egnn_message, args)
    no_views = (*tensors.values(), src, dst, None, None, None, None, *params.tensors(), "relu", "none", False, 0.5,
                0.5, "cpu")
    torch.library.opcheck(torch.ops.equiops.egnn_message, no_views)
    gm, gt = torch.randn(7, 12, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.equiops.egnn_message_backward, (gm, gt) + args,
                          test_utils=("test_schema", "test_faketensor"))


def test_compiled_training_equals_eager_dynamic_shapes():
    """fullgraph compile of the fused EGNN with dynamic node and edge counts: outputs and
    gradients equal eager, and new sizes do not recompile."""
    import torch._dynamo.testing

    torch.manual_seed(0)
    model = equiops.nn.EGNN(4, 8, 3, in_edge_nf=1, n_layers=2, attention=True).double()
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
    first = None
    for n, E, seed in ((10, 30, 1), (14, 57, 2), (21, 80, 3)):
        src, dst = _graph(n, E, seed)
        g = torch.Generator().manual_seed(seed)
        h = torch.randn(n, 4, generator=g, dtype=torch.float64)
        x = torch.randn(n, 3, generator=g, dtype=torch.float64)
        a = torch.randn(E, 1, generator=g, dtype=torch.float64)
        res = []
        for fn in (model, compiled):
            xx = x.clone().requires_grad_()
            ho, xo = fn(h, xx, torch.stack([dst, src]), a)
            loss = ho.square().sum() + (xo * x).sum()
            res.append([ho.detach(), xo.detach()] + list(torch.autograd.grad(loss, [xx, *model.parameters()])))
        for a_, b_ in zip(*res):
            assert _rel(b_, a_) < 1e-10
        # The first compile may restart its analysis once (Dynamo's scalar
        # tensorification calls the backend twice); later sizes must compile nothing.
        first = counter.frame_count if first is None else first
        assert counter.frame_count == first <= 2


def test_bad_input():
    tensors, params, src, dst = _problem(torch.float64, n=6, E=10)
    ni, nj, coord, ea = tensors.values()

    def call(**over):
        t = dict(tensors, **{k: v for k, v in over.items() if k in tensors})
        p = MessageParams(**{**{f: getattr(params, f) for f in params.__dataclass_fields__},
                             **{k: v for k, v in over.items() if k in params.__dataclass_fields__}})
        return egnn_message(*t.values(), over.get("src", src), over.get("dst", dst), p,
                            over.get("config", MessageConfig()), backend="cpu")

    with pytest.raises(ValueError, match=r"node_j must have shape \(6, 16\), got \(5, 16\)"):
        call(node_j=nj[:5])
    with pytest.raises(ValueError, match=r"coord must have shape \(6, 3\), got \(6, 2\)"):
        call(coord=coord[:, :2])
    with pytest.raises(ValueError, match=r"edge_attr must have shape \(10, D\)"):
        call(edge_attr=ea[:4])
    with pytest.raises(ValueError, match=r"w2 must have shape \(M, 16\)"):
        call(w2=params.w2[:, :5])
    with pytest.raises(ValueError, match=r"wc1 must have shape \(Hc, 12\)"):
        call(wc1=params.wc1[:, :3])
    with pytest.raises(ValueError, match=r"w_edge must have shape \(16, 2\)"):
        call(w_edge=params.w_edge[:, :1])
    with pytest.raises(TypeError, match="wc2 must have node_i's dtype"):
        call(wc2=params.wc2.float())
    with pytest.raises(ValueError, match="w_att and b_att must be given together"):
        call(b_att=None)
    with pytest.raises(ValueError, match="src must be a 1-D int64"):
        call(src=src.int())
    with pytest.raises(IndexError, match=r"src\[3\] = 6 is not a node id in \[0, 6\)"):
        bad = src.clone()
        bad[3] = 6
        call(src=bad)
    with pytest.raises(IndexError, match=r"dst\[0\] = -1"):
        bad = dst.clone()
        bad[0] = -1
        call(dst=bad)
    with pytest.raises(ValueError, match="coord_norm"):
        MessageConfig(coord_norm="unit")
    with pytest.raises(ValueError, match="c_clamp"):
        MessageConfig(c_clamp=-1.0)
    with pytest.raises(ValueError, match="no kernel for act"):
        egnn_message(*tensors.values(), src, dst, params, MessageConfig(act=torch.tanh), backend="cpu")
    # The raw op checks what it reads.
    with pytest.raises(ValueError, match="act must be 'silu' or 'relu'"):
        torch.ops.equiops.egnn_message(ni, nj, coord, ea, src, dst, None, None, None, None, *params.tensors(),
                                       "gelu", "none", False, 0.0, 0.0, "cpu")
    with pytest.raises(ValueError, match=r"bc1 must have shape \[20\]"):
        p = list(params.tensors())
        p[7] = p[7][:3]
        torch.ops.equiops.egnn_message(ni, nj, coord, ea, src, dst, None, None, None, None, *p, "silu", "none",
                                       False, 0.0, 0.0, "cpu")


def test_callable_activation_runs_the_reference():
    """A callable act (no kernel) runs the reference under backend auto/None, and is
    differentiable twice there."""
    tensors, params, src, dst = _problem(torch.float64, n=6, E=12)
    config = MessageConfig(act=torch.tanh)
    got = _run(tensors, params, src, dst, config, None)
    expected = _run(tensors, params, src, dst, config, "torch")
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
