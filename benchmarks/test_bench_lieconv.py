"""LieConv benchmark (equiops.bench.lieconv): one equiops.nn.LieConv (sparse neighbourhoods,
fused PointConv) against the original's dense all-pairs layer, and a 2-layer LieResNet on
a large cloud (no baseline).

``test_cli_tiny`` runs ``python -m equiops bench --ops lieconv`` on clouds of 60 and 100
points (scale rows at 150 points, memory off; a few seconds) and checks its JSON and
table; ``test_memory_subprocess_tiny`` the CPU memory probe. The issue's sizes run with
``python -m equiops bench --ops lieconv`` (n = 1,000 and 4,000; 20,000 points)::

    python -m pytest benchmarks/test_bench_lieconv.py
"""

import json

import pytest
import torch

from equiops.__main__ import main
from equiops.bench import lieconv as lb


def test_cli_tiny(tmp_path, capsys):
    out = tmp_path / "lieconv.json"
    argv = ["bench", "--ops", "lieconv", "--device", "cpu", "--threads", "1", "--lieconv-sizes", "60,100",
            "--lieconv-nbhd", "8", "--lieconv-channels", "8", "--lieconv-scale-points", "150",
            "--lieconv-memory", "off", "--output", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    rows = result["results"]
    layer_variants = ["dense pairs (original)", "equiops sparse+fused", "dense pairs (original) fwd+bwd",
                      "equiops sparse+fused fwd+bwd"]
    assert [r["variant"] for r in rows] == layer_variants * 2 + [lb.SCALE_NAME] * 2
    for r in rows:
        assert r["op"] == "lieconv" and r["pass"] is True and r["median_ms"] > 0, r
        assert r["peak_extra_MB"] is None  # --lieconv-memory off
    for n, block in ((60, rows[0:4]), (100, rows[4:8])):
        for r in block:
            assert (r["points"], r["nbhd"], r["channels"], r["batch"], r["knn"]) == (n, 8, 8, 1, True)
            assert r["problem"] == f"LieConv T(3) knn n={n} nbhd=8 c=8 bs=1"
        for ours, base in ((block[1], block[0]), (block[3], block[2])):
            assert ours["kind"] == "ours" and ours["baseline"] == base["variant"] and base["kind"] == "baseline"
            assert ours["speedup"] == pytest.approx(base["median_ms"] / ours["median_ms"])
    assert "goals" not in rows[1] and "goals" not in rows[3]  # the goal is stated at the largest size
    assert rows[5]["goals"] == {lb._goal_key("forward", 100): rows[5]["speedup"] >= lb.GOAL_SPEEDUP}
    assert set(rows[7]["goals"]) == {lb._goal_key("backward", 100)}
    for r, mode in zip(rows[8:], ("knn", "ball")):
        assert r["kind"] == "ours" and r["baseline"] is None and r["knn"] == (mode == "knn")
        assert r["problem"] == f"LieResNet T(3) 2L k=32 nbhd=8 {mode} n=150"
        assert r["goals"] == {"peak extra memory < 2 GB at n=150": None}  # memory not measured
        assert r["note"].startswith("no baseline: dense would need")
        assert r["dense_pairs_GB"] == pytest.approx(150**2 * 3 * 4 / 1e9)
    table = capsys.readouterr().out
    assert "equiops sparse+fused fwd+bwd" in table and "dense pairs (original) fwd+bwd" in table
    assert "peak extra memory < 2 GB at n=150: not measured" in table


def test_dense_layer_matches_original_layout():
    """The dense transcription and ours agree on a padded float64 cloud (k < n and k = n)."""
    ok, notes = lb.check_layer(lb.Layer(n=30, nbhd=5, channels=4, batch=2), torch.device("cpu"), "auto")
    assert all(ok.values()) and set(ok) == {lb.OURS, lb.OURS + " fwd+bwd"}, notes


def test_memory_subprocess_tiny():
    """The CPU memory probe: a fresh process per candidate and pass, a number back."""
    p = lb.Layer(n=50, nbhd=4, channels=4)
    for name in lb.CANDIDATES:
        peak = lb.measure_layer_memory(p, name, "backward", torch.float32, "auto", 1)
        assert isinstance(peak, int) and peak >= 0, name
    peak = lb.measure_scale_memory(lb.Scale(points=80, knn=False, nbhd=4), torch.float32, "auto", 1)
    assert isinstance(peak, int) and peak >= 0
