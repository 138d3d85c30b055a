"""scatter / segment ops: references vs independent PyTorch code, kernels vs references,
gradients, the operator contract (opcheck, compile), determinism and bad input."""

from __future__ import annotations

import pytest
import torch

import equiops

from conftest import assert_close, check_compiled_matches_eager

REDUCES = ("sum", "mean", "max", "min")
CPU_BACKENDS = ("cpu", "torch")


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _native_scatter(src, index, dim, dim_size, reduce):
    """Independent ground truth from PyTorch's own scatter_reduce (include_self=False)."""
    index = equiops.ops.scatter._broadcast_index(index, src, dim % src.dim(), "test")
    shape = list(src.shape)
    shape[dim] = dim_size
    torch_reduce = {"sum": "sum", "mean": "mean", "max": "amax", "min": "amin"}[reduce]
    out = src.new_zeros(shape).scatter_reduce(dim, index.contiguous(), src, torch_reduce, include_self=False)
    return out


def _brute_arg(src, index, dim, dim_size, reduce):
    """torch_scatter's arg convention by brute force over 1-D index along dim 0 of a 2-D src."""
    n, c = src.shape
    arg = torch.full((dim_size, c), n, dtype=torch.long)
    for j in range(c):
        for s in range(dim_size):
            rows = [i for i in range(n) if int(index[i]) == s]
            if not rows:
                continue
            vals = [float(src[i, j]) for i in rows]
            nan_rows = [i for i, v in zip(rows, vals) if v != v]
            if nan_rows:
                arg[s, j] = nan_rows[0]
                continue
            best = max(vals) if reduce == "max" else min(vals)
            arg[s, j] = next(i for i, v in zip(rows, vals) if v == best)
    return arg


# --------------------------------------------------------------- reference vs PyTorch
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("dim,shape,index_shape", [
    (0, (13, 5), (13,)),
    (1, (3, 11, 4), (11,)),
    (-1, (4, 9), (4, 9)),
    (1, (2, 7, 3), (2, 7)),  # trailing dim broadcast
])
def test_reference_scatter_matches_pytorch(reduce, dim, shape, index_shape):
    g = _gen(1)
    src = torch.randn(shape, dtype=torch.float64, generator=g)
    index = torch.randint(0, 6, index_shape, generator=g)
    out = equiops.scatter(src, index, dim, dim_size=8, reduce=reduce, backend="torch")
    assert_close(out, _native_scatter(src, index, dim, 8, reduce))


@pytest.mark.parametrize("reduce", ("max", "min"))
def test_reference_arg_matches_brute_force(reduce):
    g = _gen(2)
    src = torch.randint(-3, 3, (40, 3), generator=g).double()  # many ties
    src[5, 1] = float("nan")
    src[17, 1] = float("nan")
    index = torch.randint(0, 9, (40,), generator=g)
    fn = equiops.scatter_max if reduce == "max" else equiops.scatter_min
    values, arg = fn(src, index, 0, dim_size=10, backend="torch")
    assert torch.equal(arg, _brute_arg(src, index, 0, 10, reduce))
    expected_values = torch.where(arg < 40, src.gather(0, arg.clamp(max=39)), torch.zeros(()).double())
    assert torch.equal(values.isnan(), expected_values.isnan())
    assert_close(values, expected_values)


