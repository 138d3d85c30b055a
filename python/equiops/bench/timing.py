"""Timing that both the CLI and the GPU check use.

CPU: the thread count is set explicitly (both sides the same), candidates are timed
interleaved (one call of each in turn, repeated) and the median is reported, so drift
on a shared machine hits every candidate alike. CUDA: CUDA events around each call
after a warm-up (compilation and caches stay out), median of the repeats.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List

import torch


def _time_once(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_interleaved(
    candidates: Dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int = 7,
    warmup: int = 2,
    min_time: float = 0.0,
    burst: int = 1,
) -> Dict[str, Dict[str, float]]:
    """Median and spread (seconds) of each candidate, timed in turn.

    ``burst`` > 1 calls each candidate that many times in a row per turn (each call a
    sample), so the median leans to the warm steady state of repeated calls, as in a
    training loop, rather than to the state another candidate left behind (caches,
    freed memory). Sub-millisecond CPU timings still vary by about 20% between runs."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    samples: Dict[str, List[float]] = {name: [] for name in candidates}
    t_start = time.perf_counter()
    rounds = 0
    while rounds < repeats or time.perf_counter() - t_start < min_time:
        for name, fn in candidates.items():
            for _ in range(burst):
                samples[name].append(_time_once(fn, device))
        rounds += 1
        if rounds >= 10 * repeats:
            break
    return {
        name: {
            "median_s": statistics.median(ts),
            "min_s": min(ts),
            "max_s": max(ts),
            "repeats": len(ts),
        }
        for name, ts in samples.items()
    }


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30) -> float:
    """Device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    n = nbytes // 4
    a = torch.randn(n, device=device)
    b = torch.empty_like(a)
    result = time_interleaved({"copy": lambda: b.copy_(a)}, device, repeats=10, warmup=3)
    return 2 * a.numel() * 4 / result["copy"]["median_s"]
