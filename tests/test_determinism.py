"""Deterministic mode: every public op and module is bitwise reproducible (issue 10).

With deterministic results asked for, by :func:`equiops.set_deterministic`, by the
thread-local :func:`equiops.deterministic` block, or by PyTorch's own
``torch.use_deterministic_algorithms(True)`` (each a parameter of every test; the state is
restored afterwards), each op and module is run three times on the same inputs: twice with
the thread count it had, once with another (1 vs 2). Outputs, first derivatives and,
where the op has them, second derivatives (harmonics, tensor product, convolution,
scatter sum) must be bitwise equal (``torch.equal``), not merely close. The sizes are
large enough for the CPU kernels to split their work into several ranges, so a result
that depended on the split (or on a race) would differ between the runs. Running under
``torch.use_deterministic_algorithms(True)`` also proves that no CPU path of ours calls a
PyTorch op without a deterministic implementation (PyTorch raises then).

The Triton half runs under ``TRITON_INTERPRET=1`` on CPU tensors, calling the CUDA
implementations of the ops (``equiops.ops.*._cuda_*``, what the dispatcher runs for CUDA
tensors) as tests/test_*_triton.py do: in deterministic mode the atomic variants of the
scatter sum, the convolution without views, the EGNN message block without views and the
PointConv values gradient are not launched (the launches are recorded, and a control run
without determinism shows that the recording sees the atomic ones), the results are
bitwise reproducible, and a backward run on another thread (as autograd runs CUDA
backward passes, on its device thread) still sees the forward's deterministic block.
"""

from __future__ import annotations

import contextlib
import copy
import threading

import pytest
import torch

import equiops
from conftest import num_threads, triton_interpreter_enabled
from equiops import backend as _backend
from equiops.ops.egnn import MessageConfig, MessageParams, egnn_message
from equiops.ops.pointconv import pointconv
from equiops.reference.pointconv import pointconv as pointconv_reference

pytest.importorskip("equiops._C")

F32, F64 = torch.float32, torch.float64


# ---------------------------------------------------------------------------- switches
@contextlib.contextmanager
def _switch(name: str):
    """Deterministic mode turned on one way; every global it touches restored on exit."""
    old_flag = _backend._default["deterministic"]
    old_torch = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if name == "set_deterministic":
            equiops.set_deterministic(True)
            assert equiops.is_deterministic()
            yield
        elif name == "context":
            with equiops.deterministic():
                assert equiops.is_deterministic()
                yield
        elif name == "torch":
            torch.use_deterministic_algorithms(True)  # raising, not warn_only
            assert equiops.is_deterministic()
            yield
        else:
            raise AssertionError(name)
    finally:
        equiops.set_deterministic(old_flag)
        torch.use_deterministic_algorithms(old_torch, warn_only=old_warn)


SWITCHES = ("set_deterministic", "context", "torch")


@pytest.fixture(params=SWITCHES)
def switch(request):
    with _switch(request.param):
        yield request.param
    assert not equiops.is_deterministic()


# The modules (slower) take our thread-local block and PyTorch's switch; set_deterministic
# and the block are one flag to the ops (is_deterministic), and the ops take all three.
@pytest.fixture(params=("context", "torch"))
def module_switch(request):
    with _switch(request.param):
        yield request.param
    assert not equiops.is_deterministic()


def _assert_reproducible(fn, across_threads: bool = True):
    """``fn()`` (a list of tensors) twice with the current thread count and (with
    ``across_threads``) once with another: bitwise equal each time."""
    runs = [[t.detach().clone() for t in fn()], [t.detach().clone() for t in fn()]]
    other = 1 if torch.get_num_threads() > 1 else 2
    if across_threads:
        with num_threads(other):
            runs.append([t.detach().clone() for t in fn()])
    first = runs[0]
    assert len(first) > 0 and all(len(r) == len(first) for r in runs)
    for k, a in enumerate(first):
        for r, what in zip(runs[1:], ("between two runs", f"with {other} thread(s)")):
            assert a.dtype == r[k].dtype and a.shape == r[k].shape, k
            assert torch.equal(a, r[k]), f"result {k} differs {what}"


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _grads(y, xs, create_graph=False, grad_outputs=None):
    return list(torch.autograd.grad(y, xs, grad_outputs=grad_outputs, create_graph=create_graph,
                                    materialize_grads=True))


