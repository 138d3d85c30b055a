"""Backend selection and the deterministic switch.

A backend is chosen per call (``backend=`` on every op), per module, or for a block of
code with :func:`use_backend`; :func:`set_backend` changes the process default.

* ``"auto"``: C++ on CPU tensors; on CUDA tensors the faster of CUDA C++ and Triton
  as measured per op (``AUTO_CUDA_ORDER``), whichever is available; the plain-PyTorch
  reference on any other device or when no kernel is built. ``auto`` never picks
  something slower than the reference.
* ``"cpu"``, ``"cuda"``, ``"triton"``: that kernel; if it cannot run (not built, no
  GPU, no Triton, tensors on the wrong device) the call raises an error saying why.
  There is no silent fallback.
* ``"torch"``: the plain-PyTorch reference (``equiops.reference``).

Determinism: every CPU kernel and every segment (CSR) kernel is deterministic. The
non-deterministic paths are GPU atomics: the scatter sum with an unsorted index, the
convolution and the EGNN message block without CSR views (no ``Graph``), and PointConv's
values gradient. With :func:`set_deterministic` (or :func:`deterministic`, or
``torch.use_deterministic_algorithms``) on, they sort and reduce segments instead,
bitwise reproducible (docs/DETERMINISM.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from typing import Iterator, Optional

import torch
import torch.autograd.forward_ad as _fwad
from torch._C import _functorch

from . import _extension

BACKENDS = ("auto", "cpu", "cuda", "triton", "torch")

# Preference on CUDA tensors for "auto", per op family. CUDA C++ first: in the kernel
# authors' H100 runs it matched Triton on wide rows and beat it at C <= 16
# (benchmarks/results/README.md). To be re-checked with benchmarks/gpu_check.sh.
AUTO_CUDA_ORDER = {
    "segment": ("cuda", "triton"),
    "scatter": ("cuda", "triton"),
    # Spherical harmonics have only a Triton kernel on CUDA (no CUDA C++ one yet).
    "spherical_harmonics": ("triton",),
    # Tensor products: Triton first, as its code is generated per problem (unrolled
    # nonzeros) while the CUDA C++ kernel reads tables. Not yet measured on a GPU.
    "tensor_product": ("triton", "cuda"),
    # The fused tensor-product convolution has only a Triton kernel on CUDA.
    "tp_conv": ("triton",),
    # The fused EGNN message block has only a Triton kernel on CUDA.
    "egnn": ("triton",),
    "pointconv": ("triton",),
}

_state = threading.local()
_default = {"backend": "auto", "deterministic": False}


def _get(key: str):
    return getattr(_state, key, _default[key])


def check_backend_name(name: str, argname: str = "backend") -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"{argname} must be one of {BACKENDS}, got {name!r}")
    return name


def set_backend(name: str) -> None:
    """Set the process-wide default backend (``"auto"`` initially)."""
    _default["backend"] = check_backend_name(name)


def get_backend() -> str:
    return _get("backend")


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Use ``name`` as the default backend inside the block (this thread only)."""
    check_backend_name(name)
    previous = getattr(_state, "backend", None)
    _state.backend = name
    try:
        yield
    finally:
        if previous is None:
            del _state.backend
        else:
            _state.backend = previous


def _check_flag(flag, fn: str) -> None:
    # bool(flag) would turn the string "false" into True: a silent wrong switch.
    if not isinstance(flag, bool):
        raise TypeError(f"{fn}: flag must be a bool, got {type(flag).__name__}")


def set_deterministic(flag: bool) -> None:
    """Ask every op for bitwise reproducible results (process-wide)."""
    _check_flag(flag, "set_deterministic")
    _default["deterministic"] = flag


@contextlib.contextmanager
def deterministic(flag: bool = True) -> Iterator[None]:
    """Deterministic results inside the block (this thread only)."""
    _check_flag(flag, "deterministic")
    previous = getattr(_state, "deterministic", None)
    _state.deterministic = bool(flag)
    try:
        yield
    finally:
        if previous is None:
            del _state.deterministic
        else:
            _state.deterministic = previous


def tracing() -> bool:
    """True while a graph is being traced rather than run: ``torch.compile`` (Dynamo),
    ``torch.export``, and ``make_fx`` / fake-tensor tracing (how an energy-and-forces
    model is traced through autograd for AOTInductor). Data-dependent checks (index
    ranges, sortedness) are skipped then: the values do not exist yet, and reading
    them would fail the trace or bake one input's answer into the graph."""
    if torch.compiler.is_compiling():
        return True
    return (torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.PROXY) is not None
            or torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.FAKE) is not None)


