"""Benchmark problems, baselines and timing, shared by ``python -m equiops bench`` and the
pytest-benchmark suites in ``benchmarks/`` (one definition of each problem)."""
