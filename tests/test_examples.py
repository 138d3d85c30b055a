"""The examples run end to end (small sizes)."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_graph_aggregation_example():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "graph_aggregation.py"), "--nodes", "300", "--steps", "3"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "bitwise reproducible" in out.stdout


def test_nbody_egnn_quick_run():
    """The N-body example's --quick run trains the (reference) EGNN_vel to test MSE < 0.05."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "nbody_egnn.py"), "--quick"],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    last = [line for line in out.stdout.splitlines() if line.startswith("test MSE ")]
    assert last, out.stdout[-2000:]
    assert float(last[-1].split()[-1]) < 0.05, last[-1]