def is_deterministic() -> bool:
    return bool(_get("deterministic")) or torch.are_deterministic_algorithms_enabled()


# Looked up once at import: resolve() runs inside torch.compile'd code, and Dynamo refuses
# to trace importlib.util.find_spec (seen with PyTorch 2.11 on a GPU machine).
_TRITON_FOUND = importlib.util.find_spec("triton") is not None


def triton_available() -> bool:
    return _TRITON_FOUND


def why_no_triton() -> str:
    if not triton_available():
        return "Triton is not installed (pip install triton)"
    return ""




def check_func_transforms(op: str, *tensors) -> None:
    """Raise a clear error where ``torch.func`` / forward-mode AD cannot run the op ``op``.

    The custom ops' derivatives are registered with ``torch.library.register_autograd``,
    which PyTorch runs as an ``autograd.Function`` without functorch support: under
    ``torch.func.grad`` / ``vjp`` / ``jacrev`` PyTorch raises an internal error, and under
    forward-mode AD (``torch.func.jvp`` / ``jacfwd`` / ``hessian``,
    ``torch.autograd.forward_ad``) it *silently* returns zero tangents (the op has no forward
    derivative and dual inputs do not count as requiring grad). ``vmap`` works (PyTorch's
    per-sample fallback loop), also with ordinary autograd around it. Cost when no transform
    is active: two checks; skipped while tracing (``torch.compile``/``export``).
    """
    if torch.compiler.is_compiling():  # first: Dynamo need not trace the functorch calls below
        return
    if _functorch.peek_interpreter_stack() is None and _fwad._current_level < 0:
        return
    keys = {i.level(): i.key() for i in _functorch.get_interpreter_stack() or ()}
    mode = None
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            continue
        if _fwad._current_level >= 0 and _fwad.unpack_dual(t).tangent is not None:
            mode = "forward"
        while _functorch.is_functorch_wrapped_tensor(t):
            if _functorch.is_gradtrackingtensor(t):
                key = keys.get(_functorch.maybe_get_level(t))
                if key == _functorch.TransformType.Jvp:
                    mode = "forward"
                elif key == _functorch.TransformType.Grad and t.requires_grad and torch.is_grad_enabled():
                    mode = mode or "reverse"
            t = _functorch.get_unwrapped(t)
    alternative = ("use torch.autograd.grad / .backward() (vmap and ordinary autograd work with the op), or "
                   "backend='torch' (plain PyTorch, which supports every torch.func transform)")
    if mode == "reverse":
        raise RuntimeError(
            f"{op} does not support torch.func's reverse-mode transforms (torch.func.grad, vjp, jacrev): "
            f"its derivative is registered with torch.library.register_autograd, which functorch cannot run; "
            f"{alternative}"
        )
    if mode == "forward":
        raise RuntimeError(
            f"{op} does not support forward-mode AD (torch.func.jvp, jacfwd, hessian, torch.autograd.forward_ad): it has no "
            f"forward derivative, and PyTorch would silently return zero tangents; {alternative}"
        )


def resolve(requested: Optional[str], device: torch.device, family: str) -> str:
    """The concrete backend for tensors on `device`, or an error saying why not."""
    name = check_backend_name(requested if requested is not None else get_backend())
    if name == "torch":
        return name
    dev = device.type
    if name == "auto":
        if dev == "cpu":
            return "cpu" if _extension.available() else "torch"
        if dev == "cuda":
            for candidate in AUTO_CUDA_ORDER[family]:
                if candidate == "cuda" and _extension.with_cuda():
                    return "cuda"
                if candidate == "triton" and triton_available() and _extension.available():
                    return "triton"
            return "torch"
        return "torch"
    if name == "cpu":
        if dev != "cpu":
            raise ValueError(f"backend 'cpu' runs on CPU tensors, but the inputs are on {device}")
        if not _extension.available():
            raise RuntimeError(f"backend 'cpu' is unavailable: {_extension.why_unavailable()}")
        return name
    # cuda / triton
    if dev != "cuda":
        raise ValueError(
            f"backend {name!r} runs on CUDA tensors, but the inputs are on {device} "
            "(the Triton kernels are tested on the CPU by calling equiops.kernels directly "
            "under TRITON_INTERPRET=1)"
        )
    if not _extension.available():
        raise RuntimeError(f"backend {name!r} is unavailable: {_extension.why_unavailable()}")
    if name == "cuda":
        if not _extension.with_cuda():
            raise RuntimeError(f"backend 'cuda' is unavailable: {_extension.why_no_cuda()}")
    elif not triton_available():
        raise RuntimeError(f"backend 'triton' is unavailable: {why_no_triton()}")
    return name
