#!/usr/bin/env bash
# The one-shot GPU check (an NVIDIA H100/H200 lent for a few minutes, no network):
# build the CUDA kernels, run the CUDA tests, benchmark against the baselines, print a
# compact table last. Full logs and JSON go to $OUT (default ./gpu-results).
# Must finish within 8 minutes on an H100.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 EQUIOPS_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv; date -u; git rev-parse HEAD 2>/dev/null; } > "$OUT/device.txt" 2>&1
python3 - >> "$OUT/device.txt" 2>&1 <<'PY'
import torch, triton
print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__, torch.cuda.get_device_name())
PY

t0=$(date +%s)
if ! python3 -m pip install --no-build-isolation --no-deps --no-index -e . > "$OUT/build.log" 2>&1; then
  tail -n 40 "$OUT/build.log"; echo "BUILD FAILED"; exit 1
fi
echo "build: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/summary.txt"
python3 -m equiops info | tee -a "$OUT/summary.txt"

# CUDA tests (the Triton interpreter tests are CPU-only and are not collected here).
python3 -m pytest tests/test_cuda_segment.py tests/test_gpu_ops.py -q -x --timeout=300 -p no:cacheprovider \
  > "$OUT/tests.log" 2>&1
echo "tests: exit $? ($(tail -n 1 "$OUT/tests.log"))" | tee -a "$OUT/summary.txt"
# The spherical-harmonics Triton kernels compiled on the GPU (the first compile of each
# variant takes seconds; on CUDA the tests stay within TRITON_MAX_DEGREE).
EQUIOPS_TRITON_TEST_DEVICE=cuda python3 -m pytest tests/test_triton_spherical_harmonics.py -q -x --timeout=300 \
  -p no:cacheprovider > "$OUT/tests_sh.log" 2>&1
echo "tests sh (triton): exit $? ($(tail -n 1 "$OUT/tests_sh.log"))" | tee -a "$OUT/summary.txt"

for be in cuda triton; do
  python3 -m equiops bench --device cuda --backend "$be" --ops scatter --output "$OUT/bench_scatter_$be.json" \
    > "$OUT/bench_$be.log" 2>&1
  echo "bench $be: exit $?" | tee -a "$OUT/summary.txt"
done
python3 -m equiops bench --device cuda --backend triton --ops sh --output "$OUT/bench_sh_triton.json" \
  > "$OUT/bench_sh_triton.log" 2>&1
echo "bench sh triton: exit $?" | tee -a "$OUT/summary.txt"

python3 - "$OUT" <<'PY' | tee "$OUT/table.txt"
import json, sys, os
out = sys.argv[1]
for op, be in (("scatter", "cuda"), ("scatter", "triton"), ("sh", "triton")):
    path = os.path.join(out, f"bench_{op}_{be}.json")
    if not os.path.exists(path):
        print(f"[{op} {be}] no results"); continue
    data = json.load(open(path))
    bw = data.get("copy_bandwidth_GBps")
    print(f"[{op} {be}] {data['environment'].get('gpu')} copy bandwidth {bw:.0f} GB/s")
    for r in data["results"]:
        if r["median_ms"] is None: continue
        frac = f"{100 * r['gb_per_s'] / bw:5.1f}%" if (r.get("gb_per_s") and bw) else "     -"
        sp = f"{r['speedup']:.2f}x" if (r.get("speedup") and r["kind"] == "ours") else "-"
        print(f"{r['problem']:<17} {r['variant'][:31]:<31} {'ok' if r['pass'] else 'WRONG':<5} {r['median_ms']:8.3f} ms {sp:>7} {frac}")
PY
