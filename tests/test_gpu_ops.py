"""The public scatter/segment API on CUDA tensors, for each GPU backend (CUDA C++ and
Triton): values and args vs the reference, gradients, opcheck, compile, determinism.
Skips without a GPU (runs in benchmarks/gpu_check.sh)."""

from __future__ import annotations

import pytest
import torch

import equiops

from conftest import assert_close

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")

REDUCES = ("sum", "mean", "max", "min")


def _backends():
    out = []
    if equiops._extension.with_cuda():
        out.append("cuda")
    if equiops.backend.triton_available():
        out.append("triton")
    return out


BACKENDS = _backends() or ["cuda"]


@pytest.fixture(params=BACKENDS)
def gpu_backend(request):
    if request.param == "cuda" and not equiops._extension.with_cuda():
        pytest.skip("equiops built without CUDA")
    return request.param


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("shape,index_shape,dim", [
    ((5000, 1), (5000,), 0),
    ((5000, 3), (5000,), 0),
    ((3000, 64), (3000,), 0),
    ((2, 700, 130), (700,), 1),
    ((4, 300, 5), (4, 300, 5), 1),
])
def test_scatter_matches_reference(gpu_backend, dtype, reduce, shape, index_shape, dim):
    g = torch.Generator().manual_seed(0)
    src = torch.randn(shape, generator=g, dtype=dtype)
    n = shape[dim]
    index = torch.randint(0, n // 8, index_shape, generator=g)
    dim_size = n // 8 + 3
    expected = equiops.scatter(src, index, dim, dim_size=dim_size, reduce=reduce, backend="cpu")
    out = equiops.scatter(src.cuda(), index.cuda(), dim, dim_size=dim_size, reduce=reduce, backend=gpu_backend)
    assert_close(out.cpu(), expected)
    if reduce in ("max", "min"):
        fn = equiops.scatter_max if reduce == "max" else equiops.scatter_min
        _, arg = fn(src.cuda(), index.cuda(), dim, dim_size=dim_size, backend=gpu_backend)
        _, arg_ref = fn(src, index, dim, dim_size=dim_size, backend="cpu")
        assert torch.equal(arg.cpu(), arg_ref)


@pytest.mark.parametrize("reduce", REDUCES)
def test_graph_and_segment_match_cpu(gpu_backend, reduce):
    g = torch.Generator().manual_seed(1)
    E, N = 20000, 1300
    src, dst = torch.randint(0, N, (E,), generator=g), torch.randint(0, N - 50, (E,), generator=g)
    values = torch.randn(E, 16, generator=g, dtype=torch.float64)
    values[7, 3] = float("nan")
    graph = equiops.Graph(src, dst, N)
    expected = graph.aggregate(values, reduce, backend="cpu")
    out = graph.to("cuda").aggregate(values.cuda(), reduce, backend=gpu_backend)
    assert_close(out.cpu(), expected)
    xs = values[graph.dst_perm]
    assert_close(equiops.segment_csr(xs.cuda(), graph.dst_indptr.cuda(), reduce=reduce, backend=gpu_backend).cpu(),
                 equiops.segment_csr(xs, graph.dst_indptr, reduce=reduce, backend="cpu"))


def test_gradients(gpu_backend):
    g = torch.Generator().manual_seed(2)
    x = (torch.randperm(60, generator=g).double().reshape(20, 3) / 7).cuda().requires_grad_()
    index = torch.randint(0, 6, (20,), generator=g).cuda()
    graph = equiops.Graph(torch.randint(0, 6, (20,), generator=g), index.cpu(), 7).to("cuda")
    for reduce in REDUCES:
        torch.autograd.gradcheck(lambda s: equiops.scatter(s, index, 0, dim_size=7, reduce=reduce, backend=gpu_backend), (x,))
        torch.autograd.gradcheck(lambda s: graph.aggregate(s, reduce, backend=gpu_backend), (x,))
    torch.autograd.gradgradcheck(lambda s: graph.aggregate(s, "sum", backend=gpu_backend) ** 2, (x,))


def test_opcheck(gpu_backend):
    g = torch.Generator().manual_seed(3)
    src = torch.randn(2, 50, 4, dtype=torch.float64, generator=g).cuda().requires_grad_()
    indptr = torch.tensor([[0, 10, 10, 50]]).cuda()
    perm = torch.randperm(50, generator=g).cuda()
    index = torch.randint(0, 6, (50,), generator=g).cuda().view(1, 50, 1).expand(2, 50, 4)
    ops = torch.ops.equiops
    for op, args in [
        (ops.segment_sum.default, (src, indptr, perm, gpu_backend)),
        (ops.segment_minmax.default, (src, indptr, perm, "max", gpu_backend)),
        (ops.segment_gather.default, (src[:, :3].detach().contiguous().requires_grad_(), indptr, perm, 50, gpu_backend)),
        (ops.scatter_sum.default, (src, index, 6, gpu_backend)),
        (ops.scatter_minmax.default, (src, index, 6, "min", gpu_backend)),
    ]:
        torch.library.opcheck(op, args)


def test_compile(gpu_backend):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4000, 16, generator=g).cuda()
    index = torch.randint(0, 300, (4000,), generator=g).cuda()
    fn = lambda s, i: equiops.scatter(s, i, 0, dim_size=300, reduce="mean", backend=gpu_backend)  # noqa: E731
    torch._dynamo.reset()
    assert_close(torch.compile(fn, fullgraph=True)(x, index), fn(x, index))


def test_deterministic_mode_is_bitwise_reproducible(gpu_backend):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(200000, 8, generator=g).cuda()
    index = torch.randint(0, 5000, (200000,), generator=g).cuda()
    with equiops.deterministic():
        first = equiops.scatter(x, index, 0, dim_size=5000, backend=gpu_backend)
        for _ in range(3):
            assert torch.equal(equiops.scatter(x, index, 0, dim_size=5000, backend=gpu_backend), first)
    graph = equiops.Graph(index, index, 5000)
    first = graph.aggregate(x, backend=gpu_backend)
    for _ in range(3):
        assert torch.equal(graph.aggregate(x, backend=gpu_backend), first)


def test_bad_index_raises(gpu_backend):
    x = torch.randn(10, 2).cuda()
    with pytest.raises(IndexError, match=r"index holds 9"):
        equiops.scatter(x, torch.tensor([0] * 9 + [9]).cuda(), 0, dim_size=4, backend=gpu_backend)
    with pytest.raises(ValueError, match=r"non-decreasing"):
        equiops.segment_csr(x, torch.tensor([0, 5, 3, 10]).cuda(), backend=gpu_backend)
