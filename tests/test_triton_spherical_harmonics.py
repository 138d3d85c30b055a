"""Triton spherical-harmonics kernels (kernels/spherical_harmonics.py) against the C++ ops.

The C++ CPU kernels (csrc/cpu/sh_kernels.h) are the verified reference; the Triton
kernels mirror them operation for operation, so values agree to rounding and NaN lands
in the same places. float64 results are compared with the float64 C++ ops; float32
results with the float64 C++ ops at the float32 tolerances (so only the kernels'
rounding counts, not the reference's).

On a machine without a GPU the kernels run on CPU tensors through Triton's interpreter:
tests/conftest.py sets ``TRITON_INTERPRET=1`` before anything imports triton (the
variable is read when functions, triton.language's own included, are decorated).
Sizes are tiny and blocks small (several programs and a partial one) because the
interpreter is slow. On a GPU machine, ``EQUIOPS_TRITON_TEST_DEVICE=cuda`` runs the
same tests compiled on CUDA tensors.
"""

import os

import pytest
import torch

from conftest import assert_close

from conftest import triton_test_device  # noqa: E402

DEV = triton_test_device()  # skips this module when Triton cannot run here

from equiops import _extension  # noqa: E402

if not _extension.available():
    pytest.skip(f"the C++ reference ops are missing: {_extension.why_unavailable()}", allow_module_level=True)

from equiops.kernels import spherical_harmonics as K  # noqa: E402
from equiops.ops import spherical_harmonics as shops  # noqa: E402

OPS = torch.ops.equiops
BLOCK = 16  # rows per program in the tests: N = 50 gives three full programs and a tail

# (ls, normalize, normalization): every degree up to 5, repeats and disorder, degree 0
# alone, both normalize settings and all three normalizations.
CASES = [
    ([0, 1, 2, 3], True, "integral"),
    ([2, 0, 2, 5], True, "component"),
    ([2, 0, 2, 5], False, "norm"),
    ([0], True, "norm"),
    ([4], False, "integral"),
    ([1, 3], False, "component"),
]


def _case_id(case):
    ls, normalize, normalization = case
    return f"{''.join(map(str, ls))}-{'unit' if normalize else 'raw'}-{normalization}"


