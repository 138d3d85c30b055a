"""The fused convolution through the public module on a GPU (Triton kernels via the op
layer's CUDA registration): forward, backward and the force-training double backward
equal the CPU kernels in float64; the CSR path is bitwise reproducible; the atomic path
(no graph) agrees. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

import equiops

if not torch.cuda.is_available():
    pytest.skip("CUDA is not available", allow_module_level=True)
pytest.importorskip("triton")


def _rel(a, b):
    return float((a.double().cpu() - b.double().cpu()).abs().max() / b.double().abs().max().clamp_min(1e-300))


def _case(dtype, seed=0, n=60, E=500):
    a, b = "8x0e+8x1o+4x2e", "0e+1o+2e"
    conv = equiops.TensorProductConv(a, b, *equiops.nn.channelwise_instructions(a, b, "0e+1o+1e+2e+3o"),
                                     shared_weights=False, internal_weights=False)
    g = torch.Generator().manual_seed(seed)
    src, dst = torch.randint(0, n, (E,), generator=g), torch.randint(0, n - 3, (E,), generator=g)
    pos = torch.randn(n, 3, generator=g, dtype=dtype)
    x = torch.randn(n, conv.irreps_in1.dim, generator=g, dtype=dtype)
    w = torch.randn(E, conv.weight_numel, generator=g, dtype=dtype)
    return conv, src, dst, pos, x, w


def _force_step(conv, src, dst, pos, x, w, device, graph=True):
    pos, x, w = (t.to(device).clone().requires_grad_() for t in (pos, x, w))
    src, dst = src.to(device), dst.to(device)
    gr = equiops.Graph(src, dst, pos.shape[0]) if graph else None
    sh = equiops.spherical_harmonics([0, 1, 2], pos[dst] - pos[src] + 0.1, True, "component")
    out = conv(x, sh, w, src, dst, graph=gr)
    energy = (out**2).sum()
    forces = -torch.autograd.grad(energy, pos, create_graph=True)[0]
    gx, gw = torch.autograd.grad((forces**2).sum(), (x, w))
    return out.detach(), forces.detach(), gx, gw


@pytest.mark.parametrize("backend", ["triton", "auto"])
def test_force_training_matches_cpu(backend):
    conv, *args = _case(torch.float64)
    conv.backend = backend
    gpu = _force_step(conv, *args, "cuda")
    conv.backend = "cpu"
    cpu = _force_step(conv, *args, "cpu")
    for a, b in zip(gpu, cpu):
        assert _rel(a, b) < 1e-10


def test_csr_bitwise_reproducible_and_atomic_close():
    conv, *args = _case(torch.float32, seed=1, n=200, E=5000)
    r1 = _force_step(conv, *args, "cuda")
    r2 = _force_step(conv, *args, "cuda")
    for a, b in zip(r1, r2):
        assert torch.equal(a, b)
    r3 = _force_step(conv, *args, "cuda", graph=False)
    for a, b in zip(r3, r1):
        assert _rel(a, b) < 1e-4


def test_cuda_backend_is_a_clear_error():
    conv, src, dst, pos, x, w = _case(torch.float32)
    conv.backend = "cuda"
    sh = torch.randn(src.numel(), conv.irreps_in2.dim, device="cuda")
    with pytest.raises(ValueError, match="no CUDA C\\+\\+ kernel"):
        conv(x.cuda(), sh, w.cuda(), src.cuda(), dst.cuda())
