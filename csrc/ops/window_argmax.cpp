#include "window_argmax.h"

#include <ATen/core/dispatch/Dispatcher.h>

namespace fdperf {

at::Tensor window_argmax(const at::Tensor& probs, int64_t window, int64_t min_index) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fdperf::window_argmax", "")
                       .typed<at::Tensor(const at::Tensor&, int64_t, int64_t)>();
  return op.call(probs, window, min_index);
}

void check_window_argmax_args(const at::Tensor& probs, int64_t window, int64_t min_index) {
  TORCH_CHECK(probs.dim() == 3, "window_argmax: probs must be [B, T, K], got ", probs.dim(),
              " dimensions");
  TORCH_CHECK(at::isFloatingType(probs.scalar_type()),
              "window_argmax: probs must be a floating tensor, got ", probs.scalar_type());
  TORCH_CHECK(window > 0, "window_argmax: window must be positive, got ", window);
  const int64_t T = probs.size(1), K = probs.size(2);
  TORCH_CHECK(window * K <= T, "window_argmax: window (", window, ") x K (", K,
              ") exceeds the length T = ", T, " of probs");
  TORCH_CHECK(min_index >= 0 && min_index < T, "window_argmax: min_index must be in [0, T), got ",
              min_index);
}

}  // namespace fdperf