def _unsorted_index(n_rows: int, n_slots: int, seed: int) -> torch.Tensor:
    """Unsorted, with many duplicates (n_rows >> n_slots) and a few empty slots."""
    idx = torch.randint(0, n_slots - 3, (n_rows,), generator=_gen(seed))
    assert not bool((idx[1:] >= idx[:-1]).all())
    return idx


# -------------------------------------------------------------------- scatter family
E_ROWS, SLOTS, WIDTH = 6000, 400, 12


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
def test_scatter(switch, reduce):
    g = _gen(1)
    src0 = torch.randn(E_ROWS, WIDTH, generator=g)
    index = _unsorted_index(E_ROWS, SLOTS, 2)
    cot = torch.randn(SLOTS, WIDTH, generator=g)
    vv = torch.randn(E_ROWS, WIDTH, generator=g)

    def run():
        src = src0.clone().requires_grad_()
        if reduce in ("max", "min"):
            out, arg = getattr(equiops, f"scatter_{reduce}")(src, index, dim=0, dim_size=SLOTS)
            extra = [arg]
        else:
            out = equiops.scatter(src, index, dim=0, dim_size=SLOTS, reduce=reduce)
            extra = []
        if reduce != "sum":
            return [out] + extra + _grads((out * cot).sum(), [src])
        # Second derivative of the (linear) sum: differentiate its backward w.r.t. the cotangent.
        c = cot.clone().requires_grad_()
        (gsrc,) = _grads(out, [src], create_graph=True, grad_outputs=c)
        return [out, gsrc] + _grads((gsrc * vv).sum(), [c])

    _assert_reproducible(run)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
def test_segment_csr(switch, reduce):
    g = _gen(3)
    src0 = torch.randn(E_ROWS, WIDTH, generator=g)
    counts = torch.bincount(_unsorted_index(E_ROWS, SLOTS, 4), minlength=SLOTS)
    indptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    cot = torch.randn(SLOTS, WIDTH, generator=g)

    def run():
        src = src0.clone().requires_grad_()
        out = equiops.segment_csr(src, indptr, reduce=reduce)
        return [out] + _grads((out * cot).sum(), [src])

    _assert_reproducible(run)


def test_gather_csr(switch):
    g = _gen(5)
    counts = torch.bincount(_unsorted_index(E_ROWS, SLOTS, 6), minlength=SLOTS)
    indptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    src0 = torch.randn(SLOTS, WIDTH, generator=g)
    cot = torch.randn(E_ROWS, WIDTH, generator=g)

    def run():
        src = src0.clone().requires_grad_()
        out = equiops.gather_csr(src, indptr)
        return [out] + _grads((out * cot).sum(), [src])

    _assert_reproducible(run)


# Width 20 takes the CPU's in-order scatter path of Graph.aggregate, width 3 the gather
# through the receiver perm (graph.py, _CPU_DIRECT_MIN_WIDTH).
@pytest.mark.parametrize("reduce,width", [("sum", 20), ("sum", 3), ("mean", 20), ("max", 3)])
def test_graph_aggregate(switch, reduce, width):
    g = _gen(7)
    src = torch.randint(0, SLOTS, (E_ROWS,), generator=g)
    dst = _unsorted_index(E_ROWS, SLOTS, 8)
    graph = equiops.Graph(src, dst, SLOTS)
    v0 = torch.randn(E_ROWS, width, generator=g)
    cot = torch.randn(SLOTS, width, generator=g)

    def run():
        v = v0.clone().requires_grad_()
        out = graph.aggregate(v, reduce)
        return [out] + _grads((out * cot).sum(), [v])

    _assert_reproducible(run)


