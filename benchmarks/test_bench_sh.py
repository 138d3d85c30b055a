"""pytest-benchmark suite for spherical harmonics (all degrees 0..l_max of unit
vectors, integral normalization): ours against sphericart and e3nn, forward,
forward+backward and the force-training double backward, at N = 1e5 and 1e6 vectors
(1e5 with EQUIOPS_BENCH_QUICK=1), l_max in {2, 3, 6, 10}. Each candidate is checked
(equiops.bench.harmonics) before it is timed; groups read one problem at a time."""

import pytest
import torch

from equiops.bench import harmonics as hb

from conftest import DEVICE, QUICK, synchronized

PROBLEMS = hb.problems(QUICK, DEVICE)
_INPUTS = {}


def _inputs(problem):
    if problem not in _INPUTS:
        _INPUTS.clear()  # keep one problem's tensors alive at a time
        _INPUTS[problem] = hb.make_inputs(problem, DEVICE, torch.float32)
    return _INPUTS[problem]


def _names():
    probe = hb.Problem(16, 2)
    cands = hb.candidates(probe, hb.make_inputs(probe, "cpu", torch.float32), "auto")
    return [(group, name) for group, fns in cands.items() for name in fns]


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.label.replace(" ", "-").replace("=", ""))
@pytest.mark.parametrize("group,variant", _names(), ids=lambda v: str(v).replace(" ", "-"))
def test_sh(benchmark, problem, group, variant):
    inputs = _inputs(problem)
    cands = hb.candidates(problem, inputs, "auto")
    fn = cands[group].get(variant)
    if fn is None:
        pytest.skip(f"{variant} does not cover {problem.label}")
    ref = hb.candidates(problem, {k: v.detach().double().cpu() for k, v in inputs.items()}, "auto")
    expected = hb.expected(problem, inputs) if group == "forward" else ref[group][
        "equiops fwd+bwd" if group == "backward" else "equiops force"]()
    err = (fn().double().cpu() - expected).abs().max() / expected.abs().max()
    assert err < 1e-5, f"{variant}: relative error {err:.1e}"
    benchmark.group = f"sh {group} {problem.label}"
    benchmark.pedantic(synchronized(fn), rounds=5, warmup_rounds=1)
