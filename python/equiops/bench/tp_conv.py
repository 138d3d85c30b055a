"""Fused tensor-product convolution benchmark (``../shared/design/BENCHMARKS.md``).

Problems: the channel-wise ("uvu", one weight row per edge) configurations nequip-water,
nequip-lips and mace-medium on a random graph of 2,000 nodes and 40,000 edges (the
issue's CPU goal; 500 / 10,000 with ``quick``), edges in random order and an
:class:`equiops.Graph` built once outside the timed calls, as a model builds it once
per batch for all its layers.

Candidates, each ``out = zeros(n, dim_out).index_add_(0, dst, TP(x[src], edge_attr, w))``:

* ``equiops fused``: :class:`equiops.TensorProductConv` with the graph;
* ``equiops unfused``: :class:`equiops.TensorProduct` on the gathered rows + ``index_add_``
  (what fusion itself gains);
* ``e3nn unfused``: ``e3nn.o3.TensorProduct`` on the gathered rows + ``index_add_`` (the
  baseline; the same instructions and weights).

cuEquivariance's indexed path and OpenEquivariance's ``TensorProductConv`` (the issue's
GPU baselines) are not wired in yet: their rows are absent.

Passes: ``forward``, and ``fwd+bwd`` (forward, then the gradients of ``<out, g>`` w.r.t.
x, edge_attr and the weights). Every candidate is first checked in float64 on a small
graph against e3nn (1e-10 of the largest magnitude), then at the timed size against
e3nn (the warm-up call).

Peak extra memory of one call (after a warm-up call): on CUDA ``torch.cuda.max_memory_allocated``
minus what was allocated before; on the CPU the resident set's high-water mark during the
call over the resident size before it, in a fresh process per candidate and pass
(``python -m equiops.bench.tp_conv memory ...``) with glibc returning every large block to
the system at once and equiops' host pool off, so that the resident size follows live
memory and no other candidate's freed memory is counted. Without e3nn only equiops'
candidates run.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..graph import Graph
from ..nn.tensor_product import TensorProduct, channelwise_instructions
from ..nn.tp_conv import TensorProductConv
from . import optional_module

GROUPS = ("forward", "backward")
SUFFIX = {"forward": "", "backward": " fwd+bwd"}
CHECK = (40, 300)  # nodes, edges of the float64 check


@dataclass(frozen=True)
class Problem:
    name: str
    irreps_in1: str
    irreps_in2: str
    filter_out: str
    nodes: int
    edges: int

    @property
    def label(self) -> str:
        return f"{self.name} n={self.nodes} E={self.edges}"


_SPECS = (
    ("nequip-water", "32x0o+32x0e+32x1o+32x1e", "0e+1o", "32x0o+32x0e+32x1o+32x1e"),
    ("nequip-lips", "32x0o+32x0e+32x1o+32x1e+32x2o+32x2e", "0e+1o+2e", "32x0o+32x0e+32x1o+32x1e+32x2o+32x2e"),
    ("mace-medium", "128x0e+128x1o", "1x0e+1x1o+1x2e+1x3o", "128x0e+128x1o+128x2e"),
)
NAMES = tuple(s[0] for s in _SPECS)


def problems(quick: bool = False, names: Optional[Sequence[str]] = None) -> List[Problem]:
    nodes, edges = (500, 10_000) if quick else (2_000, 40_000)
    chosen = [s for s in _SPECS if names is None or s[0] in names]
    if names is not None:
        unknown = set(names) - set(NAMES)
        if unknown:
            raise ValueError(f"unknown convolution problems {sorted(unknown)}; known: {', '.join(NAMES)}")
    return [Problem(*s, nodes, edges) for s in chosen]


def _modules(p: Problem, dtype, device, backend: str):
    irreps_out, ins = channelwise_instructions(p.irreps_in1, p.irreps_in2, p.filter_out)
    kw = dict(shared_weights=False, internal_weights=False)
    fused = TensorProductConv(p.irreps_in1, p.irreps_in2, irreps_out, ins, backend=backend, **kw).to(device, dtype)
    plain = TensorProduct(p.irreps_in1, p.irreps_in2, irreps_out, ins, backend=backend, **kw).to(device, dtype)
    theirs = None
    o3 = optional_module("e3nn.o3")
    if o3 is not None:
        old = torch.get_default_dtype()
        torch.set_default_dtype(dtype if dtype in (torch.float32, torch.float64) else torch.float32)
        try:
            theirs = o3.TensorProduct(p.irreps_in1, p.irreps_in2, irreps_out, ins, **kw).to(device, dtype)
        finally:
            torch.set_default_dtype(old)
    return fused, plain, theirs


def make_inputs(p: Problem, nodes: int, edges: int, dtype, device, seed: int = 0) -> Dict[str, object]:
    g = torch.Generator().manual_seed(seed)
    fused, _, _ = _modules(p, torch.float64, "cpu", "auto")
    src = torch.randint(0, nodes, (edges,), generator=g)
    dst = torch.randint(0, nodes, (edges,), generator=g)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    x = randn(nodes, fused.irreps_in1.dim)
    attr = randn(edges, fused.irreps_in2.dim)
    w = randn(edges, fused.weight_numel)
    cot = randn(nodes, fused.irreps_out.dim)
    src, dst = src.to(device), dst.to(device)
    return {"x": x, "attr": attr, "w": w, "cot": cot, "src": src, "dst": dst, "graph": Graph(src, dst, nodes)}


def candidates(p: Problem, inputs, dtype, device, backend: str) -> Dict[str, Callable]:
    """{name: f(x, attr, w) -> (nodes, dim_out)}."""
    fused, plain, theirs = _modules(p, dtype, device, backend)
    src, dst, graph = inputs["src"], inputs["dst"], inputs["graph"]
    n = graph.num_nodes

    def unfused(tp):
        def f(x, a, w):
            msg = tp(x.index_select(0, src), a, w)
            return msg.new_zeros(n, msg.shape[1]).index_add_(0, dst, msg)

        return f

    out = {"equiops fused": lambda x, a, w: fused(x, a, w, graph=graph), "equiops unfused": unfused(plain)}
    if theirs is not None:
        out["e3nn unfused"] = unfused(theirs)
    return out


def passes(fn: Callable, inputs, groups: Sequence[str] = GROUPS) -> Dict[str, Callable]:
    x, a, w, cot = inputs["x"], inputs["attr"], inputs["w"], inputs["cot"]
    leaves = [t.detach().requires_grad_() for t in (x, a, w)]

    def forward():
        with torch.no_grad():
            return (fn(x, a, w),)

    def backward():
        out = fn(*leaves)
        return (out.detach(),) + torch.autograd.grad(out, leaves, cot)

    table = {"forward": forward, "backward": backward}
    return {g: table[g] for g in groups}


def agree(got: Tuple[torch.Tensor, ...], want: Tuple[torch.Tensor, ...], tol: float) -> bool:
    for a, b in zip(got, want):
        if a.shape != b.shape:
            return False
        scale = b.double().abs().max().clamp_min(1e-300)
        if float((a.double() - b.double()).abs().max() / scale) > tol:
            return False
    return True


# ----------------------------------------------------------------- peak extra memory
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_extra_bytes(fn: Callable[[], object], device) -> int:
    """In this process: the peak memory one call of fn adds over what was held before
    (after one warm-up call, so that one-time initialisation is not counted). CPU: the
    resident set's high-water mark (VmHWM, reset through /proc/self/clear_refs) over the
    resident size before the call; exact only when freed memory goes back to the system
    at once, which :func:`measure_memory_subprocess` arranges."""
    fn()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current resident size
    before = _status_kb("VmRSS")
    fn()
    return max(0, _status_kb("VmHWM") - before)


def measure_memory_subprocess(problem: str, candidate: str, group: str, nodes: int, edges: int, dtype, backend: str,
                              threads: int) -> Optional[int]:
    """The CPU peak in a fresh process (None if it failed)."""
    return run_memory_process("equiops.bench.tp_conv", [problem, candidate, group, str(nodes), str(edges),
                                                        str(dtype).replace("torch.", ""), backend, str(threads)])


def run_memory_process(module: str, args: List[str]) -> Optional[int]:
    """``python -m module memory *args`` in a fresh process: its printed peak extra bytes
    (None if it failed). Shared by the benchmarks that measure peak memory this way."""
    cmd = [sys.executable, "-m", module, "memory", *args]
    # Every large block straight from and back to the system (glibc's fixed mmap
    # threshold; no host pool), so the resident size follows live memory.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "EQUIOPS_CPU_POOL_MB": "0"}
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True, env=env)
        return int(json.loads(res.stdout.strip().splitlines()[-1])["peak_extra_bytes"])
    except Exception:  # noqa: BLE001 - reported as a missing number
        return None


def _memory_main(argv: List[str]) -> None:
    problem, candidate, group, nodes, edges, dtype, backend, threads = argv
    torch.set_num_threads(int(threads))
    dt = getattr(torch, dtype)
    p = [q for q in problems(False, [problem])][0]
    inputs = make_inputs(p, int(nodes), int(edges), dt, "cpu")
    fn = passes(candidates(p, inputs, dt, "cpu", backend)[candidate], inputs, (group,))[group]
    print(json.dumps({"peak_extra_bytes": peak_extra_bytes(fn, "cpu")}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "memory":
        _memory_main(sys.argv[2:])
    else:
        raise SystemExit("usage: python -m equiops.bench.tp_conv memory PROBLEM CANDIDATE GROUP NODES EDGES DTYPE BACKEND THREADS")