# ------------------------------------------------------------------ harmonics and TP
def test_spherical_harmonics(switch):
    g = _gen(9)
    x0 = torch.randn(5000, 3, generator=g)
    cot = torch.randn(5000, 16, generator=g)
    w = torch.randn(5000, 3, generator=g)

    def run():
        x = x0.clone().requires_grad_()
        y = equiops.spherical_harmonics([0, 1, 2, 3], x, normalize=True, normalization="component")
        (gx,) = _grads((y * cot).sum(), [x], create_graph=True)  # forces
        return [y, gx] + _grads((gx * w).sum(), [x])  # training on forces

    _assert_reproducible(run)


def _tp_inputs(tp, rows, seed):
    g = _gen(seed)
    x1 = torch.randn(rows, tp.irreps_in1.dim, generator=g)
    x2 = torch.randn(rows, tp.irreps_in2.dim, generator=g)
    return g, x1, x2


def test_tensor_product(switch):
    torch.manual_seed(0)
    tp = equiops.FullyConnectedTensorProduct("8x0e+4x1o+2x2e", "0e+1o+2e", "8x0e+4x1o+4x1e+2x2e")
    rows = 3000
    g, x10, x20 = _tp_inputs(tp, rows, 10)
    cot = torch.randn(rows, tp.irreps_out.dim, generator=g)
    v1, v2 = torch.randn(rows, tp.irreps_in1.dim, generator=g), torch.randn(rows, tp.irreps_in2.dim, generator=g)

    def run():
        tp.weight.grad = None
        x1, x2 = x10.clone().requires_grad_(), x20.clone().requires_grad_()
        out = tp(x1, x2)
        first = _grads((out * cot).sum(), [x1, x2, tp.weight], create_graph=True)
        second = _grads((first[0] * v1).sum() + (first[1] * v2).sum() + first[2].square().sum(), [x1, x2, tp.weight])
        return [out] + first + second

    _assert_reproducible(run)


def _conv_problem(E=4000, n=300, seed=11):
    torch.manual_seed(seed)
    irreps_out, ins = equiops.nn.channelwise_instructions("8x0e+4x1o", "0e+1o+2e", "8x0e+4x1o+4x1e")
    conv = equiops.TensorProductConv("8x0e+4x1o", "0e+1o+2e", irreps_out, ins, shared_weights=False,
                                     internal_weights=False)
    g = _gen(seed)
    src = torch.randint(0, n, (E,), generator=g)
    dst = _unsorted_index(E, n, seed + 1)
    x = torch.randn(n, conv.irreps_in1.dim, generator=g)
    a = torch.randn(E, conv.irreps_in2.dim, generator=g)
    w = torch.randn(E, conv.weight_numel, generator=g)
    cot = torch.randn(n, conv.irreps_out.dim, generator=g)
    return conv, src, dst, n, x, a, w, cot


@pytest.mark.parametrize("with_graph", [False, True], ids=["no-graph", "graph"])
def test_tensor_product_conv(switch, with_graph):
    conv, src, dst, n, x0, a0, w0, cot = _conv_problem()
    graph = equiops.Graph(src, dst, n) if with_graph else None
    vx, va = torch.randn_like(x0), torch.randn_like(a0)

    def run():
        x, a, w = (t.clone().requires_grad_() for t in (x0, a0, w0))
        out = conv(x, a, w, src, dst, n, graph=graph)
        first = _grads((out * cot).sum(), [x, a, w], create_graph=True)
        second = _grads((first[0] * vx).sum() + (first[1] * va).sum() + first[2].square().sum(), [x, a, w])
        return [out] + first + second

    _assert_reproducible(run)


