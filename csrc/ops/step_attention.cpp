#include "step_attention.h"

#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>

namespace fdperf {

std::tuple<at::Tensor, at::Tensor> step_attention(const at::Tensor& q, const at::Tensor& k,
                                                  const at::Tensor& v,
                                                  const std::optional<at::Tensor>& index,
                                                  double scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fdperf::step_attention", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const std::optional<at::Tensor>&, double)>();
  return op.call(q, k, v, index, scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> step_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& index, const at::Tensor& out, const at::Tensor& lse,
    double scale) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fdperf::step_attention_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&, double)>();
  return op.call(grad_out, q, k, v, index, out, lse, scale);
}

void check_step_attention_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const std::optional<at::Tensor>& index) {
  TORCH_CHECK(q.dim() == 5, "step_attention: q must be [N, H, S, Lq, D], got ", q.dim(),
              " dimensions");
  TORCH_CHECK(k.dim() == 5, "step_attention: k must be [E, H, S, Lk, D], got ", k.dim(),
              " dimensions");
  TORCH_CHECK(v.sizes() == k.sizes(), "step_attention: v must have the shape of k ", k.sizes(),
              ", got ", v.sizes());
  TORCH_CHECK(at::isFloatingType(q.scalar_type()),
              "step_attention: q must be a floating tensor, got ", q.scalar_type());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "step_attention: q, k and v must share a dtype, got ", q.scalar_type(), ", ",
              k.scalar_type(), " and ", v.scalar_type());
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(),
              "step_attention: q, k and v must be on one device, got ", q.device(), ", ",
              k.device(), " and ", v.device());
  TORCH_CHECK(k.size(1) == q.size(1) && k.size(2) == q.size(2) && k.size(4) == q.size(4),
              "step_attention: k [E, H, S, Lk, D] = ", k.sizes(),
              " does not match q [N, H, S, Lq, D] = ", q.sizes(), " in H, S or D");
  TORCH_CHECK(k.size(3) >= 1, "step_attention: k must hold at least one key (Lk >= 1)");
  if (index.has_value()) {
    const auto& idx = *index;
    TORCH_CHECK(idx.dim() == 1 && idx.size(0) == q.size(0),
                "step_attention: index must be [N] with N = ", q.size(0), ", got shape ",
                idx.sizes());
    TORCH_CHECK(idx.scalar_type() == at::kLong, "step_attention: index must be int64, got ",
                idx.scalar_type());
    TORCH_CHECK(idx.device() == q.device(), "step_attention: index is on ", idx.device(),
                " but q is on ", q.device());
    // A shape check (no look at the values, so no device sync): with no k/v rows, any index
    // is out of range.
    TORCH_CHECK(idx.numel() == 0 || k.size(0) > 0, "step_attention: index has N = ", idx.size(0),
                " entries but k and v have E = 0 rows: every index is out of range");
  } else {
    TORCH_CHECK(k.size(0) == q.size(0),
                "step_attention: without index, k and v need one row per "
                "query row (E == N), got E = ",
                k.size(0), " and N = ", q.size(0));
  }
}

void fill_empty_head_lse(at::Tensor& lse, const at::Tensor& q, const at::Tensor& k) {
  if (q.size(4) == 0 && lse.numel() > 0) lse.fill_(std::log(static_cast<double>(k.size(3))));
}

void check_step_attention_backward_args(const at::Tensor& grad_out, const at::Tensor& q,
                                        const at::Tensor& k, const at::Tensor& v,
                                        const std::optional<at::Tensor>& index,
                                        const at::Tensor& out, const at::Tensor& lse) {
  check_step_attention_args(q, k, v, index);
  TORCH_CHECK(grad_out.sizes() == q.sizes() && out.sizes() == q.sizes(),
              "step_attention_backward: grad_out and out must have q's shape ", q.sizes(), ", got ",
              grad_out.sizes(), " and ", out.sizes());
  TORCH_CHECK(grad_out.scalar_type() == q.scalar_type() && out.scalar_type() == q.scalar_type(),
              "step_attention_backward: grad_out and out must have q's dtype ", q.scalar_type());
  TORCH_CHECK(lse.sizes() == q.sizes().slice(0, 4),
              "step_attention_backward: lse must be [N, H, S, Lq] = ", q.sizes().slice(0, 4),
              ", got ", lse.sizes());
  TORCH_CHECK(lse.scalar_type() == lse_dtype(q.scalar_type()),
              "step_attention_backward: lse must be ", lse_dtype(q.scalar_type()), ", got ",
              lse.scalar_type());
  TORCH_CHECK(
      grad_out.device() == q.device() && out.device() == q.device() && lse.device() == q.device(),
      "step_attention_backward: grad_out, out and lse must be on q's device ", q.device());
}

}  // namespace fdperf
