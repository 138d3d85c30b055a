"""LieConv benchmark: sparse neighbourhoods + the fused PointConv against the original's
dense all-pairs layer, and a 20,000-point LieResNet that the dense one cannot hold.

1. Layer (the issue: "compares against a dense-pair PyTorch implementation of the same
   layer at sizes where the dense one fits (e.g. n = 1,000 and 4,000): CPU goal at least
   5x faster at n = 4,000"): one :class:`equiops.nn.LieConv` (group ``T(3)``, ``knn=True``,
   ``nbhd=16``, ``mean=True``, ``bn=True`` in eval mode, i.e. the weight-net's batch norms
   on random running statistics, ``chin = chout = 32``) on ``batch`` clouds of ``n``
   points, float32. Candidates, sharing one module (one weight draw, ``manual_seed(0)``):

   * ``equiops sparse+fused``: the module as is (chunked neighbour search, pair
     embeddings of the k selected neighbours only, :func:`equiops.ops.pointconv.pointconv`);
   * ``dense pairs (original)``: :func:`dense_lieconv`, what the original
     (mfinzi/LieConv ``lie_conv/lieConv.py``) does from its lifted all-pairs tensor: the
     ``(bs, n, n, d)`` pairs ``a_i - a_j`` (``group.elems2pairs``, ``q`` appended as
     ``lift`` does; built inside the timed call: the original builds them once per
     network forward and passes them from layer to layer), ``group.distance``, the
     ``1e8`` mask, ``topk(sorted=False)``, the ``(bs, m, k)`` gathers, the module's own
     ``weightnet`` and ``linear``, ``torch.where`` masks, the batched matmul and the mean.
     With ``knn`` and ``k < n`` the original's slot mask fails to broadcast; as in
     ``tests/test_lieconv.py`` the query mask is used there (identical on full clouds).

   Passes: ``forward`` (under ``no_grad``) and ``fwd+bwd`` (forward, then the gradients of
   ``<out, g>``, a fixed random cotangent, w.r.t. the coordinates, the values and every
   parameter). Checked in float64 before timing, every output and gradient to 1e-9 of
   its largest magnitude: on 2 clouds of 40 points with padding (``k < n`` and ``k = n``
   neighbourhoods) and at ``n = min(1000, largest size)``; then each candidate's first
   call at the timed size and dtype against the dense one (1e-4 in float32).

2. Scale (the issue: "a 2-layer T(3) LieResNet (k = 32, nbhd = 16) runs inference on a
   20,000-point cloud with under 2 GB of extra memory on the CPU; report its time"):
   ``LieResNet(chin=1, num_outputs=1, k=32, nbhd=16, num_layers=2, group=T(3), knn=...,
   ds_frac=1, fill=1/32, bn=True)`` in eval mode under ``no_grad`` on one cloud, for
   ``knn=True`` and the default random-ball mode ``knn=False``. No baseline (the dense
   pairs alone would need ``n^2 * 3 * 4`` bytes, 4.8 GB at 20,000 points: the row's note
   says how much). Checked first in float64 on 2 clouds of 300 points (with padding)
   against the same network with every LieConv replaced by :func:`dense_lieconv` (the
   outputs of both residual blocks and the pooled output; the random ball draws its
   noise in the same order, so the same seed gives the same neighbourhoods).

Clouds: coordinates uniform in a cube whose side puts about ``4 * nbhd`` points on average
in the ball of the untrained radius ``r = 2`` (``|x_i - x_j| < r / alpha = 10`` for
``T(3)``), so neighbourhoods are local and the random ball has points to draw from;
values standard normal; every point valid (padding only in the checks).

Peak extra memory of one call (after a warm-up call): as :mod:`equiops.bench.tp_conv`
measures it (CPU: the resident high-water mark in a fresh process per candidate, pass and
size, ``python -m equiops.bench.lieconv memory ...``; CUDA: ``max_memory_allocated``).

Goals (CPU runs): at n = 4,000 (else the largest size) ours at least 5x faster than the
dense layer, forward and fwd+bwd each; the scale row's peak extra memory under 2 GB.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import tp_conv as conv_bench
from .tp_conv import agree, peak_extra_bytes

GROUPS = ("forward", "backward")
SUFFIX = {"forward": "", "backward": " fwd+bwd"}
OURS, BASELINE = "equiops sparse+fused", "dense pairs (original)"
CANDIDATES = (OURS, BASELINE)
SCALE_NAME = "equiops sparse+fused (inference)"
SIZES = (1000, 4000)
QUICK_SIZES = (500, 1000)
SCALE_POINTS, QUICK_SCALE_POINTS = 20_000, 2_000
SCALE_MODES = ("knn", "ball")
NBHD, CHANNELS, BATCH = 16, 32, 1
CHECK_TINY = (2, 40, (0, 7))  # clouds, points, padded points per cloud of the float64 check
CHECK_MID = 1000  # points of the second float64 check (at most the largest size)
CHECK_SCALE = (2, 300, (0, 37))
CHECK_TOL = 1e-9
GOAL_SIZE = 4000
GOAL_SPEEDUP = 5.0
GOAL_MEMORY_BYTES = 2 * 10**9  # "under 2 GB"
POINTS_PER_BALL = 4  # clouds: about POINTS_PER_BALL * nbhd points in the untrained ball


@dataclass(frozen=True)
class Layer:
    n: int
    nbhd: int = NBHD
    channels: int = CHANNELS
    batch: int = BATCH
    knn: bool = True

    @property
    def label(self) -> str:
        mode = "knn" if self.knn else "ball"
        return f"LieConv T(3) {mode} n={self.n} nbhd={self.nbhd} c={self.channels} bs={self.batch}"


@dataclass(frozen=True)
class Scale:
    points: int = SCALE_POINTS
    knn: bool = True
    nbhd: int = NBHD
    k: int = 32
    layers: int = 2
    chin: int = 1

    @property
    def label(self) -> str:
        mode = "knn" if self.knn else "ball"
        return f"LieResNet T(3) {self.layers}L k={self.k} nbhd={self.nbhd} {mode} n={self.points}"


def dense_pairs_bytes(points: int, dtype=torch.float32, batch: int = 1) -> int:
    """Bytes of the original's ``(bs, n, n, 3)`` T(3) pair tensor alone."""
    return batch * points * points * 3 * torch.empty((), dtype=dtype).element_size()


