// Emulation stand-in for CUDA's cuda_bf16.h (tests/cuda_emulation/tp_emu.cpp): a "bfloat16"
// that holds a float. Only the conversions the kernels use; no 16-bit storage or rounding.
#pragma once
struct __nv_bfloat16 {
  float f;
};
inline float __bfloat162float(__nv_bfloat16 h) { return h.f; }
inline __nv_bfloat16 __float2bfloat16_rn(float x) { return __nv_bfloat16{x}; }
