"""Backend selection: what 'auto' picks, and the errors a CPU-only build gives."""

import pytest
import torch

import equiops
from equiops import _extension, backend

CUDA = torch.device("cuda")
CPU = torch.device("cpu")


def test_auto_on_cpu_is_the_cpp_kernel():
    assert backend.resolve("auto", CPU, "segment") == "cpu"
    assert backend.resolve("torch", CPU, "segment") == "torch"


@pytest.mark.skipif(_extension.with_cuda(), reason="this build has CUDA kernels")
def test_cpu_only_build_explains_missing_cuda():
    with pytest.raises(RuntimeError, match=r"backend 'cuda' is unavailable: equiops._C was built without CUDA kernels"):
        backend.resolve("cuda", CUDA, "segment")


def test_auto_on_cuda_never_picks_an_unavailable_kernel(monkeypatch):
    monkeypatch.setattr(backend, "triton_available", lambda: False)
    expected = "cuda" if _extension.with_cuda() else "torch"
    assert backend.resolve("auto", CUDA, "segment") == expected
    monkeypatch.setattr(backend, "triton_available", lambda: True)
    assert backend.resolve("auto", CUDA, "segment") == ("cuda" if _extension.with_cuda() else "triton")


def test_missing_triton_is_explained(monkeypatch):
    monkeypatch.setattr(backend, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"backend 'triton' is unavailable: Triton is not installed"):
        backend.resolve("triton", CUDA, "segment")


def test_use_backend_and_deterministic_contexts():
    src = torch.randn(6, 2)
    index = torch.tensor([0, 1, 0, 2, 2, 1])
    with equiops.use_backend("torch"):
        assert equiops.get_backend() == "torch"
        torch.testing.assert_close(equiops.scatter(src, index, 0), equiops.scatter(src, index, 0, backend="cpu"))
    assert equiops.get_backend() == "auto"
    assert not equiops.is_deterministic()
    with equiops.deterministic():
        assert equiops.is_deterministic()
    assert not equiops.is_deterministic()
    with pytest.raises(ValueError, match=r"backend must be one of"):
        with equiops.use_backend("fast"):
            pass
