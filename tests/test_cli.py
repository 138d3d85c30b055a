"""The command line (`python -m equiops bench | info`): one-line errors for bad
arguments, and a tiny end-to-end benchmark run that writes the JSON (baselines by
name, ratios, environment) and the table."""

import json
import subprocess
import sys

import pytest
import torch

from equiops.__main__ import main
from equiops.bench import harmonics, runner, scatter
from equiops.bench import tensor_product as tpb


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "--ops", "nope"], "--ops: ['nope'] not available"),
        (["bench", "--output", "/nonexistent-folder/x.json"], "cannot write"),
        (["bench", "--backend", "bogus"], "--backend must be one of"),
        (["bench", "--dtype", "int8"], "invalid choice"),
        (["bench", "--backend", "triton", "--device", "cpu"], "runs on CUDA tensors"),
        (["bench", "--ops", "tp", "--tp-problems", "mace-huge"], "--tp-problems: ['mace-huge'] unknown"),
        (["bench", "--ops", "tp", "--tp-passes", "sideways"], "--tp-passes: ['sideways'] unknown"),
        (["bench", "--ops", "tp", "--tp-budget", "0"], "--tp-budget must be a positive"),
        (["bench", "--ops", "tp", "--tp-compile-e3nn", "maybe"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_one_line_in_a_fresh_process():
    done = subprocess.run([sys.executable, "-m", "equiops", "bench", "--device", "cuda"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["python -m equiops: error: --device cuda: no CUDA GPU is visible to torch"]


def test_info_runs(capsys):
    assert main(["info"]) == 0
    assert "C++ CPU kernels" in capsys.readouterr().out


def test_tiny_bench_writes_json_with_named_baselines(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(harmonics, "problems", lambda quick, device="cpu": [harmonics.Problem(40, 2)])
    monkeypatch.setattr(scatter, "problems", lambda quick: [scatter.Problem(256, 3)])
    monkeypatch.setattr(tpb, "problems", _tiny_tp_problems)
    out = tmp_path / "r.json"
    assert main(["bench", "--quick", "--ops", "scatter,sh,tp", "--threads", "1", "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {"torch", "commit", "date", "threads", "baselines"} <= set(data["environment"])
    rows = data["results"]
    assert all(r["pass"] for r in rows)
    sh_ours = [r for r in rows if r["op"] == "sh" and r["kind"] == "ours"]
    assert {r["variant"] for r in sh_ours} == {"equiops", "equiops fwd+bwd", "equiops force"}
    baselines = {r["baseline"] for r in sh_ours}
    pytest.importorskip("e3nn")
    assert any(b and b.startswith("e3nn") for b in baselines)
    assert all(r["speedup"] > 0 for r in sh_ours if r["baseline"])
    tp_ours = [r for r in rows if r["op"] == "tp" and r["kind"] == "ours"]
    assert {r["variant"] for r in tp_ours} == {"equiops", "equiops fwd+bwd", "equiops force"}
    assert {r["problem"] for r in tp_ours} == {"tetris-poly-1 N=4e1", "nequip-water N=4e1"}
    assert all(r["gflop_per_s"] > 0 and r["rows"] == 40 for r in tp_ours)
    assert all(r["baseline"].startswith("e3nn") and r["speedup"] > 0 for r in tp_ours)
    assert all(r["gb_per_s"] > 0 for r in tp_ours if r["variant"] == "equiops")
    table = capsys.readouterr().out
    assert "speedup" in table and "sh" in table and "scatter" in table and "GFLOP/s" in table


def _tiny_tp_problems(quick, device="cpu", names=None):
    keep = names or ("tetris-poly-1", "nequip-water")
    return [p.with_rows(40) for p in tpb.PROBLEMS if p.name in keep]


def test_tp_subset_and_budget(monkeypatch):
    """--tp-passes / --tp-problems select; a spent budget lists the rest as skipped."""
    monkeypatch.setattr(tpb, "problems", _tiny_tp_problems)
    rows = runner.run_tp(torch.device("cpu"), torch.float32, True, "auto", problems=["nequip-water"], passes=["force"])
    assert {r["variant"] for r in rows} <= {"equiops force", "e3nn force"} and all(r["pass"] for r in rows)
    rows = runner.run_tp(torch.device("cpu"), torch.float32, True, "auto", passes=["forward"], budget_s=1e-9)
    names = [p.label for p in _tiny_tp_problems(True)]
    assert [r["problem"] for r in rows if "skipped" in r.get("note", "")][-1] == names[-1]
    assert all(r["pass"] is not False for r in rows)


def test_tp_wrong_answers_and_broken_baselines_are_reported(monkeypatch):
    """Ours off by 1e-3: WRONG, no time. A baseline that raises: an error row with the
    reason, not a failure of the run."""
    real = tpb.build

    def broken(problem, device, dtype, backend, compile_e3nn, check_only=False):
        cands, errors = real(problem, device, dtype, backend, compile_e3nn, check_only)
        good = cands["equiops"].fn
        cands["equiops"].fn = lambda x, y, w: good(x, y, w) + 1e-3
        cands["flaky"] = tpb.Candidate(lambda x, y, w: (_ for _ in ()).throw(RuntimeError("no kernel")))
        errors["unbuildable"] = "ImportError: missing"
        return cands, errors

    monkeypatch.setattr(tpb, "problems", _tiny_tp_problems)
    monkeypatch.setattr(tpb, "build", broken)
    rows = runner.run_tp(torch.device("cpu"), torch.float32, True, "auto", problems=["tetris-poly-1"], passes=["forward"])
    by = {r["variant"]: r for r in rows}
    assert by["equiops"]["pass"] is False and by["equiops"]["median_ms"] is None
    assert by["flaky"]["pass"] is None and "no kernel" in by["flaky"]["note"]
    assert by["unbuildable"]["pass"] is None and "missing" in by["unbuildable"]["note"]
    assert by["e3nn"]["pass"] is True and by["e3nn"]["median_ms"] > 0
    table = runner.format_table(rows)
    assert "WRONG" in table and "error" in table


def test_tp_cuequivariance_layout_matches_blocks_by_irrep():
    """cuEquivariance sorts channel-wise outputs with its own irrep order: the weight
    and output indices map its blocks to ours by irrep, keeping creation order."""
    from equiops.irreps import Irreps
    from equiops.nn.tensor_product import ChannelWiseTensorProduct

    ours = ChannelWiseTensorProduct("2x0e+2x1o", "0e+1o", "0e+1o+1e")
    created = Irreps("2x0e+2x1o+2x1o+2x0e+2x1e")  # in1 x in2 in creation order
    # A stable sort putting odd parity first (an order other than e3nn's).
    cue_like = Irreps(sorted(created, key=lambda b: (b[1].p, b[1].l)))
    w_index, out_index = tpb._cue_channelwise_layout(ours, cue_like)
    assert sorted(w_index.tolist()) == list(range(ours.weight_numel))
    assert sorted(out_index.tolist()) == list(range(ours.irreps_out.dim))
    starts = [sl.start for sl in ours.irreps_out.slices()]
    w_starts = [0]
    for ins in ours.instructions:  # one weighted instruction per output block, in order
        w_starts.append(w_starts[-1] + ins.path_shape[0] * ins.path_shape[1])
    w_off = 0
    for (mul, ir), o in zip(cue_like, _block_starts(cue_like)):
        j = starts.index(out_index[o].item())  # the block of ours this block maps to
        assert str(ours.irreps_out[j].ir) == str(ir)
        assert out_index[o: o + mul * ir.dim].tolist() == list(range(starts[j], starts[j] + mul * ir.dim))
        assert w_index[w_off: w_off + mul].tolist() == list(range(w_starts[j], w_starts[j] + mul))
        w_off += mul
    # Equal irreps keep their creation order (stable sorts on both sides).
    ones = [starts.index(out_index[o].item()) for (_, ir), o in zip(cue_like, _block_starts(cue_like)) if str(ir) == "1o"]
    assert ones == sorted(ones)


def _block_starts(irreps):
    out, off = [], 0
    for mul, ir in irreps:
        out.append(off)
        off += mul * ir.dim
    return out


def test_wrong_answers_are_reported_not_timed(monkeypatch):
    """A candidate that disagrees with the reference is marked WRONG and gets no time."""
    real = harmonics.candidates

    def broken(problem, inputs, backend):
        c = real(problem, inputs, backend)
        good = c["forward"]["equiops"]
        c["forward"]["equiops"] = lambda: good() + 1e-3
        return c

    monkeypatch.setattr(harmonics, "problems", lambda quick, device="cpu": [harmonics.Problem(40, 2)])
    monkeypatch.setattr(harmonics, "candidates", broken)
    rows = runner.run_harmonics(torch.device("cpu"), torch.float32, True, "auto")
    wrong = [r for r in rows if r["variant"] == "equiops"]
    assert wrong and all(not r["pass"] and r["median_ms"] is None for r in wrong)
    assert "WRONG" in runner.format_table(rows)
