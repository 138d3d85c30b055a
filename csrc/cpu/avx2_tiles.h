// AVX2 register tiles shared by the CPU row kernels (sh_kernels.h, tp_kernels.h):
// W x W in-register transposes and masked partial loads/stores of 32-byte vectors.
//
// Included *inside* a per-instruction-set namespace, after `#pragma GCC target`, by
// files compiled for AVX2 only: it deliberately has no include guard and no namespace,
// so each instruction set gets its own copy and no inline function is shared between
// translation units compiled for different CPUs.
// In-register transposes: r[q] holds column q of W rows on input, row q on output.
// always_inline: called once per 8x8 tile; left to GCC it stayed a call, which a perf
// profile of the tensor-product backward showed at ~6% of samples (not benchmarked alone).
__attribute__((always_inline)) inline void transpose(__m256* r) {
  __m256 t[8], s[8];
  for (int q = 0; q < 8; q += 2) {
    t[q] = _mm256_unpacklo_ps(r[q], r[q + 1]);
    t[q + 1] = _mm256_unpackhi_ps(r[q], r[q + 1]);
  }
  for (int q = 0; q < 8; q += 4) {
    s[q] = _mm256_shuffle_ps(t[q], t[q + 2], 0x44);
    s[q + 1] = _mm256_shuffle_ps(t[q], t[q + 2], 0xEE);
    s[q + 2] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0x44);
    s[q + 3] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0xEE);
  }
  for (int q = 0; q < 4; ++q) {
    r[q] = _mm256_permute2f128_ps(s[q], s[q + 4], 0x20);
    r[q + 4] = _mm256_permute2f128_ps(s[q], s[q + 4], 0x31);
  }
}
__attribute__((always_inline)) inline void transpose(__m256d* r) {
  const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
  const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
  r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
  r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
  r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
  r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}
inline __m256i tail_mask(float*, int rem) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline __m256i tail_mask(double*, int rem) {
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(rem), _mm256_setr_epi64x(0, 1, 2, 3));
}
inline void store_part(float* p, __m256 v, __m256i m) { _mm256_maskstore_ps(p, m, v); }
inline void store_part(double* p, __m256d v, __m256i m) { _mm256_maskstore_pd(p, m, v); }
inline void stream_store(float* p, __m256 v) { _mm256_stream_ps(p, v); }
inline void stream_store(double* p, __m256d v) { _mm256_stream_pd(p, v); }
// Unaligned full loads/stores as intrinsics, not memcpy into an array: GCC's generic
// tuning splits a 32-byte memcpy into two 16-byte moves through the stack, and the
// 32-byte reload of the halves then waits on a failed store forward (seen in a perf
// profile of the convolution: half of load_cols' samples on that reload).
inline __m256 loadu(const float* p) { return _mm256_loadu_ps(p); }
inline __m256d loadu(const double* p) { return _mm256_loadu_pd(p); }
inline void storeu(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
inline void storeu(double* p, __m256d v) { _mm256_storeu_pd(p, v); }
inline __m256 load_part(const float* p, __m256i m) { return _mm256_maskload_ps(p, m); }
inline __m256d load_part(const double* p, __m256i m) { return _mm256_maskload_pd(p, m); }
template <typename T>
struct Reg;
template <>
struct Reg<float> {
  using type = __m256;
};
template <>
struct Reg<double> {
  using type = __m256d;
};
