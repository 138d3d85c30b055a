#!/usr/bin/env bash
# The main job: set up, build, then check and time every op family against its
# baselines (`python -m equiops bench`). Extra args go to it, e.g. --quick, --plot x.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh numpy "e3nn==0.6.0" matplotlib "sphericart==2.0.4" "sphericart-torch==2.0.4"
python3 -m equiops info
python3 -m equiops bench "$@"
