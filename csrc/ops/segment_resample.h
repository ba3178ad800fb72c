#pragma once
#include <ATen/ATen.h>

namespace fdperf {

// Calls fdperf::segment_resample through the dispatcher (C++ API, used by the C++ tests).
// x [B, C, T, *S] (0 to 2 spatial dims), bounds int64 [B, L] -> [B, C, (L+1)*points, *S],
// or with tokens=true the decoder layout [B, L+1, points*prod(S), C].
at::Tensor segment_resample(const at::Tensor& x, const at::Tensor& bounds, int64_t points,
                            bool tokens = false);

// Gradient with respect to x of segment_resample (bounds are not differentiable). It gets
// x's strides when they describe a dense layout (so autograd need not copy it into x's layout),
// else it is contiguous; x_stride may be empty.
at::Tensor segment_resample_backward(const at::Tensor& grad, const at::Tensor& bounds,
                                     int64_t points, bool tokens, at::IntArrayRef x_size,
                                     at::IntArrayRef x_stride = {});

// Uninitialised gradient buffer of shape `size`: strided like `stride` when that is a
// non-overlapping dense layout of `size`, contiguous otherwise.
at::Tensor empty_like_layout(at::IntArrayRef size, at::IntArrayRef stride,
                             const at::TensorOptions& options);

// Device-independent argument checks shared by the CPU and CUDA kernels. The values of
// `bounds` are checked by the kernels themselves (see the .cu file for the CUDA rule).
void check_segment_resample_args(const at::Tensor& x, const at::Tensor& bounds, int64_t points);

// Checks of the backward's arguments; returns the expected shape of grad.
std::vector<int64_t> check_segment_resample_backward_args(const at::Tensor& grad,
                                                          const at::Tensor& bounds, int64_t points,
                                                          bool tokens, at::IntArrayRef x_size);

// Shape of the forward's result.
std::vector<int64_t> segment_resample_out_shape(at::IntArrayRef x_size, int64_t L, int64_t points,
                                                bool tokens);

// x viewed as [B, C, T, H, W] (missing spatial dims become size-1 dims; no copy).
at::Tensor as_5d(const at::Tensor& x);

// Checks on the host that every row of bounds is strictly increasing inside (0, T)
// (bounds must be a CPU tensor).
void check_bounds_values_cpu(const at::Tensor& bounds, int64_t T);

// Time positions of linear interpolation with align_corners=True, computed like ATen's
// upsample kernels: source = ((n-1)/(points-1)) * p, i0 = floor, i1 = i0 + (i0 < n-1), weight of
// i1 = source - i0. Shared by every kernel (host and device) so they agree bit for bit.
template <typename acc_t>
struct LerpTap {
  int64_t i0;
  int64_t i1;
  acc_t w1;
};

template <typename acc_t>
#ifdef __CUDACC__
__host__ __device__
#endif
    inline LerpTap<acc_t> lerp_tap(int64_t n, int64_t points, int64_t p) {
  const acc_t scale = points > 1 ? static_cast<acc_t>(n - 1) / static_cast<acc_t>(points - 1)
                                 : static_cast<acc_t>(0);
  const acc_t src = scale * static_cast<acc_t>(p);
  int64_t i0 = static_cast<int64_t>(src);  // src >= 0: truncation is floor
  if (i0 > n - 1) i0 = n - 1;
  acc_t w1 = src - static_cast<acc_t>(i0);
  w1 = w1 < acc_t(0) ? acc_t(0) : (w1 > acc_t(1) ? acc_t(1) : w1);
  return {i0, i0 + (i0 < n - 1 ? 1 : 0), w1};
}

}  // namespace fdperf
