"""Tensor products, bad input: invalid instructions and options (build_problem and the
modules), bad tensors to the modules, malformed problem strings and bad tensors to the
raw operators, bad backends, bad e3nn conversions. Each error must have the right type
and name what is wrong."""

from __future__ import annotations

import pytest
import torch

import equiops
from equiops.tp_problem import build_problem

OPS = torch.ops.equiops


def _tp(in1="2x0e+1x1o", in2="1x0e+1x1o", out="2x0e+1x1o+1x1e", instructions=None, **kwargs):
    if instructions is None:
        instructions = [(0, 0, 0, "uvw", True), (1, 1, 2, "uvw", True), (1, 0, 1, "uvu", False)]
    return equiops.TensorProduct(in1, in2, out, instructions, **kwargs)


# --------------------------------------------------------------- instructions
@pytest.mark.parametrize("build", ["build_problem", "module"])
@pytest.mark.parametrize(
    "in1, in2, out, ins, exc, match",
    [
        # parity: 1o x 1o gives even irreps
        ("1x1o", "1x1o", "1x1o", [(0, 0, 0, "uvw", True)], ValueError, r"instruction 0: parity violated: 1o x 1o cannot give 1o"),
        # selection rule: 1 x 1 cannot give 3
        ("1x1o", "1x1o", "1x3e", [(0, 0, 0, "uvw", True)], ValueError,
         r"instruction 0: selection rule violated: 1o x 1o gives degrees 0\.\.2, not 3"),
        ("1x0e", "1x2e", "1x0e", [(0, 0, 0, "uvw", True)], ValueError, r"selection rule violated"),
        # indices out of range, in any position
        ("1x0e", "1x0e", "1x0e", [(0, 0, 0, "uvw", True), (1, 0, 0, "uvw", True)], ValueError,
         r"instruction 1: i_in1=1 is out of range for 1x0e \(1 irreps\)"),
        ("1x0e", "1x0e", "1x0e", [(0, 2, 0, "uvw", True)], ValueError, r"instruction 0: i_in2=2 is out of range"),
        ("1x0e", "1x0e", "1x0e", [(0, 0, -1, "uvw", True)], ValueError, r"instruction 0: i_out=-1 is out of range"),
        ("1x0e", "1x0e", "1x0e", [(0.0, 0, 0, "uvw", True)], TypeError, r"instruction 0: i_in1 must be an int"),
        ("1x0e", "1x0e", "1x0e", [(True, 0, 0, "uvw", True)], TypeError, r"i_in1 must be an int"),
        # modes
        ("1x0e", "1x0e", "1x0e", [(0, 0, 0, "uvx", True)], ValueError, r"instruction 0: mode must be one of .*'uvx'"),
        ("1x0e", "1x0e", "1x0e", [(0, 0, 0, "uvw", False)], ValueError,
         r"instruction 0: mode 'uvw' must have weights \(has_weight=True\)"),
        ("2x0e", "2x0e", "1x0e", [(0, 0, 0, "u<vw", False)], ValueError, r"mode 'u<vw' must have weights"),
        ("1x0e", "1x0e", "1x0e", [(0, 0, 0, "uvw", 1)], TypeError, r"has_weight must be a bool"),
        ("1x0e", "1x0e", "1x0e", [(0, 0, 0, "uvw", True, "big")], TypeError, r"path_weight must be a number"),
        ("1x0e", "1x0e", "1x0e", [(0, 0, 0, "uvw")], ValueError, r"instruction 0 must be \(i_in1, i_in2, i_out, mode"),
        ("1x0e", "1x0e", "1x0e", [(0, 0, 0, "uvw", True, 1.0, 2)], ValueError, r"instruction 0 must be"),
        # multiplicities of each constrained mode
        ("2x0e", "3x0e", "3x0e", [(0, 0, 0, "uvu", True)], ValueError,
         r"mode 'uvu' needs mul_in1 == mul_out, got mul_in1=2, mul_in2=3, mul_out=3"),
        ("2x0e", "3x0e", "2x0e", [(0, 0, 0, "uvv", True)], ValueError, r"mode 'uvv' needs mul_in2 == mul_out"),
        ("2x0e", "3x0e", "2x0e", [(0, 0, 0, "uuw", True)], ValueError, r"mode 'uuw' needs mul_in1 == mul_in2"),
        ("2x0e", "2x0e", "2x0e", [(0, 0, 0, "uuw", False)], ValueError, r"unweighted 'uuw' needs mul_out == 1, got 2"),
        ("2x0e", "2x0e", "3x0e", [(0, 0, 0, "uuu", True)], ValueError, r"mode 'uuu' needs mul_in1 == mul_in2 == mul_out"),
        ("2x0e", "3x0e", "5x0e", [(0, 0, 0, "uvuv", True)], ValueError, r"mode 'uvuv' needs mul_in1 \* mul_in2 == mul_out"),
        ("3x0e", "3x0e", "2x0e", [(0, 0, 0, "uvu<v", True)], ValueError, r"mode 'uvu<v' needs mul_in1 == mul_in2 and"),
        ("3x0e", "2x0e", "1x0e", [(0, 0, 0, "uvu<v", True)], ValueError, r"mode 'uvu<v' needs"),
        ("3x0e", "2x0e", "1x0e", [(0, 0, 0, "u<vw", True)], ValueError, r"mode 'u<vw' needs mul_in1 == mul_in2"),
    ],
)
def test_invalid_instructions(build, in1, in2, out, ins, exc, match):
    with pytest.raises(exc, match=match):
        if build == "build_problem":
            build_problem(in1, in2, out, ins)
        else:
            equiops.TensorProduct(in1, in2, out, ins)


