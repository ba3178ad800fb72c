#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../segment_resample.h"

namespace fdperf {
namespace {

// Work per parallel chunk: enough elements that threads are not woken for crumbs.
constexpr int64_t kGrainElements = 16384;

template <typename scalar_t>
void forward_impl(const at::Tensor& x5, const at::Tensor& bounds, at::Tensor& out, int64_t points,
                  bool tokens) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = x5.size(0), C = x5.size(1), T = x5.size(2), H = x5.size(3), W = x5.size(4);
  const int64_t sb = x5.stride(0), sc = x5.stride(1), st = x5.stride(2), sh = x5.stride(3),
                sw = x5.stride(4);
  const int64_t HW = H * W, L = bounds.size(1), steps = L + 1, rows = B * steps * points;
  const scalar_t* xp = x5.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const int64_t* bp = bounds.data_ptr<int64_t>();  // contiguous [B, L]
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, C * HW));
  // One task per output time row (b, segment j, point p): every output element is written once.
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / (steps * points), j = (r / points) % steps, p = r % points;
      const int64_t a = j == 0 ? 0 : bp[b * L + j - 1];
      const int64_t e = j == L ? T : bp[b * L + j];
      const auto tap = lerp_tap<acc_t>(e - a, points, p);
      const acc_t w1 = tap.w1, w0 = acc_t(1) - w1;
      const scalar_t* x0 = xp + b * sb + (a + tap.i0) * st;
      const scalar_t* x1 = xp + b * sb + (a + tap.i1) * st;
      if (tokens) {
        // out [B, steps, points*HW, C]: row r holds HW tokens of C channels.
        scalar_t* o = op + r * HW * C;
        for (int64_t h = 0; h < H; ++h)
          for (int64_t w = 0; w < W; ++w) {
            const int64_t xs = h * sh + w * sw;
            scalar_t* oc = o + (h * W + w) * C;
            for (int64_t c = 0; c < C; ++c)
              oc[c] = static_cast<scalar_t>(w0 * static_cast<acc_t>(x0[xs + c * sc]) +
                                            w1 * static_cast<acc_t>(x1[xs + c * sc]));
          }
      } else {
        // out [B, C, steps*points, H, W]
        const int64_t Tout = steps * points;
        scalar_t* o = op + (b * C * Tout + j * points + p) * HW;
        for (int64_t c = 0; c < C; ++c) {
          scalar_t* oc = o + c * Tout * HW;
          const scalar_t* x0c = x0 + c * sc;
          const scalar_t* x1c = x1 + c * sc;
          for (int64_t h = 0; h < H; ++h)
            for (int64_t w = 0; w < W; ++w) {
              const int64_t xs = h * sh + w * sw;
              oc[h * W + w] = static_cast<scalar_t>(w0 * static_cast<acc_t>(x0c[xs]) +
                                                    w1 * static_cast<acc_t>(x1c[xs]));
            }
        }
      }
    }
  });
}

template <typename scalar_t>
void backward_impl(const at::Tensor& grad, const at::Tensor& bounds, at::Tensor& gx, int64_t points,
                   bool tokens) {
  using acc_t = at::opmath_type<scalar_t>;
  const auto gx5 = as_5d(gx);  // zero-filled, any dense layout
  const int64_t B = gx5.size(0), C = gx5.size(1), T = gx5.size(2), W = gx5.size(4);
  const int64_t HW = gx5.size(3) * W;
  const int64_t xb = gx5.stride(0), xc = gx5.stride(1), xt = gx5.stride(2), xh = gx5.stride(3),
                xw = gx5.stride(4);
  const int64_t L = bounds.size(1), steps = L + 1;
  // grad viewed as [B, steps, points, HW, C] (tokens) or [B, C, steps, points, HW].
  const at::Tensor g =
      tokens ? grad.reshape({B, steps, points, HW, C}) : grad.reshape({B, C, steps, points, HW});
  const int64_t g0 = g.stride(0), g1 = g.stride(1), g2 = g.stride(2), g3 = g.stride(3),
                g4 = g.stride(4);
  const scalar_t* gp = g.data_ptr<scalar_t>();
  scalar_t* xp = gx5.data_ptr<scalar_t>();
  const int64_t* bp = bounds.data_ptr<int64_t>();
  // One task per segment (b, j): segments cover disjoint frames, so tasks never write the same
  // element and the scatter needs no atomics.
  at::parallel_for(0, B * steps, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / steps, j = r % steps;
      const int64_t a = j == 0 ? 0 : bp[b * L + j - 1];
      const int64_t e = j == L ? T : bp[b * L + j];
      for (int64_t p = 0; p < points; ++p) {
        const auto tap = lerp_tap<acc_t>(e - a, points, p);
        const acc_t w1 = tap.w1, w0 = acc_t(1) - w1;
        scalar_t* x0 = xp + b * xb + (a + tap.i0) * xt;
        scalar_t* x1 = xp + b * xb + (a + tap.i1) * xt;
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t* gc = tokens ? gp + b * g0 + j * g1 + p * g2 + c * g4
                                      : gp + b * g0 + c * g1 + j * g2 + p * g3;
          const int64_t gs = tokens ? g3 : g4;
          scalar_t* x0c = x0 + c * xc;
          scalar_t* x1c = x1 + c * xc;
          for (int64_t s = 0; s < HW; ++s) {
            const acc_t gv = static_cast<acc_t>(gc[s * gs]);
            const int64_t o = (s / W) * xh + (s % W) * xw;
            x0c[o] = static_cast<scalar_t>(static_cast<acc_t>(x0c[o]) + w0 * gv);
            x1c[o] = static_cast<scalar_t>(static_cast<acc_t>(x1c[o]) + w1 * gv);
          }
        }
      }
    }
  });
}

void check_cpu_dtype(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, what,
              " must be float32 or float64 on the CPU, got ", t.scalar_type());
}

at::Tensor segment_resample_cpu(const at::Tensor& x, const at::Tensor& bounds, int64_t points,
                                bool tokens) {
  check_segment_resample_args(x, bounds, points);
  check_cpu_dtype(x, "segment_resample: x");
  const auto b = bounds.contiguous();
  if (x.size(0) > 0) check_bounds_values_cpu(b, x.size(2));
  auto out = at::empty(segment_resample_out_shape(x.sizes(), b.size(1), points, tokens),
                       x.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "segment_resample_cpu",
                             [&] { forward_impl<scalar_t>(as_5d(x), b, out, points, tokens); });
  return out;
}

at::Tensor segment_resample_backward_cpu(const at::Tensor& grad, const at::Tensor& bounds,
                                         int64_t points, bool tokens, c10::SymIntArrayRef x_size,
                                         c10::SymIntArrayRef x_stride) {
  const auto size = C10_AS_INTARRAYREF_SLOW(x_size);
  check_segment_resample_backward_args(grad, bounds, points, tokens, size);
  check_cpu_dtype(grad, "segment_resample_backward: grad");
  const auto b = bounds.contiguous();
  if (size[0] > 0) check_bounds_values_cpu(b, size[2]);
  auto gx = empty_like_layout(size, C10_AS_INTARRAYREF_SLOW(x_stride), grad.options());
  gx.zero_();
  if (gx.numel() == 0 || grad.numel() == 0) return gx;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "segment_resample_backward_cpu",
                             [&] { backward_impl<scalar_t>(grad, b, gx, points, tokens); });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(fdperf, CPU, m) {
  m.impl("segment_resample", &segment_resample_cpu);
  m.impl("segment_resample_backward", &segment_resample_backward_cpu);
}

}  // namespace fdperf
