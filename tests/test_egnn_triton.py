"""Triton EGNN message kernels (kernels/egnn.py) against the plain-PyTorch reference
(equiops.reference.egnn_message, in float64; the 14 gradients by torch.autograd through
it with random cotangents on m_sum and t_sum).

Cases cover every coord_norm, silu and relu, the attention gate on and off, bc2 on and
off, tanh, c_clamp and trans_clamp set so that some values clamp, D = 0, 2 and 3, widths
that are not powers of two; in float64 (1e-10) and float32, in the deterministic CSR
variant (receiver / sender views with perms), with edges already sorted (perm None), in
the atomic variant and with only one view; random graphs with isolated receivers and
senders, duplicate edges and self-loops (not in plus_one mode, whose reference gradient
is NaN there); E == 0; bitwise reproducibility of the CSR variant; the float64
broadcast-product fallback (FP64_DOT = False).

Without a GPU the kernels run on CPU tensors under ``TRITON_INTERPRET=1`` (slow: tiny
graphs, 16-row blocks). ``EQUIOPS_TRITON_TEST_DEVICE=cuda`` runs the same tests on CUDA.
"""


import torch

import pytest  # noqa: E402

from conftest import triton_test_device  # noqa: E402

DEV = triton_test_device()  # skips this module when Triton cannot run here

from equiops.kernels import egnn as K  # noqa: E402
from equiops.reference.egnn_message import edge_messages, egnn_message  # noqa: E402


# Max |error| allowed, relative to max(1, the expected result's largest magnitude), by
# dtype and derivative order (0 forward, 1 backward).
TOL = {torch.float64: (1e-10, 1e-10), torch.float32: (2e-5, 2e-5)}

GRADS = ("node_i", "node_j", "coord", "edge_attr", "w_radial", "w_edge", "w2", "b2", "w_att", "b_att",
         "wc1", "bc1", "wc2", "bc2")

# name: (n, E, H1, M, Hc, D, act, coord_norm, attention, bc2, tanh, c_clamp, trans_clamp, self-loops)
CASES = {
    "none-att": (19, 36, 16, 16, 16, 2, "silu", "none", True, True, False, False, False, True),
    "detached-tanh-w12": (7, 20, 12, 16, 12, 0, "silu", "detached", False, True, True, False, False, True),
    "plus_one-clamps": (7, 20, 16, 12, 20, 2, "relu", "plus_one", True, False, False, True, True, False),
    "clamped-tanh-tclamp": (7, 20, 16, 12, 16, 3, "relu", "clamped", False, False, True, False, True, True),
}
VARIANTS = ("csr", "sorted", "atomic")
BLOCK = 16  # rows per program (the smallest): several edge / node blocks on tiny graphs