def test_invalid_options():
    with pytest.raises(ValueError, match=r"irrep_normalization must be 'component', 'norm' or 'none', got 'integral'"):
        _tp(irrep_normalization="integral")
    with pytest.raises(ValueError, match=r"path_normalization must be 'element', 'path' or 'none', got 'paths'"):
        _tp(path_normalization="paths")
    with pytest.raises(ValueError, match=r"in1_var must have one entry per irrep \(2\), got 1"):
        _tp(in1_var=[1.0])
    with pytest.raises(ValueError, match=r"out_var must have one entry per irrep \(3\), got 4"):
        _tp(out_var=[1.0] * 4)
    with pytest.raises(ValueError, match=r"internal_weights=True needs shared_weights=True"):
        _tp(internal_weights=True, shared_weights=False)
    with pytest.raises(TypeError, match=r"instructions must be a list of tuples, got str"):
        equiops.TensorProduct("1x0e", "1x0e", "1x0e", "uvw")
    with pytest.raises(ValueError, match=r"backend must be one of .*got 'gpu'"):
        _tp(backend="gpu")
    with pytest.raises(ValueError, match=r"backend must be one of"):
        equiops.ChannelWiseTensorProduct("2x0e", "1x0e", "2x0e", backend="fast")
    with pytest.raises(ValueError, match=r"filter_ir_out .* must be an iterable of irreps"):
        equiops.FullTensorProduct("1x0e", "1x1o", filter_ir_out=["x"])
    with pytest.raises(ValueError, match=r"ElementwiseTensorProduct: the inputs must have the same number of irreps"):
        equiops.ElementwiseTensorProduct("2x0e", "3x0e")
    with pytest.raises(ValueError, match=r"Instruction 2 has no weights"):
        _tp().weight_view_for_instruction(2)


# -------------------------------------------------------------- module inputs
def _inputs(tp, N=3, dtype=torch.float64):
    return (torch.randn(N, tp.irreps_in1.dim, dtype=dtype), torch.randn(N, tp.irreps_in2.dim, dtype=dtype))


