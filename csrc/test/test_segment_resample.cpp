#include <ATen/ATen.h>

#include "harness.h"
#include "ops/segment_resample.h"

// Oracle: each segment resampled with ATen's own upsample (align_corners) as the published code
// does.
static at::Tensor segment_resample_oracle(const at::Tensor& x, const at::Tensor& bounds,
                                          int64_t points) {
  std::vector<at::Tensor> rows;
  for (int64_t b = 0; b < x.size(0); ++b) {
    std::vector<int64_t> cuts{0};
    for (int64_t l = 0; l < bounds.size(1); ++l) cuts.push_back(bounds[b][l].item<int64_t>());
    cuts.push_back(x.size(2));
    std::vector<at::Tensor> segs;
    for (size_t j = 0; j + 1 < cuts.size(); ++j) {
      auto seg = x.slice(0, b, b + 1).slice(2, cuts[j], cuts[j + 1]);
      segs.push_back(at::upsample_linear1d(seg, {points}, /*align_corners=*/true));
    }
    rows.push_back(at::cat(segs, 2));
  }
  return at::cat(rows, 0);
}

FD_TEST(segment_resample_matches_oracle_on_strided_input) {
  at::manual_seed(0);
  auto x = at::randn({3, 20, 5}, at::kDouble).transpose(1, 2);  // [B, C, T] non-contiguous
  auto bounds = at::tensor(std::vector<int64_t>{3, 9, 1, 2, 18, 19}, at::kLong).view({3, 2});
  for (int64_t points : {1, 5, 7}) {
    auto got = fdperf::segment_resample(x, bounds, points);
    FD_EXPECT(got.sizes() == at::IntArrayRef({3, 5, 3 * points}));
    FD_EXPECT(at::allclose(got, segment_resample_oracle(x, bounds, points), 1e-12, 1e-12));
  }
}

FD_TEST(segment_resample_tokens_layout_is_time_major) {
  auto x = at::randn({2, 4, 12, 2, 3}, at::kFloat);
  auto bounds = at::tensor(std::vector<int64_t>{4, 7, 1, 11}, at::kLong).view({2, 2});
  auto frames = fdperf::segment_resample(x, bounds, 5);        // [2, 4, 15, 2, 3]
  auto tokens = fdperf::segment_resample(x, bounds, 5, true);  // [2, 3, 30, 4]
  FD_EXPECT(tokens.sizes() == at::IntArrayRef({2, 3, 30, 4}));
  auto expect = frames.reshape({2, 4, 3, 30}).permute({0, 2, 3, 1});
  FD_EXPECT(at::equal(tokens, expect));
}

FD_TEST(segment_resample_backward_is_adjoint_of_forward) {
  // <f(x), g> == <x, f^T(g)> for the linear map f.
  auto x = at::randn({2, 3, 10, 2}, at::kDouble);
  auto bounds = at::tensor(std::vector<int64_t>{2, 5, 6, 9}, at::kLong).view({2, 2});
  for (bool tokens : {false, true}) {
    auto y = fdperf::segment_resample(x, bounds, 4, tokens);
    auto g = at::randn_like(y);
    auto gx = fdperf::segment_resample_backward(g, bounds, 4, tokens, x.sizes());
    const double lhs = (y * g).sum().item<double>(), rhs = (x * gx).sum().item<double>();
    FD_EXPECT(std::abs(lhs - rhs) < 1e-9 * (1 + std::abs(lhs)));
  }
}

FD_TEST(segment_resample_rejects_bad_arguments) {
  auto x = at::zeros({2, 3, 8});
  auto ok = at::tensor(std::vector<int64_t>{2, 5, 3, 6}, at::kLong).view({2, 2});
  FD_EXPECT_ERROR(fdperf::segment_resample(at::zeros({2, 3}), ok, 5), "x must be [B, C, T]");
  FD_EXPECT_ERROR(fdperf::segment_resample(x, ok.to(at::kInt), 5), "bounds must be int64");
  FD_EXPECT_ERROR(fdperf::segment_resample(x, ok, 0), "points must be at least 1");
  FD_EXPECT_ERROR(fdperf::segment_resample(x, ok.slice(0, 0, 1), 5), "bounds has 1 rows");
  auto equal = at::tensor(std::vector<int64_t>{2, 5, 4, 4}, at::kLong).view({2, 2});
  FD_EXPECT_ERROR(fdperf::segment_resample(x, equal, 5), "strictly increasing");
  auto at_end = at::tensor(std::vector<int64_t>{2, 8, 3, 6}, at::kLong).view({2, 2});
  FD_EXPECT_ERROR(fdperf::segment_resample(x, at_end, 5), "inside (0, T = 8)");
  FD_EXPECT_ERROR(fdperf::segment_resample(x.to(at::kHalf), ok, 5),
                  "float32 or float64 on the CPU");
}
