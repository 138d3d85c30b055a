"""pytest-benchmark configuration: `pytest benchmarks/ --benchmark-only`.

The problems and baselines come from equiops.bench (the same definitions as
`python -m equiops bench`). Set EQUIOPS_BENCH_QUICK=1 for the small sizes and
EQUIOPS_BENCH_DEVICE=cuda to run on a GPU (synchronised inside the timed call).
"""

import os

import pytest
import torch

QUICK = os.environ.get("EQUIOPS_BENCH_QUICK") == "1"
DEVICE = torch.device(os.environ.get("EQUIOPS_BENCH_DEVICE", "cpu"))


def synchronized(fn):
    """Wrap fn so the timed call includes the device work (CUDA launches are async)."""
    if DEVICE.type != "cuda":
        return fn

    def call():
        out = fn()
        torch.cuda.synchronize(DEVICE)
        return out

    return call


@pytest.fixture
def device():
    return DEVICE