def _graph(n, E, seed, self_loops):
    """Unsorted random edges; receiver n - 1 and sender 0 isolated; a duplicate edge;
    self-loops where allowed (else none)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(1, n, (E,), generator=g)
    dst = torch.randint(0, n - 1, (E,), generator=g)
    if self_loops:
        src[5], dst[5] = 2, 2
    else:
        dst = torch.where(src == dst, (dst + 1) % (n - 1), dst)
        src = torch.where(src == dst, (src % (n - 1)) + 1, src)
        assert not (src == dst).any()
    src[3], dst[3] = src[0], dst[0]  # duplicate of edge 0
    return src, dst


def _csr(keys, n):
    perm = torch.sort(keys, stable=True).indices
    return perm, torch.searchsorted(keys[perm], torch.arange(n + 1))


def _midpoint(values, q):
    """A threshold between two neighbouring values of ``values`` near quantile ``q``
    (so float32 and float64 clamp the same entries)."""
    v = torch.sort(values.flatten()).values
    k = min(max(int(q * v.numel()), 1), v.numel() - 1)
    return float(v[k - 1] + v[k]) / 2


def _case(name, dtype, seed=0):
    """float64 CPU tensors (values rounded to ``dtype``): ``(tensors, options, n)`` with
    tensors ``node_i, node_j, coord, edge_attr, src, dst, <10 weights>, grad_m, grad_t``."""
    n, E, H1, M, Hc, D, act, norm, att, has_bc2, tanh, cclamp, tclamp, loops = CASES[name]
    g = torch.Generator().manual_seed(seed + 1)

    def r(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).double()

    src, dst = _graph(n, E, seed, loops)
    w = [r(H1, scale=0.3), r(H1, D, scale=0.5), r(M, H1, scale=0.4), r(M, scale=0.3),
         r(M, scale=0.4) if att else None, r(1) if att else None, r(Hc, M, scale=0.4), r(Hc, scale=0.3),
         r(Hc, scale=0.4), r(1) if has_bc2 else None]
    x = [r(n, H1), r(n, H1), r(n, 3), r(E, D)]
    opts = [act, norm, tanh, 0.0, 0.0]
    if cclamp or tclamp:  # thresholds that clamp some values (not all)
        d = x[2][dst] - x[2][src]
        _, t = edge_messages(*x, src, dst, *w, act, "none", tanh)
        k = d.abs().argmax(1, keepdim=True)
        keep = d.abs().amax(1) > 0
        c = (t.gather(1, k) / d.gather(1, k))[keep]
        if cclamp:
            opts[3] = _midpoint(c.abs(), 0.5)
        if tclamp:
            _, t = edge_messages(*x, src, dst, *w, *opts)
            opts[4] = _midpoint(t.abs(), 0.7)
    cot = [r(n, M), r(n, 3)]
    return x + [src, dst] + w + cot, opts, n


def _dev(ts, dtype=None):
    return [None if t is None else t.to(DEV, dtype if t.is_floating_point() else None).contiguous() for t in ts]


def _reference(ts, opts):
    """Forward ``(m_sum, t_sum)`` and the 14 gradients (None for an absent weight)."""
    x, (src, dst), w, (gm, gt) = ts[:4], ts[4:6], ts[6:16], ts[16:]
    leaves = [None if t is None else t.clone().requires_grad_() for t in x + w]
    m, t = egnn_message(*leaves[:4], src, dst, *leaves[4:], *opts)
    inputs = [v for v in leaves if v is not None]
    grads = iter(torch.autograd.grad((m, t), inputs, (gm, gt), allow_unused=True, materialize_grads=True))
    grads = [None if v is None else next(grads) for v in leaves]
    # A self-loop's edge terms do not depend on coord (d = coord[i] - coord[i] is 0), but
    # autograd adds and subtracts its d-gradient (up to |g| / 1e-8 in the normalised
    # modes) at the node, with a rounding residue; the kernels skip it. The exact coord
    # gradient: the same graph without its self-loops.
    keep = src != dst
    coord = x[2].clone().requires_grad_()
    m2, t2 = egnn_message(x[0], x[1], coord, x[3][keep], src[keep], dst[keep], *w, *opts)
    grads[2] = torch.autograd.grad((m2, t2), coord, (gm, gt))[0]
    return (m.detach(), t.detach()), grads


def _check(got, want, dtype, order, what=""):
    if want is None:
        assert got is None, what
        return
    assert got.dtype == dtype and got.device == DEV and got.shape == want.shape, (what, got.dtype, got.shape, want.shape)
    assert torch.isfinite(want).all(), what
    got = got.cpu().double()
    scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
    err = (got - want).abs().max().item() if want.numel() else 0.0
    assert err <= TOL[dtype][order] * scale, f"{what}: max error {err:.3g} at scale {scale:.3g}"


def _sorted(ts, key):
    """The inputs with the edges reordered by ``key`` ("dst" or "src")."""
    order = torch.sort(ts[5] if key == "dst" else ts[4], stable=True).indices
    ts = list(ts)
    ts[3], ts[4], ts[5] = ts[3][order], ts[4][order], ts[5][order]
    return ts


def _views(variant, src, dst, n):
    """(dst_perm, dst_indptr, src_perm, src_indptr) for the kernels."""
    if variant == "atomic":
        return None, None, None, None
    dv, sv = _csr(dst, n), _csr(src, n)
    if variant == "sorted":  # the edges are sorted by dst: no perm on that side
        assert torch.equal(dv[0], torch.arange(dst.numel()))
        dv = (None, dv[1])
    if variant == "dst-only":
        sv = (None, None)
    return dv + sv


def _run(ts, opts, n, dtype, variant):
    x, (src, dst), w, (gm, gt) = ts[:4], ts[4:6], ts[6:16], ts[16:]
    dp, di, sp, si = _dev(_views(variant, src, dst, n))
    xd, wd, idx = _dev(x, dtype), _dev(w, dtype), _dev((src, dst))
    out = K.message_forward(*xd, *idx, dp, di, *wd, *opts, block_nodes=BLOCK, block_edges=BLOCK)
    grads = K.message_backward(*_dev((gm, gt), dtype), *xd, *idx, dp, di, sp, si, *wd, *opts, block_edges=BLOCK)
    return out, grads


def _compare(ts, opts, n, dtype, variant):
    (out, grads), (want, wgrads) = _run(ts, opts, n, dtype, variant), _reference(ts, opts)
    assert len(grads) == 14
    for a, e, what in zip(out, want, ("m_sum", "t_sum")):
        _check(a, e, dtype, 0, what)
    for a, e, what in zip(grads, wgrads, GRADS):
        _check(a, e, dtype, 1, what)


def _params():
    out = []
    for case in CASES:
        for dtype, dname in ((torch.float64, "float64"), (torch.float32, "float32")):
            for variant in VARIANTS:
                if dtype == torch.float32 and variant == "sorted":
                    continue  # same code path as csr
                out.append(pytest.param(case, dtype, variant, id=f"{case}-{dname}-{variant}"))
    return out


# --------------------------------------------------------------------------------------
# Against the reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case,dtype,variant", _params())
def test_against_reference(case, dtype, variant):
    ts, opts, n = _case(case, dtype)
    if variant == "sorted":
        ts = _sorted(ts, "dst")
    _compare(ts, opts, n, dtype, variant)


def test_clamps_are_active():
    """Each chosen threshold clamps some edges' values (not all) in the clamp cases."""
    for case in ("plus_one-clamps", "clamped-tanh-tclamp"):
        ts, opts, n = _case(case, torch.float64)
        x, (src, dst), w = ts[:4], ts[4:6], ts[6:16]
        _, t_off = edge_messages(*x, src, dst, *w, *opts[:3])
        for k in (3, 4):
            if opts[k] > 0:
                one = opts[:3] + [opts[3] if k == 3 else 0.0, opts[4] if k == 4 else 0.0]
                _, t_on = edge_messages(*x, src, dst, *w, *one)
                changed = (t_on != t_off).any(1)
                assert changed.any() and not changed.all(), (case, k)


