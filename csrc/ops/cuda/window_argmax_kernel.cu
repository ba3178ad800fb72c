#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

#include "../window_argmax.h"

namespace fdperf {
namespace {

template <typename scalar_t>
__global__ void window_argmax_kernel(const scalar_t* __restrict__ p, int64_t* __restrict__ out,
                                     int64_t B, int64_t K, int64_t sb, int64_t st, int64_t sk,
                                     int64_t window, int64_t min_index) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= B * K) return;
  const int64_t b = i / K, k = i % K, t0 = window * k;
  const scalar_t* row = p + b * sb + k * sk;
  // Compared in the input's precision (float for half/bfloat16, which widen exactly).
  using acc_t = at::opmath_type<scalar_t>;
  int64_t best = t0;
  acc_t best_v = static_cast<acc_t>(row[t0 * st]);
  for (int64_t t = t0 + 1; t < t0 + window; ++t) {
    const acc_t v = static_cast<acc_t>(row[t * st]);
    if (isnan(best_v)) break;
    if (isnan(v) || v > best_v) {
      best = t;
      best_v = v;
    }
  }
  out[i] = best < min_index ? min_index : best;
}

at::Tensor window_argmax_cuda(const at::Tensor& probs, int64_t window, int64_t min_index) {
  check_window_argmax_args(probs, window, min_index);
  c10::cuda::CUDAGuard guard(probs.device());
  const int64_t n = probs.size(0) * probs.size(2);
  const int threads = 128;
  const int64_t blocks = (n + threads - 1) / threads;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "window_argmax: B x K = ", n,
              " windows exceed the CUDA grid limit (", std::numeric_limits<int32_t>::max(),
              " blocks of ", threads, " threads)");
  auto out = at::empty({probs.size(0), probs.size(2)}, probs.options().dtype(at::kLong));
  if (n == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, probs.scalar_type(), "window_argmax_cuda", [&] {
        window_argmax_kernel<scalar_t><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
            probs.data_ptr<scalar_t>(), out.data_ptr<int64_t>(), probs.size(0), probs.size(2),
            probs.stride(0), probs.stride(1), probs.stride(2), window, min_index);
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fdperf, CUDA, m) { m.impl("window_argmax", &window_argmax_cuda); }

}  // namespace fdperf
