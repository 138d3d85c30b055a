"""pytest-benchmark suite for tensor products (BENCHMARKS.md's problems: MACE, NequIP,
SevenNet channel-wise; DiffDock, Tetris fully connected) at 10,000 rows on the CPU,
50,000 on a GPU (1,000 / 10,000 with EQUIOPS_BENCH_QUICK=1): ours against e3nn eager
(and, on a GPU, cuEquivariance and OpenEquivariance when importable), forward,
forward+backward (gradients of x, y and the weights) and the force-training double
backward. Each candidate is checked before it is timed: in float64 at a few rows
against e3nn, then at the timed size against e3nn eager (equiops.bench.tensor_product).
Groups read one problem and pass at a time; extra_info holds the nominal FLOPs."""

import pytest
import torch

from equiops.bench import tensor_product as tb

from conftest import DEVICE, QUICK, synchronized

PROBLEMS = tb.problems(QUICK, DEVICE)
_CACHE = {}


def _setup(problem):
    """Inputs, candidates and e3nn's results at the timed size, one problem at a time."""
    if problem not in _CACHE:
        _CACHE.clear()
        inputs = tb.make_inputs(problem, DEVICE, torch.float32)
        cands, errors = tb.build(problem, DEVICE, torch.float32, "auto", compile_e3nn=False)
        _CACHE[problem] = (inputs, cands, errors, {})
    return _CACHE[problem]


def _names():
    """Candidates that exist on this machine (probed on a small problem)."""
    probe = tb.PROBLEMS[-1].with_rows(4)
    cands, errors = tb.build(probe, DEVICE, torch.float32, "auto", compile_e3nn=False)
    return sorted(set(cands) | set(errors), key=lambda n: (not n.startswith("equiops"), n))


def _check_f64(problem, name, group):
    small = problem.with_rows(tb.CHECK_ROWS)
    inputs = tb.make_inputs(small, DEVICE, torch.float64)
    expected = tb.passes(tb.reference_candidate(small, DEVICE), inputs, (group,))[group]()
    cands, errors = tb.build(small, DEVICE, torch.float64, "auto", compile_e3nn=False, check_only=True)
    if name in errors:
        pytest.skip(f"{name}: {errors[name]}")
    got = tb.passes(cands[name], inputs, (group,))[group]()
    assert tb.agree(got, tb.in_layout(expected, group, cands[name]), tb.CHECK_TOL_F64), f"{name} {group}: float64 check"


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.label.replace(" ", "-").replace("=", ""))
@pytest.mark.parametrize("group", tb.GROUPS)
@pytest.mark.parametrize("variant", _names())
def test_tp(benchmark, problem, group, variant):
    inputs, cands, errors, reference = _setup(problem)
    if variant in errors:
        pytest.skip(f"{variant}: {errors[variant]}")
    _check_f64(problem, variant, group)
    fn = tb.passes(cands[variant], inputs, (group,))[group]
    if variant != "e3nn" and "e3nn" in cands:
        if group not in reference:
            reference[group] = tb.passes(cands["e3nn"], inputs, (group,))[group]()
        expected = tb.in_layout(reference[group], group, cands[variant])
        assert tb.agree(fn(), expected, tb.TIMED_TOL[torch.float32]), f"{variant} {group}: differs from e3nn"
    benchmark.group = f"tp {group} {problem.label}"
    benchmark.extra_info["flops"] = tb.flops(problem, group)
    benchmark.extra_info["flop_multiple_of_forward"] = tb.FLOP_MULTIPLE[group]
    if group == "forward":
        benchmark.extra_info["bytes"] = tb.bytes_moved(problem, torch.float32)
    benchmark.pedantic(synchronized(fn), rounds=3 if QUICK else 5, warmup_rounds=1)
