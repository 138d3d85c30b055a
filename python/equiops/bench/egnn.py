"""EGNN benchmark: the fused model against the same model in plain PyTorch.

Problem (the issue's): ``EGNN(in_node_nf=16, hidden_nf=64, out_node_nf=16, in_edge_nf=2,
n_layers=4, attention=True)`` (``normalize`` off, SiLU) on a batch of 60 fully connected
graphs of 30 nodes (no self loops: 60 * 30 * 29 = 52,200 directed edges, in
``egnn_clean``'s order, receivers ascending), random node features ``(n, 16)``,
coordinates ``(n, 3)`` and edge features ``(E, 2)``. ``quick``: 16 graphs. The CLI's
``--egnn-graphs/-nodes/-hidden/-layers`` change the sizes.

Candidates, one weight draw (``torch.manual_seed(0)``) loaded into both:

* ``equiops fused``: :class:`equiops.nn.EGNN` (the fused message kernel, whose backward
  recomputes the edge quantities), called as a drop-in, ``model(h, x, [row, col],
  edge_attr)``: its :class:`equiops.Graph` is built inside each timed call;
* ``plain PyTorch``: :class:`equiops.reference.egnn.EGNN`, the equations of
  ``egnn_clean`` (concatenation, per-edge MLPs, ``index_add``); the baseline.

Passes: ``forward`` (under ``no_grad``) and ``fwd+bwd`` (forward, then the gradients of
``<h_out, g_h> + <x_out, g_x>``, fixed random cotangents, w.r.t. the coordinates and
every parameter). Outputs compared: ``h_out``, the displacement ``x_out - x`` and, for
fwd+bwd, the gradients (the coordinates' without the identity path ``g_x``), so that
the small coordinate updates are compared at their own scale. Each candidate is
checked in float64 first on 3 graphs of 6 nodes with every input differentiated
(1e-9 of each tensor's largest magnitude), then at the timed size and dtype against
the baseline (the first call; the displacement there at the coordinates' scale, as
float32 ``x_out`` resolves it).

Peak extra memory of one call (after a warm-up call): as
:mod:`equiops.bench.tp_conv` measures it (on CUDA ``max_memory_allocated``; on the
CPU the resident high-water mark in a fresh process per candidate and pass,
``python -m equiops.bench.egnn memory ...``), reported as ours / plain.

The issue's CPU goals (checked on CPU runs, ``goals`` of the fused fwd+bwd row):
fused fwd+bwd at least 1.5x faster than plain, with at most 1/3 of its peak extra
memory.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import tp_conv as conv_bench
from .tp_conv import agree, peak_extra_bytes

GROUPS = ("forward", "backward")
SUFFIX = {"forward": "", "backward": " fwd+bwd"}
OURS, BASELINE = "equiops fused", "plain PyTorch"
CANDIDATES = (OURS, BASELINE)
CHECK = (3, 6)  # graphs, nodes of the float64 check
CHECK_TOL = 1e-9
GOAL_SPEEDUP = 1.5  # fused fwd+bwd at least this much faster than plain (CPU)
GOAL_MEMORY = 1 / 3  # with at most this fraction of plain's peak extra memory (CPU)


@dataclass(frozen=True)
class Problem:
    graphs: int = 60
    nodes: int = 30  # per graph, fully connected without self loops
    hidden: int = 64
    layers: int = 4
    in_node: int = 16
    out_node: int = 16
    in_edge: int = 2
    attention: bool = True
    normalize: bool = False

    @property
    def num_nodes(self) -> int:
        return self.graphs * self.nodes

    @property
    def num_edges(self) -> int:
        return self.graphs * self.nodes * (self.nodes - 1)

    @property
    def label(self) -> str:
        return f"{self.layers}L H={self.hidden} {self.graphs}x{self.nodes} nodes E={self.num_edges}"


def problem(quick: bool = False, graphs: Optional[int] = None, nodes: Optional[int] = None,
            hidden: Optional[int] = None, layers: Optional[int] = None) -> Problem:
    p = Problem(graphs=16) if quick else Problem()
    sizes = {"graphs": graphs, "nodes": nodes, "hidden": hidden, "layers": layers}
    for name, v in sizes.items():
        if v is not None and v < (2 if name == "nodes" else 1):
            raise ValueError(f"egnn {name}: expected at least {2 if name == 'nodes' else 1}, got {v}")
    return replace(p, **{k: v for k, v in sizes.items() if v is not None})


def fully_connected(graphs: int, nodes: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(row, col)`` of ``graphs`` disjoint complete digraphs without self loops, in
    ``egnn_clean``'s order (``for i: for j != i``; row receives)."""
    i, j = torch.meshgrid(torch.arange(nodes), torch.arange(nodes), indexing="ij")
    keep = i != j
    i, j = i[keep], j[keep]
    offset = (torch.arange(graphs) * nodes).repeat_interleave(i.numel())
    return (i.repeat(graphs) + offset).to(device), (j.repeat(graphs) + offset).to(device)


