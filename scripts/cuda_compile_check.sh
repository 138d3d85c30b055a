#!/usr/bin/env bash
# Compiles every CUDA source with nvcc for Hopper (sm_90), without running anything:
# the torch-free kernel headers through compile_check.cu, and each torch glue file
# against the installed PyTorch's headers (the CPU wheel ships the CUDA headers).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null; then
  echo "cuda_compile_check: nvcc not found; skipped" >&2
  exit 0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
arch=${CUDA_ARCH:-sm_90}
nvcc -std=c++17 -arch="$arch" -c csrc/cuda/compile_check.cu -o "$out/compile_check.o"
echo "compiled csrc/cuda/compile_check.cu (torch-free kernels) for $arch"
includes=$(python3 -c "import torch.utils.cpp_extension as c; print(' '.join('-I' + p for p in c.include_paths()))")
abi=$(python3 -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
for f in csrc/cuda/*_cuda.cu; do
  nvcc -std=c++20 -arch="$arch" -c "$f" -o "$out/$(basename "$f").o" -Icsrc/include $includes \
    -DEQUIOPS_WITH_CUDA -D_GLIBCXX_USE_CXX11_ABI="$abi" --expt-relaxed-constexpr -Xcompiler -fPIC \
    -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE  # the CPU wheel lacks c10/cuda/impl/cuda_cmake_macros.h
  echo "compiled $f for $arch"
done
# The CUDA bindings in module.cpp must match the entry points' signatures.
pyinc=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])")
g++ -std=c++20 -fsyntax-only -DEQUIOPS_WITH_CUDA -D_GLIBCXX_USE_CXX11_ABI="$abi" -Icsrc/include $includes \
  -I"$pyinc" csrc/module.cpp
echo "checked csrc/module.cpp with EQUIOPS_WITH_CUDA"