case = pytest.mark.parametrize("ls, normalize, normalization", CASES, ids=[_case_id(c) for c in CASES])


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _points(N, seed, special_rows=False):
    """(N, 3) float64 points of norm 0.5 .. 1.5 (unnormalized harmonics stay O(1)); with
    ``special_rows``, row 3 is the zero vector and row 7 has a NaN coordinate."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, 3, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * (0.5 + torch.rand(N, 1, generator=g, dtype=torch.float64))
    if special_rows:
        x[3] = 0.0
        x[7, 1] = float("nan")
    return x


def _inputs(N, K_width, dtype, seed, special_rows=False):
    """x, grad (N, K) and v (N, 3) in ``dtype`` on DEV, and the same values in float64
    on the CPU for the reference."""
    g = torch.Generator().manual_seed(seed + 1)
    ref = (
        _points(N, seed, special_rows),
        torch.randn(N, K_width, generator=g, dtype=torch.float64),
        torch.randn(N, 3, generator=g, dtype=torch.float64),
    )
    ref = tuple(t.to(dtype).double() for t in ref)  # the values the kernel sees
    return tuple(t.to(dtype).to(DEV) for t in ref), ref


def _reference(kind, ls, normalize, normalization, x, grad, v):
    coupling = shops.coupling_table(max(ls))
    args = (ls, normalize, normalization, "cpu")
    if kind == "forward":
        return (OPS.spherical_harmonics(x, coupling, *args),)
    if kind == "backward":
        return (OPS.spherical_harmonics_backward(grad, x, coupling, *args),)
    if kind == "double_backward":
        return tuple(OPS.spherical_harmonics_double_backward(v, grad, x, coupling, *args))
    return tuple(OPS.spherical_harmonics_jacobian(x, coupling, *args))


def _triton(kind, ls, normalize, normalization, x, grad, v, block=BLOCK):
    args = (ls, normalize, normalization)
    if kind == "forward":
        return (K.forward(x, *args, block=block),)
    if kind == "backward":
        return (K.backward(grad, x, *args, block=block),)
    if kind == "double_backward":
        return K.double_backward(v, grad, x, *args, block=block)
    return K.jacobian(x, *args, block=block)


# Derivative order of each output (it picks the tolerance).
ORDERS = {"forward": (0,), "backward": (1,), "double_backward": (2, 2), "jacobian": (0, 1)}


def _check(kind, ls, normalize, normalization, dtype, N=50, seed=0, special_rows=False, block=BLOCK):
    width = shops.output_width(ls)
    (x, grad, v), ref_inputs = _inputs(N, width, dtype, seed, special_rows)
    got = _triton(kind, ls, normalize, normalization, x, grad, v, block)
    want = _reference(kind, ls, normalize, normalization, *ref_inputs)
    assert len(got) == len(want) == len(ORDERS[kind])
    for a, e, order in zip(got, want, ORDERS[kind]):
        assert a.dtype == dtype and a.device == DEV and a.is_contiguous() and a.shape == e.shape
        assert_close(a.cpu(), e.to(dtype), order=order, dtype=dtype)
    return got


# --------------------------------------------------------------------------------------
# Against the C++ ops
# --------------------------------------------------------------------------------------


@case
def test_forward(ls, normalize, normalization, dtype):
    _check("forward", ls, normalize, normalization, dtype)


@case
def test_backward(ls, normalize, normalization, dtype):
    _check("backward", ls, normalize, normalization, dtype)


@case
def test_double_backward(ls, normalize, normalization, dtype):
    _check("double_backward", ls, normalize, normalization, dtype)


@case
def test_jacobian(ls, normalize, normalization, dtype):
    _check("jacobian", ls, normalize, normalization, dtype)


def test_forward_high_degree(dtype):
    # Degrees 0..12 at the default block size (150 rows: one full program and a tail).
    # Compiled on a GPU, only up to the degree the CUDA path allows (compile time).
    from equiops.ops.spherical_harmonics import TRITON_MAX_DEGREE

    lmax = 12 if DEV.type == "cpu" else TRITON_MAX_DEGREE
    _check("forward", list(range(lmax + 1)), True, "component", dtype, N=150, block=K.BLOCK)


@pytest.mark.parametrize("normalize", [True, False], ids=["unit", "raw"])
@pytest.mark.parametrize("kind", ["forward", "backward", "double_backward", "jacobian"])
def test_zero_and_nan_rows(kind, normalize, dtype):
    """A zero vector gives 0 for l >= 1 and finite derivatives; a NaN coordinate gives NaN
    in that row only, in the same places as the C++ kernels."""
    ls = [0, 1, 2, 3]
    got = _check(kind, ls, normalize, "integral", dtype, N=20, seed=1, special_rows=True)
    for t in got:
        t = t.cpu()
        assert torch.isfinite(t[3]).all()
        assert torch.isfinite(torch.cat([t[:7], t[8:]])).all()
        assert torch.isnan(t[7]).any()
    if kind in ("forward", "jacobian"):
        values = got[0].cpu()
        assert values[3, 0] != 0 and (values[3, 1:] == 0).all()


@pytest.mark.parametrize("kind", ["forward", "backward", "double_backward", "jacobian"])
def test_empty(kind, dtype):
    ls = [2, 0, 1]
    width = shops.output_width(ls)
    x = torch.empty(0, 3, dtype=dtype, device=DEV)
    got = _triton(kind, ls, True, "integral", x, x.new_empty(0, width), x.new_empty(0, 3))
    shapes = {
        "forward": [(0, width)],
        "backward": [(0, 3)],
        "double_backward": [(0, width), (0, 3)],
        "jacobian": [(0, width), (0, 3, width)],
    }[kind]
    assert [tuple(t.shape) for t in got] == shapes
    assert all(t.dtype == dtype and t.device == DEV for t in got)


# --------------------------------------------------------------------------------------
# Code generation
# --------------------------------------------------------------------------------------


def test_generated_kernels_are_cached():
    key = ("backward", [2, 0, 2, 5], "norm")
    kernel = K._kernel(*key)
    assert K._kernel(*key) is kernel
    path = kernel.fn.__code__.co_filename
    assert os.path.dirname(path) == str(K._CACHE_DIR)
    with open(path) as f:
        source = f.read()
    assert source == K._generate(key[0], tuple(key[1]), key[2])
    # Full-precision literals: a degree-5 coupling times 5 (dY/du) and the degree-5 scale.
    assert repr(abs(5 * shops.coupling_entries(5)[-1][3])) in source
    assert repr(1 / 11**0.5) in source
