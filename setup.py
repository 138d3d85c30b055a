"""Builds equiops: the package python/equiops (+ kernels/ as equiops.kernels) and the
extension equiops._C.

equiops._C always holds the C++ CPU kernels (OpenMP). It also holds the CUDA kernels
when a CUDA toolkit and a CUDA-enabled PyTorch are both present. The environment
variable EQUIOPS_CUDA overrides the detection: "1" forces CUDA on (a clear error if the
toolkit or a CUDA PyTorch is missing), "0" forces a CPU-only build. Detection never
looks at torch.cuda.is_available(): a build machine needs no GPU.
"""

import glob
import os

from setuptools import setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError as exc:  # pragma: no cover - depends on the build environment
    raise RuntimeError(
        "equiops builds against the PyTorch already installed: install torch first "
        "(e.g. `pip install torch`), then `pip install --no-build-isolation .`"
    ) from exc

ROOT = os.path.dirname(os.path.abspath(__file__))
_TRUE = {"1", "on", "true", "yes"}
_FALSE = {"0", "off", "false", "no"}


def want_cuda() -> bool:
    flag = os.environ.get("EQUIOPS_CUDA", "auto").strip().lower()
    if flag in _FALSE:
        return False
    has_toolkit = CUDA_HOME is not None
    torch_has_cuda = torch.version.cuda is not None
    if flag in _TRUE:
        if not has_toolkit:
            raise RuntimeError(
                "EQUIOPS_CUDA=1 asks for the CUDA kernels, but no CUDA toolkit was found: "
                "set CUDA_HOME or put nvcc on PATH, or build with EQUIOPS_CUDA=0."
            )
        if not torch_has_cuda:
            raise RuntimeError(
                f"EQUIOPS_CUDA=1 asks for the CUDA kernels, but the installed PyTorch "
                f"{torch.__version__} is a CPU-only build; install a CUDA build of PyTorch "
                "or build with EQUIOPS_CUDA=0."
            )
        return True
    if flag != "auto":
        raise RuntimeError(f"EQUIOPS_CUDA must be 1, 0 or auto, got {flag!r}")
    return has_toolkit and torch_has_cuda


def extension():
    sources = ["csrc/module.cpp", "csrc/ops.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    # -fno-math-errno lets loops around sqrt vectorise (nothing here reads errno).
    cxx = ["-O3", "-fopenmp", "-fno-math-errno"]
    include_dirs = [os.path.join(ROOT, "csrc", "include")]
    if want_cuda():
        sources += sorted(glob.glob("csrc/cuda/*_cuda.cu"))
        nvcc = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
        arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
        if not arch:
            # Default to Hopper plus PTX so newer GPUs JIT it; TORCH_CUDA_ARCH_LIST overrides.
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
        return CUDAExtension(
            "equiops._C",
            sources,
            include_dirs=include_dirs,
            define_macros=[("EQUIOPS_WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx + ["-DEQUIOPS_WITH_CUDA"], "nvcc": nvcc},
            extra_link_args=["-fopenmp"],
        )
    return CppExtension(
        "equiops._C",
        sources,
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx},
        extra_link_args=["-fopenmp"],
    )


setup(
    package_dir={"equiops": "python/equiops", "equiops.kernels": "kernels"},
    packages=["equiops", "equiops.bench", "equiops.ops", "equiops.reference", "equiops.nn", "equiops.kernels", "equiops.lie"],
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