# -------------------------------------------------------------- EGNN message, PointConv
def test_egnn_message(switch):
    g = _gen(13)
    n, E, H1, M, Hc, D = 200, 3000, 16, 12, 16, 2
    src = torch.randint(0, n, (E,), generator=g)
    dst = _unsorted_index(E, n, 14)
    node_i, node_j = torch.randn(n, H1, generator=g), torch.randn(n, H1, generator=g)
    coord, edge_attr = torch.randn(n, 3, generator=g), torch.randn(E, D, generator=g)

    def t(*shape):
        return 0.4 * torch.randn(*shape, generator=g)

    params = [t(H1), t(H1, D), t(M, H1), t(M), t(M), t(1), t(Hc, M), t(Hc), t(Hc), t(1)]
    cm, ct = torch.randn(n, M, generator=g), torch.randn(n, 3, generator=g)

    def run():
        leaves = [v.clone().requires_grad_() for v in [node_i, node_j, coord, edge_attr] + params]
        m, tr = egnn_message(*leaves[:4], src, dst, MessageParams(*leaves[4:]), MessageConfig(tanh=True))
        return [m, tr] + _grads((m * cm).sum() + (tr * ct).sum(), leaves)

    _assert_reproducible(run)


def test_pointconv(switch):
    g = _gen(15)
    B, m, n, K, C, ci, co = 2, 300, 300, 12, 8, 6, 10
    penult, values = torch.randn(B, m, K, C, generator=g), torch.randn(B, n, ci, generator=g)
    idx = torch.randint(0, n, (B, m, K), generator=g)
    mask = torch.rand(B, m, K, generator=g) < 0.8
    weight, bias = torch.randn(co, C * ci, generator=g), torch.randn(co, generator=g)
    cot = torch.randn(B, m, co, generator=g)

    def run():
        leaves = [v.clone().requires_grad_() for v in (penult, values, weight, bias)]
        out = pointconv(leaves[0], leaves[1], idx, mask, leaves[2], leaves[3], mean=True)
        return [out] + _grads((out * cot).sum(), leaves)

    _assert_reproducible(run)


# ---------------------------------------------------------------------------- modules
# The modules' training steps are compared run to run at one thread count only: their
# PyTorch layers (Linear, the radial MLP) run MKL's GEMM, whose sums over the reduction
# dimension are blocked by thread count. Measured with this torch build: the (1111 x 6)^T
# (1111 x 16) product of a radial MLP's weight gradient differs by 4.6e-5 between 1 and 2
# threads (test_mkl_gemm_depends_on_thread_count shows it), so a module is only as
# thread-count independent as PyTorch's BLAS; our ops are (the tests above).
def _training_step(model, loss_fn):
    """Parameter gradients of ``loss_fn(model)`` (the model is a fresh copy each run)."""
    model = copy.deepcopy(model)
    loss = loss_fn(model)
    params = [p for p in model.parameters() if p.requires_grad]
    return [loss.detach()] + _grads(loss, params)


def test_tfn_force_training_step(module_switch):
    torch.manual_seed(20)
    model = equiops.nn.TensorFieldNetwork(3, "8x0e+2x0o+4x1o+4x1e", 2, num_layers=2, r_max=2.5, num_basis=6,
                                         radial_neurons=(16,), avg_num_neighbors=8.0)
    g = _gen(21)
    n = 16
    pos0 = 2.2 * torch.rand(n, 3, generator=g)
    d = torch.cdist(pos0, pos0)
    src, dst = torch.nonzero((d < 2.5) & (d > 0), as_tuple=True)
    species = torch.randint(0, 3, (n,), generator=g)
    f_target = torch.randn(n, 3, generator=g)

    def loss_fn(m):
        pos = pos0.clone().requires_grad_()
        energy = m(pos, species, src, dst)
        (grad_pos,) = _grads(energy.sum(), [pos], create_graph=True)
        return energy.square().sum() + (-grad_pos - f_target).square().mean()

    _assert_reproducible(lambda: _training_step(model, loss_fn), across_threads=False)


