#include <ATen/ATen.h>

#include "harness.h"
#include "ops/window_argmax.h"

// Oracle: argmax inside each window with ATen ops, offset, then raised to min_index.
static at::Tensor window_argmax_oracle(const at::Tensor& p, int64_t w, int64_t min_index) {
  std::vector<at::Tensor> cols;
  for (int64_t k = 0; k < p.size(2); ++k) {
    auto win = p.slice(1, w * k, w * (k + 1)).select(2, k);
    cols.push_back(win.argmax(1) + w * k);
  }
  return at::stack(cols, 1).clamp_min(min_index);
}

FD_TEST(window_argmax_matches_oracle) {
  at::manual_seed(0);
  for (int64_t K : {1, 2, 3}) {
    auto p = at::rand({7, 96, K}, at::kFloat);
    auto got = fdperf::window_argmax(p, 96 / K, 1);
    FD_EXPECT(at::equal(got, window_argmax_oracle(p, 96 / K, 1)));
  }
}

FD_TEST(window_argmax_strided_input_and_zero_becomes_one) {
  auto base = at::zeros({2, 2, 96}, at::kFloat);  // transposed view: non-contiguous
  auto p = base.transpose(1, 2);
  auto got = fdperf::window_argmax(p, 48, 1);  // all ties: first index of each window
  FD_EXPECT(got[0][0].item<int64_t>() == 1);   // 0 is raised to 1
  FD_EXPECT(got[0][1].item<int64_t>() == 48);
}

FD_TEST(window_argmax_rejects_bad_arguments) {
  FD_EXPECT_ERROR(fdperf::window_argmax(at::rand({4, 96}), 48, 1), "probs must be [B, T, K]");
  FD_EXPECT_ERROR(fdperf::window_argmax(at::rand({4, 96, 2}), 0, 1), "window must be positive");
  FD_EXPECT_ERROR(fdperf::window_argmax(at::rand({4, 96, 2}), 49, 1), "exceeds the length");
  FD_EXPECT_ERROR(fdperf::window_argmax(at::ones({4, 96, 2}, at::kLong), 48, 1),
                  "must be a floating tensor");
}

FD_TEST(window_argmax_compares_float64_in_float64) {
  // 0.7 and 0.70000001 round to the same float32: a float32 comparison would keep index 0.
  auto p = at::tensor(std::vector<double>{0.7, 0.70000001}, at::kDouble).view({1, 2, 1});
  FD_EXPECT(fdperf::window_argmax(p, 2, 0)[0][0].item<int64_t>() == 1);
}
