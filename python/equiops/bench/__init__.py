"""Benchmark problems, baselines and timing, shared by ``python -m equiops bench`` and the
pytest-benchmark suites in ``benchmarks/`` (one definition of each problem)."""

import importlib
import importlib.util


def optional_module(name: str):
    """The module ``name`` (dotted), or None when it is not installed or fails to import
    (a baseline built against another torch raises at import)."""
    if importlib.util.find_spec(name.split(".")[0]) is None:
        return None
    try:
        return importlib.import_module(name)
    except Exception:
        return None
