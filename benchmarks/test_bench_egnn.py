"""EGNN benchmark (equiops.bench.egnn): equiops.nn.EGNN (fused) against the plain-PyTorch
model (equiops.reference.egnn.EGNN), 4 layers, H = 64, attention on, 60 fully connected
graphs of 30 nodes (52,200 edges; 16 graphs with EQUIOPS_BENCH_QUICK=1), forward and
forward+backward.

``test_cli_tiny`` runs ``python -m equiops bench --ops egnn`` on 2 graphs of 5 nodes with
H = 8 (a few seconds) and checks its JSON and table. ``test_egnn`` times each candidate
and pass at the issue's size with pytest-benchmark; it runs only under
``--benchmark-only`` (about a minute on 2 cores), after the same checks as the CLI's::

    python -m pytest benchmarks/test_bench_egnn.py                   # the tiny CLI run
    python -m pytest benchmarks/test_bench_egnn.py --benchmark-only  # the timings
"""

import json
from dataclasses import replace

import pytest
import torch

from equiops.__main__ import main
from equiops.bench import egnn as eb

from conftest import DEVICE, QUICK, synchronized

PROBLEM = eb.problem(QUICK)
_CACHE = {}


def test_cli_tiny(tmp_path, capsys):
    out = tmp_path / "egnn.json"
    argv = ["bench", "--ops", "egnn", "--device", "cpu", "--egnn-graphs", "2", "--egnn-nodes", "5",
            "--egnn-hidden", "8", "--egnn-layers", "2", "--egnn-memory", "off", "--output", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    rows = result["results"]
    assert [r["variant"] for r in rows] == ["plain PyTorch", "equiops fused", "plain PyTorch fwd+bwd",
                                             "equiops fused fwd+bwd"]
    for r in rows:
        assert r["op"] == "egnn" and r["pass"] is True and r["median_ms"] > 0, r
        assert (r["graphs"], r["nodes_per_graph"], r["hidden"], r["layers"], r["num_edges"]) == (2, 5, 8, 2, 40)
        assert r["peak_extra_MB"] is None  # --egnn-memory off
    for ours, base in ((rows[1], rows[0]), (rows[3], rows[2])):
        assert ours["kind"] == "ours" and ours["baseline"] == base["variant"] and base["kind"] == "baseline"
        assert ours["speedup"] == pytest.approx(base["median_ms"] / ours["median_ms"])
    assert set(rows[3]["goals"]) == set(eb._goals(None, None))
    assert list(rows[3]["goals"].values())[1] is None  # memory not measured
    table = capsys.readouterr().out
    assert "equiops fused fwd+bwd" in table and "plain PyTorch fwd+bwd" in table
    assert "peak extra memory <= 1/3 of plain's: not measured" in table


def test_memory_subprocess_tiny():
    """The CPU memory probe: a fresh process per candidate and pass, a number back."""
    p = eb.problem(False, graphs=2, nodes=5, hidden=8, layers=1)
    for name in eb.CANDIDATES:
        peak = eb.measure_memory_subprocess(p, name, "backward", torch.float32, "auto", 1)
        assert isinstance(peak, int) and peak >= 0, name


def _setup():
    if not _CACHE:
        _CACHE["inputs"] = eb.make_inputs(PROBLEM, torch.float32, DEVICE)
        _CACHE["models"] = eb.models(PROBLEM, torch.float32, DEVICE, "auto")
        _CACHE["reference"] = {}
    return _CACHE["inputs"], _CACHE["models"], _CACHE["reference"]


@pytest.mark.parametrize("group", eb.GROUPS)
@pytest.mark.parametrize("variant", eb.CANDIDATES)
def test_egnn(benchmark, request, variant, group):
    if not request.config.getoption("benchmark_only", False):
        pytest.skip("the issue's problem: run with --benchmark-only")
    # float64 on 3 graphs of 6 nodes, every input differentiated
    small_p = replace(PROBLEM, graphs=eb.CHECK[0], nodes=eb.CHECK[1])
    small = eb.make_inputs(small_p, torch.float64, DEVICE, seed=1)
    m64 = eb.models(small_p, torch.float64, DEVICE, "auto")
    grads = ("h", "x", "edge_attr")
    want = eb.passes(m64[eb.BASELINE], small, (group,), grads)[group]()
    got = eb.passes(m64[variant], small, (group,), grads)[group]()
    assert eb.agree(got, want, eb.CHECK_TOL), f"{variant} {group}: float64 check"
    inputs, models, reference = _setup()
    fn = eb.passes(models[variant], inputs, (group,))[group]
    if group not in reference:
        reference[group] = eb.passes(models[eb.BASELINE], inputs, (group,))[group]()
    assert eb._agree_timed(fn(), reference[group], 1e-4, inputs["x"]), f"{variant} {group}: differs from plain"
    benchmark.group = f"egnn {group} {PROBLEM.label}"
    benchmark.extra_info.update(num_nodes=PROBLEM.num_nodes, num_edges=PROBLEM.num_edges)
    benchmark.pedantic(synchronized(fn), rounds=3 if QUICK else 5, warmup_rounds=1)
