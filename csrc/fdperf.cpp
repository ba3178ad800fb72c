// Operator schemas of the fdperf library. Kernels register per device in ops/cpu and ops/cuda;
// autograd and fake (meta) kernels are registered from Python (fdperf/ops/).
#include <torch/library.h>

TORCH_LIBRARY(fdperf, m) {
  // Predicted transitions (docs/design.md §5): argmax of probs[:, w*k : w*(k+1), k] + w*k,
  // indices below min_index raised to min_index.
  m.def("window_argmax(Tensor probs, int window, int min_index=1) -> Tensor");
  // Segment resampling (docs/design.md §9): x [B, C, T, *S] cut at bounds [B, L] into L+1 segments,
  // each linearly resampled (align_corners) to `points` frames. tokens=True writes the
  // decoder layout [B, L+1, points*prod(S), C] instead of [B, C, (L+1)*points, *S].
  m.def("segment_resample(Tensor x, Tensor bounds, int points, bool tokens=False) -> Tensor");
  m.def(
      "segment_resample_backward(Tensor grad, Tensor bounds, int points, bool tokens, "
      "SymInt[] x_size, SymInt[] x_stride) -> Tensor");
  // Step-wise cross-attention (docs/design.md §9): softmax(q k[index]^T * scale) v[index] per step;
  // also returns the log-sum-exp of the scaled scores [N, H, S, Lq] for the backward.
  m.def(
      "step_attention(Tensor q, Tensor k, Tensor v, Tensor? index, float scale) "
      "-> (Tensor, Tensor)");
  m.def(
      "step_attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor? index, "
      "Tensor out, Tensor lse, float scale) -> (Tensor, Tensor, Tensor)");
}
