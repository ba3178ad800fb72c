// Operator schemas of the fdperf library. Kernels register per device in ops/cpu and ops/cuda;
// autograd and fake (meta) kernels are registered from Python (fdperf/ops/).
#include <torch/library.h>

TORCH_LIBRARY(fdperf, m) {
  // Predicted transitions (DESIGN §2): argmax of probs[:, w*k : w*(k+1), k] + w*k,
  // indices below min_index raised to min_index.
  m.def("window_argmax(Tensor probs, int window, int min_index=1) -> Tensor");
}