def test_bad_module_inputs():
    shared = _tp(internal_weights=False)
    x, y = _inputs(shared)
    w = torch.randn(shared.weight_numel, dtype=torch.float64)
    W = shared.weight_numel
    with pytest.raises(ValueError, match=r"TensorProduct: x must have shape \(\.\.\., 5\) for 2x0e\+1x1o, got \(3, 4\)"):
        shared(x[:, :4], y, w)
    with pytest.raises(ValueError, match=r"TensorProduct: y must have shape \(\.\.\., 4\) for 1x0e\+1x1o, got \(3, 5\)"):
        shared(x, torch.cat([y, y[:, :1]], 1), w)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 5\)"):
        shared(torch.tensor(1.0, dtype=torch.float64), y, w)
    with pytest.raises(TypeError, match=r"TensorProduct: x must be a tensor, got list"):
        shared(x.tolist(), y, w)
    with pytest.raises(ValueError, match=rf"TensorProduct: shared weights must have shape \({W},\), got \({W - 1},\)"):
        shared(x, y, w[:-1])
    with pytest.raises(ValueError, match=rf"shared weights must have shape \({W},\), got \(3, {W}\)"):
        shared(x, y, w.expand(3, W))
    with pytest.raises(ValueError, match=r"TensorProduct: weights must be given: this product has no internal weights"):
        shared(x, y)
    with pytest.raises(TypeError, match=r"weight must be a tensor or a list of tensors, got ndarray"):
        shared(x, y, w.numpy())
    with pytest.raises(ValueError, match=r"expected 2 weight tensors \(one per weighted path\), got 1"):
        shared(x, y, [w])
    # dtypes and devices
    with pytest.raises(TypeError, match=r"TensorProduct: y must have dtype torch.float64 like x, got torch.float32"):
        shared(x, y.float(), w)
    with pytest.raises(TypeError, match=r"TensorProduct: weight must have dtype torch.float64 like x, got torch.float32"):
        shared(x, y, w.float())
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor, got torch.int64"):
        shared(x.long(), y.long(), w)
    with pytest.raises(ValueError, match=r"TensorProduct: y must be on cpu like x, got meta"):
        shared(x, y.to("meta"), w)
    with pytest.raises(ValueError, match=r"TensorProduct: weight must be on cpu like x, got meta"):
        shared(x, y, w.to("meta"))
    # leading dimensions
    with pytest.raises(ValueError, match=r"leading dimensions do not broadcast: x \(3, 5\), y \(2, 4\)"):
        shared(x, y[:2], w)

    unshared = _tp(shared_weights=False)
    wu = torch.randn(3, unshared.weight_numel, dtype=torch.float64)
    with pytest.raises(ValueError, match=rf"unshared weights must have shape \(\.\.\., {W}\) with a batch dimension, "
                                         rf"got \({W},\)"):
        unshared(x, y, wu[0])
    with pytest.raises(ValueError, match=rf"unshared weights must have shape \(\.\.\., {W}\).*got \(3, {W + 1}\)"):
        unshared(x, y, torch.cat([wu, wu[:, :1]], 1))
    with pytest.raises(ValueError, match=rf"leading dimensions do not broadcast: x \(3, 5\), y \(3, 4\), weight \(2, {W}\)"):
        unshared(x, y, wu[:2])
    with pytest.raises(ValueError, match=r"weights must be given"):
        unshared(x, y)

    # CPU kernels take float32/float64 only; "auto" falls back to the reference instead
    half = _tp(backend="cpu")
    xh, yh = _inputs(half, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match=r"TensorProduct: the CPU kernels take float32 or float64, got torch.bfloat16"):
        half.to(torch.bfloat16)(xh, yh)
    auto = _tp(backend="auto").to(torch.bfloat16)
    assert auto(xh, yh).dtype == torch.bfloat16
    # GPU backends on CPU tensors say why
    for name in ("cuda", "triton"):
        with pytest.raises((ValueError, RuntimeError), match=rf"backend '{name}'"):
            _tp(backend=name).double()(x, y)


def test_bad_process_backend():
    with pytest.raises(ValueError, match=r"backend must be one of"):
        with equiops.use_backend("nope"):
            pass
    with pytest.raises(ValueError, match=r"backend must be one of"):
        equiops.set_backend("nope")


# ------------------------------------------------------------------ raw operators
def _raw(N=3, dtype=torch.float64):
    p = build_problem("2x0e+1x1o", "1x0e+1x1o", "2x0e+1x1o+1x1e",
                      [(0, 0, 0, "uvw", True), (1, 1, 2, "uvw", True), (1, 0, 1, "uvu", False)])
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    return p, p.encode(), r(N, p.dim1), r(N, p.dim2), r(1, p.dim_w), r(N, p.dim_out)


def _mutate(s, line, field, value):
    lines = s.split("\n")
    t = lines[line].split()
    t[field] = value
    lines[line] = " ".join(t)
    return "\n".join(lines)


def test_malformed_problem_strings():
    p, s, x1, x2, w, go = _raw()
    bad = {
        "": r"malformed problem string",
        "hello": r"malformed problem string",
        s.replace("equiops-tp-1", "equiops-tp-9"): r"malformed problem string",
        s.split("\n")[0]: r"malformed problem string",  # the paths are missing
        s.replace("uvu", "uvz"): r"malformed problem string.*(connection mode|mode).*uvz",
        _mutate(s, 1, 11, "notanumber"): r"malformed problem string",
        s[: len(s) - 30]: r"malformed problem string",  # truncated nonzeros
        _mutate(s, 0, 1, "3"): r"malformed problem string.*does not fit",  # dim1 too small for path 0
        _mutate(s, 1, 7, "4"): r"malformed problem string.*does not fit",  # off1 beyond dim1
        _mutate(s, 1, 10, "100"): r"malformed problem string.*does not fit",  # weights beyond dim_w
        _mutate(s, 1, 15, "7"): r"malformed problem string.*CG index out of range",  # k of a nonzero
    }
    for text, match in bad.items():
        args = (x1, x2, w, text, "cpu")
        with pytest.raises(ValueError, match=match):
            OPS.tensor_product(*args)
        with pytest.raises(ValueError, match=match):
            OPS.tensor_product_backward(go, x1, x2, w, text, [True, True, True], "cpu")
        with pytest.raises(ValueError, match=match):
            OPS.tensor_product_double_backward(None, None, None, go, x1, x2, w, text, "cpu")
    # the Python decoder (fake kernels, reference) rejects them too
    from equiops.tp_problem import decode

    for text in ("", "hello", s.replace("equiops-tp-1", "equiops-tp-9"), s.replace("uvu", "uvz")):
        with pytest.raises(ValueError, match=r"malformed tensor-product problem string"):
            decode(text)


