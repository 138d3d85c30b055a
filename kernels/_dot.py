"""Matrix-product helper shared by the Triton tile kernels (kernels/egnn.py, kernels/pointconv.py)."""

import triton
import triton.language as tl

_PREC = tl.constexpr("ieee")  # tl.dot input precision: no TF32, so float32 matches the CPU kernels


@triton.jit
def mm(a, b, DOT: tl.constexpr):
    """``a [R, K] @ b [K, C]`` in the inputs' dtype; without DOT (float64 where tl.dot
    cannot take it) as a broadcast multiply and sum."""
    if DOT:
        return tl.dot(a, b, input_precision=_PREC, out_dtype=a.dtype)
    else:
        return tl.sum(a[:, :, None] * b[None, :, :], axis=1)
