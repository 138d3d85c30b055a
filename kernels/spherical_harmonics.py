"""Triton kernels for real spherical harmonics in e3nn's convention, and their derivatives.

For points ``x`` (N, 3) and degrees ``ls`` (any order, repeats allowed), the output is
the concatenation over ``ls`` of the blocks ``degree_scale(l, normalization) * Y^l(u)``
(:mod:`equiops.reference.spherical_harmonics`), ``u = x / max(|x|, eps)`` when
normalizing, else ``u = x``:

* :func:`forward`: the values (N, K), ``K = sum(2l+1)``;
* :func:`backward`: ``grad_x`` (N, 3) for an incoming ``grad`` (N, K);
* :func:`double_backward`: the derivatives of ``backward`` against an incoming ``v``
  (N, 3): ``grad_grad`` (N, K) and ``grad_x`` (N, 3);
* :func:`jacobian`: the values and ``jac`` (N, 3, K), ``jac[n, a, c] = d out[n, c] / d x[n, a]``.

The math mirrors ``csrc/cpu/sh_kernels.h`` operation for operation: the recurrence
``Y^0 = 1``, ``Y[i] = sum c Y[j] u[k]`` over the coupling entries ``(i, j, k, c)`` of
:func:`equiops.ops.spherical_harmonics.coupling_entries`, its derivative
``dY[i]/du[k] = l sum c Y[j]``, the Jacobian ``J = s (I - on u u^T)`` of the
normalization, and the double-backward formula, with the same products summed in the
same order. Values therefore agree with the CPU kernels to rounding (FMA contraction on
the GPU aside), and NaN rows give NaN in the same places.

Layout: every tensor is contiguous and row-major: ``x``, ``v`` and ``grad_x`` (N, 3),
the values, ``grad`` and ``grad_grad`` (N, K) with the blocks in ``ls`` order, ``jac``
(N, 3, K). A program owns ``BLOCK`` consecutive rows: it loads the three columns of
``x`` (stride 3), evaluates everything in registers in ``x``'s dtype (float32 or
float64), and stores each output column (stride K) once. Nothing is staged in memory:
``backward`` contracts ``grad`` with ``dY/du`` on the fly and never forms the Jacobian.
Row offsets are int64, so ``N * 3 * K`` may exceed 2^31.

Code generation: the recurrence is unrolled into straight-line code, one variable per
component (``y_5 = 1.118... * y_1 * u1 + ...``), generated from the coupling entries
per (kind, ``ls``, normalization) with the coefficients and block scales as float
literals (``repr``, full double precision: Triton materialises a Python float operand
directly in the other operand's dtype). ``normalize`` is a constexpr argument, not part
of the source. The code runs degree by degree and stores or contracts each value right
after computing it, so a value is needed for about two degrees, and only degrees up to
``max(ls)`` are evaluated (the backward needs ``Y`` up to ``max(ls) - 1``).
``triton.jit`` reads a kernel's source with ``inspect``, so each generated module is
written to ``<tempdir>/equiops-triton-<uid>/sh_<kind>_<sha256 prefix>.py`` (atomically:
temporary file, then ``os.replace``), imported with :mod:`importlib` and memoised per
process. The generated kernels call the row-wise helpers defined below.

Compile time grows steeply with ``max(ls)``: Triton's coalescing pass walks the whole
data-flow graph once per memory access, which costs about (accesses) x (operations)^2
for straight-line code. Compiled for sm_90 on a CPU (Triton 3.9, float32, ls = 0..lmax),
forward / backward / double_backward / jacobian took about 1 s each at lmax 4, 1-7 s at
lmax 6, 3-60 s at lmax 8 and 20-110 s at lmax 10. Triton caches compiled kernels on
disk, so this is paid once per (kind, ls, normalization, normalize, dtype).

The launchers run on the tensors' device: CUDA tensors, or CPU tensors under
``TRITON_INTERPRET=1``. Arguments are checked by ``equiops.ops.spherical_harmonics``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import math
import os
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from equiops.ops.spherical_harmonics import coupling_entries, output_width
from equiops.reference.spherical_harmonics import NORMALIZE_EPS, degree_scale

__all__ = ["forward", "backward", "double_backward", "jacobian"]

# Rows per program; the launchers use one warp per 32 rows (one row per thread), so the
# per-row values of up to two degrees sit in each thread's registers.
BLOCK = 128

_EPS = tl.constexpr(NORMALIZE_EPS)
_CACHE_DIR = Path(tempfile.gettempdir()) / f"equiops-triton-{os.getuid()}"

# Pointer arguments of each kernel kind, then the helpers its generated body calls.
_KINDS: Dict[str, Tuple[str, str]] = {
    "forward": ("x_ptr, out_ptr", "_points"),
    "backward": ("grad_ptr, x_ptr, gx_ptr", "_apply_jacobian, _points, _store3"),
    "double_backward": (
        "v_ptr, grad_ptr, x_ptr, gg_ptr, gx_ptr",
        "_apply_jacobian, _double_backward_x, _load3, _points, _store3",
    ),
    "jacobian": ("x_ptr, out_ptr, jac_ptr", "_points"),
}
_KERNELS: Dict[Tuple[str, Tuple[int, ...], str], triton.JITFunction] = {}


# --------------------------------------------------------------------------------------
# Row-wise helpers called by the generated kernels
# --------------------------------------------------------------------------------------


@triton.jit
def _load3(ptr, rows, mask):
    """The three columns of ``rows`` of an (N, 3) row-major tensor."""
    p = ptr + rows * 3
    return (
        tl.load(p, mask=mask, other=0.0),
        tl.load(p + 1, mask=mask, other=0.0),
        tl.load(p + 2, mask=mask, other=0.0),
    )


@triton.jit
def _store3(ptr, rows, mask, a, b, c):
    p = ptr + rows * 3
    tl.store(p, a, mask=mask)
    tl.store(p + 1, b, mask=mask)
    tl.store(p + 2, c, mask=mask)


@triton.jit
def _points(x_ptr, rows, mask, NORMALIZE: tl.constexpr):
    """``(u0, u1, u2, s, on)``: ``u = x s``, ``s = 1/max(|x|, eps)`` and ``on = 1`` when
    normalizing (``on = 0`` where ``|x| < eps``), else ``u = x``, ``s = 1``, ``on = 0``
    (``load_points`` in sh_kernels.h)."""
    x0, x1, x2 = _load3(x_ptr, rows, mask)
    zero = tl.zeros_like(x0)
    if NORMALIZE:
        # Correctly rounded like the CPU: in float32 tl.sqrt and `/` are approximate.
        r2 = x0 * x0 + x1 * x1 + x2 * x2
        if x0.dtype == tl.float32:
            r = tl.sqrt_rn(r2)
        else:
            r = tl.sqrt(r2)
        # `r < eps` is false for NaN: a NaN row keeps r (s = NaN, on = 1) and stays NaN.
        small = r < _EPS
        d = tl.where(small, _EPS, r)
        if x0.dtype == tl.float32:
            s = tl.div_rn(1.0, d)
        else:
            s = 1.0 / d
        on = tl.where(small, zero, zero + 1.0)
        u0, u1, u2 = x0 * s, x1 * s, x2 * s
    else:
        u0, u1, u2, s, on = x0, x1, x2, zero + 1.0, zero
    return u0, u1, u2, s, on


@triton.jit
def _apply_jacobian(v0, v1, v2, u0, u1, u2, s, on):
    """``J v`` with ``J = s (I - on u u^T)`` (symmetric; ``apply_jacobian`` in sh_kernels.h).
    Applied without normalizing too (``J = I`` there), so NaNs spread as on the CPU."""
    d = on * (u0 * v0 + u1 * v1 + u2 * v2)
    return s * (v0 - d * u0), s * (v1 - d * u1), s * (v2 - d * u2)


@triton.jit
def _double_backward_x(h0, h1, h2, f0, f1, f2, v0, v1, v2, u0, u1, u2, s, on):
    """``grad_x2 = J h - on s^2 [(a - 3bc) u + c v + b f]``, ``a = v.f``, ``b = u.v``,
    ``c = u.f``: ``h`` is the Hessian-vector product, ``f = sum g dY/du``; the second term
    differentiates ``J`` itself (``double_backward`` in sh_kernels.h)."""
    h0, h1, h2 = _apply_jacobian(h0, h1, h2, u0, u1, u2, s, on)
    a = v0 * f0 + v1 * f1 + v2 * f2
    b = u0 * v0 + u1 * v1 + u2 * v2
    c = u0 * f0 + u1 * f1 + u2 * f2
    q = on * s * s
    e = a - 3.0 * b * c
    return (
        h0 - q * (e * u0 + c * v0 + b * f0),
        h1 - q * (e * u1 + c * v1 + b * f1),
        h2 - q * (e * u2 + c * v2 + b * f2),
    )


# --------------------------------------------------------------------------------------
# Code generation
# --------------------------------------------------------------------------------------

_HEADER = '''\
"""Generated by {generator}: {kind} for ls={ls}, normalization={normalization!r}."""
import triton
import triton.language as tl

from {generator} import {helpers}


@triton.jit
def kernel({pointers}, N, NORMALIZE: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = rows < N
    u0, u1, u2, s, on = _points(x_ptr, rows, mask, NORMALIZE)
    zero = tl.zeros_like(u0)
'''


def _product(c: float, factors: Sequence[str]) -> str:
    """``|c| * f1 * f2 ...``, left to right as on the CPU; the factor ``y_0 = 1`` is dropped."""
    return " * ".join([repr(abs(c))] + [f for f in factors if f != "y_0"])


def _sum(terms: Sequence[Tuple[float, Sequence[str]]], start: str = "") -> str:
    """``start + c1 * ... + c2 * ...`` summed left to right (``zero`` when empty)."""
    out = start
    for c, factors in terms:
        p = _product(c, factors)
        if out:
            out += (" - " if c < 0 else " + ") + p
        else:
            out = p if c >= 0 else "-" + p
    return out or "zero"


def _offset(ptr: str, off: int) -> str:
    return f"{ptr} + {off}" if off else ptr


def _scaled(scale: float, value: str) -> str:
    return value if scale == 1.0 else f"{scale!r} * {value}"


class _Body:
    """Emits the straight-line body of one kernel, degree by degree.

    Variables: ``u0..u2`` the point, ``y_i`` / ``dy_i`` the components of ``Y`` and of
    its derivative along ``w = J v``, ``g_i`` the incoming gradient (scaled, summed over
    repeated degrees), ``f0..f2`` / ``h0..h2`` its contraction with ``dY/du`` / with the
    derivative of ``dY/du`` along ``w``.
    """

    def __init__(self, ls: Tuple[int, ...], normalization: str):
        self.lmax = max(ls)
        self.K = output_width(ls)
        # Coupling entries (j, k, c) of each component i, by degree (the entries are sorted).
        self.entries: Dict[int, List[Tuple[int, List[Tuple[int, int, float]]]]] = {
            l: [] for l in range(1, self.lmax + 1)
        }
        for i, group in itertools.groupby(coupling_entries(self.lmax), key=lambda e: e[0]):
            self.entries[math.isqrt(i)].append((i, [(j, k, c) for _, j, k, c in group]))
        # (first column, scale) of each output block, by degree.
        self.blocks: Dict[int, List[Tuple[int, float]]] = {l: [] for l in range(self.lmax + 1)}
        col = 0
        for l in ls:
            self.blocks[l].append((col, degree_scale(l, normalization)))
            col += 2 * l + 1
        self.lines: List[str] = []

    def emit(self, line: str) -> None:
        self.lines.append("    " + line)

    def store(self, ptr: str, l: int, values: Sequence[str], shift: int = 0) -> None:
        """Stores the degree-``l`` ``values`` at ``shift`` + the columns of each of its blocks."""
        for col, scale in self.blocks[l]:
            for m, value in enumerate(values):
                self.emit(f"tl.store({_offset(ptr, shift + col + m)}, {_scaled(scale, value)}, mask=mask)")

    def values(self, l: int) -> None:
        """``y_i`` of degree ``l``: ``Y[i] = sum c Y[j] u[k]`` (``Y^0 = 1``, a variable only
        where it is stored)."""
        if l == 0:
            if self.blocks[0]:
                self.emit("y_0 = zero + 1.0")
            return
        for i, group in self.entries[l]:
            self.emit(f"y_{i} = {_sum([(c, [f'y_{j}', f'u{k}']) for j, k, c in group])}")

    def directional(self, l: int) -> None:
        """``dy_i`` of degree ``l >= 1``: the derivative along ``w``, ``sum l c Y[j] w[k]``."""
        for i, group in self.entries[l]:
            self.emit(f"dy_{i} = {_sum([(l * c, [f'y_{j}', f'w{k}']) for j, k, c in group])}")

    def grads(self, l: int) -> None:
        """``g_i`` of degree ``l``: the incoming columns, scaled, summed over the blocks."""
        for m in range(2 * l + 1):
            loads = [
                _scaled(scale, f"tl.load({_offset('grad', col + m)}, mask=mask, other=0.0)")
                for col, scale in self.blocks[l]
            ]
            self.emit(f"g_{l * l + m} = {' + '.join(loads)}")

    def contract(self, l: int, acc: str, src: str) -> None:
        """``acc[k] += sum l c g_i src[j]`` over the degree-``l`` entries with axis ``k``."""
        for i, group in self.entries[l]:
            for k in range(3):
                terms = [(l * c, [f"g_{i}", f"{src}_{j}"]) for j, kk, c in group if kk == k]
                if terms:
                    self.emit(f"{acc}{k} = {_sum(terms, f'{acc}{k}')}")

    # ---------------------------------------------------------------------- kernels
    def forward(self) -> None:
        self.emit(f"out = out_ptr + rows * {self.K}")
        for l in range(self.lmax + 1):
            self.values(l)
            self.store("out", l, [f"y_{i}" for i in range(l * l, (l + 1) ** 2)])

    def backward(self) -> None:
        # grad_x = J f, f = sum_i g_i dY_i/du; degree l's entries need Y of degree l - 1.
        self.emit("f0, f1, f2 = zero, zero, zero")
        if self.lmax:
            self.emit(f"grad = grad_ptr + rows * {self.K}")
        for l in range(1, self.lmax + 1):
            if l >= 2:
                self.values(l - 1)
            if self.blocks[l]:
                self.grads(l)
                self.contract(l, "f", "y")
        self.emit("f0, f1, f2 = _apply_jacobian(f0, f1, f2, u0, u1, u2, s, on)")
        self.emit("_store3(gx_ptr, rows, mask, f0, f1, f2)")

    def double_backward(self) -> None:
        # grad_grad = dY along w = J v; grad_x from f and h (dY^0 = 0, so h starts at
        # degree 2).
        self.emit("v0, v1, v2 = _load3(v_ptr, rows, mask)")
        self.emit("w0, w1, w2 = _apply_jacobian(v0, v1, v2, u0, u1, u2, s, on)")
        self.emit(f"gg = gg_ptr + rows * {self.K}")
        self.emit("f0, f1, f2 = zero, zero, zero")
        self.emit("h0, h1, h2 = zero, zero, zero")
        if self.lmax:
            self.emit(f"grad = grad_ptr + rows * {self.K}")
        self.store("gg", 0, ["zero"])
        for l in range(1, self.lmax + 1):
            if l >= 2:
                self.values(l - 1)
            self.directional(l)
            self.store("gg", l, [f"dy_{i}" for i in range(l * l, (l + 1) ** 2)])
            if self.blocks[l]:
                self.grads(l)
                self.contract(l, "f", "y")
                if l >= 2:
                    self.contract(l, "h", "dy")
        self.emit("f0, f1, f2 = _double_backward_x(h0, h1, h2, f0, f1, f2, v0, v1, v2, u0, u1, u2, s, on)")
        self.emit("_store3(gx_ptr, rows, mask, f0, f1, f2)")

    def jacobian(self) -> None:
        # jac[a] = (J dY/du)[a] = s (dY/du_a - on u_a sum_k u_k dY/du_k), and by Euler's
        # identity sum_k u_k dY_i/du_k = l Y_i, so each axis needs only its own dY/du_a.
        self.emit(f"out = out_ptr + rows * {self.K}")
        self.emit(f"jac = jac_ptr + rows * {3 * self.K}")
        for l in range(self.lmax + 1):
            self.values(l)
            self.store("out", l, [f"y_{i}" for i in range(l * l, (l + 1) ** 2)])
            if not self.blocks[l]:
                continue
            for i, group in self.entries[l] if l else [(0, [])]:  # dY^0/du = 0
                for k in range(3):
                    du = _sum([(l * c, [f"y_{j}"]) for j, kk, c in group if kk == k])
                    euler = " * ".join(["on", f"u{k}", repr(float(l))] + ([f"y_{i}"] if i else []))
                    self.emit(f"t = s * ({du} - {euler})")
                    self.store("jac", l, ["t"], shift=k * self.K + i - l * l)


def _generate(kind: str, ls: Tuple[int, ...], normalization: str) -> str:
    body = _Body(ls, normalization)
    getattr(body, kind)()
    pointers, helpers = _KINDS[kind]
    header = _HEADER.format(
        generator=__name__, kind=kind, ls=list(ls), normalization=normalization, helpers=helpers, pointers=pointers
    )
    return header + "\n".join(body.lines) + "\n"


def _load_module(kind: str, source: str) -> triton.JITFunction:
    """Writes ``source`` to the cache directory (unless there already) and imports it."""
    stem = f"sh_{kind}_{hashlib.sha256(source.encode()).hexdigest()[:16]}"
    path = _CACHE_DIR / f"{stem}.py"
    if not path.is_file() or path.read_text() != source:
        _CACHE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Another process may import the same file meanwhile: it must never see it half written.
        fd, tmp = tempfile.mkstemp(prefix=stem, suffix=".tmp", dir=_CACHE_DIR)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(source)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    spec = importlib.util.spec_from_file_location(f"equiops_generated_{stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.kernel


def _kernel(kind: str, ls: Sequence[int], normalization: str) -> triton.JITFunction:
    key = (kind, tuple(ls), normalization)
    kernel = _KERNELS.get(key)
    if kernel is None:
        kernel = _KERNELS[key] = _load_module(kind, _generate(kind, *key[1:]))
    return kernel


# --------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------


def _launch(
    kind: str, x: Tensor, tensors: Sequence[Tensor], ls: Sequence[int], normalize: bool, normalization: str, block: int
) -> None:
    N = x.shape[0]
    if N == 0:
        return
    kernel = _kernel(kind, ls, normalization)
    with torch.cuda.device(x.device) if x.is_cuda else nullcontext():
        kernel[(triton.cdiv(N, block),)](
            *tensors, N, NORMALIZE=bool(normalize), BLOCK=block, num_warps=max(block // 32, 1)
        )


def forward(x: Tensor, ls: Sequence[int], normalize: bool, normalization: str, *, block: int = BLOCK) -> Tensor:
    """The values (N, K) at ``x`` (N, 3). ``block``: rows per program (a power of two)."""
    out = x.new_empty(x.shape[0], output_width(ls))
    _launch("forward", x, (x, out), ls, normalize, normalization, block)
    return out


def backward(
    grad: Tensor, x: Tensor, ls: Sequence[int], normalize: bool, normalization: str, *, block: int = BLOCK
) -> Tensor:
    """``grad_x`` (N, 3) for the incoming ``grad`` (N, K)."""
    gx = x.new_empty(x.shape[0], 3)
    _launch("backward", x, (grad, x, gx), ls, normalize, normalization, block)
    return gx


def double_backward(
    v: Tensor, grad: Tensor, x: Tensor, ls: Sequence[int], normalize: bool, normalization: str, *, block: int = BLOCK
) -> Tuple[Tensor, Tensor]:
    """``(grad_grad (N, K), grad_x (N, 3))``: the derivatives of :func:`backward`'s
    ``<v, grad_x>`` against ``grad`` and ``x``, for the incoming ``v`` (N, 3)."""
    gg = x.new_empty(x.shape[0], output_width(ls))
    gx = x.new_empty(x.shape[0], 3)
    _launch("double_backward", x, (v, grad, x, gg, gx), ls, normalize, normalization, block)
    return gg, gx


def jacobian(
    x: Tensor, ls: Sequence[int], normalize: bool, normalization: str, *, block: int = BLOCK
) -> Tuple[Tensor, Tensor]:
    """``(values (N, K), jac (N, 3, K))``, ``jac[n, a, c] = d values[n, c] / d x[n, a]``."""
    K = output_width(ls)
    out = x.new_empty(x.shape[0], K)
    jac = x.new_empty(x.shape[0], 3, K)
    _launch("jacobian", x, (x, out, jac), ls, normalize, normalization, block)
    return out, jac
