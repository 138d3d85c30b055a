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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "--ops", "nope"], "--ops: ['nope'] not available"),
        (["bench", "--output", "/nonexistent-folder/x.json"], "cannot write"),
        (["bench", "--backend", "bogus"], "--backend must be one of"),
        (["bench", "--dtype", "int8"], "invalid choice"),
        (["bench", "--backend", "triton", "--device", "cpu"], "runs on CUDA tensors"),
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
    out = tmp_path / "r.json"
    assert main(["bench", "--quick", "--ops", "scatter,sh", "--threads", "1", "--output", str(out)]) == 0
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
    table = capsys.readouterr().out
    assert "speedup" in table and "sh" in table and "scatter" in table


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