def test_egnn_training_step(module_switch):
    torch.manual_seed(22)
    model = equiops.nn.EGNN(in_node_nf=6, hidden_nf=16, out_node_nf=4, in_edge_nf=2, attention=True, n_layers=2)
    g = _gen(23)
    n, E = 60, 700
    h, x = torch.randn(n, 6, generator=g), torch.randn(n, 3, generator=g)
    row, col = _unsorted_index(E, n, 24), torch.randint(0, n, (E,), generator=g)
    edge_attr = torch.randn(E, 2, generator=g)

    def loss_fn(m):
        h_out, x_out = m(h, x, [row, col], edge_attr)
        return h_out.square().mean() + x_out.square().mean()

    _assert_reproducible(lambda: _training_step(model, loss_fn), across_threads=False)


def test_egnn_pytorch_training_step(module_switch):
    from equiops.nn.egnn_pytorch import EGNN

    torch.manual_seed(25)
    model = EGNN(dim=16, edge_dim=2)
    g = _gen(26)
    B, N = 3, 24
    feats, coors = torch.randn(B, N, 16, generator=g), torch.randn(B, N, 3, generator=g)
    edges = torch.randn(B, N, N, 2, generator=g)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, -5:] = False

    def loss_fn(m):
        f, c = m(feats, coors, edges=edges, mask=mask)
        return f.square().mean() + c.square().mean()

    _assert_reproducible(lambda: _training_step(model, loss_fn), across_threads=False)


def test_lieresnet_training_step(module_switch):
    """Train mode (batch norm statistics, the ``r`` buffers' updates) with its random
    choices (lift samples, farthest-point start) seeded identically before each run."""
    from equiops.lie import SE3

    torch.manual_seed(27)
    model = equiops.nn.LieResNet(4, num_outputs=2, k=8, nbhd=6, num_layers=1, group=SE3(0.2), knn=True,
                                 liftsamples=2, ds_frac=0.5, fill=0.5).train()
    g = _gen(28)
    B, n = 2, 14
    coords, values = torch.randn(B, n, 3, generator=g), torch.randn(B, n, 4, generator=g)
    mask = torch.ones(B, n, dtype=torch.bool)
    mask[1, -4:] = False

    def loss_fn(m):
        torch.manual_seed(29)
        return m((coords, values, mask)).square().mean()

    _assert_reproducible(lambda: _training_step(model, loss_fn), across_threads=False)


# ----------------------------------------------------------------- Triton, interpreted
class _Spy:
    """Stands for a Triton kernel (``kernel[grid](...)``): records each launch's
    keyword arguments (the constexprs that choose the CSR or the atomic variant)."""

    def __init__(self, kernel, log):
        self.kernel, self.log = kernel, log

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kwargs):
            self.log.append(kwargs)
            return launch(*args, **kwargs)

        return run


def _deterministic_and_control(run, atomic_launched, switch_name):
    """``run()`` in deterministic mode: no atomic launch, bitwise reproducible; and once
    without: the atomic variant is seen (so the recording is not blind)."""
    with _switch(switch_name):
        first = run()
        assert not atomic_launched(), "an atomic kernel ran in deterministic mode"
        second = run()
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    assert not equiops.is_deterministic()
    run()
    assert atomic_launched(), "the control run without determinism did not use atomics"
    return first


@pytest.mark.parametrize("switch_name", SWITCHES)
@pytest.mark.triton_interpret
@pytest.mark.skipif(not triton_interpreter_enabled(), reason="the Triton half runs under TRITON_INTERPRET=1")
@pytest.mark.usefixtures("kernel_cache_dir")
def test_triton_scatter_sum_sorts_instead_of_atomics(monkeypatch, switch_name):
    from equiops.kernels import segment as K
    from equiops.ops import segment as ops

    # The CUDA implementation on the interpreter's CPU tensors: the backend check asks for CUDA.
    monkeypatch.setattr(ops, "_cuda_backend", lambda backend, device: "triton")
    calls = []
    atomic = K.scatter_sum
    monkeypatch.setattr(K, "scatter_sum", lambda *a: calls.append(1) or atomic(*a))
    g = _gen(30)
    src = torch.randn(1, 40, 5, generator=g, dtype=F64).float()
    index = _unsorted_index(40, 9, 31).view(1, 40, 1).expand(1, 40, 5)

    def run():
        calls.clear()
        return [ops._run_scatter_sum(src, index, 9, "triton")]

    (out,) = _deterministic_and_control(run, lambda: bool(calls), switch_name)
    want = torch.zeros(1, 9, 5, dtype=F64).index_add_(1, index[0, :, 0], src.double())
    torch.testing.assert_close(out.double(), want, rtol=1e-6, atol=1e-6)


