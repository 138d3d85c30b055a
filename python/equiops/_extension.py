"""Loads the compiled extension equiops._C and says why it is missing when it is."""

from __future__ import annotations

import importlib
from typing import Optional

# torch must be loaded before equiops._C: both need libgomp.so.1, and whichever loads
# first supplies it. With torch first, our OpenMP regions share torch's bundled runtime;
# with ours first, the system libgomp serves both and the reductions ran 3-4x slower
# (measured with `python -m equiops bench --quick`, E=2e5 D=16: 11 ms vs 3 ms).
import torch  # noqa: F401

_C = None
_load_error: Optional[str] = None

try:
    _C = importlib.import_module("equiops._C")
except ImportError as exc:  # not built, or built against another torch
    _load_error = f"{type(exc).__name__}: {exc}"


def available() -> bool:
    """True when equiops._C (the C++ CPU kernels and the op schemas) imported."""
    return _C is not None


def with_cuda() -> bool:
    """True when equiops._C was compiled with the CUDA kernels."""
    return _C is not None and bool(getattr(_C, "with_cuda", False))


def why_unavailable() -> str:
    if _C is not None:
        return ""
    return (
        "the compiled extension equiops._C is not importable "
        f"({_load_error}); build it with `pip install --no-build-isolation .` "
        "from the source tree"
    )


def why_no_cuda() -> str:
    if _C is None:
        return why_unavailable()
    if not with_cuda():
        return (
            "equiops._C was built without CUDA kernels (no CUDA toolkit or a CPU-only "
            "PyTorch at build time); rebuild with EQUIOPS_CUDA=1 on a machine with both"
        )
    return ""


def extension():
    """The loaded module equiops._C (raises RuntimeError when it is missing)."""
    if _C is None:
        raise RuntimeError(why_unavailable())
    return _C
