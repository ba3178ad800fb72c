#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "../window_argmax.h"

namespace fdperf {
namespace {

template <typename scalar_t>
void window_argmax_cpu_impl(const at::Tensor& probs, at::Tensor& out, int64_t window,
                            int64_t min_index) {
  using acc_t = at::opmath_type<scalar_t>;       // double stays double
  const auto p = probs.accessor<scalar_t, 3>();  // strided access: no copy of probs
  auto o = out.accessor<int64_t, 2>();
  const int64_t B = probs.size(0), K = probs.size(2);
  at::parallel_for(0, B * K, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / K, k = i % K, t0 = window * k;
      // Same tie and NaN rule as torch.argmax: the first maximum wins, NaN beats any number.
      // Compared in the input's precision (float for half/bfloat16, which widen exactly).
      int64_t best = t0;
      acc_t best_v = static_cast<acc_t>(p[b][t0][k]);
      for (int64_t t = t0 + 1; t < t0 + window; ++t) {
        const acc_t v = static_cast<acc_t>(p[b][t][k]);
        if (std::isnan(best_v)) break;
        if (std::isnan(v) || v > best_v) {
          best = t;
          best_v = v;
        }
      }
      o[b][k] = best < min_index ? min_index : best;
    }
  });
}

at::Tensor window_argmax_cpu(const at::Tensor& probs, int64_t window, int64_t min_index) {
  check_window_argmax_args(probs, window, min_index);
  auto out = at::empty({probs.size(0), probs.size(2)}, probs.options().dtype(at::kLong));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, probs.scalar_type(), "window_argmax_cpu",
      [&] { window_argmax_cpu_impl<scalar_t>(probs, out, window, min_index); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fdperf, CPU, m) { m.impl("window_argmax", &window_argmax_cpu); }

}  // namespace fdperf
