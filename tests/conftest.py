"""Shared test infrastructure: dtypes, the tolerance table, devices, helpers.

Later op families reuse these: ``assert_close(actual, expected, order=k)`` picks the
tolerance for the dtype and derivative order from ``TOLERANCES``; ``random_o3`` and
``assert_equivariant`` test equivariance under rotations with reflections;
``check_compiled_matches_eager`` runs the eager-vs-compiled contract check.
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable, Dict, Tuple

import pytest
import torch

# Without a GPU, Triton kernels are tested under the interpreter. TRITON_INTERPRET is
# read when functions are decorated (triton.language's own included), so it must be
# set before anything (e3nn, the kernels) imports triton; importing torch does not.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# (rtol, atol) by dtype and derivative order (0: forward, 1: backward, 2: double backward).
# float64 is held to ~1e-10 (the e3nn-identity bar); float32 to what float32 allows for
# sums of at most a few hundred terms; half types to their rounding.
TOLERANCES: Dict[Tuple[torch.dtype, int], Tuple[float, float]] = {
    (torch.float64, 0): (1e-12, 1e-12),
    (torch.float64, 1): (1e-11, 1e-11),
    (torch.float64, 2): (1e-10, 1e-10),
    (torch.float32, 0): (1e-5, 1e-5),
    (torch.float32, 1): (2e-5, 2e-5),
    (torch.float32, 2): (5e-5, 5e-5),
    (torch.float16, 0): (2e-3, 2e-3),
    (torch.bfloat16, 0): (1.6e-2, 1.6e-2),
}

FLOAT_DTYPES = (torch.float32, torch.float64)


def tolerance(dtype: torch.dtype, order: int = 0) -> Tuple[float, float]:
    return TOLERANCES[(dtype, order)]


def assert_close(actual, expected, order: int = 0, dtype=None, **kwargs) -> None:
    rtol, atol = tolerance(dtype or expected.dtype, order)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=True, **kwargs)


@pytest.fixture(params=FLOAT_DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def dtype(request) -> torch.dtype:
    return request.param


@contextlib.contextmanager
def default_dtype(dt: torch.dtype):
    """torch's default dtype set to ``dt`` inside the block (e3nn builds its constants in
    it: float64 for exact references)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dt)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@pytest.fixture
def float64_default():
    """Run the test with float64 as torch's default dtype (for float64 e3nn references)."""
    with default_dtype(torch.float64):
        yield


def random_o3(n: int = 1, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """``(n, 3, 3)`` random orthogonal matrices; every other one is a reflection (det -1)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, dtype=torch.float64, generator=g))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    q = q * torch.sign(torch.det(q))[:, None, None]
    q[::2] *= -1
    return q.to(dtype)


def assert_equivariant(fn: Callable, inputs_rep, output_rep, inputs, order: int = 0, n: int = 4) -> None:
    """``fn(D_in(R) x) == D_out(R) fn(x)`` for random O(3) elements R.

    ``inputs_rep`` / ``output_rep`` map a ``(3, 3)`` matrix to the representation
    matrix acting on the last dim (e.g. ``Irreps.D_from_matrix``).
    """
    for R in random_o3(n, seed=n, dtype=inputs[0].dtype):
        rotated = [x @ rep(R).T for x, rep in zip(inputs, inputs_rep)]
        assert_close(fn(*rotated), fn(*inputs) @ output_rep(R).T, order=order)


def check_compiled_matches_eager(fn: Callable, *args, order: int = 0, dynamic=None) -> None:
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, dynamic=dynamic)
    expected = fn(*args)
    actual = compiled(*args)
    for a, e in zip(_as_tuple(actual), _as_tuple(expected)):
        if e.is_floating_point():
            assert_close(a, e, order=order)
        else:
            assert torch.equal(a, e)


@contextlib.contextmanager
def num_threads(n: int):
    """torch's intra-op thread count set to ``n`` inside the block (the CPU kernels must give
    the same bits at any thread count)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def triton_interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def triton_test_device() -> torch.device:
    """The device of the Triton kernel test modules, called at their top: CPU tensors under
    the interpreter, or CUDA with ``EQUIOPS_TRITON_TEST_DEVICE=cuda`` (GPU check). Skips
    the calling module when Triton, the interpreter or the asked-for GPU is missing. With
    its index ("cuda:0"): outputs carry it, and torch.device("cuda") != "cuda:0"."""
    pytest.importorskip("triton")
    name = os.environ.get("EQUIOPS_TRITON_TEST_DEVICE", "cpu")
    if name == "cpu" and not triton_interpreter_enabled():
        pytest.skip("TRITON_INTERPRET=1 is not set (tests/conftest.py sets it without a GPU)", allow_module_level=True)
    if name != "cpu" and not torch.cuda.is_available():
        pytest.skip("EQUIOPS_TRITON_TEST_DEVICE asks for CUDA, which is not available", allow_module_level=True)
    return torch.empty(0, device=name).device


# The Triton interpreter tests switch Triton into interpreter mode for the whole process
# (TRITON_INTERPRET is read when kernels are decorated). On a GPU machine the real Triton
# path is tested instead (test_gpu_ops.py), so keep them out of that process.
collect_ignore = (
    ["test_triton_segment.py"]
    if torch.cuda.is_available() and os.environ.get("EQUIOPS_TRITON_TEST_DEVICE") != "cuda"
    else []
)


@pytest.fixture(scope="module")
def kernel_cache_dir(tmp_path_factory):
    """Generated Triton modules go to a temporary cache directory, not ~/.cache (the
    Triton test files use it for every test: ``pytestmark = usefixtures(...)``)."""
    old = os.environ.get("EQUIOPS_CACHE_DIR")
    os.environ["EQUIOPS_CACHE_DIR"] = str(tmp_path_factory.mktemp("equiops_cache"))
    yield
    if old is None:
        os.environ.pop("EQUIOPS_CACHE_DIR", None)
    else:
        os.environ["EQUIOPS_CACHE_DIR"] = old
