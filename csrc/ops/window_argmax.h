#pragma once
#include <ATen/ATen.h>

namespace fdperf {

// Calls fdperf::window_argmax through the dispatcher (C++ API, used by the C++ tests).
at::Tensor window_argmax(const at::Tensor& probs, int64_t window, int64_t min_index = 1);

// Device-independent argument checks shared by the CPU and CUDA kernels.
void check_window_argmax_args(const at::Tensor& probs, int64_t window, int64_t min_index);

}  // namespace fdperf
