"""Triton PointConv kernels (kernels/pointconv.py) against the plain-PyTorch reference
(equiops.reference.pointconv, in float64; the gradients by torch.autograd through it).

Forward and the four gradients in float64 (1e-10) and float32 (2e-5, relative to the
result's largest magnitude), mean on and off, bias on and off, the values gradient by
atomics and by the deterministic sort-and-reduce; shapes with several weight chunks,
several output blocks and a penult gradient split over value-column blocks (its
partials summed, or atomics), K = 1, fully masked queries (exactly the bias), duplicate
neighbours; K = 0 and no queries; the float64 broadcast-product fallback (FP64_DOT =
False); the CUDA dispatch glue of equiops.ops.pointconv.

Without a GPU the kernels run on CPU tensors under ``TRITON_INTERPRET=1`` (slow: tiny
shapes). ``EQUIOPS_TRITON_TEST_DEVICE=cuda`` runs the same tests on CUDA.
"""


import torch

import pytest  # noqa: E402

from conftest import triton_test_device  # noqa: E402

DEV = triton_test_device()  # skips this module when Triton cannot run here

import triton  # noqa: E402

from equiops.kernels import pointconv as K  # noqa: E402
from equiops.reference.pointconv import pointconv as reference  # noqa: E402

TOL = {torch.float64: 1e-10, torch.float32: 2e-5}

# name: (B, m, n, K, C, ci, co)
CASES = {
    "small": (2, 9, 7, 3, 3, 5, 6),
    # 4 channel groups x 2 value blocks of weight chunks; the penult gradient split in 2.
    "split": (1, 19, 9, 3, 16, 40, 17),
    # K = 1; 2 output blocks of 64 in the forward and weight gradient.
    "k1-wide-out": (2, 5, 4, 1, 2, 3, 70),
}


def _case(name, dtype, seed=0, bias=True):
    """float64 CPU tensors with values rounded to ``dtype``: query 0 fully masked, a
    duplicate neighbour, and a cotangent."""
    B, m, n, Kn, C, ci, co = CASES[name]
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).double()

    penult, values = r(B, m, Kn, C), r(B, n, ci)
    idx = torch.randint(0, n, (B, m, Kn), generator=g)
    mask = torch.rand(B, m, Kn, generator=g) < 0.7
    mask[:, 0] = False
    if Kn > 1:
        idx[:, 1, 1] = idx[:, 1, 0]
        mask[:, 1, :2] = True
    weight, b = r(co, C * ci, scale=(C * ci) ** -0.5), (r(co) if bias else None)
    cot = r(B, m, co)
    return penult, values, idx, mask, weight, b, cot


def _reference(penult, values, idx, mask, weight, bias, cot, mean):
    leaves = [t.clone().requires_grad_() for t in (penult, values, weight)] + (
        [bias.clone().requires_grad_()] if bias is not None else [])
    out = reference(leaves[0], leaves[1], idx, mask, leaves[2], leaves[3] if bias is not None else None, mean)
    grads = list(torch.autograd.grad(out, leaves, cot))
    return out.detach(), grads + ([None] if bias is None else [])


def _dev(t, dtype=None):
    if t is None:
        return None
    return t.to(DEV, dtype if t.is_floating_point() else None).contiguous()


def _run(case, dtype, mean, deterministic):
    penult, values, idx, mask, weight, bias, cot = case
    args = [_dev(penult, dtype), _dev(values, dtype), _dev(idx), _dev(mask), _dev(weight, dtype), _dev(bias, dtype)]
    out = K.pointconv_forward(*args, mean)
    grads = K.pointconv_backward(_dev(cot, dtype), *args, mean, deterministic=deterministic)
    return out, grads


def _check(got, want, dtype, what):
    if want is None:
        assert got is None, what
        return
    assert got.dtype == dtype and got.device == DEV and got.shape == want.shape, (what, got.dtype, got.shape)
    got = got.cpu().double()
    scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
    err = (got - want).abs().max().item() if want.numel() else 0.0
    assert err <= TOL[dtype] * scale, f"{what}: max error {err:.3g} at scale {scale:.3g}"


def _compare(name, dtype, mean, deterministic, bias=True, seed=0):
    case = _case(name, dtype, seed=seed, bias=bias)
    out, grads = _run(case, dtype, mean, deterministic)
    want, wgrads = _reference(*case, mean)
    _check(out, want, dtype, "out")
    assert torch.isfinite(out.cpu()).all()
    if bias:
        assert torch.equal(out[:, 0].cpu().double(), case[5].expand(out.shape[0], -1))  # fully masked: the bias
    for g, w, what in zip(grads, wgrads, ("penult", "values", "weight", "bias")):
        _check(g, w, dtype, what)