def test_sender_sorted_and_one_view(monkeypatch):
    """Edges sorted by src (src perm None); only the dst view (senders atomic); one
    backward program looping over every edge block (REDUCE_PROGRAMS = 1)."""
    dtype = torch.float64
    ts, opts, n = _case("none-att", dtype, seed=3)
    ts = _sorted(ts, "src")
    x, (src, dst), w, (gm, gt) = ts[:4], ts[4:6], ts[6:16], ts[16:]
    _, wgrads = _reference(ts, opts)
    sp, si = _csr(src, n)
    assert torch.equal(sp, torch.arange(src.numel()))
    dp, di = _csr(dst, n)
    monkeypatch.setattr(K, "REDUCE_PROGRAMS", 1)
    xd, wd, idx, cot = _dev(x, dtype), _dev(w, dtype), _dev((src, dst)), _dev((gm, gt), dtype)
    for views in ((dp, di, None, si), (dp, di, None, None)):
        grads = K.message_backward(*cot, *xd, *idx, *_dev(views), *wd, *opts, block_edges=BLOCK)
        for a, e, what in zip(grads, wgrads, GRADS):
            _check(a, e, dtype, 1, what)


def test_fp64_broadcast_fallback(monkeypatch):
    """float64 without tl.dot (the broadcast multiply-and-sum products)."""
    monkeypatch.setattr(K, "FP64_DOT", False)
    ts, opts, n = _case("plus_one-clamps", torch.float64, seed=5)
    _compare(ts, opts, n, torch.float64, "csr")


# --------------------------------------------------------------------------------------
# Determinism and empty inputs
# --------------------------------------------------------------------------------------


def test_csr_bitwise_reproducible():
    dtype = torch.float32
    ts, opts, n = _case("none-att", dtype, seed=7)
    out_a, grads_a = _run(ts, opts, n, dtype, "csr")
    out_b, grads_b = _run(ts, opts, n, dtype, "csr")
    for u, v in zip(out_a + tuple(grads_a), out_b + tuple(grads_b)):
        assert (u is None and v is None) or torch.equal(u, v)


@pytest.mark.parametrize("variant", ["csr", "atomic"])
def test_no_edges(variant):
    dtype = torch.float64
    ts, opts, n = _case("plus_one-clamps", dtype)
    x, w, (gm, gt) = ts[:4], ts[6:16], ts[16:]
    e = torch.zeros(0, dtype=torch.int64)
    x[3] = x[3][:0]
    dp, di, sp, si = _dev(_views(variant, e, e, n))
    xd, wd = _dev(x, dtype), _dev(w, dtype)
    m, t = K.message_forward(*xd, *_dev((e, e)), dp, di, *wd, *opts)
    assert m.shape == (n, w[2].shape[0]) and t.shape == (n, 3) and not m.any() and not t.any()
    grads = K.message_backward(*_dev((gm, gt), dtype), *xd, *_dev((e, e)), dp, di, sp, si, *wd, *opts)
    for g, ref, what in zip(grads, xd + wd, GRADS):
        if ref is None:
            assert g is None, what
        else:
            assert g.shape == ref.shape and g.device == DEV and not g.any(), what


def test_bad_arguments():
    dtype = torch.float64
    ts, opts, n = _case("plus_one-clamps", dtype)
    x, (src, dst), w = _dev(ts[:4], dtype), _dev(ts[4:6]), _dev(ts[6:16], dtype)
    with pytest.raises(ValueError, match="act must be one of"):
        K.message_forward(*x, src, dst, None, None, *w, "gelu", *opts[1:])
    with pytest.raises(ValueError, match="dst_perm is given without dst_indptr"):
        K.message_forward(*x, src, dst, src, None, *w, *opts)
    with pytest.raises(ValueError, match="dst_indptr must be"):
        K.message_forward(*x, src, dst, None, src[:3], *w, *opts)
    with pytest.raises(ValueError, match="block_nodes must be"):
        K.message_forward(*x, src, dst, None, _dev([_csr(ts[5], n)[1]])[0], *w, *opts, block_nodes=8)
