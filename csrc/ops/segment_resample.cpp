#include "segment_resample.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>

namespace fdperf {

at::Tensor segment_resample(const at::Tensor& x, const at::Tensor& bounds, int64_t points,
                            bool tokens) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fdperf::segment_resample", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, bool)>();
  return op.call(x, bounds, points, tokens);
}

at::Tensor segment_resample_backward(const at::Tensor& grad, const at::Tensor& bounds,
                                     int64_t points, bool tokens, at::IntArrayRef x_size,
                                     at::IntArrayRef x_stride) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fdperf::segment_resample_backward", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, bool,
                                         c10::SymIntArrayRef, c10::SymIntArrayRef)>();
  return op.call(grad, bounds, points, tokens, c10::fromIntArrayRefSlow(x_size),
                 c10::fromIntArrayRefSlow(x_stride));
}

at::Tensor empty_like_layout(at::IntArrayRef size, at::IntArrayRef stride,
                             const at::TensorOptions& options) {
  bool dense = stride.size() == size.size();
  if (dense) {  // visit dims from the smallest stride: each must step over the ones before it
    std::vector<int64_t> dims(size.size());
    for (size_t i = 0; i < dims.size(); ++i) dims[i] = static_cast<int64_t>(i);
    std::stable_sort(dims.begin(), dims.end(),
                     [&](int64_t a, int64_t b) { return stride[a] < stride[b]; });
    int64_t expected = 1;
    for (int64_t d : dims) {
      if (size[d] == 1) continue;
      if (stride[d] != expected) {
        dense = false;
        break;
      }
      expected *= size[d];
    }
  }
  if (dense) return at::empty_strided(size, stride, options);
  return at::empty(size, options.memory_format(at::MemoryFormat::Contiguous));
}

void check_segment_resample_args(const at::Tensor& x, const at::Tensor& bounds, int64_t points) {
  TORCH_CHECK(x.dim() >= 3 && x.dim() <= 5,
              "segment_resample: x must be [B, C, T] with 0 to 2 trailing spatial dims, got ",
              x.dim(), " dimensions");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()),
              "segment_resample: x must be a floating tensor, got ", x.scalar_type());
  TORCH_CHECK(bounds.dim() == 2, "segment_resample: bounds must be [B, L], got ", bounds.dim(),
              " dimensions");
  TORCH_CHECK(bounds.scalar_type() == at::kLong, "segment_resample: bounds must be int64, got ",
              bounds.scalar_type());
  TORCH_CHECK(bounds.size(0) == x.size(0), "segment_resample: bounds has ", bounds.size(0),
              " rows but x has batch size ", x.size(0));
  TORCH_CHECK(bounds.device() == x.device(), "segment_resample: bounds is on ", bounds.device(),
              " but x is on ", x.device());
  TORCH_CHECK(points >= 1, "segment_resample: points must be at least 1, got ", points);
  TORCH_CHECK(x.size(0) == 0 || x.size(2) > bounds.size(1),
              "segment_resample: x has T = ", x.size(2), " frames, too few for ",
              bounds.size(1) + 1, " non-empty segments (bounds has L = ", bounds.size(1), ")");
}

std::vector<int64_t> segment_resample_out_shape(at::IntArrayRef x_size, int64_t L, int64_t points,
                                                bool tokens) {
  const int64_t B = x_size[0], C = x_size[1];
  int64_t spatial = 1;
  for (size_t i = 3; i < x_size.size(); ++i) spatial *= x_size[i];
  if (tokens) return {B, L + 1, points * spatial, C};
  std::vector<int64_t> shape(x_size.begin(), x_size.end());
  shape[2] = (L + 1) * points;
  return shape;
}

std::vector<int64_t> check_segment_resample_backward_args(const at::Tensor& grad,
                                                          const at::Tensor& bounds, int64_t points,
                                                          bool tokens, at::IntArrayRef x_size) {
  TORCH_CHECK(x_size.size() >= 3 && x_size.size() <= 5,
              "segment_resample_backward: x_size must have 3 to 5 entries, got ", x_size.size());
  TORCH_CHECK(at::isFloatingType(grad.scalar_type()),
              "segment_resample_backward: grad must be a floating tensor, got ",
              grad.scalar_type());
  TORCH_CHECK(bounds.dim() == 2 && bounds.scalar_type() == at::kLong && bounds.size(0) == x_size[0],
              "segment_resample_backward: bounds must be int64 [B, L] with B = ", x_size[0]);
  TORCH_CHECK(bounds.device() == grad.device(), "segment_resample_backward: bounds is on ",
              bounds.device(), " but grad is on ", grad.device());
  TORCH_CHECK(points >= 1, "segment_resample_backward: points must be at least 1, got ", points);
  auto expected = segment_resample_out_shape(x_size, bounds.size(1), points, tokens);
  TORCH_CHECK(grad.sizes() == at::IntArrayRef(expected),
              "segment_resample_backward: grad has shape ", grad.sizes(), ", expected ",
              at::IntArrayRef(expected));
  return expected;
}

at::Tensor as_5d(const at::Tensor& x) {
  at::Tensor v = x;
  while (v.dim() < 5) v = v.unsqueeze(-1);
  return v;
}

void check_bounds_values_cpu(const at::Tensor& bounds, int64_t T) {
  const auto b = bounds.accessor<int64_t, 2>();
  const int64_t L = bounds.size(1);
  for (int64_t i = 0; i < bounds.size(0); ++i) {
    int64_t prev = 0;
    for (int64_t l = 0; l < L; ++l) {
      const int64_t v = b[i][l];
      if (v > prev && v < T) {
        prev = v;
        continue;
      }
      std::vector<int64_t> row(L);
      for (int64_t m = 0; m < L; ++m) row[m] = b[i][m];
      TORCH_CHECK(false, "segment_resample: bounds must be strictly increasing inside (0, T = ", T,
                  "), but row ", i, " is ", at::IntArrayRef(row));
    }
  }
}

}  // namespace fdperf