# (case, dtype, mean, deterministic, bias)
PARAMS = [
    ("small", torch.float64, False, False, True),
    ("small", torch.float64, True, True, False),
    ("small", torch.float32, True, False, True),
    ("split", torch.float64, True, True, True),
    ("split", torch.float64, False, False, False),
    ("split", torch.float32, False, True, True),
    ("k1-wide-out", torch.float64, True, False, True),
    ("k1-wide-out", torch.float32, False, True, False),
]


@pytest.mark.parametrize("name,dtype,mean,deterministic,bias", PARAMS,
                         ids=[f"{p[0]}-{str(p[1])[6:]}-{'mean' if p[2] else 'sum'}-{'det' if p[3] else 'atomic'}-"
                              f"{'bias' if p[4] else 'nobias'}" for p in PARAMS])
def test_against_reference(name, dtype, mean, deterministic, bias):
    _compare(name, dtype, mean, deterministic, bias)


def test_blocks_cover_the_split_paths():
    """The "split" case really has several weight chunks and a split penult gradient."""
    C, ci, co = CASES["split"][4:]
    CC, BI, _, _, BI2 = K._blocks(C, ci, co)
    assert triton.cdiv(C, CC) > 1 and triton.cdiv(ci, BI) > 1 and triton.cdiv(ci, BI2) > 1
    assert triton.cdiv(CASES["k1-wide-out"][-1], K._blocks(*CASES["k1-wide-out"][4:])[2]) > 1


def test_deterministic_is_bitwise_reproducible():
    case = _case("small", torch.float32, seed=3)
    a = _run(case, torch.float32, True, True)
    b = _run(case, torch.float32, True, True)
    assert torch.equal(a[0], b[0])
    for u, v in zip(a[1], b[1]):
        assert torch.equal(u, v)


def test_fp64_broadcast_fallback(monkeypatch):
    monkeypatch.setattr(K, "FP64_DOT", False)
    _compare("small", torch.float64, True, False, seed=5)


def test_no_neighbours_and_no_queries():
    dtype = torch.float64
    for shape in ((2, 4, 3, 0, 2, 3, 5), (2, 0, 3, 2, 2, 3, 5)):
        B, m, n, Kn, C, ci, co = shape
        penult, values = torch.randn(B, m, Kn, C, dtype=dtype), torch.randn(B, n, ci, dtype=dtype)
        idx, mask = torch.zeros(B, m, Kn, dtype=torch.int64), torch.ones(B, m, Kn, dtype=torch.bool)
        weight, bias, cot = torch.randn(co, C * ci, dtype=dtype), torch.randn(co, dtype=dtype), torch.randn(B, m, co,
                                                                                                            dtype=dtype)
        for mean in (False, True):
            out = K.pointconv_forward(*map(_dev, (penult, values, idx, mask, weight, bias)), mean)
            want, wgrads = _reference(penult, values, idx, mask, weight, bias, cot, mean)
            assert torch.equal(out.cpu(), want)
            grads = K.pointconv_backward(_dev(cot), *map(_dev, (penult, values, idx, mask, weight, bias)), mean)
            for g, w in zip(grads, wgrads):
                assert g.shape == w.shape and torch.allclose(g.cpu(), w, rtol=0, atol=1e-12)


def test_cuda_dispatch_glue(monkeypatch):
    """equiops.ops.pointconv's CUDA implementations call these launchers (run here on the
    interpreter's CPU tensors): the output, and the four gradients with bias None -> (0,)."""
    pytest.importorskip("equiops._C")
    from equiops import backend
    from equiops.ops import pointconv as ops

    penult, values, idx, mask, weight, _, cot = _case("small", torch.float64, bias=False)
    args = [_dev(t) for t in (penult, values, idx, mask, weight)]
    out = ops._cuda_forward(*args, None, True, "triton")
    want, wgrads = _reference(penult, values, idx, mask, weight, None, cot, True)
    _check(out, want, torch.float64, "out")
    with backend.deterministic():
        grads = ops._cuda_backward(_dev(cot), *args, None, True, "triton")
    assert grads[3].shape == (0,)
    for g, w, what in zip(grads[:3], wgrads[:3], ("penult", "values", "weight")):
        _check(g, w, torch.float64, what)
    with pytest.raises(ValueError, match="no CUDA C\\+\\+ kernel"):
        ops._cuda_forward(*args, None, True, "cuda")


def test_bad_arguments():
    penult, values, idx, mask, weight, bias, cot = [_dev(t) for t in _case("small", torch.float64)]
    with pytest.raises(ValueError, match="nbhd_mask must be a torch.bool"):
        K.pointconv_forward(penult, values, idx, mask.float(), weight, bias)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        K.pointconv_forward(penult, values, idx, mask, weight[:, :4], bias)
    with pytest.raises(TypeError, match="values must have penult's dtype"):
        K.pointconv_forward(penult, values.float(), idx, mask, weight, bias)
    with pytest.raises(ValueError, match="grad_out must be"):
        K.pointconv_backward(cot[:, :2], penult, values, idx, mask, weight, bias)
