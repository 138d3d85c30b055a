"""LieConv / LieResNet on sparse neighbourhoods (``equiops.nn.lieconv``).

* Golden: the outputs recorded from the original ``LieResNet`` (mfinzi/LieConv, T(3),
  knn over all points, eval) after a strict ``load_state_dict`` (``../shared/golden/``,
  skipped with a reason where absent), 1e-9 in float64, on the fused PointConv operator
  and on the plain-PyTorch reference.
* Sparse == dense: each ``LieConv`` against a transcription of the original's all-pairs
  layer (``_dense_lieconv``: ``group.lift``-style pairs of every point, ``topk`` over
  full rows), for knn with ``k < n`` and ``k = n`` (the original's slot-mask quirk), and
  for the random ball with the same seed (the noise is drawn in the same order), with
  the query rows split into many chunks; the radius update in training; the chunk bound.
* Farthest-point subsampling against a transcription of the original's ``FPSindices``.
* Invariances: translations with garbage (NaN) in padded points for T(3); rotations in
  distribution for SE(3) (a two-sample test over random lifts); gradcheck; bad input.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from equiops.bench.lieconv import dense_lieconv
from equiops.lie import SE3, SO3, T
from equiops.nn import lieconv as lc
from equiops.nn.lieconv import BottleBlock, LieConv, LieResNet, PointConv
from conftest import num_threads

GOLDEN_FILE = Path(__file__).resolve().parents[1].parent / "shared" / "golden" / "reference_public.pt"
GOLDEN_SKIP = f"golden data not found at {GOLDEN_FILE} (it sits beside the checkout in CI, not in a user's clone)"
F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: run them on one thread (thread hand-offs dominate on a busy
    machine), restoring the setting afterwards."""
    with num_threads(1):
        yield


def _load_golden():
    if not GOLDEN_FILE.exists():
        return None
    return torch.load(GOLDEN_FILE, weights_only=False)["lieconv_t3"]


_GOLDEN = _load_golden()


def _golden_params():
    if _GOLDEN is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason=GOLDEN_SKIP), id="golden-missing")]
    return [pytest.param(c, id=f"case{i}-{c['config']['act']}-bn{int(c['config']['bn'])}") for i, c in enumerate(_GOLDEN)]


