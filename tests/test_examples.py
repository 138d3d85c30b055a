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
