#!/usr/bin/env bash
# Installs what the tests and benchmarks need and builds equiops from this checkout.
# Keeps an installed PyTorch (>= 2.4); with none, installs torch==2.13.0 (the CPU build
# this project's machines carry; an unpinned `pip install torch` fetches a multi-GB
# CUDA build). Extra pip packages: "$@" (e.g. the test or bench extras).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
TORCH_VERSION=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==${TORCH_VERSION}" > "$constraints"   # never let a dependency swap torch
"$PY" -m pip install -q -c "$constraints" setuptools wheel ninja "$@"
"$PY" -m pip install -q --no-build-isolation --no-deps -e .
"$PY" -c "from equiops import _extension as e; assert e.available(), e.why_unavailable()"
