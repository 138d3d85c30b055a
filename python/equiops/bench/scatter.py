"""Scatter/segment benchmark problems and baselines (BENCHMARKS.md: E = 1e6 edges,
D in {1, 3, 16, 64, 128}, against index_add_, scatter_reduce_ and torch_scatter).

Graphs have ``num_nodes = E / 16`` receivers (mean in-degree 16, typical of molecular
neighbour lists) drawn uniformly at random. The sum is checked against a float64
``index_add_`` before anything is timed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List

import torch

import equiops

from . import optional_module

WIDTHS = (1, 3, 16, 64, 128)
MEAN_DEGREE = 16


@dataclass(frozen=True)
class Problem:
    num_edges: int
    width: int

    @property
    def num_nodes(self) -> int:
        return max(self.num_edges // MEAN_DEGREE, 1)

    @property
    def label(self) -> str:
        return f"E={self.num_edges:.0e} D={self.width}".replace("e+0", "e")


def problems(quick: bool = False) -> List[Problem]:
    edges = 200_000 if quick else 1_000_000
    return [Problem(edges, d) for d in WIDTHS]


def torch_scatter_module():
    return optional_module("torch_scatter")


def make_inputs(problem: Problem, device, dtype, seed: int = 0) -> Dict[str, object]:
    g = torch.Generator().manual_seed(seed)
    E, N, D = problem.num_edges, problem.num_nodes, problem.width
    dst = torch.randint(0, N, (E,), generator=g).to(device)
    src = torch.randint(0, N, (E,), generator=g).to(device)
    x = torch.randn(E, D, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    graph = equiops.Graph(src, dst, N)
    return {
        "dst": dst,
        "src": src,
        "x": x,
        "graph": graph,
        "x_sorted": x[graph.dst_perm].contiguous(),
        "dst_expanded": dst[:, None].expand(E, D),
    }


def expected_sum(problem: Problem, inputs) -> torch.Tensor:
    x = inputs["x"].double()
    return torch.zeros(problem.num_nodes, problem.width, dtype=torch.float64, device=x.device).index_add_(0, inputs["dst"], x)


def bytes_moved(problem: Problem, dtype) -> int:
    """Each input read once (values and one int64 index per edge), the output written once."""
    item = torch.empty((), dtype=dtype).element_size()
    return problem.num_edges * (problem.width * item + 8) + problem.num_nodes * problem.width * item


def forward_candidates(problem: Problem, inputs, backend: str) -> Dict[str, Dict[str, Callable[[], torch.Tensor]]]:
    """{"ours": {...}, "baselines": {...}}: zero-argument callables returning the sums."""
    N, D = problem.num_nodes, problem.width
    x, dst, graph = inputs["x"], inputs["dst"], inputs["graph"]
    ours = {
        "Graph.aggregate (deterministic)": lambda: graph.aggregate(x, "sum", backend=backend),
        "segment_csr (rows pre-sorted)": lambda: equiops.segment_csr(inputs["x_sorted"], graph.dst_indptr, backend=backend),
        "scatter (unsorted index)": lambda: equiops.scatter(x, dst, 0, dim_size=N, backend=backend),
    }
    baselines = {
        "index_add_": lambda: torch.zeros(N, D, dtype=x.dtype, device=x.device).index_add_(0, dst, x),
        "scatter_reduce_": lambda: torch.zeros(N, D, dtype=x.dtype, device=x.device).scatter_reduce_(
            0, inputs["dst_expanded"], x, "sum"
        ),
    }
    ts = torch_scatter_module()
    if ts is not None:
        baselines["torch_scatter.scatter"] = lambda: ts.scatter(x, dst, 0, dim_size=N, reduce="sum")
        baselines["torch_scatter.segment_csr"] = lambda: ts.segment_csr(inputs["x_sorted"], graph.dst_indptr, reduce="sum")
    return {"ours": ours, "baselines": baselines}


def backward_candidates(problem: Problem, inputs, backend: str) -> Dict[str, Dict[str, Callable[[], object]]]:
    """Forward + backward of a sum aggregation (the gradient is a gather of node rows)."""
    N, D = problem.num_nodes, problem.width
    x = inputs["x"].detach().requires_grad_()
    dst, graph = inputs["dst"], inputs["graph"]
    cot = torch.ones(N, D, dtype=x.dtype, device=x.device)

    def ours():
        (g,) = torch.autograd.grad(graph.aggregate(x, "sum", backend=backend), x, cot)
        return g

    def index_add():
        (g,) = torch.autograd.grad(torch.zeros(N, D, dtype=x.dtype, device=x.device).index_add(0, dst, x), x, cot)
        return g

    return {"ours": {"Graph.aggregate fwd+bwd": ours}, "baselines": {"index_add fwd+bwd": index_add}}


def graph_build(problem: Problem, inputs) -> Callable[[], object]:
    """The one-off cost of the CSR views (two stable sorts), reported on its own."""
    return lambda: equiops.Graph(inputs["src"], inputs["dst"], problem.num_nodes, validate=False)