def _cloud(bs=3, n=9, chin=4, seed=0, pad=(0, 3, 5)):
    """Random float64 cloud; cloud b has its last ``pad[b]`` points masked (zeros there)."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.randn(bs, n, 3, dtype=F64, generator=g)
    values = torch.randn(bs, n, chin, dtype=F64, generator=g)
    mask = torch.ones(bs, n, dtype=torch.bool)
    for b, p in enumerate(pad[:bs]):
        if p:
            mask[b, n - p:] = False
    coords = torch.where(mask[..., None], coords, torch.zeros_like(coords))
    values = torch.where(mask[..., None], values, torch.zeros_like(values))
    return coords, values, mask


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("num_outputs", 2)
    kw.setdefault("k", 16)
    kw.setdefault("num_layers", 2)
    return LieResNet(kw.pop("chin", 4), **kw).double().eval()


# --------------------------------------------------------------------------- golden


@pytest.mark.parametrize("backend", [None, "reference"], ids=["fused-if-available", "reference"])
@pytest.mark.parametrize("case", _golden_params())
def test_golden_lieresnet(case, backend, monkeypatch):
    cfg = case["config"]
    assert cfg["group"] == "T(3)" and cfg["knn"] and cfg["liftsamples"] == 1 and cfg["mode"] == "eval"
    model = LieResNet(cfg["chin"], num_outputs=cfg["num_outputs"], k=cfg["k"], nbhd=1000, act=cfg["act"],
                      bn=cfg["bn"], num_layers=cfg["num_layers"], mean=cfg["mean"], group=T(3), knn=True,
                      fill=cfg["fill"]).double()
    model.load_state_dict(case["state_dict"], strict=True)
    model.eval()
    monkeypatch.setattr(PointConv, "backend", backend)
    out = model((case["coords"], case["values"], case["mask"]))
    torch.testing.assert_close(out, case["out"], rtol=1e-9, atol=1e-9)


def test_state_dict_layout():
    model = LieResNet(3, num_outputs=2, k=8, num_layers=1, group=T(3))
    keys = list(model.state_dict())
    for key in ("net.0.module.weight", "net.1.conv.r", "net.1.conv.weightnet.0.module.weight",
                "net.1.conv.weightnet.1.running_var", "net.1.net.5.linear.weight", "net.1.net.5.r",
                "net.2.running_mean", "net.4.module.bias"):
        assert key in keys, key
    if _GOLDEN is not None:
        cfg = _GOLDEN[1]["config"]
        model = LieResNet(cfg["chin"], num_outputs=2, k=cfg["k"], num_layers=cfg["num_layers"], bn=cfg["bn"], group=T(3))
        assert list(model.state_dict()) == list(_GOLDEN[1]["state_dict"])


# --------------------------------------------------------------------------- dense transcription of the original


def _dense_lieconv(conv: LieConv, a, q, values, mask):
    """The original ``LieConv.forward`` (ds_frac=1) on the all-pairs tensor (the
    benchmark's transcription): ``(out, nbhd_idx, nbhd_mask)``; updates ``conv.r`` in
    training (radius mode)."""
    lifted = torch.cat([a, q if q is not None else a[..., :0]], -1)
    return dense_lieconv(conv, lifted, values, mask, details=True)


def _lifted(group, coords, nsamples=1, seed=0):
    torch.manual_seed(seed)
    a, q = group.lifted_elems(coords, nsamples)
    return a, q, torch.cat([a, q if q is not None else a[..., :0]], -1)


def _neighbour_sets(idx, nmask):
    return [[sorted(i[m].tolist()) for i, m in zip(ib, mb)] for ib, mb in zip(idx, nmask)]


CONV_CASES = [
    # group, liftsamples, knn, nbhd, mean, bn
    ("T3", 1, True, 4, True, True),
    ("T3", 1, True, math.inf, False, False),  # k = n: the original's slot-mask quirk
    ("T3", 1, False, 5, True, False),
    ("SE3", 2, True, 5, True, False),
    ("SE3", 1, True, math.inf, True, True),
    ("SE3", 2, False, 6, False, True),
    ("SO3", 2, True, 3, True, False),
    ("SO3", 1, False, 4, True, True),
]


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("gname,ns,knn,nbhd,mean,bn", CONV_CASES)
def test_sparse_conv_equals_dense(gname, ns, knn, nbhd, mean, bn, mode):
    group = {"T3": T(3), "SE3": SE3(), "SO3": SO3()}[gname]
    coords, values, mask = _cloud(bs=3, n=7, chin=4, seed=1, pad=(0, 2, 4))
    a, q, lifted = _lifted(group, coords, ns)
    values = values.repeat_interleave(ns, 1)
    mask = mask.repeat_interleave(ns, 1)
    torch.manual_seed(2)
    conv = LieConv(4, 8, mc_samples=nbhd, group=group, knn=knn, mean=mean, bn=bn, fill=0.5).double()
    conv.r.fill_(0.5 if gname == "T3" else 0.7)  # small balls: the random subsets matter
    if bn:
        for mod in conv.modules():
            if isinstance(mod, lc.MaskBatchNormNd):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    conv.train(mode == "train")
    conv.max_chunk_pairs = 3 * mask.shape[1] + 1  # 3 query rows per chunk
    dense = copy.deepcopy(conv)
    torch.manual_seed(3)
    out_dense, idx_d, mask_d = _dense_lieconv(dense, a, q, values, mask)
    torch.manual_seed(3)
    _, out, out_mask = conv((lifted, values, mask))
    torch.testing.assert_close(out, out_dense, rtol=1e-11, atol=1e-11)
    assert torch.equal(out_mask, mask)
    # same buffers after the step: r (radius mode, training), batch-norm running statistics
    for (key, t), t_dense in zip(conv.state_dict().items(), dense.state_dict().values()):
        torch.testing.assert_close(t, t_dense, rtol=1e-12, atol=1e-12, msg=key)
    if mode == "train" and not knn:
        assert float(conv.r) != (0.5 if gname == "T3" else 0.7)
    conv.eval()
    dense.eval()
    torch.manual_seed(3)
    _, idx, nmask = conv.extract_neighborhood((lifted, values, mask), None)
    torch.manual_seed(3)
    _, idx_d, mask_d = _dense_lieconv(dense, a, q, values, mask)
    assert _neighbour_sets(idx, nmask) == _neighbour_sets(idx_d, mask_d)
    assert torch.isfinite(out).all()


def test_knn_all_points_quirk_drops_slots():
    """With k = n the original masks slot s by the point mask at position s: the recorded
    outputs need it, and it does drop valid neighbours (so it is a real difference)."""
    coords, values, mask = _cloud(bs=2, n=10, chin=4, seed=5, pad=(3, 6))
    conv = LieConv(4, 4, mc_samples=math.inf, group=T(3), knn=True).double().eval()
    _, idx, nmask = conv.extract_neighborhood((coords, values, mask), None)
    slot = mask[:, None, :] & mask[:, :, None]
    assert torch.equal(nmask, mask[torch.arange(2)[:, None, None], idx] & slot)
    clean = mask[torch.arange(2)[:, None, None], idx] & mask[:, :, None]
    assert (nmask != clean).any()


def test_radius_neighbourhood_masks_and_update():
    coords, values, mask = _cloud(bs=2, n=12, chin=4, seed=4, pad=(0, 5))
    group = T(3)
    conv = LieConv(4, 4, mc_samples=6, group=group, knn=False, fill=0.3, bn=False).double()
    conv.r.fill_(0.3)
    inp = (coords, values, mask)
    conv.eval()
    torch.manual_seed(0)
    abq, idx, nmask = conv.extract_neighborhood(inp, None)
    d = group.distance(abq)
    assert (d[nmask] < conv.r).all()
    B = torch.arange(2)[:, None, None]
    assert not (nmask & ~mask[B, idx]).any() and not (nmask & ~mask[:, :, None]).any()
    full = group.distance(group.elems2pairs(coords))
    within = ((full < conv.r) & mask[:, None, :] & mask[:, :, None]).sum(-1)
    assert torch.equal(nmask.sum(-1), within.clamp(max=6))
    assert float(conv.r) == 0.3  # eval: no update
    # training: the original's formula, on one tiny case, against the dense transcription
    conv.train()
    dense = LieConv(4, 4, mc_samples=6, group=group, knn=False, fill=0.3, bn=False).double().train()
    dense.load_state_dict(conv.state_dict())
    for _ in range(3):
        torch.manual_seed(7)
        conv(inp)
        torch.manual_seed(7)
        _dense_lieconv(dense, coords, None, values, mask)
        assert float(conv.r) == float(dense.r)
        assert conv.fill_frac_ema == dense.fill_frac_ema
    navg = within.sum() / mask.sum()
    assert float(conv.r) != 0.3 and abs(float(navg)) > 0


def test_chunks_bound_the_pair_count(monkeypatch):
    coords, values, mask = _cloud(bs=2, n=20, chin=4, seed=6, pad=(0, 7))
    group = SE3()
    _, _, lifted = _lifted(group, coords)
    conv = LieConv(4, 4, mc_samples=5, group=group, knn=True).double().eval()
    ref = conv((lifted, values, mask))[1]
    sizes = []
    orig = SE3.distance

    def spy(self, abq):
        sizes.append(abq.shape[:-1].numel())
        return orig(self, abq)

    monkeypatch.setattr(SE3, "distance", spy)
    conv.max_chunk_pairs = 64
    out = conv((lifted, values, mask))[1]
    assert max(sizes) <= 64 and len(sizes) == math.ceil(2 * 20 / 3)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- subsampling


def _original_fps(dists, frac, mask):
    """Transcription of the original FPSindices (dense distances)."""
    m = int(round(frac * dists.shape[1]))
    bs, n = dists.shape[:2]
    chosen = torch.zeros(bs, m, dtype=torch.long)
    distances = torch.ones(bs, n) * 1e8
    a = torch.randint(0, n, (bs,), dtype=torch.long)
    idx = a % mask.sum(-1) + torch.cat([torch.zeros(1).long(), torch.cumsum(mask.sum(-1), dim=0)[:-1]], dim=0)
    farthest = torch.where(mask)[1][idx]
    B = torch.arange(bs)
    for i in range(m):
        chosen[:, i] = farthest
        dist = torch.where(mask, dists[B, farthest], -100 * torch.ones_like(distances))
        closer = dist < distances
        distances[closer] = dist[closer].to(distances.dtype)  # older torch cast implicitly
        farthest = torch.max(distances, -1)[1]
    return chosen


@pytest.mark.parametrize("group", [T(3), SE3()], ids=["T3", "SE3"])
def test_farthest_point_subsample_matches_original(group):
    coords, values, mask = _cloud(bs=4, n=15, chin=4, seed=8, pad=(0, 4, 9, 2))
    a, q, lifted = _lifted(group, coords)
    dense = group.distance(group.elems2pairs(a))
    sub = lc.FPSsubsample(0.4, group=group)
    for seed in range(3):
        torch.manual_seed(seed)
        expected = _original_fps(dense, 0.4, mask)
        torch.manual_seed(seed)
        got = sub.indices((lifted, values, mask))
        assert torch.equal(got, expected)
        torch.manual_seed(seed)
        assert torch.equal(lc.FPSindices(dense, 0.4, mask), expected)
    assert got.shape == (4, 6)
    # clouds with at least 6 valid points get 6 distinct valid ones
    for b in (0, 1, 3):
        assert mask[b, got[b]].all() and len(set(got[b].tolist())) == 6


def test_subsampled_network_and_shared_block_indices():
    coords, values, mask = _cloud(bs=3, n=12, chin=4, seed=9, pad=(0, 3, 12))  # last cloud: all padding
    model = _model(ds_frac=0.5, group=SE3(), nbhd=4, knn=False, fill=0.5, num_layers=2)
    torch.manual_seed(0)
    out = model((coords, values, mask))
    assert out.shape == (3, 2) and torch.isfinite(out).all()
    assert torch.equal(out[2], torch.zeros(2, dtype=F64))
    # a bottleneck block draws its subsample once; the convolution uses the same points
    block: BottleBlock = model.net[1]
    _, _, lifted = _lifted(SE3(), coords)
    inp = model.net[0]((lifted, values, mask))
    torch.manual_seed(11)
    sub_coords, _, sub_mask = block(inp)
    torch.manual_seed(11)
    idx = block.conv.subsample.indices(inp)
    B = torch.arange(3)[:, None]
    assert torch.equal(sub_coords, inp[0][B, idx]) and torch.equal(sub_mask, mask[B, idx])


# --------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("knn,nbhd", [(True, 5), (True, math.inf), (False, 4)])
def test_translation_invariance_with_garbage_padding(knn, nbhd):
    coords, values, mask = _cloud(bs=3, n=10, chin=4, seed=10, pad=(0, 3, 10))
    model = _model(group=T(3), knn=knn, nbhd=nbhd, fill=0.6)
    torch.manual_seed(1)
    out = model((coords, values, mask))
    shifted = coords + torch.tensor([3.0, -1.5, 7.25], dtype=F64)
    pad = ~mask[..., None]
    garbage_c = torch.where(pad, torch.full_like(coords, float("nan")), shifted)
    garbage_c[0, 0, 0] = shifted[0, 0, 0]
    garbage_v = torch.where(pad, torch.full_like(values, 1e30), values)
    garbage_v[1, -1, :] = float("nan")
    torch.manual_seed(1)
    out2 = model((garbage_c, garbage_v, mask))
    assert torch.isfinite(out2).all()
    torch.testing.assert_close(out2, out, rtol=1e-10, atol=1e-12)
    assert torch.equal(out[2], torch.zeros(2, dtype=F64))


def _rotation(seed):
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, dtype=F64, generator=g))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _two_sample_z(x, y):
    """Welch z of the means and of the mean squared deviations (a Levene-type scale test),
    per output channel."""
    n = x.shape[0]
    z_mean = (x.mean(0) - y.mean(0)) / (x.var(0) / n + y.var(0) / n).sqrt()
    dx, dy = (x - x.mean(0)) ** 2, (y - y.mean(0)) ** 2
    z_scale = (dx.mean(0) - dy.mean(0)) / (dx.var(0) / n + dy.var(0) / n).sqrt()
    return torch.cat([z_mean, z_scale]).abs()


def _lift_outputs(model, coords, values, n_lifts, seed):
    """Outputs of one cloud under ``n_lifts`` independent random lifts (a batch of copies)."""
    bs = n_lifts
    torch.manual_seed(seed)
    with torch.no_grad():
        return model((coords.expand(bs, -1, -1), values.expand(bs, -1, -1), torch.ones(bs, coords.shape[1],
                                                                                        dtype=torch.bool)))


def test_se3_rotation_invariance_in_distribution():
    """SE(3) lifts are Haar-random in the rotation, so model(R x + t) and model(x) have the
    same distribution over lifts. Over N = 200 lifts each, the Welch z statistics of the
    two means and of the two mean squared deviations (4 statistics: 2 outputs) are
    approximately N(0, 1) under invariance; each must stay below 5 (two-sided P = 5.7e-7),
    so a correct implementation fails with probability about 2.3e-6 over seeds (the seeds
    are fixed here, so the test is deterministic; it gives max |z| = 0.5). Power: a 30%
    larger cloud gives max |z| = 7.1, and the same statistic flags the original SO(3)
    lift (below)."""
    g = torch.Generator().manual_seed(15)
    coords = torch.randn(1, 5, 3, dtype=F64, generator=g)
    values = torch.randn(1, 5, 2, dtype=F64, generator=g)
    model = _model(chin=2, group=SE3(), knn=True, nbhd=math.inf, bn=False, num_layers=2, seed=6)
    base = _lift_outputs(model, coords, values, 200, seed=20)
    rotated = _lift_outputs(model, coords @ _rotation(7).T + 0.3, values, 200, seed=21)
    assert base.std(0).min() > 0  # the lifts do change the outputs
    assert _two_sample_z(base, rotated).max() < 5
    scaled = _lift_outputs(model, coords * 1.3, values, 200, seed=22)
    assert _two_sample_z(base, scaled).max() > 5


class _UniformStabiliserSO3(SO3):
    """SO(3) lift with the stabiliser angle uniform on [0, 2 pi) (Haar on SO(2))."""

    def lifted_elems(self, pt, nsamples=1, **kwargs):
        lead = pt.shape[:-1]
        ex = torch.zeros(*lead, nsamples, 3, dtype=pt.dtype)
        ex[..., 0] = 1
        rx = SO3.exp(self, ex * (2 * math.pi) * torch.rand(*lead, nsamples, 1, dtype=pt.dtype))
        r = pt.norm(dim=-1, keepdim=True)
        p = pt / r
        w = torch.cross(ex, p[..., None, :].expand(*ex.shape), dim=-1)
        angle = torch.atan2(w.norm(dim=-1), p[..., None, 0]).unsqueeze(-1)
        rp = SO3.exp(self, w * angle / w.norm(dim=-1, keepdim=True))
        a = SO3.log(self, rp @ rx).reshape(*lead[:-1], lead[-1] * nsamples, 3)
        q = r[..., None, :].expand(*r.shape[:-1], nsamples, 1).reshape(*lead[:-1], lead[-1] * nsamples, 1)
        return a, q


@pytest.mark.parametrize("group", [
    pytest.param(_UniformStabiliserSO3(), id="SO3-uniform-stabiliser"),
    pytest.param(SO3(), id="SO3-original-lift", marks=pytest.mark.xfail(
        reason="the original's SO3 lift (kept by equiops.lie) draws the stabiliser angle from a Haar "
               "rotation's angle density (~sin^2(phi/2)), not uniformly, so its lifts are not rotation "
               "invariant in distribution (max |z| = 10.9 here); update this test if the lift changes",
        strict=True)),
])
def test_so3_rotation_invariance_in_distribution(group):
    """As the SE(3) test (same statistics, false-failure probability < 2.3e-6), for SO(3)
    (q = |x|): invariant with a uniform stabiliser angle (max |z| = 1.1), not with the
    original's lift (strict xfail)."""
    g = torch.Generator().manual_seed(13)
    coords = torch.randn(1, 5, 3, dtype=F64, generator=g)
    values = torch.randn(1, 5, 2, dtype=F64, generator=g)
    model = _model(chin=2, group=group, knn=True, nbhd=math.inf, bn=False, num_layers=2, seed=4)
    base = _lift_outputs(model, coords, values, 200, seed=20)
    rotated = _lift_outputs(model, coords @ _rotation(5).T, values, 200, seed=21)
    assert base.std(0).min() > 0
    assert _two_sample_z(base, rotated).max() < 5


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("gname,knn,nbhd,fast", [("T3", True, math.inf, False), ("T3", False, 3, True),
                                                 ("SE3", True, 3, True)])
def test_gradcheck(gname, knn, nbhd, fast):
    group = {"T3": T(3), "SE3": SE3()}[gname]
    coords, values, mask = _cloud(bs=2, n=5, chin=2, seed=14, pad=(0, 2))
    model = _model(chin=2, k=8, num_layers=1, group=group, knn=knn, nbhd=nbhd, bn=False, fill=0.7)
    for conv in model.modules():
        if isinstance(conv, LieConv):
            conv.r.fill_(3.0)
    coords.requires_grad_(True)
    values.requires_grad_(True)

    def fn(c, v):
        torch.manual_seed(0)  # same lifts and ball samples at every evaluation
        return model((c, v, mask))

    assert torch.autograd.gradcheck(fn, (coords, values), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=fast)
    grad = torch.autograd.grad(fn(coords, values).sum(), (coords, values))
    assert all(torch.isfinite(t).all() for t in grad)
    assert (grad[0][~mask] == 0).all() and (grad[1][~mask] == 0).all()


def test_fused_and_reference_pointconv_agree(monkeypatch):
    if lc._fused_pointconv() is None:
        pytest.skip("equiops.ops.pointconv is not available: only the reference runs")
    coords, values, mask = _cloud(bs=3, n=8, chin=4, seed=17, pad=(0, 3, 6))
    model = _model(group=SE3(), knn=False, nbhd=5, fill=0.5, liftsamples=2).train()
    results = []
    for backend in (None, "reference"):
        monkeypatch.setattr(PointConv, "backend", backend)
        m = copy.deepcopy(model)
        c, v = coords.clone().requires_grad_(True), values.clone().requires_grad_(True)
        torch.manual_seed(0)
        out = m((c, v, mask))
        grads = torch.autograd.grad((out * torch.arange(1.0, 3.0, dtype=F64)).sum(), [c, v, *m.parameters()])
        results.append((out, grads, m.state_dict()))
    (out_f, grads_f, sd_f), (out_r, grads_r, sd_r) = results
    torch.testing.assert_close(out_f, out_r, rtol=1e-10, atol=1e-10)
    for g_f, g_r in zip(grads_f, grads_r):
        torch.testing.assert_close(g_f, g_r, rtol=1e-9, atol=1e-10)
    for key in sd_f:
        torch.testing.assert_close(sd_f[key], sd_r[key], rtol=1e-10, atol=1e-10, msg=key)


# --------------------------------------------------------------------------- bad input, padding


def test_bad_input_errors():
    model = _model(group=SE3(), nbhd=4, num_layers=1)
    coords, values, mask = _cloud(bs=2, n=6, chin=4)
    with pytest.raises(TypeError, match="x: expected a \\(coords, values, mask\\) tuple"):
        model((coords, values))
    with pytest.raises(ValueError, match="coords: expected shape \\(2, 6, d\\)"):
        model((coords[:1], values, mask))
    with pytest.raises(ValueError, match="values: expected shape \\(2, 6, c\\).*got \\(2, 5, 4\\)"):
        model((coords, values[:, :5], mask))
    with pytest.raises(TypeError, match="mask: expected dtype torch.bool, got torch.float64"):
        model((coords, values, mask.double()))
    with pytest.raises(ValueError, match="coords: expected last dim 3 .*SE3.*rep_dim=4.*got 4"):
        model((torch.cat([coords, torch.ones_like(coords[..., :1])], -1), values, mask))
    with pytest.raises(ValueError, match="values: expected 4 channels \\(chin\\), got 3"):
        model((coords, values[..., :3], mask))
    with pytest.raises(TypeError, match="values: expected a floating dtype"):
        model((coords, values.long(), mask))
    for bad in (0, 0.5, -1, float("nan")):
        with pytest.raises(ValueError, match="nbhd: expected a neighbourhood size >= 1"):
            LieResNet(4, nbhd=bad, group=T(3))
    with pytest.raises(ValueError, match="mc_samples \\(nbhd\\)"):
        LieConv(4, 4, mc_samples=0, group=T(3))
    with pytest.raises(ValueError, match="act: expected 'swish' or 'relu', got 'gelu'"):
        LieResNet(4, act="gelu", group=T(3))
    conv = LieConv(4, 4, group=T(3)).double()
    pairs = coords.unsqueeze(-2) - coords.unsqueeze(-3)
    with pytest.raises(ValueError, match="all-pairs tensor"):
        conv((pairs, values, mask))
    with pytest.raises(ValueError, match="coords: expected last dim 3 \\(lie_dim \\+ q_dim of T\\)"):
        conv((coords[..., :2], values, mask))


@pytest.mark.parametrize("knn", [True, False])
def test_all_masked_clouds_train_and_eval(knn):
    coords, values, mask = _cloud(bs=2, n=6, chin=4, seed=15)
    coords[1] = float("nan")
    mask[1] = False
    model = _model(group=SE3(), knn=knn, nbhd=3, bn=True, num_layers=1)
    model.train()
    torch.manual_seed(0)
    out = model((coords, values, mask))
    assert torch.isfinite(out).all() and torch.equal(out[1], torch.zeros(2, dtype=F64))
    none = torch.zeros_like(mask)
    out = model((coords, values, none))  # nothing valid at all: zeros, no NaN in the state
    assert torch.equal(out, torch.zeros(2, 2, dtype=F64))
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())
    model.eval()
    assert torch.equal(model((coords, values, none)), torch.zeros(2, 2, dtype=F64))