# --------------------------------------------------------------------------- inputs and models
def _group():
    from ..lie import T

    return T(3)


def cube_side(n: int, nbhd: int, group=None) -> float:
    """Side of the cube holding ``n`` uniform points with about ``POINTS_PER_BALL * nbhd``
    of them within distance ``r = 2`` (the untrained radius) of a point."""
    group = _group() if group is None else group
    radius = 2.0 / group.alpha
    return (n * 4 / 3 * math.pi * radius**3 / (POINTS_PER_BALL * nbhd)) ** (1 / 3)


def make_cloud(batch: int, n: int, chin: int, nbhd: int, dtype, device, seed: int = 0,
               pad: Sequence[int] = ()) -> Dict[str, torch.Tensor]:
    """``coords (batch, n, 3)``, ``values (batch, n, chin)``, ``mask (batch, n)``; cloud b
    has its last ``pad[b]`` points masked (zeros there)."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(batch, n, 3, generator=g, dtype=torch.float64) * cube_side(n, nbhd)
    values = torch.randn(batch, n, chin, generator=g, dtype=torch.float64)
    mask = torch.ones(batch, n, dtype=torch.bool)
    for b, p in enumerate(pad[:batch]):
        if p:
            mask[b, n - p:] = False
    coords = torch.where(mask[..., None], coords, torch.zeros_like(coords))
    values = torch.where(mask[..., None], values, torch.zeros_like(values))
    return {"coords": coords.to(device=device, dtype=dtype), "values": values.to(device=device, dtype=dtype),
            "mask": mask.to(device)}


def _random_running_stats(module: torch.nn.Module, seed: int = 1) -> None:
    from ..nn.lieconv import MaskBatchNormNd

    g = torch.Generator().manual_seed(seed)
    for mod in module.modules():
        if isinstance(mod, MaskBatchNormNd):
            mod.running_mean.copy_(torch.rand(mod.running_mean.shape, generator=g, dtype=torch.float64) - 0.5)
            mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g, dtype=torch.float64) * 1.5 + 0.5)


def make_layer(p: Layer, dtype, device, backend: str):
    """The one :class:`~equiops.nn.LieConv` both candidates use (eval mode)."""
    from ..nn.lieconv import LieConv

    torch.manual_seed(0)
    conv = LieConv(p.channels, p.channels, mc_samples=p.nbhd, group=_group(), knn=p.knn, mean=True, bn=True)
    _random_running_stats(conv)
    conv.backend = backend
    return conv.to(device=device, dtype=dtype).eval()


def make_resnet(s: Scale, dtype, device, backend: str):
    from ..nn.lieconv import LieConv, LieResNet

    torch.manual_seed(0)
    model = LieResNet(s.chin, num_outputs=1, k=s.k, nbhd=s.nbhd, num_layers=s.layers, group=_group(), knn=s.knn,
                      ds_frac=1, fill=1 / 32, bn=True)
    _random_running_stats(model)
    for mod in model.modules():
        if isinstance(mod, LieConv):
            mod.backend = backend
    return model.to(device=device, dtype=dtype).eval()


# --------------------------------------------------------------------------- the dense layer
def dense_lieconv(conv, lifted: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, details: bool = False):
    """The original ``LieConv.forward`` (``ds_frac=1``) from the all-pairs lift of
    ``lifted (bs, n, lie_dim + q_dim)``: ``(bs, n, chout)``, or with ``details``
    ``(out, nbhd_idx, nbhd_mask)``. Uses ``conv``'s group, ``weightnet``, ``linear``,
    ``mc_samples``, ``knn``, ``r`` and ``mean``; in training (radius mode) it updates
    ``conv.r`` as the original does. (The tests' dense reference, too.)"""
    g = conv.group
    bs, n = mask.shape
    ld = g.lie_dim
    a, q = lifted[..., :ld], lifted[..., ld:]
    abq = g.elems2pairs(a)  # (bs, n, n, lie_dim): the original's lift
    if q.shape[-1]:
        qd = q.shape[-1]
        abq = torch.cat([abq, q.unsqueeze(-2).expand(bs, n, n, qd), q.unsqueeze(-3).expand(bs, n, n, qd)], -1)
    dists = g.distance(abq)  # (bs, n, n)
    dists = torch.where(mask[:, None, :].expand(*dists.shape), dists, 1e8 * torch.ones_like(dists))
    k = int(min(conv.mc_samples, n))
    if conv.knn:
        idx = torch.topk(dists, k, dim=-1, largest=False, sorted=False)[1]
        valid = (mask[:, None, :] & mask[:, :, None]) if k == n else mask[:, :, None].expand(bs, n, k)
    else:
        within = (dists < conv.r) & mask[:, None, :] & mask[:, :, None]
        noise = torch.zeros(bs, n, n, device=mask.device)  # torch's default dtype, as the original
        noise.uniform_(0, 1)
        top, idx = torch.topk(within + noise, k, dim=-1, largest=True, sorted=False)
        valid = top > 1
    B = torch.arange(bs, device=mask.device)[:, None, None].expand(*idx.shape)
    M = torch.arange(n, device=mask.device)[None, :, None].expand(*idx.shape)
    nbhd_abq, nbhd_vals, nbhd_mask = abq[B, M, idx], values[B, idx], mask[B, idx] & valid
    if conv.training and not conv.knn:
        navg = within.float().sum(-1).sum() / mask[:, :, None].sum()
        avg_fill = (navg / mask.sum(-1).float().mean()).cpu().item()
        conv.r += conv.coeff * (conv.fill_frac - avg_fill)
        conv.fill_frac_ema += 0.1 * (avg_fill - conv.fill_frac_ema)
    _, penult, _ = conv.weightnet((None, nbhd_abq, nbhd_mask))
    penult = torch.where(nbhd_mask.unsqueeze(-1), penult, torch.zeros_like(penult))
    nbhd_vals = torch.where(nbhd_mask.unsqueeze(-1), nbhd_vals, torch.zeros_like(nbhd_vals))
    out = conv.linear((nbhd_vals.transpose(-1, -2) @ penult).reshape(bs, n, -1))
    if conv.mean:
        out = out / nbhd_mask.sum(-1, keepdim=True).clamp(min=1)
    out = torch.where(mask.unsqueeze(-1), out, torch.zeros_like(out))
    return (out, idx, nbhd_mask) if details else out


def dense_resnet(model):
    """A copy of ``model`` whose every LieConv runs :func:`dense_lieconv` (``ds_frac=1``)."""
    from ..nn.lieconv import LieConv

    dense = copy.deepcopy(model)
    for mod in dense.modules():
        if isinstance(mod, LieConv):
            def forward(inp, query_indices=None, conv=mod):
                lifted, values, mask = inp
                return lifted, dense_lieconv(conv, lifted, values, mask), mask

            mod.forward = forward
    return dense


# --------------------------------------------------------------------------- passes
def layer_fn(conv, name: str) -> Callable:
    """f(coords, values, mask) -> (bs, n, chout) of candidate ``name`` (T(3): lifted = coords)."""
    if name == OURS:
        return lambda x, v, m: conv((x, v, m))[1]
    return lambda x, v, m: dense_lieconv(conv, x, v, m)


def layer_passes(conv, fn: Callable, inputs, groups: Sequence[str] = GROUPS, seed: int = 2) -> Dict[str, Callable]:
    """{group: f() -> (out[, grads of coords, values, then of the parameters sorted by name])}."""
    x, v, m = inputs["coords"], inputs["values"], inputs["mask"]
    params = [t for _, t in sorted(conv.named_parameters())]
    g = torch.Generator().manual_seed(seed)
    cot = torch.randn(*v.shape[:2], conv.linear.out_features, generator=g, dtype=torch.float64).to(v)

    def forward():
        with torch.no_grad():
            return (fn(x, v, m),)

    def backward():
        xl, vl = x.detach().requires_grad_(), v.detach().requires_grad_()
        out = fn(xl, vl, m)
        return (out.detach(),) + torch.autograd.grad(out, [xl, vl] + params, cot)

    table = {"forward": forward, "backward": backward}
    return {grp: table[grp] for grp in groups}


def scale_pass(model, inputs, hooks: bool = False) -> Callable:
    """f() -> (pooled output[, the values after each residual block with ``hooks``])."""
    x, v, m = inputs["coords"], inputs["values"], inputs["mask"]

    def call():
        seen: List[torch.Tensor] = []
        handles = []
        if hooks:
            from ..nn.lieconv import BottleBlock

            for mod in model.modules():
                if isinstance(mod, BottleBlock):
                    handles.append(mod.register_forward_hook(lambda _m, _i, out: seen.append(out[1])))
        try:
            with torch.no_grad():
                out = model((x, v, m))
        finally:
            for h in handles:
                h.remove()
        return (out,) + tuple(seen)

    return call


# --------------------------------------------------------------------------- checks
def check_layer(p: Layer, device, backend: str) -> Tuple[Dict[str, bool], Dict[str, str]]:
    """Float64: tiny padded clouds (k < n and k = n) and ``n = min(CHECK_MID, p.n)``; {key: ok}."""
    ok: Dict[str, bool] = {}
    notes: Dict[str, str] = {}
    cases = [(CHECK_TINY[0], CHECK_TINY[1], CHECK_TINY[2], p.nbhd, "tiny"),
             (CHECK_TINY[0], CHECK_TINY[1], CHECK_TINY[2], math.inf, "tiny k=n"),
             (p.batch, min(CHECK_MID, p.n), (), p.nbhd, f"n={min(CHECK_MID, p.n)}")]
    for batch, n, pad, nbhd, what in cases:
        q = Layer(n=n, nbhd=nbhd, channels=p.channels, batch=batch, knn=p.knn)
        inputs = make_cloud(batch, n, p.channels, p.nbhd, torch.float64, device, seed=1, pad=pad)
        conv = make_layer(q, torch.float64, device, backend)
        for group in GROUPS:
            want = layer_passes(conv, layer_fn(conv, BASELINE), inputs, (group,))[group]()
            got = layer_passes(conv, layer_fn(conv, OURS), inputs, (group,))[group]()
            key = OURS + SUFFIX[group]
            good = agree(got, want, CHECK_TOL)
            ok[key] = ok.get(key, True) and good
            if not good and key not in notes:
                notes[key] = f"float64 check ({what}): differs from {BASELINE} by more than {CHECK_TOL:g}"
    return ok, notes


def check_scale(s: Scale, device, backend: str) -> Tuple[bool, Optional[str]]:
    """Float64 on small padded clouds against the network with dense layers (same seed)."""
    batch, n, pad = CHECK_SCALE
    inputs = make_cloud(batch, n, s.chin, s.nbhd, torch.float64, device, seed=1, pad=pad)
    model = make_resnet(s, torch.float64, device, backend)
    dense = dense_resnet(model)
    torch.manual_seed(5)
    want = scale_pass(dense, inputs, hooks=True)()
    torch.manual_seed(5)
    got = scale_pass(model, inputs, hooks=True)()
    if len(got) != len(want) or not agree(got, want, CHECK_TOL):
        return False, f"float64 check (n={n}): differs from the dense-layer network by more than {CHECK_TOL:g}"
    return True, None


# ----------------------------------------------------------------- peak extra memory
def measure_layer_memory(p: Layer, candidate: str, group: str, dtype, backend: str, threads: int) -> Optional[int]:
    return conv_bench.run_memory_process("equiops.bench.lieconv", [
        "layer", candidate, group, str(p.n), str(p.nbhd), str(p.channels), str(p.batch), str(int(p.knn)),
        str(dtype).replace("torch.", ""), backend, str(threads)])


def measure_scale_memory(s: Scale, dtype, backend: str, threads: int) -> Optional[int]:
    return conv_bench.run_memory_process("equiops.bench.lieconv", [
        "scale", str(s.points), str(int(s.knn)), str(s.nbhd), str(s.k), str(s.layers), str(s.chin),
        str(dtype).replace("torch.", ""), backend, str(threads)])


def _memory_main(argv: List[str]) -> None:
    kind, rest = argv[0], argv[1:]
    if kind == "layer":
        candidate, group, n, nbhd, channels, batch, knn, dtype, backend, threads = rest
        torch.set_num_threads(int(threads))
        dt = getattr(torch, dtype)
        p = Layer(n=int(n), nbhd=int(nbhd), channels=int(channels), batch=int(batch), knn=bool(int(knn)))
        inputs = make_cloud(p.batch, p.n, p.channels, p.nbhd, dt, "cpu")
        conv = make_layer(p, dt, "cpu", backend)
        fn = layer_passes(conv, layer_fn(conv, candidate), inputs, (group,))[group]
    elif kind == "scale":
        points, knn, nbhd, k, layers, chin, dtype, backend, threads = rest
        torch.set_num_threads(int(threads))
        dt = getattr(torch, dtype)
        s = Scale(points=int(points), knn=bool(int(knn)), nbhd=int(nbhd), k=int(k), layers=int(layers), chin=int(chin))
        inputs = make_cloud(1, s.points, s.chin, s.nbhd, dt, "cpu")
        fn = scale_pass(make_resnet(s, dt, "cpu", backend), inputs)
    else:
        raise SystemExit(f"memory: unknown kind {kind!r} (layer or scale)")
    print(json.dumps({"peak_extra_bytes": peak_extra_bytes(fn, "cpu")}))


# ----------------------------------------------------------------------- the runner
def _goal_key(group: str, n: int) -> str:
    return f"ours {'fwd+bwd' if group == 'backward' else 'forward'} >= {GOAL_SPEEDUP:g}x faster than dense at n={n}"


def _goals_layer(group: str, n: int, speedup: Optional[float]) -> Dict[str, Optional[bool]]:
    """The issue's goal is stated at n = 4,000; smaller runs state it at their largest size."""
    return {_goal_key(group, n): None if speedup is None else speedup >= GOAL_SPEEDUP}


def _goals_scale(points: int, peak: Optional[int]) -> Dict[str, Optional[bool]]:
    return {f"peak extra memory < 2 GB at n={points}": None if peak is None else peak < GOAL_MEMORY_BYTES}


def _size_text(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def run(device: torch.device, dtype, quick: bool, backend: str, row, safe_call, time_interleaved, progress,
        sizes: Optional[Sequence[int]] = None, nbhd: Optional[int] = None, channels: Optional[int] = None,
        batch: Optional[int] = None, scale_points: Optional[int] = None, scale_modes: Optional[Sequence[str]] = None,
        memory: bool = True) -> List[Dict[str, object]]:
    """Rows for the runner (``row``, ``safe_call``, ``time_interleaved``, ``progress`` are the
    runner's helpers). ``sizes``: points per cloud of the layer rows; ``scale_points``: of
    the LieResNet rows (0: none); ``scale_modes``: from ``("knn", "ball")``; ``memory``:
    also measure each call's peak extra memory."""
    sizes = list(sizes or (QUICK_SIZES if quick else SIZES))
    nbhd = NBHD if nbhd is None else nbhd
    channels = CHANNELS if channels is None else channels
    batch = BATCH if batch is None else batch
    scale_points = (QUICK_SCALE_POINTS if quick else SCALE_POINTS) if scale_points is None else scale_points
    scale_modes = list(SCALE_MODES if scale_modes is None else scale_modes)
    for name, v, least in (("sizes", min(sizes), 2), ("nbhd", nbhd, 1), ("channels", channels, 1), ("batch", batch, 1)):
        if v < least:
            raise ValueError(f"lieconv {name}: expected at least {least}, got {v}")
    unknown = set(scale_modes) - set(SCALE_MODES)
    if unknown:
        raise ValueError(f"lieconv scale modes: {sorted(unknown)} unknown; choose from {SCALE_MODES}")
    threads = torch.get_num_threads()
    scales = [Scale(points=scale_points, knn=(mode == "knn"), nbhd=nbhd) for mode in scale_modes] if scale_points else []
    steps = len(sizes) + len(scales) + 1
    rows: List[Dict[str, object]] = []
    tol = {torch.float32: 1e-4, torch.float64: 1e-10}.get(dtype, 1e-2)
    goal_size = GOAL_SIZE if GOAL_SIZE in sizes else max(sizes)

    # 1. Float64 checks of the layer (tiny padded clouds, then n = min(1000, largest size)).
    progress(0, steps, "lieconv float64 checks")
    ok64, notes64 = check_layer(Layer(n=max(sizes), nbhd=nbhd, channels=channels, batch=batch), device, backend)

    # 2. The layer at each size: the first call checks against the dense one and warms up.
    for i, n in enumerate(sizes):
        p = Layer(n=n, nbhd=nbhd, channels=channels, batch=batch)
        progress(1 + i, steps, f"lieconv {p.label}")
        inputs = make_cloud(p.batch, p.n, p.channels, p.nbhd, dtype, device)
        conv = make_layer(p, dtype, device, backend)
        notes = dict(notes64)
        fns: Dict[str, Callable] = {}
        entries = []
        for group in GROUPS:
            reference = None
            for name in (BASELINE, OURS):
                key = name + SUFFIX[group]
                kind = "ours" if name == OURS else "baseline"
                fn = layer_passes(conv, layer_fn(conv, name), inputs, (group,))[group]
                got, err = safe_call(fn)
                if err:
                    notes[key] = err
                    entries.append((group, name, key, kind, False if kind == "ours" else None))
                    continue
                if name == BASELINE:
                    reference, ok = got, True
                else:
                    ok = ok64.get(key) is True and (reference is None or agree(got, reference, tol))
                    if ok64.get(key) is True and not ok:
                        notes[key] = f"differs from {BASELINE} by more than {tol:g} at the timed size"
                entries.append((group, name, key, kind, ok))
                if ok:
                    fns[key] = fn
                del got
            del reference
        reps = (10, 1) if device.type == "cuda" else ((3, 1) if quick else (5, 1))
        times = time_interleaved(fns, device, repeats=reps[0], warmup=reps[1])
        peaks: Dict[str, Optional[int]] = {}
        if memory:
            for group, name, key, _, ok in entries:
                if ok:
                    peaks[key] = (peak_extra_bytes(fns[key], device) if device.type == "cuda"
                                  else measure_layer_memory(p, name, group, dtype, backend, threads))
        for group in GROUPS:
            base = BASELINE + SUFFIX[group]
            for g_, _, key, kind, ok in entries:
                if g_ != group:
                    continue
                r = row("lieconv", p.label, key, kind, base if (kind == "ours" and base in times) else None, ok, times, None)
                r["peak_extra_MB"] = peaks[key] / 2**20 if peaks.get(key) is not None else None
                if kind == "ours" and peaks.get(key) is not None and peaks.get(base):
                    r["memory_ratio"] = peaks[key] / peaks[base]
                if kind == "ours" and n == goal_size and device.type == "cpu":
                    r["goals"] = _goals_layer(group, n, r["speedup"])
                if key in notes:
                    r["note"] = notes[key]
                r.update(points=p.n, nbhd=p.nbhd, channels=p.channels, batch=p.batch, knn=p.knn,
                         dense_pairs_MB=dense_pairs_bytes(p.n, dtype, p.batch) / 2**20)
                rows.append(r)
        del inputs, conv, fns

    # 3. The LieResNet at scale: no baseline.
    for j, s in enumerate(scales):
        progress(1 + len(sizes) + j, steps, f"lieconv {s.label}")
        ok, note = check_scale(s, device, backend)
        inputs = make_cloud(1, s.points, s.chin, s.nbhd, dtype, device)
        model = make_resnet(s, dtype, device, backend)
        fn = scale_pass(model, inputs)
        got, err = safe_call(fn)
        if err:
            ok, note = False, err
        elif not bool(torch.isfinite(got[0]).all()):
            ok, note = False, "non-finite output"
        # the check call above was the warm-up; calls take minutes at 20,000 points on 2 busy cores
        times = time_interleaved({SCALE_NAME: fn}, device, repeats=2, warmup=0) if ok else {}
        peak = None
        if memory and ok:
            peak = peak_extra_bytes(fn, device) if device.type == "cuda" else measure_scale_memory(
                s, dtype, backend, threads)
        dense_bytes = dense_pairs_bytes(s.points, dtype)
        r = row("lieconv", s.label, SCALE_NAME, "ours", None, ok, times, None)
        r["peak_extra_MB"] = peak / 2**20 if peak is not None else None
        r["note"] = note or f"no baseline: dense would need {_size_text(dense_bytes)} for its pairs alone"
        if device.type == "cpu":
            r["goals"] = _goals_scale(s.points, peak)
        r.update(points=s.points, nbhd=s.nbhd, k=s.k, layers=s.layers, knn=s.knn, dense_pairs_GB=dense_bytes / 1e9,
                 under_60_s=(r["median_ms"] < 60_000) if r["median_ms"] is not None else None)
        rows.append(r)
        del inputs, model, fn, got
    progress(steps, steps, "done")
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "memory":
        _memory_main(sys.argv[2:])
    else:
        raise SystemExit("usage: python -m equiops.bench.lieconv memory layer CANDIDATE GROUP N NBHD CHANNELS BATCH KNN "
                         "DTYPE BACKEND THREADS\n       python -m equiops.bench.lieconv memory scale POINTS KNN NBHD K "
                         "LAYERS CHIN DTYPE BACKEND THREADS")