def test_bad_raw_operator_tensors():
    p, s, x1, x2, w, go = _raw()
    with pytest.raises(ValueError, match=r"equiops.tensor_product: x1 must have shape \(rows, 5\), got \[3, 4\]"):
        OPS.tensor_product(x1[:, :4], x2, w, s, "cpu")
    with pytest.raises(ValueError, match=r"x2 must have shape \(rows, 4\)"):
        OPS.tensor_product(x1, x2[:, :3], w, s, "cpu")
    with pytest.raises(ValueError, match=rf"weight must have shape \(rows, {p.dim_w}\)"):
        OPS.tensor_product(x1, x2, w[:, 1:], s, "cpu")
    with pytest.raises(ValueError, match=r"x1 must have shape"):
        OPS.tensor_product(x1.reshape(-1), x2, w, s, "cpu")
    with pytest.raises(ValueError, match=r"x2 has 2 rows but x1 has 3; every input must have 1 or N rows"):
        OPS.tensor_product(x1, x2[:2], w, s, "cpu")
    with pytest.raises(TypeError, match=r"x2 must have dtype Double like x1, got Float"):
        OPS.tensor_product(x1, x2.float(), w, s, "cpu")
    with pytest.raises(TypeError, match=r"weight must have dtype Double like x1, got Float"):
        OPS.tensor_product(x1, x2, w.float(), s, "cpu")
    with pytest.raises(TypeError, match=r"the CPU kernels take float32 or float64, got x1 of dtype Half"):
        OPS.tensor_product(x1.half(), x2.half(), w.half(), s, "cpu")
    for backend in ("torch", "cuda", "nope"):
        with pytest.raises(ValueError, match=rf"backend '{backend}' cannot run on CPU tensors"):
            OPS.tensor_product(x1, x2, w, s, backend)
    # backward / double backward
    with pytest.raises(ValueError, match=rf"grad_out must have shape \(rows, {p.dim_out}\)"):
        OPS.tensor_product_backward(go[:, 1:], x1, x2, w, s, [True, True, True], "cpu")
    with pytest.raises(ValueError, match=r"grad_out must have N = 3 rows, got 1"):
        OPS.tensor_product_backward(go[:1], x1, x2, w, s, [True, True, True], "cpu")
    with pytest.raises(TypeError, match=r"grad_out must have dtype Double like x1"):
        OPS.tensor_product_backward(go.float(), x1, x2, w, s, [True, True, True], "cpu")
    with pytest.raises(ValueError, match=r"backend 'torch' cannot run on CPU tensors"):
        OPS.tensor_product_backward(go, x1, x2, w, s, [True, True, True], "torch")
    with pytest.raises(ValueError, match=r"gg_x1 must have 3 rows like its input, got 2"):
        OPS.tensor_product_double_backward(x1[:2], None, None, go, x1, x2, w, s, "cpu")
    with pytest.raises(ValueError, match=r"gg_weight must have 1 rows like its input, got 3"):
        OPS.tensor_product_double_backward(None, None, w.expand(3, -1), go, x1, x2, w, s, "cpu")
    with pytest.raises(ValueError, match=r"gg_x2 must have shape \(rows, 4\)"):
        OPS.tensor_product_double_backward(None, x1, None, go, x1, x2, w, s, "cpu")
    with pytest.raises(TypeError, match=r"gg_x1 must have dtype Double like x1"):
        OPS.tensor_product_double_backward(x1.float(), None, None, go, x1, x2, w, s, "cpu")
    with pytest.raises(ValueError, match=r"grad_out must have N = 3 rows"):
        OPS.tensor_product_double_backward(None, None, None, go[:2], x1, x2, w, s, "cpu")


# ----------------------------------------------------------------- e3nn interop
def test_from_e3nn_rejects_other_modules():
    with pytest.raises(TypeError, match=r"from_e3nn expects an e3nn.o3.TensorProduct, got Linear"):
        equiops.from_e3nn(torch.nn.Linear(2, 2))
    o3 = pytest.importorskip("e3nn.o3")
    with pytest.raises(ValueError, match=r"backend must be one of"):
        equiops.from_e3nn(o3.FullyConnectedTensorProduct("1x0e", "1x0e", "1x0e"), backend="nope")
    with pytest.raises(ValueError, match=r"backend must be one of"):
        equiops.replace_e3nn_tensor_products(torch.nn.Sequential(o3.FullyConnectedTensorProduct("1x0e", "1x0e", "1x0e")),
                                             backend="nope")
