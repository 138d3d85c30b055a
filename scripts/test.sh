#!/usr/bin/env bash
# The test command: set up, build, run the test suite (CPU; CUDA tests skip without a GPU;
# Triton kernels run under TRITON_INTERPRET=1 at small sizes). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh pytest hypothesis "e3nn==0.6.0" triton numpy pytest-benchmark mpmath \
  "sphericart==2.0.4" "sphericart-torch==2.0.4" "ase==3.29.0" "einops==0.8.2"
# egnn-pytorch (the drop-in's tests compare against it) declares numba and numpy but
# imports neither: --no-deps keeps numba and llvmlite off the machine.
python3 -m pip install -q --no-deps "egnn-pytorch==0.2.8"
python3 -m pytest tests -q "$@"
