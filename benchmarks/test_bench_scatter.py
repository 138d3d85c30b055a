"""pytest-benchmark suite for scatter/segment sums at E = 1e6 edges (2e5 with
EQUIOPS_BENCH_QUICK=1), D in {1, 3, 16, 64, 128}: ours against index_add_,
scatter_reduce_ and torch_scatter (when importable), grouped per problem so the
comparison table reads one problem at a time. Each candidate is checked against a
float64 index_add_ before it is timed."""

import pytest
import torch

from equiops.bench import scatter as sb

from conftest import DEVICE, QUICK, synchronized

PROBLEMS = sb.problems(QUICK)
_INPUTS = {}


def _inputs(problem):
    if problem not in _INPUTS:
        _INPUTS.clear()  # keep one problem's tensors alive at a time
        _INPUTS[problem] = sb.make_inputs(problem, DEVICE, torch.float32)
    return _INPUTS[problem]


def _names():
    probe = sb.Problem(64, 2)
    cands = sb.forward_candidates(probe, sb.make_inputs(probe, "cpu", torch.float32), "auto")
    return list(cands["ours"]) + list(cands["baselines"])


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.label.replace(" ", "-").replace("=", ""))
@pytest.mark.parametrize("variant", _names())
def test_sum(benchmark, problem, variant):
    inputs = _inputs(problem)
    cands = sb.forward_candidates(problem, inputs, "auto")
    fn = {**cands["ours"], **cands["baselines"]}[variant]
    torch.testing.assert_close(fn().double(), sb.expected_sum(problem, inputs), rtol=1e-5, atol=1e-5)
    benchmark.group = f"scatter sum {problem.label}"
    benchmark.extra_info["bytes"] = sb.bytes_moved(problem, torch.float32)
    benchmark.pedantic(synchronized(fn), rounds=7, warmup_rounds=1)


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.label.replace(" ", "-").replace("=", ""))
def test_graph_build(benchmark, problem):
    """The CSR build cost, reported separately from the reductions that reuse it."""
    benchmark.group = f"scatter graph build {problem.label}"
    benchmark.pedantic(synchronized(sb.graph_build(problem, _inputs(problem))), rounds=5, warmup_rounds=1)
