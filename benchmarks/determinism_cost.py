"""What deterministic mode costs, per call (docs/DETERMINISM.md's "Measured on the CPU" table).

On a GPU, deterministic mode replaces atomic adds by a CSR view (a stable sort of the
index + searchsorted) and segment sums; this times that extra work, and the scatter sum
with and without the switch (on the CPU the kernels ignore it: no atomics to replace),
against PyTorch's ``index_add_``. Median of 7, interleaved, float32, random unsorted index.

    python benchmarks/determinism_cost.py [--threads 1] [--device cpu|cuda] [--sizes 1e5:1e4,1e6:1e5]
"""

from __future__ import annotations

import argparse

import torch

import equiops
from equiops.bench.timing import time_interleaved
from equiops.graph import _csr


def rows(E: int, n: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    index = torch.randint(0, n, (E,), generator=g).to(device)
    src = torch.randint(0, n, (E,), generator=g).to(device)
    graph = equiops.Graph(src, index, n)
    x16 = torch.randn(E, 16, generator=g).to(device)
    x64 = torch.randn(E, 64, generator=g).to(device)

    def scatter(x, det):
        def run():
            with equiops.deterministic(det):
                return equiops.scatter(x, index, 0, dim_size=n)
        return run

    return {
        "one CSR view (stable sort + searchsorted)": lambda: _csr(index, n),
        "Graph(src, dst) (two views, index checks, degrees)": lambda: equiops.Graph(src, index, n),
        "scatter sum C=16, default": scatter(x16, False),
        "scatter sum C=16, deterministic mode": scatter(x16, True),
        "scatter sum C=64, default": scatter(x64, False),
        "scatter sum C=64, deterministic mode": scatter(x64, True),
        "Graph.aggregate sum C=64 (views prebuilt)": lambda: graph.aggregate(x64, "sum"),
        "torch.zeros(n, C).index_add_ C=64": lambda: torch.zeros(n, 64, device=device).index_add_(0, index, x64),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="1e5:1e4,1e6:1e5", help="E:n pairs, comma separated")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    for pair in args.sizes.split(","):
        E, n = (int(float(v)) for v in pair.split(":"))
        print(f"E = {E}, n = {n} ({device}, {args.threads} thread(s), float32; median ms)")
        for name, t in time_interleaved(rows(E, n, device), device).items():
            print(f"  {name:<52} {t['median_s'] * 1e3:9.2f}")


if __name__ == "__main__":
    main()