def test_pointconv_matches_dense_knn():
    coords, values, mask = _cloud(bs=2, n=9, chin=4, seed=16, pad=(0, 4))
    torch.manual_seed(0)
    conv = PointConv(4, 6, mc_samples=4, mean=True).double().eval()
    conv.max_chunk_pairs = 20
    _, out, _ = conv((coords, values, mask))
    d = ((coords.unsqueeze(2) - coords.unsqueeze(1)) ** 2).sum(-1)
    d[~mask[:, None, :].expand(*d.shape)] = 1e8
    idx = torch.topk(d, 4, dim=-1, largest=False, sorted=False)[1]
    B = torch.arange(2)[:, None, None]
    nm, nv = mask[B, idx], values[B, idx]
    _, pen, _ = conv.weightnet((None, coords.unsqueeze(2) - coords[B, idx], nm))
    pen = torch.where(nm[..., None], pen, torch.zeros_like(pen))
    nv = torch.where(nm[..., None], nv, torch.zeros_like(nv))
    ref = conv.linear((nv.transpose(-1, -2) @ pen).reshape(2, 9, -1)) / nm.sum(-1, keepdim=True).clamp(min=1)
    ref = torch.where(mask[..., None], ref, torch.zeros_like(ref))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_translation_fast_knn_equals_generic_search(dtype):
    """T(3), knn, k < n: the candidates-then-exact-re-rank path picks the same neighbour
    sets as the generic chunked search (forced with ``fast_knn = False``), on padded
    clouds (garbage at padded points), bs = 2, several chunks."""
    assert lc._fast_knn_applies(T(3)) and not lc._fast_knn_applies(SE3())
    gen = torch.Generator().manual_seed(11)
    bs, n = 2, 300
    coords = (torch.randn(bs, n, 3, generator=gen) * 3 + 50).to(dtype)
    mask = torch.rand(bs, n, generator=gen) > 0.2
    mask[1, 250:] = False
    coords[~mask] = float("nan")
    values = torch.randn(bs, n, 4, generator=gen).to(dtype)
    conv = LieConv(4, 4, mc_samples=16, group=T(3), knn=True).to(dtype).eval()
    conv.fast_knn_chunk_pairs = 5000  # several chunks
    abq, idx, nmask = conv.extract_neighborhood((coords, values, mask), None)
    assert idx.shape == (bs, n, 16)
    assert torch.equal(nmask, mask[torch.arange(bs)[:, None, None], idx] & mask[:, :, None])
    generic = copy.deepcopy(conv)
    generic.fast_knn = False
    abq_g, idx_g, nmask_g = generic.extract_neighborhood((coords, values, mask), None)
    assert _neighbour_sets(idx, nmask) == _neighbour_sets(idx_g, nmask_g)
    # the embeddings are those of the selected neighbours (same rows up to the slot order)
    B = torch.arange(bs)[:, None, None]
    torch.testing.assert_close(abq[nmask], (coords[:, :, None] - coords[B, idx])[nmask], rtol=0, atol=0)
    # outputs agree up to the summation order
    out = conv((coords, values, mask))[1]
    out_g = generic((coords, values, mask))[1]
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out, out_g, rtol=tol, atol=tol)
