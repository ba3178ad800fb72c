// CUDA kernels of segment_resample: one thread per output element (forward) and one thread
// per input element gathering its taps (backward: deterministic, no atomics).
//
// Bounds are validated inside the kernels, never on the host (that would force a sync in the
// training step): a bad boundary trips a device-side assert (CUDA_KERNEL_ASSERT_MSG, like
// PyTorch's own index kernels), and the segment is clamped so that nothing is read or written
// out of bounds even where asserts are compiled out.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include "../segment_resample.h"

namespace fdperf {
namespace {

constexpr int kThreads = 256;

// Frames [a, e) of segment j of row b.
__device__ __forceinline__ void segment_range(const int64_t* bounds, int64_t b, int64_t j,
                                              int64_t L, int64_t T, int64_t& a, int64_t& e) {
  a = j == 0 ? 0 : bounds[b * L + j - 1];
  e = j == L ? T : bounds[b * L + j];
  CUDA_KERNEL_ASSERT_MSG(a >= 0 && a < e && e <= T,
                         "segment_resample: bounds must be strictly increasing inside (0, T)");
  a = a < 0 ? 0 : (a > T - 1 ? T - 1 : a);
  e = e <= a ? a + 1 : (e > T ? T : e);
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ bounds,
                               scalar_t* __restrict__ out, int64_t total, int64_t C, int64_t T,
                               int64_t W, int64_t HW, int64_t sb, int64_t sc, int64_t st,
                               int64_t sh, int64_t sw, int64_t L, int64_t points, bool tokens) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t steps = L + 1;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t r = idx, c, sp, p, j, b;
    if (tokens) {  // out [B, steps, points, HW, C]
      c = r % C;
      r /= C;
      sp = r % HW;
      r /= HW;
      p = r % points;
      r /= points;
      j = r % steps;
      b = r / steps;
    } else {  // out [B, C, steps, points, HW]
      sp = r % HW;
      r /= HW;
      p = r % points;
      r /= points;
      j = r % steps;
      r /= steps;
      c = r % C;
      b = r / C;
    }
    int64_t a, e;
    segment_range(bounds, b, j, L, T, a, e);
    const auto tap = lerp_tap<acc_t>(e - a, points, p);
    const scalar_t* xp = x + b * sb + c * sc + (sp / W) * sh + (sp % W) * sw;
    const acc_t v0 = static_cast<acc_t>(xp[(a + tap.i0) * st]);
    const acc_t v1 = static_cast<acc_t>(xp[(a + tap.i1) * st]);
    out[idx] = static_cast<scalar_t>((acc_t(1) - tap.w1) * v0 + tap.w1 * v1);
  }
}

// grad_x[b, c, t, sp] = sum of the weights of the output samples that tapped frame t.
template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ g, const int64_t* __restrict__ bounds,
                                scalar_t* __restrict__ gx, int64_t total, int64_t C, int64_t T,
                                int64_t W, int64_t HW, int64_t xb, int64_t xc, int64_t xt,
                                int64_t xh, int64_t xw, int64_t L, int64_t points, bool tokens) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t steps = L + 1;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t sp = idx % HW, t = (idx / HW) % T, c = (idx / (HW * T)) % C,
                  b = idx / (HW * T * C);
    int64_t j = 0, a = 0, e = T;
    for (; j < L; ++j) {  // the segment holding frame t
      segment_range(bounds, b, j, L, T, a, e);
      if (t < e) break;
    }
    if (j == L) segment_range(bounds, b, L, L, T, a, e);
    acc_t sum = 0;
    if (t >= a && t < e) {
      for (int64_t p = 0; p < points; ++p) {
        const auto tap = lerp_tap<acc_t>(e - a, points, p);
        const bool hit0 = a + tap.i0 == t, hit1 = a + tap.i1 == t;
        if (!hit0 && !hit1) continue;
        const int64_t gi = tokens ? (((b * steps + j) * points + p) * HW + sp) * C + c
                                  : (((b * C + c) * steps + j) * points + p) * HW + sp;
        const acc_t gv = static_cast<acc_t>(g[gi]);
        if (hit0) sum += (acc_t(1) - tap.w1) * gv;
        if (hit1) sum += tap.w1 * gv;
      }
    }
    gx[b * xb + c * xc + t * xt + (sp / W) * xh + (sp % W) * xw] = static_cast<scalar_t>(sum);
  }
}

int blocks_for(int64_t total) {
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t max_blocks = static_cast<int64_t>(sms) * 32;
  return static_cast<int>(std::min<int64_t>((total + kThreads - 1) / kThreads, max_blocks));
}

at::Tensor segment_resample_cuda(const at::Tensor& x, const at::Tensor& bounds, int64_t points,
                                 bool tokens) {
  check_segment_resample_args(x, bounds, points);
  c10::cuda::CUDAGuard guard(x.device());
  const auto b = bounds.contiguous();
  auto out = at::empty(segment_resample_out_shape(x.sizes(), b.size(1), points, tokens),
                       x.options().memory_format(at::MemoryFormat::Contiguous));
  const int64_t total = out.numel();
  if (total == 0) return out;
  const auto x5 = as_5d(x);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "segment_resample_cuda", [&] {
        forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
            x5.data_ptr<scalar_t>(), b.data_ptr<int64_t>(), out.data_ptr<scalar_t>(), total,
            x5.size(1), x5.size(2), x5.size(4), x5.size(3) * x5.size(4), x5.stride(0), x5.stride(1),
            x5.stride(2), x5.stride(3), x5.stride(4), b.size(1), points, tokens);
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor segment_resample_backward_cuda(const at::Tensor& grad, const at::Tensor& bounds,
                                          int64_t points, bool tokens, c10::SymIntArrayRef x_size,
                                          c10::SymIntArrayRef x_stride) {
  const auto size = C10_AS_INTARRAYREF_SLOW(x_size);
  check_segment_resample_backward_args(grad, bounds, points, tokens, size);
  c10::cuda::CUDAGuard guard(grad.device());
  const auto b = bounds.contiguous();
  const auto g = grad.contiguous();
  auto gx = empty_like_layout(size, C10_AS_INTARRAYREF_SLOW(x_stride), grad.options());
  const int64_t total = gx.numel();
  if (total == 0) return gx;
  const auto gx5 = as_5d(gx);  // every element is written once (gather form)
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad.scalar_type(), "segment_resample_backward_cuda", [&] {
        backward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
            g.data_ptr<scalar_t>(), b.data_ptr<int64_t>(), gx5.data_ptr<scalar_t>(), total,
            gx5.size(1), gx5.size(2), gx5.size(4), gx5.size(3) * gx5.size(4), gx5.stride(0),
            gx5.stride(1), gx5.stride(2), gx5.stride(3), gx5.stride(4), b.size(1), points, tokens);
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(fdperf, CUDA, m) {
  m.impl("segment_resample", &segment_resample_cuda);
  m.impl("segment_resample_backward", &segment_resample_backward_cuda);
}

}  // namespace fdperf