def make_inputs(p: Problem, dtype, device, seed: int = 0) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    row, col = fully_connected(p.graphs, p.nodes, device)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    n, e = p.num_nodes, p.num_edges
    return {"h": randn(n, p.in_node), "x": randn(n, 3), "edge_attr": randn(e, p.in_edge), "row": row, "col": col,
            "cot_h": randn(n, p.out_node), "cot_x": randn(n, 3)}


def models(p: Problem, dtype, device, backend: str, names: Sequence[str] = CANDIDATES) -> Dict[str, torch.nn.Module]:
    """{name: model}: the baseline's initial weights loaded into ours."""
    from ..nn.egnn import EGNN as FusedEGNN
    from ..reference.egnn import EGNN as PlainEGNN

    kw = dict(in_node_nf=p.in_node, hidden_nf=p.hidden, out_node_nf=p.out_node, in_edge_nf=p.in_edge,
              n_layers=p.layers, attention=p.attention, normalize=p.normalize)
    torch.manual_seed(0)
    plain = PlainEGNN(**kw)
    out = {}
    if OURS in names:
        ours = FusedEGNN(**kw, backend=backend)
        ours.load_state_dict(plain.state_dict())
        out[OURS] = ours.to(device=device, dtype=dtype)
    if BASELINE in names:
        out[BASELINE] = plain.to(device=device, dtype=dtype)
    return out


def passes(model: torch.nn.Module, inputs, groups: Sequence[str] = GROUPS,
           input_grads: Sequence[str] = ("x",)) -> Dict[str, Callable[[], Tuple[torch.Tensor, ...]]]:
    """{group: f() -> (h_out, x_out - x[, grads of input_grads, then of the parameters
    sorted by name])}; the gradient of x leaves out the identity path (``cot_x``)."""
    h0, x0, a0, row, col = (inputs[k] for k in ("h", "x", "edge_attr", "row", "col"))
    cot_h, cot_x = inputs["cot_h"], inputs["cot_x"]
    params = [t for _, t in sorted(model.named_parameters())]

    def forward():
        with torch.no_grad():
            h, x = model(h0, x0, [row, col], a0)
            return h, x - x0

    def backward():
        leaves = {"h": h0, "x": x0, "edge_attr": a0}
        leaves = {k: (t.detach().requires_grad_() if k in input_grads else t) for k, t in leaves.items()}
        h, x = model(leaves["h"], leaves["x"], [row, col], leaves["edge_attr"])
        wrt = [leaves[k] for k in input_grads] + params
        grads = list(torch.autograd.grad((h, x), wrt, (cot_h, cot_x)))
        if "x" in input_grads:
            i = list(input_grads).index("x")
            grads[i] = grads[i] - cot_x
        return (h.detach(), x.detach() - x0) + tuple(grads)

    table = {"forward": forward, "backward": backward}
    return {g: table[g] for g in groups}


# ----------------------------------------------------------------- peak extra memory
def measure_memory_subprocess(p: Problem, candidate: str, group: str, dtype, backend: str, threads: int) -> Optional[int]:
    """The CPU peak of one call in a fresh process (None if it failed), as
    :func:`equiops.bench.tp_conv.measure_memory_subprocess` measures it."""
    return conv_bench.run_memory_process("equiops.bench.egnn", [
        candidate, group, str(p.graphs), str(p.nodes), str(p.hidden), str(p.layers), str(dtype).replace("torch.", ""),
        backend, str(threads)])


def _memory_main(argv: List[str]) -> None:
    candidate, group, graphs, nodes, hidden, layers, dtype, backend, threads = argv
    torch.set_num_threads(int(threads))
    dt = getattr(torch, dtype)
    p = problem(False, int(graphs), int(nodes), int(hidden), int(layers))
    inputs = make_inputs(p, dt, "cpu")
    model = models(p, dt, "cpu", backend, (candidate,))[candidate]
    fn = passes(model, inputs, (group,))[group]
    print(json.dumps({"peak_extra_bytes": peak_extra_bytes(fn, "cpu")}))


# ----------------------------------------------------------------------- the runner
def _agree_timed(got, want, tol: float, x0: torch.Tensor) -> bool:
    """:func:`agree`, but the displacement ``x_out - x`` (item 1) at the scale of the
    coordinates: in float32 ``x_out`` resolves ~1e-7 of ``|x|``, and the displacement
    (about 1e-3 of it) inherits that absolute error."""
    scale = max(float(want[1].double().abs().max()), float(x0.double().abs().max()))
    if got[1].shape != want[1].shape or float((got[1].double() - want[1].double()).abs().max()) > tol * scale:
        return False
    return agree(got[:1] + got[2:], want[:1] + want[2:], tol)


