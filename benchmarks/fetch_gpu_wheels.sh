#!/usr/bin/env bash
# Downloads the GPU baselines' wheels (cuEquivariance, sphericart)
# on a machine with registry access, for benchmarks/gpu_check.sh to install on the GPU
# machine, which has no network. Into benchmarks/wheels/ (ignored by git), in two
# folders because the device tool carries at most 64 MiB per call:
#   benchmarks/wheels/core      ~32 MB  cuequivariance(-torch), cuequivariance-ops-torch-cu13,
#                                       sphericart(-torch)
#   benchmarks/wheels/cuda-ops  ~45 MB  cuequivariance-ops-cu13 (the CUDA library)
# Carry one folder per device call (paths left behind by an earlier call stay there).
#
#   bash benchmarks/fetch_gpu_wheels.sh        # PYVER=312 by default: the GPU image's Python (3.12)
set -euo pipefail
cd "$(dirname "$0")"
PYVER=${PYVER:-312}
CUEQ=${CUEQ_VERSION:-0.13.0}
mkdir -p wheels/core wheels/cuda-ops
dl() { python3 -m pip download -q --no-deps "$@"; }
# OpenEquivariance is left out: it ships only a source distribution whose build
# downloads LibTorch, which the offline GPU machine cannot do.
dl -d wheels/core "cuequivariance==$CUEQ" "cuequivariance-torch==$CUEQ" "sphericart==2.0.4" "sphericart-torch==2.0.4"
# cuequivariance-ops-cu13 needs platformdirs, which the GPU image lacks.
dl -d wheels/core platformdirs
# The only interpreter-specific wheel: built for the GPU image's Python (3.12).
dl -d wheels/core --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version "$PYVER" \
  "cuequivariance-ops-torch-cu13==$CUEQ"
dl -d wheels/cuda-ops "cuequivariance-ops-cu13==$CUEQ"
du -sh wheels/core wheels/cuda-ops
