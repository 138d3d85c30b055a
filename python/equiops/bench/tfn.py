"""One Tensor Field Network layer against the same composition of e3nn parts.

Problem (the issue's): ``TFNConv`` with the nequip-lips irreps
(``32x0o+32x0e+32x1o+32x1e+32x2o+32x2e`` in and out, harmonics ``0e+1o+2e``), a radial
MLP ``[8, 64, weights]``, on 2,000 atoms and 40,000 random edges (500 / 10,000 with
``quick``), an :class:`equiops.Graph` built once outside the timed calls.

Candidates: ``equiops`` (:class:`equiops.nn.TFNConv`) and ``e3nn`` (:class:`E3nnTFNLayer`:
e3nn's harmonics, ``FullyConnectedNet``, ``TensorProduct`` on gathered edges +
``index_add_``, two ``o3.Linear``; the same radial embedding; weights copied from ours).

Passes: ``forward``; ``fwd+bwd`` (gradients w.r.t. x, positions and every parameter);
``force`` (a force-training step: ``E = <out, c>``, ``F = -dE/dpos`` with
``create_graph``, then the gradients of ``|F|^2`` w.r.t. x and every parameter). Each
is checked in float64 on a small graph against e3nn first (1e-10), then at the timed
size (the warm-up call).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..irreps import Irreps
from ..nn.tfn import TFNConv
from . import optional_module
from .tp_conv import agree  # relative max error per output, shapes equal

GROUPS = ("forward", "backward", "force")
SUFFIX = {"forward": "", "backward": " fwd+bwd", "force": " force"}
CHECK = (30, 200)


@dataclass(frozen=True)
class Problem:
    name: str
    irreps: str
    irreps_sh: str
    nodes: int
    edges: int

    @property
    def label(self) -> str:
        return f"{self.name} n={self.nodes} E={self.edges}"


def problems(quick: bool = False) -> List[Problem]:
    nodes, edges = (500, 10_000) if quick else (2_000, 40_000)
    return [Problem("nequip-lips", "32x0o+32x0e+32x1o+32x1e+32x2o+32x2e", "0e+1o+2e", nodes, edges)]


class E3nnTFNLayer(torch.nn.Module):
    """The e3nn composition of ``ours`` (a :class:`TFNConv`) with its weights copied."""

    def __init__(self, ours: TFNConv) -> None:
        super().__init__()
        o3 = optional_module("e3nn.o3")
        enn = optional_module("e3nn.nn")
        if o3 is None or enn is None:
            raise RuntimeError("e3nn is not installed")
        ec = ours.conv
        c = ec.conv
        dtype = next(ours.parameters()).dtype
        old = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            self.tp = o3.TensorProduct(str(c.irreps_in1), str(c.irreps_in2), str(c.irreps_out),
                                       [tuple(i[:5]) for i in c.instructions], shared_weights=False,
                                       internal_weights=False)
            self.fc = enn.FullyConnectedNet(ec.radial.hs, torch.nn.functional.silu)
            self.linear = o3.Linear(str(ours.linear.irreps_in), str(ours.linear.irreps_out))
            self.si = (o3.Linear(str(ours.self_interaction.irreps_in), str(ours.self_interaction.irreps_out))
                       if ours.self_interaction is not None else None)
        finally:
            torch.set_default_dtype(old)
        self.fc.load_state_dict(ec.radial.state_dict())
        self.linear.load_state_dict(ours.linear.state_dict())
        if self.si is not None:
            self.si.load_state_dict(ours.self_interaction.state_dict())
        self.embed = ec.radial_embedding  # the same module on both sides (tested against closed forms)
        self.irreps_sh = str(ec.irreps_sh)
        self.avg = ec.avg_num_neighbors
        self._o3 = o3
        self.to(device=next(ours.parameters()).device, dtype=dtype)

    def forward(self, x, pos, src, dst):
        vec = pos[src] - pos[dst]
        sh = self._o3.spherical_harmonics(self.irreps_sh, vec, normalize=True, normalization="component")
        msg = self.tp(x[src], sh, self.fc(self.embed(vec.norm(dim=-1))))
        out = msg.new_zeros(x.shape[0], msg.shape[1]).index_add_(0, dst, msg) / math.sqrt(self.avg)
        out = self.linear(out)
        return out + self.si(x) if self.si is not None else out


def make_inputs(p: Problem, nodes: int, edges: int, dtype, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, nodes, (edges,), generator=g)
    # No self-loops (a TFN graph has none): at a zero vector the harmonics' derivative is
    # ~1/eps on both sides, and the +/- contributions to one atom cancel only to rounding.
    dst = (src + torch.randint(1, nodes, (edges,), generator=g)) % nodes
    dim = Irreps(p.irreps).dim
    x = torch.randn(nodes, dim, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    pos = (torch.rand(nodes, 3, generator=g, dtype=torch.float64) * 10).to(device=device, dtype=dtype)
    from ..graph import Graph

    src, dst = src.to(device), dst.to(device)
    return {"x": x, "pos": pos, "src": src, "dst": dst, "graph": Graph(src, dst, nodes)}


def candidates(p: Problem, inputs, dtype, device, backend: str) -> Dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    # r_max above every distance of the random graph (positions in a 10 A box).
    ours = TFNConv(p.irreps, p.irreps, p.irreps_sh, r_max=20.0, num_basis=8, radial_neurons=(64,),
                   avg_num_neighbors=inputs["src"].numel() / inputs["x"].shape[0], backend=backend).to(device, dtype)
    graph = inputs["graph"]
    out: Dict[str, Callable] = {"equiops": lambda x, pos: ours(x, pos, inputs["src"], inputs["dst"], graph=graph)}
    # The trained weights, in the same order on both sides (the radial embedding is one
    # module shared by both, its Bessel weights not compared).
    out["_params_equiops"] = list(ours.conv.radial.parameters()) + [ours.linear.weight, ours.self_interaction.weight]
    if optional_module("e3nn.o3") is not None:
        theirs = E3nnTFNLayer(ours)
        out["e3nn"] = lambda x, pos: theirs(x, pos, inputs["src"], inputs["dst"])
        out["_params_e3nn"] = list(theirs.fc.parameters()) + [theirs.linear.weight, theirs.si.weight]
    return out


def passes(fn: Callable, params: Sequence[torch.Tensor], inputs, groups: Sequence[str] = GROUPS) -> Dict[str, Callable]:
    x0, pos0 = inputs["x"], inputs["pos"]

    def forward():
        with torch.no_grad():
            return (fn(x0, pos0),)

    def backward():
        x, pos = x0.detach().requires_grad_(), pos0.detach().requires_grad_()
        out = fn(x, pos)
        cot = torch.ones_like(out)
        return (out.detach(),) + torch.autograd.grad(out, [x, pos] + list(params), cot)

    def force():
        x, pos = x0.detach().requires_grad_(), pos0.detach().requires_grad_()
        out = fn(x, pos)
        energy = out.sum()
        (f,) = torch.autograd.grad(energy, pos, create_graph=True)
        leaves = [x] + list(params)
        # The self-interaction does not depend on positions: its weight gets no gradient
        # from the forces (zeros, on both sides alike).
        grads = torch.autograd.grad((f**2).sum(), leaves, allow_unused=True)
        return (f.detach(),) + tuple(torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves))

    table = {"forward": forward, "backward": backward, "force": force}
    return {g: table[g] for g in groups}


def run(device: torch.device, dtype, quick: bool, backend: str, row, safe_call, time_interleaved,
        progress) -> List[Dict[str, object]]:
    """Rows for the runner (``row``, ``safe_call``, ``time_interleaved``, ``progress`` are
    the runner's helpers)."""
    rows: List[Dict[str, object]] = []
    probs = problems(quick)
    for i, p in enumerate(probs):
        progress(i, len(probs), p.label)
        small = make_inputs(p, *CHECK, torch.float64, device, seed=1)
        c64 = candidates(p, small, torch.float64, device, backend)
        names = [n for n in c64 if not n.startswith("_")]
        ok64: Dict[str, Optional[bool]] = {}
        notes: Dict[str, str] = {}
        for group in GROUPS:
            want = None
            if "e3nn" in c64:
                want = passes(c64["e3nn"], c64["_params_e3nn"], small, (group,))[group]()
            for name in names:
                key = name + SUFFIX[group]
                got, err = safe_call(passes(c64[name], c64["_params_" + name], small, (group,))[group])
                if err:
                    ok64[key], notes[key] = None, f"float64 check: {err}"
                else:
                    ok64[key] = True if want is None else agree(got, want, 1e-10)
        del small, c64
        inputs = make_inputs(p, p.nodes, p.edges, dtype, device)
        cands = candidates(p, inputs, dtype, device, backend)
        tol = {torch.float32: 1e-4, torch.float64: 1e-10}.get(dtype, 1e-2)
        fns: Dict[str, Callable] = {}
        entries = []
        for group in GROUPS:
            reference = None
            for name in sorted(names, key=lambda n: n != "e3nn"):
                key = name + SUFFIX[group]
                kind = "ours" if name == "equiops" else "baseline"
                fn = passes(cands[name], cands["_params_" + name], inputs, (group,))[group]
                got, err = safe_call(fn)
                if err:
                    notes[key] = err
                    entries.append((group, key, kind, False if kind == "ours" else None))
                    continue
                if name == "e3nn":
                    reference = got
                ok = ok64.get(key) is True and (reference is None or name == "e3nn" or agree(got, reference, tol))
                entries.append((group, key, kind, ok))
                if ok:
                    fns[key] = fn
        reps = (5, 1) if device.type == "cuda" else (3, 0)
        times = time_interleaved(fns, device, repeats=reps[0], warmup=reps[1])
        for group in GROUPS:
            base = "e3nn" + SUFFIX[group]
            for g_, key, kind, ok in entries:
                if g_ != group:
                    continue
                r = row("tfn", p.label, key, kind, base if (kind == "ours" and base in times) else None, ok, times, None)
                if key in notes:
                    r["note"] = notes[key]
                rows.append(r)
        del inputs, cands, fns
    progress(len(probs), len(probs), "done")
    return rows
