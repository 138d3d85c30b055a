#!/usr/bin/env bash
# The test command: set up, build, run the test suite (CPU; CUDA tests skip without a GPU;
# Triton kernels run under TRITON_INTERPRET=1 at small sizes). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh pytest hypothesis "e3nn==0.6.0" triton numpy pytest-benchmark mpmath \
  "sphericart==2.0.4" "sphericart-torch==2.0.4" "ase==3.29.0"
python3 -m pytest tests -q "$@"
