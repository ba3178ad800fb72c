#pragma once
#include <ATen/ATen.h>

#include <tuple>

namespace fdperf {

// Calls fdperf::step_attention through the dispatcher (C++ API, used by the C++ tests).
// q [N, H, S, Lq, D]; k, v [E, H, S, Lk, D]; index int64 [N] or undefined (row i uses row i).
// Returns (out [N, H, S, Lq, D], lse [N, H, S, Lq]) where out = softmax(q k[index]^T * scale)
// v[index] per step and lse is the log-sum-exp of the scaled scores (float32, or float64 for
// float64 inputs), kept for the backward.
std::tuple<at::Tensor, at::Tensor> step_attention(const at::Tensor& q, const at::Tensor& k,
                                                  const at::Tensor& v,
                                                  const std::optional<at::Tensor>& index,
                                                  double scale);

// Gradients (dq, dk, dv); dk and dv sum over every query row that used a k/v row.
std::tuple<at::Tensor, at::Tensor, at::Tensor> step_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& index, const at::Tensor& out, const at::Tensor& lse,
    double scale);

// Device-independent argument checks shared by the CPU and CUDA kernels. Index values are
// checked by the kernels (see the .cu file for the CUDA rule).
void check_step_attention_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const std::optional<at::Tensor>& index);

void check_step_attention_backward_args(const at::Tensor& grad_out, const at::Tensor& q,
                                        const at::Tensor& k, const at::Tensor& v,
                                        const std::optional<at::Tensor>& index,
                                        const at::Tensor& out, const at::Tensor& lse);

// With an empty head dim (D == 0) every score is 0, so each softmax row is uniform and its
// log-sum-exp is log(Lk); fills lse with it (the kernels are not launched: out is empty).
// Does nothing when D > 0.
void fill_empty_head_lse(at::Tensor& lse, const at::Tensor& q, const at::Tensor& k);

// dtype of the log-sum-exp output: float64 for float64 inputs, float32 otherwise.
inline at::ScalarType lse_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace fdperf
