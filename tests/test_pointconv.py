"""The fused PointConv operator on the CPU (csrc/cpu/pointconv_cpu.cpp) against its
plain-PyTorch reference (equiops.reference.pointconv).

Forward and the gradients of penult, values, weight and bias in float64 to 1e-10 and
float32 to 2e-5 (relative to the result's largest magnitude), with mean on and off, bias
on and off; masks with fully masked queries (output exactly the bias, no NaN, even with
NaN at masked penult entries and in value rows only masked neighbours point at),
queries with every neighbour valid, duplicate neighbour ids, K = 1, K = 0, widths that
are not multiples of the vector width (C=5, ci=7, co=9) and wider ones (C=16, ci=32,
co=48); bitwise determinism across runs and thread counts; the baseline-ISA build
(EQUIOPS_CPU_ISA=generic, in a subprocess); opcheck; torch.compile(fullgraph=True,
dynamic=True) equal to eager, forward and backward; the first-order-only error; bad input
of the public function and the raw op.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from equiops.ops.pointconv import pointconv
from equiops.reference import pointconv as ref
from conftest import num_threads

TOL = {torch.float64: 1e-10, torch.float32: 2e-5}

# name: (B, m, n, K, C, ci, co)
SHAPES = {
    "odd": (2, 37, 23, 6, 5, 7, 9),
    "wide": (2, 40, 29, 12, 16, 32, 48),
    "k1": (3, 11, 7, 1, 4, 8, 5),
}


def _rel(a, b):
    if b.numel() == 0:
        return 0.0
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def _problem(B, m, n, K, C, ci, co, bias=True, seed=0, dtype=torch.float64):
    """Inputs (float64 values rounded to ``dtype``): query 0 of each batch fully masked,
    query 1 with every neighbour valid, a duplicate neighbour id, and the point n - 1
    referenced only by masked neighbours."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)

    penult = t(B, m, K, C)
    values = t(B, n, ci)
    idx = torch.randint(0, n - 1, (B, m, K), generator=g)
    mask = torch.rand(B, m, K, generator=g) < 0.7
    if m > 0:
        mask[:, 0] = False
    if m > 1:
        mask[:, 1] = True
    if K > 1 and m > 2:
        idx[:, 2, 1] = idx[:, 2, 0]  # a duplicate neighbour
        mask[:, 2, :2] = True
    idx = torch.where(mask, idx, torch.full_like(idx, n - 1))  # n - 1: masked neighbours only
    weight = t(co, C * ci, scale=(C * ci) ** -0.5)
    b = t(co) if bias else None
    return penult, values, idx, mask, weight, b


