#include <ATen/ATen.h>

#include "harness.h"
#include "ops/step_attention.h"

// Oracle: softmax(q k[index]^T * scale) v[index] with ATen matmuls on gathered rows.
static at::Tensor attention_oracle(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& index, double scale) {
  auto kk = index.defined() ? k.index_select(0, index) : k;
  auto vv = index.defined() ? v.index_select(0, index) : v;
  return at::softmax(at::matmul(q, kk.transpose(-1, -2)) * scale, -1).matmul(vv);
}

FD_TEST(step_attention_matches_oracle_at_tsa_shapes) {
  at::manual_seed(0);
  auto q = at::randn({6, 8, 3, 5, 8});
  auto k = at::randn({4, 8, 3, 80, 8});
  auto v = at::randn({4, 8, 3, 80, 8});
  auto index = at::tensor(std::vector<int64_t>{0, 3, 3, 1, 0, 2}, at::kLong);
  const double scale = 1.0 / std::sqrt(8.0);
  auto [out, lse] = fdperf::step_attention(q, k, v, index, scale);
  FD_EXPECT(at::allclose(out, attention_oracle(q, k, v, index, scale), 1e-5, 1e-5));
  auto kk = k.index_select(0, index);
  auto expect_lse = at::logsumexp(at::matmul(q, kk.transpose(-1, -2)) * scale, -1);
  FD_EXPECT(at::allclose(lse, expect_lse, 1e-5, 1e-5));
}

FD_TEST(step_attention_strided_inputs_and_runtime_head_dim) {
  auto q = at::randn({3, 2, 5, 2, 6}, at::kDouble).permute({0, 3, 1, 2, 4});  // D = 6
  auto k = at::randn({3, 2, 9, 2, 6}, at::kDouble).permute({0, 3, 1, 2, 4});
  auto v = at::randn({3, 2, 9, 2, 6}, at::kDouble).permute({0, 3, 1, 2, 4});
  auto [out, lse] = fdperf::step_attention(q, k, v, std::nullopt, 0.3);
  FD_EXPECT(at::allclose(out, attention_oracle(q, k, v, at::Tensor(), 0.3), 1e-12, 1e-12));
}

FD_TEST(step_attention_backward_matches_autograd_of_oracle) {
  auto q = at::randn({5, 2, 3, 4, 8}, at::kDouble).set_requires_grad(true);
  auto k = at::randn({3, 2, 3, 11, 8}, at::kDouble).set_requires_grad(true);
  auto v = at::randn({3, 2, 3, 11, 8}, at::kDouble).set_requires_grad(true);
  auto index = at::tensor(std::vector<int64_t>{2, 0, 2, 2, 0}, at::kLong);  // row 1 unused
  auto ref = attention_oracle(q, k, v, index, 0.5);
  auto g = at::randn_like(ref);
  ref.backward(g);
  auto [out, lse] = fdperf::step_attention(q.detach(), k.detach(), v.detach(), index, 0.5);
  auto [dq, dk, dv] =
      fdperf::step_attention_backward(g, q.detach(), k.detach(), v.detach(), index, out, lse, 0.5);
  FD_EXPECT(at::allclose(dq, q.grad(), 1e-10, 1e-10));
  FD_EXPECT(at::allclose(dk, k.grad(), 1e-10, 1e-10));
  FD_EXPECT(at::allclose(dv, v.grad(), 1e-10, 1e-10));
  FD_EXPECT(dk[1].abs().max().item<double>() == 0.0);
}

FD_TEST(step_attention_rejects_bad_arguments) {
  auto q = at::zeros({2, 2, 3, 5, 8});
  auto k = at::zeros({2, 2, 3, 7, 8});
  FD_EXPECT_ERROR(fdperf::step_attention(q.squeeze(0).select(0, 0), k, k, std::nullopt, 1.0),
                  "q must be [N, H, S, Lq, D]");
  FD_EXPECT_ERROR(fdperf::step_attention(q, k, k.slice(3, 0, 6), std::nullopt, 1.0),
                  "v must have the shape of k");
  FD_EXPECT_ERROR(fdperf::step_attention(q, k.slice(4, 0, 4), k.slice(4, 0, 4), std::nullopt, 1.0),
                  "does not match q");
  auto bad = at::tensor(std::vector<int64_t>{0, 2}, at::kLong);
  FD_EXPECT_ERROR(fdperf::step_attention(q, k, k, bad, 1.0), "index[1] = 2 is out of range");
  FD_EXPECT_ERROR(fdperf::step_attention(q, k.slice(0, 0, 1), k.slice(0, 0, 1), std::nullopt, 1.0),
                  "without index");
}

FD_TEST(step_attention_empty_head_dim_gives_log_lk_lse) {
  // D == 0: all scores are 0, so lse = log(Lk) and out has an empty last dim.
  auto q = at::zeros({3, 2, 1, 4, 0});
  auto k = at::zeros({2, 2, 1, 9, 0});
  auto index = at::tensor(std::vector<int64_t>{1, 0, 1}, at::kLong);
  auto [out, lse] = fdperf::step_attention(q, k, k, index, 0.5);
  FD_EXPECT(out.sizes() == q.sizes());
  FD_EXPECT(at::allclose(lse, at::full({3, 2, 1, 4}, std::log(9.0))));
  auto [dq, dk, dv] = fdperf::step_attention_backward(out, q, k, k, index, out, lse, 0.5);
  FD_EXPECT(dq.sizes() == q.sizes() && dk.sizes() == k.sizes() && dv.sizes() == k.sizes());
}

FD_TEST(step_attention_empty_k_with_index_is_refused_by_shape) {
  auto q = at::zeros({2, 1, 1, 3, 8});
  auto k = at::zeros({0, 1, 1, 5, 8});
  auto index = at::tensor(std::vector<int64_t>{0, 0}, at::kLong);
  FD_EXPECT_ERROR(fdperf::step_attention(q, k, k, index, 1.0),
                  "index has N = 2 entries but k and v have E = 0 rows");
}