def _csr(keys, n):
    from equiops.graph import _csr as csr

    return csr(keys, n)


# The interpreter is slow: one switch per test below (all three for the scatter sum above).
@pytest.mark.parametrize("switch_name", ["context"])
@pytest.mark.triton_interpret
@pytest.mark.skipif(not triton_interpreter_enabled(), reason="the Triton half runs under TRITON_INTERPRET=1")
@pytest.mark.usefixtures("kernel_cache_dir")
def test_triton_conv_without_views_builds_them(monkeypatch, switch_name):
    from equiops.kernels import tp_conv as C
    from equiops.ops import tp_conv as ops
    from equiops.reference.tp_conv import tp_conv as reference

    log = []
    kernel = C._kernel
    monkeypatch.setattr(C, "_kernel", lambda *a: _Spy(kernel(*a), log))
    monkeypatch.setattr(ops, "_triton", lambda x, backend: C)  # the backend check asks for CUDA tensors
    irreps_out, ins = equiops.nn.channelwise_instructions("2x0e+1x1o", "0e+1o", "2x0e+1x1o")
    tp = equiops.TensorProduct("2x0e+1x1o", "0e+1o", irreps_out, ins, shared_weights=False, internal_weights=False)
    g = _gen(32)
    n, E = 5, 11
    src, dst = torch.randint(0, n, (E,), generator=g), _unsorted_index(E, n + 3, 33) % n
    x, a = torch.randn(n, 5, generator=g, dtype=F64), torch.randn(E, 4, generator=g, dtype=F64)
    w = torch.randn(E, tp.weight_numel, generator=g, dtype=F64)
    go = torch.randn(n, tp.irreps_out.dim, generator=g, dtype=F64)

    def run():
        log.clear()
        out = ops._cuda_forward(x, a, w, src, dst, None, None, None, None, n, tp.problem, "triton")
        grads = ops._cuda_backward(go, x, a, w, src, dst, None, None, None, None, [True, True, True], tp.problem,
                                   "triton")
        return [out, *grads]

    res = _deterministic_and_control(run, lambda: any(not kw["CSR"] for kw in log), switch_name)
    leaves = [t.clone().requires_grad_() for t in (x, a, w)]
    want = reference(*leaves, src, dst, n, tp.problem)
    torch.testing.assert_close(res[0], want, rtol=1e-10, atol=1e-10)
    for got, exp in zip(res[1:], _grads(want, leaves, grad_outputs=go)):
        torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("switch_name", ["torch"])