def _run(penult, values, idx, mask, weight, bias, mean, backend, seed=5):
    leaves = [x.clone().requires_grad_() for x in (penult, values, weight)]
    if bias is not None:
        leaves.append(bias.clone().requires_grad_())
    out = pointconv(leaves[0], leaves[1], idx, mask, leaves[2], leaves[3] if bias is not None else None, mean,
                    backend=backend)
    g = torch.Generator().manual_seed(seed)
    cot = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    grads = torch.autograd.grad(out, leaves, cot)
    return [out.detach()] + [gr.detach() for gr in grads]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("mean", [False, True], ids=["sum", "mean"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_matches_reference(shape, bias, mean, dtype):
    inputs = _problem(*SHAPES[shape], bias=bias)
    expected = _run(*inputs, mean, "torch")
    got = _run(*(None if x is None else x.to(dtype) if x.is_floating_point() else x for x in inputs), mean, "cpu")
    assert len(got) == len(expected)
    for k, (a, b) in enumerate(zip(got, expected)):
        assert a.dtype == dtype and a.shape == b.shape
        assert _rel(a.double(), b) < TOL[dtype], f"output {k}: {_rel(a.double(), b):.3g}"


@pytest.mark.parametrize("mean", [False, True], ids=["sum", "mean"])
def test_fully_masked_queries_and_masked_nan(mean):
    """Fully masked queries give exactly the bias (bias / 1 with mean), as the reference;
    NaN at masked penult entries and in a value row only masked neighbours point at
    reaches neither the output nor any gradient."""
    penult, values, idx, mask, weight, bias = _problem(*SHAPES["odd"])
    penult = torch.where(mask[..., None], penult, torch.full_like(penult, float("nan")))
    values[:, -1] = float("nan")
    got = _run(penult, values, idx, mask, weight, bias, mean, "cpu")
    expected = _run(penult, values, idx, mask, weight, bias, mean, "torch")
    for a, b in zip(got, expected):
        assert torch.isfinite(a).all()
        assert _rel(a, b) < 1e-10
    out = got[0]
    assert torch.equal(out[:, 0], bias.expand(out.shape[0], -1))
    assert torch.equal(out[:, 0], expected[0][:, 0])
    assert not got[1][:, 0].any() and not got[2][:, -1].any()  # grad penult / values there
    no_bias = pointconv(penult, values, idx, mask, weight, None, mean, backend="cpu")
    assert not no_bias[:, 0].any()


def test_non_contiguous_inputs_and_partial_grads():
    """Strided views give the same results; gradients flow to whichever inputs ask."""
    penult, values, idx, mask, weight, bias = _problem(*SHAPES["odd"], seed=4)
    expected = _run(penult, values, idx, mask, weight, bias, True, "cpu")
    strided = (penult.transpose(1, 2).contiguous().transpose(1, 2), values.transpose(0, 1).contiguous().transpose(0, 1),
               idx.transpose(0, 2).contiguous().transpose(0, 2), mask.transpose(1, 2).contiguous().transpose(1, 2),
               weight.t().contiguous().t(), bias)
    assert not strided[0].is_contiguous() and not strided[2].is_contiguous() and not strided[4].is_contiguous()
    for a, b in zip(_run(*strided, True, "cpu"), expected):
        assert torch.equal(a, b)
    v = values.clone().requires_grad_()
    out = pointconv(penult, v, idx, mask, weight, None, False, backend="cpu")
    (gv,) = torch.autograd.grad(out.sum(), v)
    v2 = values.clone().requires_grad_()
    (gv2,) = torch.autograd.grad(pointconv(penult, v2, idx, mask, weight, None, False, backend="torch").sum(), v2)
    assert _rel(gv, gv2) < 1e-10


def test_no_neighbours_and_empty():
    B, m, n, C, ci, co = 2, 5, 4, 3, 2, 4
    penult, values, idx, mask, weight, bias = _problem(B, m, n, 0, C, ci, co)
    for mean in (False, True):
        got = _run(penult, values, idx, mask, weight, bias, mean, "cpu")
        expected = _run(penult, values, idx, mask, weight, bias, mean, "torch")
        assert torch.equal(got[0], expected[0])  # the bias (divided by 1)
        for a, b in zip(got, expected):
            assert _rel(a, b) < 1e-12  # bias gradient: sums in another order
    # No queries.
    penult, values, idx, mask, weight, bias = _problem(B, 0, n, 3, C, ci, co)
    got = _run(penult, values, idx, mask, weight, bias, True, "cpu")
    assert got[0].shape == (B, 0, co) and not got[2].any() and not got[3].any() and not got[4].any()


def test_determinism_across_runs_and_threads():
    inputs = _problem(2, 300, 120, 16, 16, 32, 48, seed=3)
    inputs32 = [x.float() if x is not None and x.is_floating_point() else x for x in inputs]
    base = _run(*inputs32, True, "cpu")
    again = _run(*inputs32, True, "cpu")
    with num_threads(1):
        single = _run(*inputs32, True, "cpu")
    with num_threads(2):
        two = _run(*inputs32, True, "cpu")
    for a, b, c, d in zip(base, again, single, two):
        assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)


def test_backend_torch_is_the_reference_and_double_backward():
    penult, values, idx, mask, weight, bias = _problem(*SHAPES["k1"])
    out = pointconv(penult, values, idx, mask, weight, bias, True, backend="torch")
    assert torch.equal(out, ref.pointconv(penult, values, idx, mask, weight, bias, True))
    # The fused backward is first-order only, with a clear error.
    p = penult.clone().requires_grad_()
    out = pointconv(p, values, idx, mask, weight, bias, False, backend="cpu")
    (g,) = torch.autograd.grad(out.square().sum(), p, create_graph=True)
    with pytest.raises(RuntimeError, match="backend='torch'"):
        torch.autograd.grad(g.sum(), p)
    # Through the reference it works.
    out = pointconv(p, values, idx, mask, weight, bias, False, backend="torch")
    (g,) = torch.autograd.grad(out.square().sum(), p, create_graph=True)
    torch.autograd.grad(g.sum(), p)


_ISA_SCRIPT = r"""
import sys, torch
sys.path.insert(0, %(tests)r)
import test_pointconv as T
for shape in T.SHAPES.values():
    for mean in (False, True):
        inputs = T._problem(*shape)
        expected = T._run(*inputs, mean, "torch")
        for dtype in (torch.float64, torch.float32):
            low = [None if x is None else x.to(dtype) if x.is_floating_point() else x for x in inputs]
            got = T._run(*low, mean, "cpu")
            for a, b in zip(got, expected):
                assert T._rel(a.double(), b) < T.TOL[dtype], (shape, mean, dtype)
print("ok")
"""


def test_generic_isa_kernels():
    """The baseline-ISA build (chosen once per process: a subprocess) against the reference."""
    env = dict(os.environ, EQUIOPS_CPU_ISA="generic", OMP_NUM_THREADS="1")
    script = _ISA_SCRIPT % {"tests": os.path.dirname(__file__)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_opcheck():
    penult, values, idx, mask, weight, bias = _problem(2, 6, 5, 3, 3, 4, 5)
    leaves = [x.clone().requires_grad_() for x in (penult, values, weight, bias)]
    for b, mean in ((leaves[3], True), (None, False)):
        args = (leaves[0], leaves[1], idx, mask, leaves[2], b, mean, "cpu")
        torch.library.opcheck(torch.ops.equiops.pointconv, args)
        grad_out = torch.randn(2, 6, 5, dtype=torch.float64)
        bargs = (grad_out, penult, values, idx, mask, weight, None if b is None else bias, mean, "cpu")
        torch.library.opcheck(torch.ops.equiops.pointconv_backward, bargs, test_utils=("test_schema", "test_faketensor"))


def test_compiled_equals_eager_dynamic_shapes():
    """fullgraph compile with dynamic shapes: output and gradients equal eager."""
    torch._dynamo.reset()

    def fn(penult, values, idx, mask, weight, bias):
        out = pointconv(penult, values, idx, mask, weight, bias, True, backend="cpu")
        return torch.tanh(out).sum(-1)

    compiled = torch.compile(fn, fullgraph=True, dynamic=True)
    for shape, seed in (((2, 9, 7, 4, 3, 5, 6), 1), ((3, 13, 8, 5, 3, 5, 6), 2)):
        inputs = _problem(*shape, seed=seed)
        res = []
        for f in (fn, compiled):
            leaves = [x.clone().requires_grad_() for x in (inputs[0], inputs[1], inputs[4], inputs[5])]
            y = f(leaves[0], leaves[1], inputs[2], inputs[3], leaves[2], leaves[3])
            res.append([y.detach()] + list(torch.autograd.grad(y.square().sum(), leaves)))
        for a, b in zip(*res):
            assert _rel(b, a) < 1e-12


def test_bad_input():
    penult, values, idx, mask, weight, bias = _problem(2, 6, 5, 3, 3, 4, 5)

    def call(**over):
        args = dict(penult=penult, values=values, nbhd_idx=idx, nbhd_mask=mask, weight=weight, bias=bias)
        args.update(over)
        mean = args.pop("mean", False)
        return pointconv(*args.values(), mean, backend="cpu")

    with pytest.raises(ValueError, match=r"penult must be 4-D"):
        call(penult=penult[0])
    with pytest.raises(ValueError, match=r"values must have shape \(2, n, ci\)"):
        call(values=values[:1])
    with pytest.raises(ValueError, match=r"nbhd_idx must have shape \(2, 6, 3\)"):
        call(nbhd_idx=idx[:, :, :2])
    with pytest.raises(ValueError, match=r"nbhd_mask must have shape \(2, 6, 3\)"):
        call(nbhd_mask=mask[:, :5])
    with pytest.raises(TypeError, match="nbhd_mask must be torch.bool"):
        call(nbhd_mask=mask.float())
    with pytest.raises(TypeError, match="nbhd_idx must be torch.int64"):
        call(nbhd_idx=idx.int())
    with pytest.raises(ValueError, match=r"weight must have shape \(co, 12\)"):
        call(weight=weight[:, :11])
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\)"):
        call(bias=bias[:4])
    with pytest.raises(TypeError, match="values must have penult's dtype"):
        call(values=values.float())
    with pytest.raises(TypeError, match="penult must be float32 or float64"):
        call(penult=penult.half(), values=values.half(), weight=weight.half(), bias=bias.half())
    with pytest.raises(TypeError, match="mean must be a bool"):
        call(mean=1)
    bad = idx.clone()
    bad[1, 2, 0] = 5
    with pytest.raises(IndexError, match=r"nbhd_idx\[1, 2, 0\] = 5 is not a point id in \[0, 5\)"):
        call(nbhd_idx=bad)
    bad[1, 2, 0] = -1
    with pytest.raises(IndexError, match=r"nbhd_idx\[1, 2, 0\] = -1"):
        call(nbhd_idx=bad)
    with pytest.raises(ValueError, match="backend"):
        pointconv(penult, values, idx, mask, weight, bias, backend="cuda")
    # The raw op checks what it reads.
    op = torch.ops.equiops.pointconv
    with pytest.raises(IndexError, match="not a point id"):
        op(penult, values, bad, mask, weight, bias, False, "cpu")
    with pytest.raises(TypeError, match="nbhd_mask must be bool"):
        op(penult, values, idx, mask.to(torch.uint8), weight, bias, False, "cpu")
    with pytest.raises(ValueError, match=r"weight must have shape \[5, 12\]"):
        op(penult, values, idx, mask, weight[:, :10], bias, False, "cpu")
    with pytest.raises(ValueError, match=r"bias must have shape \[5\]"):
        op(penult, values, idx, mask, weight, bias[:2], False, "cpu")
    with pytest.raises(TypeError, match="values must have dtype"):
        op(penult, values.float(), idx, mask, weight, bias, False, "cpu")
    with pytest.raises(ValueError, match=r"nbhd_idx must have shape \[2, 6, 3\]"):
        op(penult, values, idx[:1], mask, weight, bias, False, "cpu")
    with pytest.raises(ValueError, match="backend 'triton' cannot run on CPU tensors"):
        op(penult, values, idx, mask, weight, bias, False, "triton")
    with pytest.raises(ValueError, match=r"grad_out must have shape \[2, 6, 5\]"):
        torch.ops.equiops.pointconv_backward(torch.zeros(2, 6, 4, dtype=torch.float64), penult, values, idx, mask,
                                             weight, bias, False, "cpu")
