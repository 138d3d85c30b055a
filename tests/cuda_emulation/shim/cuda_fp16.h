// Emulation stand-in for CUDA's cuda_fp16.h (tests/cuda_emulation/tp_emu.cpp): a "half" that
// holds a float. Only the conversions the kernels use; no 16-bit storage or rounding.
#pragma once
struct __half {
  float f;
};
inline float __half2float(__half h) { return h.f; }
inline __half __float2half_rn(float x) { return __half{x}; }
