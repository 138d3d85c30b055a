"""The examples run end to end (small sizes)."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_graph_aggregation_example():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "graph_aggregation.py"), "--nodes", "300", "--steps", "3"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "bitwise reproducible" in out.stdout


def test_nbody_egnn_quick_run():
    """The N-body example's --quick run trains the fused EGNN_vel to test MSE < 0.05."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "nbody_egnn.py"), "--quick"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    last = [line for line in out.stdout.splitlines() if line.startswith("test MSE ")]
    assert last, out.stdout[-2000:]
    assert float(last[-1].split()[-1]) < 0.05, last[-1]


def test_tfn_forces_quick_run():
    """The TFN force-training example's --quick run at least halves the test force MAE."""
    pytest.importorskip("ase")
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tfn_forces.py"), "--quick"],
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    before = re.findall(r"^before training: test force MAE ([0-9.]+) eV/A", out.stdout, re.M)
    after = re.findall(r"^after training .*test force MAE ([0-9.]+) eV/A", out.stdout, re.M)
    assert before and after, out.stdout[-2000:]
    assert float(after[-1]) <= 0.5 * float(before[0]), out.stdout[-2000:]


def test_lieconv_energy_quick_run():
    """The LieConv example's --quick run lowers the test energy MAE at least 2x."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "lieconv_energy.py"), "--quick"],
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    before = re.findall(r"^test MAE ([0-9.]+) \(before training\)", out.stdout, re.M)
    after = re.findall(r"^test MAE ([0-9.]+) \(after training", out.stdout, re.M)
    assert before and after, out.stdout[-2000:]
    assert float(after[-1]) <= 0.5 * float(before[0]), out.stdout[-2000:]