# ------------------------------------------------------------------ kernels vs reference
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("dim,shape,index_shape", [
    (0, (50, 1), (50,)),
    (0, (50, 3), (50,)),
    (0, (64, 16), (64,)),
    (1, (3, 40, 5), (40,)),
    (-1, (4, 30), (4, 30)),
    (1, (2, 25, 6), (2, 25, 6)),  # a full (non-broadcast) index
    (0, (20, 4, 3), (20, 1)),  # index broadcast over the last dim
])
def test_scatter_matches_reference(backend, reduce, dim, shape, index_shape, dtype):
    g = _gen(3)
    src = torch.randn(shape, generator=g).to(dtype)
    n = shape[dim]
    index = torch.randint(0, max(n // 3, 1), index_shape, generator=g)
    dim_size = max(n // 3, 1) + 2  # trailing empty slots
    out = equiops.scatter(src, index, dim, dim_size=dim_size, reduce=reduce, backend=backend)
    assert_close(out, _native_scatter(src, index, dim, dim_size, reduce))
    if reduce in ("max", "min"):
        fn = equiops.scatter_max if reduce == "max" else equiops.scatter_min
        _, arg = fn(src, index, dim, dim_size=dim_size, backend=backend)
        _, arg_ref = fn(src, index, dim, dim_size=dim_size, backend="torch")
        assert torch.equal(arg, arg_ref)


@pytest.mark.parametrize("dt", (torch.float16, torch.bfloat16))
@pytest.mark.parametrize("reduce", REDUCES)
def test_scatter_half_types(dt, reduce):
    g = _gen(4)
    src = torch.randn(300, 8, generator=g)
    index = torch.randint(0, 20, (300,), generator=g)
    out = equiops.scatter(src.to(dt), index, 0, dim_size=20, reduce=reduce, backend="cpu")
    expected = _native_scatter(src.to(dt).double(), index, 0, 20, reduce)
    assert out.dtype == dt
    rtol, atol = {torch.float16: (2e-3, 2e-2), torch.bfloat16: (1.6e-2, 1e-1)}[dt]  # sums of ~15 half values
    torch.testing.assert_close(out.double(), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("reduce", REDUCES)
def test_segment_csr_matches_reference(backend, reduce, dtype):
    g = _gen(5)
    src = torch.randn(4, 30, 6, generator=g).to(dtype)
    # segments of mixed sizes with empty ones; the last 3 rows are covered by none
    indptr = torch.tensor([0, 0, 4, 4, 9, 20, 20, 27])
    out = equiops.segment_csr(src, indptr.expand(4, -1), reduce=reduce, backend=backend)
    counts = indptr.diff()
    index = torch.repeat_interleave(torch.arange(7), counts)
    expected = _native_scatter(src[:, :27], index, 1, 7, reduce)
    assert_close(out, expected)
    if reduce in ("max", "min"):
        fn = equiops.segment_max_csr if reduce == "max" else equiops.segment_min_csr
        _, arg = fn(src, indptr[None], backend=backend)
        _, arg_s = (equiops.scatter_max if reduce == "max" else equiops.scatter_min)(src[:, :27], index, 1, dim_size=7, backend="torch")
        assert torch.equal(arg, torch.where(arg_s == 27, 30, arg_s))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_segment_csr_per_batch_indptr(backend, dtype):
    g = _gen(6)
    src = torch.randn(2, 10, 3, generator=g).to(dtype)
    indptr = torch.tensor([[0, 3, 3, 10], [1, 2, 8, 9]])
    out = equiops.segment_csr(src, indptr, backend=backend)
    for b in range(2):
        for s in range(3):
            lo, hi = int(indptr[b, s]), int(indptr[b, s + 1])
            assert_close(out[b, s], src[b, lo:hi].sum(0))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gather_csr(backend, dtype):
    g = _gen(7)
    src = torch.randn(4, 3, generator=g).to(dtype)
    indptr = torch.tensor([1, 3, 3, 6, 7])
    out = equiops.gather_csr(src, indptr, backend=backend)
    expected = torch.zeros(7, 3, dtype=dtype)
    expected[1:7] = torch.repeat_interleave(src, indptr.diff(), dim=0)
    assert torch.equal(out, expected)


def test_empty_inputs():
    for backend in CPU_BACKENDS:
        src = torch.randn(0, 4)
        idx = torch.zeros(0, dtype=torch.long)
        assert torch.equal(equiops.scatter(src, idx, 0, dim_size=3, backend=backend), torch.zeros(3, 4))
        v, a = equiops.scatter_max(src, idx, 0, dim_size=3, backend=backend)
        assert torch.equal(v, torch.zeros(3, 4)) and torch.equal(a, torch.zeros(3, 4, dtype=torch.long))
        assert equiops.scatter(src, idx, 0, backend=backend).shape == (0, 4)
        assert equiops.segment_csr(torch.randn(5, 2), torch.tensor([0]), backend=backend).shape == (0, 2)


def test_out_argument_semantics():
    g = _gen(8)
    src = torch.randn(10, 2, dtype=torch.float64, generator=g)
    index = torch.tensor([0, 1, 1, 3, 3, 3, 0, 1, 0, 3])
    out0 = torch.randn(5, 2, dtype=torch.float64, generator=g)
    out = out0.clone()
    res = equiops.scatter(src, index, 0, out=out)
    assert res is out or res.data_ptr() == out.data_ptr()
    assert_close(out, out0 + _native_scatter(src, index, 0, 5, "sum"))
    out = out0.clone()
    values, arg = equiops.scatter_max(src, index, 0, out=out)
    expected = torch.where(
        torch.isin(torch.arange(5), index)[:, None], torch.maximum(out0, _native_scatter(src, index, 0, 5, "max")), out0
    )
    assert_close(values, expected)
    assert bool(((arg == 10) == (values == out0)).all())


# ----------------------------------------------------------------------------- Graph
def test_graph_csr_and_aggregate(dtype):
    g = _gen(9)
    src = torch.randint(0, 12, (60,), generator=g)
    dst = torch.randint(0, 10, (60,), generator=g)  # nodes 10, 11 receive nothing
    graph = equiops.Graph(src, dst, num_nodes=12)
    assert torch.equal(graph.in_degree, torch.bincount(dst, minlength=12))
    assert torch.equal(graph.out_degree, torch.bincount(src, minlength=12))
    assert torch.equal(dst[graph.dst_perm], torch.sort(dst, stable=True).values)
    values = torch.randn(60, 4, 2, generator=g).to(dtype)
    for backend in CPU_BACKENDS:
        for reduce in REDUCES:
            out = graph.aggregate(values, reduce, backend=backend)
            assert_close(out, _native_scatter(values, dst, 0, 12, reduce))
        out_src = graph.aggregate(values, "sum", at="src", backend=backend)
        assert_close(out_src, _native_scatter(values, src, 0, 12, "sum"))
        v, arg = graph.aggregate_arg(values, "max", backend=backend)
        v_s, arg_s = equiops.scatter_max(values, dst, 0, dim_size=12, backend="torch")
        assert torch.equal(arg, arg_s) and torch.equal(v, v_s)


def test_graph_gradients_double_backward():
    g = _gen(10)
    src = torch.randint(0, 6, (25,), generator=g)
    dst = torch.randint(0, 6, (25,), generator=g)
    graph = equiops.Graph(src, dst, 7)
    x = torch.randn(25, 3, dtype=torch.float64, generator=g, requires_grad=True)
    for reduce in REDUCES:
        torch.autograd.gradcheck(lambda v: graph.aggregate(v, reduce), (x,))
    torch.autograd.gradgradcheck(lambda v: graph.aggregate(v, "sum") ** 2, (x,))
    torch.autograd.gradgradcheck(lambda v: graph.aggregate(v, "max") ** 2, (x,))


# ------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("reduce", REDUCES)
def test_scatter_gradcheck(backend, reduce):
    g = _gen(11)
    # distinct values: max/min are differentiable away from ties
    src = (torch.randperm(36, generator=g).double().reshape(12, 3) / 7).requires_grad_()
    index = torch.tensor([0, 2, 2, 1, 0, 4, 4, 4, 1, 0, 2, 4])
    fn = lambda s: equiops.scatter(s, index, 0, dim_size=6, reduce=reduce, backend=backend)  # noqa: E731
    torch.autograd.gradcheck(fn, (src,))
    torch.autograd.gradgradcheck(lambda s: fn(s) ** 2, (src,))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("reduce", REDUCES)
def test_segment_gradcheck(backend, reduce):
    g = _gen(12)
    src = (torch.randperm(30, generator=g).double().reshape(2, 5, 3) / 7).requires_grad_()
    indptr = torch.tensor([0, 2, 2, 5])
    fn = lambda s: equiops.segment_csr(s, indptr[None], reduce=reduce, backend=backend)  # noqa: E731
    torch.autograd.gradcheck(fn, (src,))
    torch.autograd.gradgradcheck(lambda s: fn(s) ** 2, (src,))
    grad_src = torch.randn(3, 2, dtype=torch.float64, generator=g).requires_grad_()
    torch.autograd.gradcheck(lambda s: equiops.gather_csr(s, indptr, backend=backend), (grad_src,))


def test_full_index_gradcheck():
    g = _gen(13)
    src = torch.randn(2, 8, 3, dtype=torch.float64, generator=g, requires_grad=True)
    index = torch.randint(0, 4, (2, 8, 3), generator=g)
    torch.autograd.gradcheck(lambda s: equiops.scatter(s, index, 1, dim_size=5), (src,))
    torch.autograd.gradgradcheck(lambda s: equiops.scatter(s, index, 1, dim_size=5, reduce="mean") ** 2, (src,))


# ------------------------------------------------------------------ operator contract
def _opcheck_cases():
    g = _gen(14)
    src = torch.randn(2, 9, 3, dtype=torch.float64, generator=g, requires_grad=True)
    indptr = torch.tensor([[0, 3, 3, 9]])
    perm = torch.randperm(9, generator=g)
    index = torch.randint(0, 4, (9,), generator=g).view(1, 9, 1).expand(2, 9, 3)
    seg_src = torch.randn(2, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    ops = torch.ops.equiops
    return [
        (ops.segment_sum.default, (src, indptr, None, "cpu")),
        (ops.segment_sum.default, (src, indptr, perm, "cpu")),
        (ops.segment_minmax.default, (src, indptr, perm, "max", "cpu")),
        (ops.segment_minmax.default, (src, indptr, None, "min", "cpu")),
        (ops.segment_gather.default, (seg_src, indptr, perm, 9, "cpu")),
        (ops.scatter_sum.default, (src, index, 5, "cpu")),
        (ops.scatter_minmax.default, (src, index, 5, "max", "cpu")),
    ]


@pytest.mark.parametrize("case", range(7))
def test_opcheck(case):
    op, args = _opcheck_cases()[case]
    torch.library.opcheck(op, args)


@pytest.mark.parametrize("reduce", REDUCES)
def test_compiled_matches_eager(reduce):
    g = _gen(15)
    src = torch.randn(40, 5, generator=g)
    index = torch.randint(0, 7, (40,), generator=g)
    indptr = torch.tensor([0, 5, 5, 18, 40])
    check_compiled_matches_eager(lambda s, i: equiops.scatter(s, i, 0, dim_size=8, reduce=reduce), src, index)
    check_compiled_matches_eager(lambda s, p: equiops.segment_csr(s, p, reduce=reduce), src, indptr)


def test_compiled_backward_matches_eager():
    """Forward compiled with fullgraph=True, backward through the compiled graph.

    (Double backward *through* a compiled region is a PyTorch limitation today:
    aot_autograd raises "does not currently support double backward"; the ops' double
    backward is tested eagerly by gradgradcheck above.)
    """
    g = _gen(16)
    src = torch.randn(30, 4, dtype=torch.float64, generator=g)
    graph = equiops.Graph(torch.randint(0, 8, (30,), generator=g), torch.randint(0, 8, (30,), generator=g), 8)

    def energy(x):
        return graph.aggregate(x * x, "sum").pow(3).sum() + graph.aggregate(x, "max").sum()

    def run(f):
        x = src.clone().requires_grad_()
        value = f(x)
        (grad,) = torch.autograd.grad(value, x)
        return value.detach(), grad

    torch._dynamo.reset()
    eager = run(energy)
    compiled = run(torch.compile(energy, fullgraph=True))
    assert_close(compiled[0], eager[0], order=1)
    assert_close(compiled[1], eager[1], order=1)


def test_compiled_dynamic_sizes_do_not_recompile():
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounter()
    fn = torch.compile(lambda s, p, i: (equiops.segment_csr(s, p), equiops.scatter(s, i, 0, dim_size=6)), backend=counter, fullgraph=True, dynamic=True)
    for n in (10, 17, 23):
        g = _gen(n)
        src = torch.randn(n, 3, generator=g)
        indptr = torch.tensor([0, n // 2, n])
        index = torch.randint(0, 6, (n,), generator=g)
        out, out2 = fn(src, indptr, index)
        assert_close(out, equiops.segment_csr(src, indptr))
        assert_close(out2, equiops.scatter(src, index, 0, dim_size=6))
    assert counter.frame_count == 1


def test_export():
    class Model(torch.nn.Module):
        def forward(self, x, index):
            return equiops.scatter(x, index, 0, dim_size=5, reduce="mean")

    x = torch.randn(12, 3)
    index = torch.randint(0, 5, (12,))
    exported = torch.export.export(Model(), (x, index))
    assert_close(exported.module()(x, index), Model()(x, index))


# ---------------------------------------------------------------------- determinism
def test_bitwise_deterministic_across_threads():
    g = _gen(17)
    src = torch.randn(20000, 16, generator=g)
    index = torch.randint(0, 700, (20000,), generator=g)
    graph = equiops.Graph(torch.zeros_like(index), index, 700)
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 2, threads):
            torch.set_num_threads(t)
            results.append((equiops.scatter(src, index, 0, dim_size=700), graph.aggregate(src)))
    finally:
        torch.set_num_threads(threads)
    for a, b in results[1:]:
        assert torch.equal(a, results[0][0]) and torch.equal(b, results[0][1])


# ------------------------------------------------------------------------- bad input
def test_bad_input_errors():
    src = torch.randn(6, 2)
    idx = torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(IndexError, match=r"index holds 7.*\[0, 3\)"):
        equiops.scatter(src, torch.tensor([0, 1, 2, 0, 1, 7]), 0, dim_size=3)
    with pytest.raises(IndexError, match=r"index holds -1"):
        equiops.scatter(src, torch.tensor([0, 1, 2, 0, -1, 2]), 0, dim_size=3)
    with pytest.raises(TypeError, match=r"index must be an int64.*float32"):
        equiops.scatter(src, idx.float(), 0)
    with pytest.raises(TypeError, match=r"src must be float16.*int64"):
        equiops.scatter(idx, idx, 0)
    with pytest.raises(ValueError, match=r"1-D index must have src.size\(dim\) = 6 entries.*got 5"):
        equiops.scatter(src, idx[:5], 0)
    with pytest.raises(ValueError, match=r"does not broadcast"):
        equiops.scatter(src, torch.zeros(6, 3, dtype=torch.long), 0)
    with pytest.raises(IndexError, match=r"dim must be in \[-2, 1\]"):
        equiops.scatter(src, idx, 2)
    with pytest.raises(ValueError, match=r"reduce must be one of"):
        equiops.scatter(src, idx, 0, reduce="prod")
    with pytest.raises(ValueError, match=r"out must have shape \(3, 2\)"):
        equiops.scatter(src, idx, 0, dim_size=3, out=torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"non-decreasing.*indptr\[0, 1\] = 4 > indptr\[0, 2\] = 2"):
        equiops.segment_csr(src, torch.tensor([0, 4, 2, 6]))
    with pytest.raises(IndexError, match=r"indptr\[0, -1\] = 9 exceeds the number of rows N = 6"):
        equiops.segment_csr(src, torch.tensor([0, 4, 9]))
    with pytest.raises(ValueError, match=r"indptr must start at >= 0"):
        equiops.segment_csr(src, torch.tensor([-1, 4, 6]))
    with pytest.raises(TypeError, match=r"indptr must be an int64"):
        equiops.segment_csr(src, torch.tensor([0.0, 6.0]))
    with pytest.raises(ValueError, match=r"backend must be one of"):
        equiops.scatter(src, idx, 0, backend="nope")
    with pytest.raises(ValueError, match=r"backend 'cuda' runs on CUDA tensors.*cpu"):
        equiops.scatter(src, idx, 0, backend="cuda")
    with pytest.raises(ValueError, match=r"backend 'triton' runs on CUDA tensors"):
        equiops.segment_csr(src, torch.tensor([0, 6]), backend="triton")


def test_graph_bad_input():
    with pytest.raises(IndexError, match=r"dst holds 5, expected node ids in \[0, 5\)"):
        equiops.Graph(torch.tensor([0, 1]), torch.tensor([1, 5]), 5)
    with pytest.raises(ValueError, match=r"same length, got 2 and 3"):
        equiops.Graph(torch.tensor([0, 1]), torch.tensor([1, 2, 3]), 5)
    with pytest.raises(TypeError, match=r"src must be an int64.*float32"):
        equiops.Graph(torch.tensor([0.0, 1.0]), torch.tensor([1, 2]), 5)
    graph = equiops.Graph(torch.tensor([0, 1]), torch.tensor([1, 2]), 3)
    with pytest.raises(ValueError, match=r"values must have shape \(E=2, ...\), got \(3, 4\)"):
        graph.aggregate(torch.randn(3, 4))
    with pytest.raises(ValueError, match=r"at must be 'dst' or 'src'"):
        graph.aggregate(torch.randn(2, 4), at="row")


def test_direct_op_calls_are_checked():
    """torch.ops.equiops.* called directly (bypassing the Python API) still fail cleanly."""
    ops = torch.ops.equiops
    src = torch.randn(1, 5, 2)
    with pytest.raises(IndexError, match=r"perm holds 9"):
        ops.segment_sum(src, torch.tensor([[0, 2, 5]]), torch.tensor([0, 1, 2, 3, 9]), "cpu")
    with pytest.raises(ValueError, match=r"indptr's batch size must be 1 or B = 1, got 2"):
        ops.segment_sum(src, torch.tensor([[0, 5], [0, 5]]), None, "cpu")
    with pytest.raises(IndexError, match=r"index holds 3"):
        ops.scatter_sum(src, torch.full((1, 5, 2), 3), 3, "cpu")
    with pytest.raises(ValueError, match=r"index must have src's shape"):
        ops.scatter_sum(src, torch.zeros(1, 4, 2, dtype=torch.long), 3, "cpu")
    with pytest.raises(ValueError, match=r"reduce must be 'max' or 'min'"):
        ops.segment_minmax(src, torch.tensor([[0, 5]]), None, "mean", "cpu")
    with pytest.raises(ValueError, match=r"backend 'cuda' cannot run on CPU tensors"):
        ops.segment_sum(src, torch.tensor([[0, 5]]), None, "cuda")


def test_graph_kernel_paths_agree_bitwise():
    """Graph.aggregate picks among three CPU paths (perm gather, in-order scatter for wide
    rows, no perm for pre-sorted edges); all add each node's edges in edge order."""
    g = _gen(18)
    E, N = 3000, 97
    src, dst = torch.randint(0, N, (E,), generator=g), torch.randint(0, N, (E,), generator=g)
    graph = equiops.Graph(src, dst, N)
    assert not graph.dst_sorted
    for width in (5, 48):
        values = torch.randn(E, width, generator=g)
        via_perm = torch.ops.equiops.segment_sum(values[None], graph.dst_indptr[None], graph.dst_perm, "cpu")[0]
        assert torch.equal(graph.aggregate(values), via_perm)
        order = graph.dst_perm
        sorted_graph = equiops.Graph(src[order], dst[order], N)
        assert sorted_graph.dst_sorted
        assert torch.equal(sorted_graph.aggregate(values[order]), via_perm)
        assert_close(graph.aggregate(values.double(), "mean"), _native_scatter(values.double(), dst, 0, N, "mean"))


def test_aggregation_is_equivariant():
    """Summing, averaging or taking max of vectors commutes with O(3) only for linear
    reductions: sum and mean do, and the helper must see that."""
    from conftest import assert_equivariant

    g = _gen(19)
    graph = equiops.Graph(torch.randint(0, 9, (40,), generator=g), torch.randint(0, 9, (40,), generator=g), 9)
    vectors = torch.randn(40, 3, dtype=torch.float64, generator=g)
    identity = lambda R: R  # noqa: E731  l = 1 vectors transform with R itself
    for reduce in ("sum", "mean"):
        assert_equivariant(lambda v: graph.aggregate(v, reduce), [identity], identity, [vectors])
    with pytest.raises(AssertionError):  # max over components is not equivariant
        assert_equivariant(lambda v: graph.aggregate(v, "max"), [identity], identity, [vectors])
