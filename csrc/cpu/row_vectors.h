// The lane vectors of the CPU row kernels: one 32-byte vector whose lanes are
// consecutive rows (8 floats or 4 doubles), as a GCC vector type so that arithmetic on
// it compiles to single SIMD instructions for whatever ISA the including file targets.
//
// Included inside a per-instruction-set namespace (no include guard, no namespace of
// its own), like avx2_tiles.h.
template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(32)));
};
template <typename T>
using Vec = typename VecOf<T>::type;
template <typename T>
constexpr int lanes() {
  return 32 / (int)sizeof(T);
}
