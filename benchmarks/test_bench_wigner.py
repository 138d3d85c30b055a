"""Cold-cache build time of ``equiops.so3.wigner_3j`` for every valid triple with l <= 12.

Measured (all 1105 triples l1, l2, l3 <= 12, float64, CPU, torch 2.13 CPU build, 2-core
container): **0.36 s** from a cold cache (median of 5 cold builds, min 0.36 s, max 0.37 s);
the first build in a fresh process took 0.45 s; with the 2 cores shared with other jobs
(load average 3) cold builds took 0.5-0.7 s.  Each later call is a cache hit plus a copy.
(``e3nn.o3.wigner_3j`` for the 369 triples with l <= 8 took 1.2-11 s on the same machine,
depending on its own caches.)

Run as a script::

    python benchmarks/test_bench_wigner.py [--lmax 12] [--repeat 5] [--e3nn]

or with pytest-benchmark::

    python -m pytest benchmarks/test_bench_wigner.py --benchmark-only
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

from equiops import so3


def triples(lmax: int):
    return [
        (l1, l2, l3)
        for l1, l2, l3 in itertools.product(range(lmax + 1), repeat=3)
        if abs(l1 - l2) <= l3 <= l1 + l2
    ]


def clear_caches() -> None:
    """Empty every cache wigner_3j relies on, so that the next build is cold."""
    so3._wigner_3j_f64.cache_clear()
    so3._real_targets.cache_clear()
    so3._fact.cache_clear()


def build_all(lmax: int) -> int:
    n = 0
    for t in triples(lmax):
        so3.wigner_3j(*t)
        n += 1
    return n


def time_cold_build(lmax: int) -> float:
    clear_caches()
    t0 = time.perf_counter()
    build_all(lmax)
    return time.perf_counter() - t0


def time_e3nn(lmax: int) -> float:
    from e3nn import o3

    t0 = time.perf_counter()
    for t in triples(lmax):
        o3.wigner_3j(*t)
    return time.perf_counter() - t0


def test_wigner_3j_cold_build_lmax12(benchmark):
    """pytest-benchmark entry point (collected only when this file is passed explicitly)."""
    benchmark.pedantic(build_all, args=(12,), setup=clear_caches, rounds=3, iterations=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lmax", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--e3nn", action="store_true", help="also time e3nn.o3.wigner_3j (l <= min(lmax, 8))")
    args = parser.parse_args()

    n = len(triples(args.lmax))
    first = time_cold_build(args.lmax)
    times = [time_cold_build(args.lmax) for _ in range(args.repeat)]
    print(f"wigner_3j, {n} triples with l <= {args.lmax}, cold cache:")
    print(f"  first build in this process: {first:.3f} s")
    print(f"  median of {args.repeat}: {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f})")
    if args.e3nn:
        le = min(args.lmax, 8)
        print(f"e3nn.o3.wigner_3j, {len(triples(le))} triples with l <= {le}: {time_e3nn(le):.3f} s")


if __name__ == "__main__":
    main()