def _goals(speedup: Optional[float], memory_ratio: Optional[float]) -> Dict[str, Optional[bool]]:
    return {
        f"fused fwd+bwd >= {GOAL_SPEEDUP:g}x faster than plain": None if speedup is None else speedup >= GOAL_SPEEDUP,
        "fused fwd+bwd peak extra memory <= 1/3 of plain's": None if memory_ratio is None else memory_ratio <= GOAL_MEMORY,
    }


def run(device: torch.device, dtype, quick: bool, backend: str, row, safe_call, time_interleaved, progress,
        graphs: Optional[int] = None, nodes: Optional[int] = None, hidden: Optional[int] = None,
        layers: Optional[int] = None, memory: bool = True) -> List[Dict[str, object]]:
    """Rows for the runner (``row``, ``safe_call``, ``time_interleaved``, ``progress`` are
    the runner's helpers); ``memory``: also measure each call's peak extra memory."""
    p = problem(quick, graphs, nodes, hidden, layers)
    progress(0, 1, f"egnn {p.label}")
    # 1. Float64 on a few small graphs, every input and parameter differentiated.
    small_p = replace(p, graphs=CHECK[0], nodes=min(CHECK[1], p.nodes))
    small = make_inputs(small_p, torch.float64, device, seed=1)
    m64 = models(small_p, torch.float64, device, backend)
    ok64: Dict[str, Optional[bool]] = {}
    notes: Dict[str, str] = {}
    for group in GROUPS:
        want = passes(m64[BASELINE], small, (group,), ("h", "x", "edge_attr"))[group]()
        for name, model in m64.items():
            key = name + SUFFIX[group]
            got, err = safe_call(passes(model, small, (group,), ("h", "x", "edge_attr"))[group])
            if err:
                ok64[key], notes[key] = None, f"float64 check: {err}"
            else:
                ok64[key] = agree(got, want, CHECK_TOL)
                if not ok64[key]:
                    notes[key] = f"float64 check: differs from {BASELINE} by more than {CHECK_TOL:g}"
    del small, m64

    # 2. The timed size and dtype: the first call checks against the baseline and warms up.
    inputs = make_inputs(p, dtype, device)
    cands = models(p, dtype, device, backend)
    tol = {torch.float32: 1e-4, torch.float64: 1e-10}.get(dtype, 1e-2)
    fns: Dict[str, Callable] = {}
    entries = []
    for group in GROUPS:
        reference = None
        for name in (BASELINE, OURS):
            key = name + SUFFIX[group]
            kind = "ours" if name == OURS else "baseline"
            fn = passes(cands[name], inputs, (group,))[group]
            got, err = safe_call(fn)
            if err:
                notes[key] = err
                entries.append((group, name, key, kind, False if kind == "ours" else None))
                continue
            if name == BASELINE:
                reference = got
            ok = ok64.get(key) is True and (reference is None or name == BASELINE
                                            or _agree_timed(got, reference, tol, inputs["x"]))
            if ok64.get(key) is True and not ok:
                notes[key] = f"differs from {BASELINE} by more than {tol:g} at the timed size"
            entries.append((group, name, key, kind, ok))
            if ok:
                fns[key] = fn
            del got
        del reference
    # One more warm-up call each (the check call was the first): plain PyTorch's first
    # few calls in a process run slower on the CPU.
    reps = (10, 1) if device.type == "cuda" else ((3, 1) if quick else (5, 1))
    times = time_interleaved(fns, device, repeats=reps[0], warmup=reps[1])

    peaks: Dict[str, Optional[int]] = {}
    if memory:
        threads = torch.get_num_threads()
        for group, name, key, _, ok in entries:
            if not ok:
                continue
            if device.type == "cuda":
                peaks[key] = peak_extra_bytes(fns[key], device)
            else:
                peaks[key] = measure_memory_subprocess(p, name, group, dtype, backend, threads)

    rows: List[Dict[str, object]] = []
    for group in GROUPS:
        base = BASELINE + SUFFIX[group]
        for g_, _, key, kind, ok in entries:
            if g_ != group:
                continue
            r = row("egnn", p.label, key, kind, base if (kind == "ours" and base in times) else None, ok, times, None)
            r["peak_extra_MB"] = peaks[key] / 2**20 if peaks.get(key) is not None else None
            if kind == "ours" and peaks.get(key) is not None and peaks.get(base):
                r["memory_ratio"] = peaks[key] / peaks[base]
            if kind == "ours" and group == "backward" and device.type == "cpu":
                r["goals"] = _goals(r["speedup"], r.get("memory_ratio"))
            if key in notes:
                r["note"] = notes[key]
            r.update(graphs=p.graphs, nodes_per_graph=p.nodes, hidden=p.hidden, layers=p.layers,
                     num_nodes=p.num_nodes, num_edges=p.num_edges)
            rows.append(r)
    del inputs, cands, fns
    progress(1, 1, "done")
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "memory":
        _memory_main(sys.argv[2:])
    else:
        raise SystemExit("usage: python -m equiops.bench.egnn memory CANDIDATE GROUP GRAPHS NODES HIDDEN LAYERS DTYPE "
                         "BACKEND THREADS")