@pytest.mark.triton_interpret
@pytest.mark.skipif(not triton_interpreter_enabled(), reason="the Triton half runs under TRITON_INTERPRET=1")
@pytest.mark.usefixtures("kernel_cache_dir")
def test_triton_egnn_message_without_views_builds_them(monkeypatch, switch_name):
    from equiops.kernels import egnn as K
    from equiops.ops import egnn as ops
    from equiops.reference.egnn_message import egnn_message as reference

    log = []
    monkeypatch.setattr(K, "_forward_kernel", _Spy(K._forward_kernel, log))
    monkeypatch.setattr(K, "_backward_kernel", _Spy(K._backward_kernel, log))
    g = _gen(34)
    n, E, H1, M, Hc, D = 6, 13, 16, 16, 16, 1
    src, dst = torch.randint(0, n, (E,), generator=g), _unsorted_index(E, n + 3, 35) % n
    ts = [torch.randn(*s, generator=g, dtype=F64) for s in ((n, H1), (n, H1), (n, 3), (E, D))]
    ws = [0.4 * torch.randn(*s, generator=g, dtype=F64) for s in ((H1,), (H1, D), (M, H1), (M,), (M,), (1,),
                                                                   (Hc, M), (Hc,), (Hc,), (1,))]
    gm, gt = torch.randn(n, M, generator=g, dtype=F64), torch.randn(n, 3, generator=g, dtype=F64)
    opts = ("silu", "none", True, 0.0, 0.0, "triton")

    def run():
        log.clear()
        m, t = ops._cuda_forward(*ts, src, dst, None, None, None, None, *ws, *opts)
        grads = ops._cuda_backward(gm, gt, *ts, src, dst, None, None, None, None, *ws, *opts)
        return [m, t, *grads]

    def atomic():
        return any(("CSR" in kw and not kw["CSR"]) or kw.get("ATOMIC_DST") or kw.get("ATOMIC_SRC") for kw in log)

    res = _deterministic_and_control(run, atomic, switch_name)
    leaves = [t.clone().requires_grad_() for t in ts + ws]
    m, t = reference(*leaves[:4], src, dst, *leaves[4:], *opts[:5])
    torch.testing.assert_close(res[0], m, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(res[1], t, rtol=1e-10, atol=1e-10)
    for got, exp in zip(res[2:], _grads((m * gm).sum() + (t * gt).sum(), leaves)):
        torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("switch_name", ["set_deterministic"])
@pytest.mark.triton_interpret
@pytest.mark.skipif(not triton_interpreter_enabled(), reason="the Triton half runs under TRITON_INTERPRET=1")
@pytest.mark.usefixtures("kernel_cache_dir")
def test_triton_pointconv_values_gradient_sorts(monkeypatch, switch_name):
    from equiops.kernels import pointconv as K
    from equiops.ops import pointconv as ops

    log = []
    monkeypatch.setattr(K, "_input_grad_kernel", _Spy(K._input_grad_kernel, log))
    g = _gen(36)
    # C = 16 channels and ci = 40 value columns: two value blocks, so the penult gradient
    # is split as well (GP_MODE 1 deterministic, 2 atomic).
    B, m, n, Kn, C, ci, co = 1, 7, 5, 3, 16, 40, 4
    penult, values = torch.randn(B, m, Kn, C, generator=g, dtype=F64), torch.randn(B, n, ci, generator=g, dtype=F64)
    idx = torch.randint(0, n, (B, m, Kn), generator=g)
    idx[0, 1, 1] = idx[0, 1, 0]  # a duplicate neighbour
    mask = torch.rand(B, m, Kn, generator=g) < 0.8
    weight, cot = torch.randn(co, C * ci, generator=g, dtype=F64), torch.randn(B, m, co, generator=g, dtype=F64)

    def run():
        log.clear()
        return list(ops._cuda_backward(cot, penult, values, idx, mask, weight, None, True, "triton"))[:3]

    res = _deterministic_and_control(run, lambda: any(kw["ATOMIC_V"] or kw["GP_MODE"] == 2 for kw in log),
                                     switch_name)
    leaves = [t.clone().requires_grad_() for t in (penult, values, weight)]
    want = pointconv_reference(leaves[0], leaves[1], idx, mask, leaves[2], None, True)
    for got, exp in zip(res, _grads(want, leaves, grad_outputs=cot)):
        torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------ backward on another thread
def _backward_on_other_thread(loss, leaves):
    """``autograd.grad`` on a fresh thread, where the thread-local deterministic block of
    the caller is not set: what autograd does for CUDA tensors (its device thread)."""
    box = {}

    def work():
        try:
            box["grads"] = torch.autograd.grad(loss, leaves)
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc

    th = threading.Thread(target=work)
    th.start()
    th.join()
    if "error" in box:
        raise box["error"]
    return box["grads"]


def test_backward_keeps_the_forwards_deterministic_block(monkeypatch):
    """The backward ops of the convolution, the EGNN message block and PointConv choose
    atomics or sorted sums on CUDA when they run; they must see the deterministic block
    that was open when the forward ran, also on another thread. Recorded here at the
    point where the CUDA implementation would read it."""
    from equiops.ops import egnn as egnn_ops
    from equiops.ops import pointconv as pc_ops
    from equiops.ops import tp_conv as conv_ops

    seen = {}

    def recorder(key, fn):
        def wrapped(*args, **kwargs):
            seen.setdefault(key, []).append(equiops.is_deterministic())
            return fn(*args, **kwargs)

        return wrapped

    class _Ns:  # torch.ops.equiops with its backward ops recorded
        def __getattr__(self, name):
            fn = getattr(torch.ops.equiops, name)
            return recorder(name, fn) if name.endswith("_backward") else fn

    monkeypatch.setattr(conv_ops, "tp_conv_backward", recorder("tp_conv_backward", conv_ops.tp_conv_backward))
    monkeypatch.setattr(egnn_ops, "_ops", lambda: _Ns())
    monkeypatch.setattr(pc_ops, "_ops", lambda: _Ns())

    conv, src, dst, n, x0, a0, w0, cot = _conv_problem(E=60, n=10)
    g = _gen(40)
    H1, M, Hc, E = 4, 4, 4, 30
    esrc, edst = torch.randint(0, n, (E,), generator=g), torch.randint(0, n, (E,), generator=g)
    node = [torch.randn(n, H1, generator=g), torch.randn(n, H1, generator=g), torch.randn(n, 3, generator=g),
            torch.randn(E, 1, generator=g)]
    params = [torch.randn(*s, generator=g) for s in ((H1,), (H1, 1), (M, H1), (M,), (M,), (1,), (Hc, M), (Hc,),
                                                      (Hc,), (1,))]
    pc = [torch.randn(1, 5, 3, 2, generator=g), torch.randn(1, 6, 2, generator=g), torch.randn(3, 4, generator=g)]
    pc_idx, pc_mask = torch.randint(0, 6, (1, 5, 3), generator=g), torch.ones(1, 5, 3, dtype=torch.bool)

    for flag in (True, False):
        seen.clear()
        with equiops.deterministic(flag):
            x, a, w = (t.clone().requires_grad_() for t in (x0, a0, w0))
            conv_loss = (conv(x, a, w, src, dst, n) * cot).sum()
            leaves = [t.clone().requires_grad_() for t in node + params]
            m, t = egnn_message(*leaves[:4], esrc, edst, MessageParams(*leaves[4:]))
            egnn_loss = m.sum() + t.sum()
            pcl = [t.clone().requires_grad_() for t in pc]
            pc_loss = pointconv(pcl[0], pcl[1], pc_idx, pc_mask, pcl[2]).sum()
        assert not equiops.is_deterministic()
        _backward_on_other_thread(conv_loss, [x, a, w])
        _backward_on_other_thread(egnn_loss, leaves)
        _backward_on_other_thread(pc_loss, pcl)
        assert seen == {"tp_conv_backward": [flag], "egnn_message_backward": [flag], "pointconv_backward": [flag]}


def test_cpu_results_do_not_depend_on_the_switch():
    """On the CPU deterministic mode changes nothing (the C++ kernels are deterministic
    anyway and never read the switch): results with and without it are bitwise equal."""

    def results():
        conv, src, dst, n, x0, a0, w0, cot = _conv_problem(E=500, n=40)
        x = x0.clone().requires_grad_()
        out = conv(x, a0, w0, src, dst, n)
        index = _unsorted_index(800, 50, 41)
        s = torch.randn(800, 4, generator=_gen(42)).requires_grad_()
        sc = equiops.scatter(s, index, dim=0, dim_size=50)
        return [out, sc] + _grads((out * cot).sum() + sc.square().sum(), [x, s])

    plain = results()
    for name in SWITCHES:
        with _switch(name):
            for a, b in zip(plain, results()):
                assert torch.equal(a, b), name
