#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "../step_attention.h"

namespace fdperf {
namespace {

// exp for float that the compiler vectorises (std::exp does not without -ffast-math):
// exp(x) = 2^k exp(r), k = round(x / ln 2), |r| <= ln(2)/2, exp(r) by its degree-6 Taylor
// polynomial (relative error about 2e-7). Inputs are scores minus their row maximum (<= 0).
inline float exp_vec(float x) {
  x = x < -87.0f ? -87.0f : x;  // below that the true value underflows; 1.6e-38 is as good as 0
  const float t = x * 1.44269504088896341f;
  const float k = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick)
  const float r = (x - k * 0.693145751953125f) - k * 1.428606765330187e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float two_k;
  std::memcpy(&two_k, &bits, sizeof(two_k));
  return p * two_k;
}
inline double exp_vec(double x) { return std::exp(x); }

// Strided view of one 5-d tensor: element (a, h, s, l, d).
template <typename T>
struct Strided5 {
  T* p;
  int64_t s0, s1, s2, s3, s4;
  explicit Strided5(const at::Tensor& t)
      : p(static_cast<T*>(t.data_ptr())), s0(t.stride(0)), s1(t.stride(1)), s2(t.stride(2)), s3(t.stride(3)),
        s4(t.stride(4)) {}
  T* tile(int64_t a, int64_t h, int64_t s) const { return p + a * s0 + h * s1 + s * s2; }
};

// Per-thread scratch: the k/v tile of one (row, head, step) kept in L1 in the two layouts
// the loops need (keys along the vector lanes for scores, D along the lanes for outputs).
template <typename acc_t>
struct Scratch {
  std::vector<acc_t> k, kT, vT, v, q, go, o, row, row2, acc, dk, dv;
  Scratch(int64_t Lq, int64_t Lk, int64_t D)
      : k(Lk * D), kT(D * Lk), vT(D * Lk), v(Lk * D), q(Lq * D), go(Lq * D), o(Lq * D), row(Lk),
        row2(Lk), acc(D), dk(Lk * D), dv(Lk * D) {}
};

template <typename scalar_t, typename acc_t>
inline void load_tile(const scalar_t* src, int64_t s_row, int64_t s_col, int64_t rows,
                      int64_t cols, acc_t* dst, acc_t* dstT) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const acc_t val = static_cast<acc_t>(src[r * s_row + c * s_col]);
      if (dst) dst[r * cols + c] = val;
      if (dstT) dstT[c * rows + r] = val;
    }
}

// row[j] = scale * sum_d qi[d] * kT[d][j]: vectorised over the keys j.
template <int DC, typename acc_t>
inline void scores(const acc_t* qi, const acc_t* kT, acc_t scale, int64_t Lk, int64_t Drt,
                   acc_t* row) {
  const int64_t D = DC > 0 ? DC : Drt;
  for (int64_t j = 0; j < Lk; ++j) row[j] = 0;
  for (int64_t d = 0; d < D; ++d) {
    const acc_t qd = qi[d] * scale;
    const acc_t* kd = kT + d * Lk;
    for (int64_t j = 0; j < Lk; ++j) row[j] += qd * kd[j];
  }
}

template <int DC, typename scalar_t>
void forward_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                  const int64_t* index, at::Tensor& out, at::Tensor& lse, double scale_d) {
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  const int64_t N = q.size(0), H = q.size(1), S = q.size(2), Lq = q.size(3), D = q.size(4),
                Lk = k.size(3);
  const acc_t scale = static_cast<acc_t>(scale_d);
  const Strided5<const scalar_t> Q(q), K(k), V(v);
  scalar_t* op = out.data_ptr<scalar_t>();  // contiguous
  acc_t* lp = lse.data_ptr<acc_t>();        // contiguous
  const int64_t work = Lq * Lk * D + 2 * Lk * D;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work));
  // One task per (n, h, s): the k/v tile is loaded once and serves all Lq queries.
  at::parallel_for(0, N * H * S, grain, [&](int64_t begin, int64_t end) {
    Scratch<acc_t> w(Lq, Lk, D);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / (H * S), h = (t / S) % H, s = t % S;
      const int64_t e = index ? index[n] : n;
      load_tile(K.tile(e, h, s), K.s3, K.s4, Lk, D, static_cast<acc_t*>(nullptr), w.kT.data());
      load_tile(V.tile(e, h, s), V.s3, V.s4, Lk, D, w.v.data(), static_cast<acc_t*>(nullptr));
      load_tile(Q.tile(n, h, s), Q.s3, Q.s4, Lq, D, w.q.data(), static_cast<acc_t*>(nullptr));
      for (int64_t i = 0; i < Lq; ++i) {
        acc_t* row = w.row.data();
        scores<DC>(w.q.data() + i * D, w.kT.data(), scale, Lk, D, row);
        acc_t m = row[0];
        for (int64_t j = 1; j < Lk; ++j) m = row[j] > m ? row[j] : m;
        for (int64_t j = 0; j < Lk; ++j) row[j] = exp_vec(row[j] - m);
        acc_t sum = 0;
        for (int64_t j = 0; j < Lk; ++j) sum += row[j];
        acc_t* acc = w.acc.data();
        const int64_t Dn = DC > 0 ? DC : D;
        for (int64_t d = 0; d < Dn; ++d) acc[d] = 0;
        for (int64_t j = 0; j < Lk; ++j) {
          const acc_t pj = row[j];
          const acc_t* vj = w.v.data() + j * Dn;
          for (int64_t d = 0; d < Dn; ++d) acc[d] += pj * vj[d];
        }
        const acc_t inv = acc_t(1) / sum;
        scalar_t* o = op + (t * Lq + i) * D;
        for (int64_t d = 0; d < Dn; ++d) o[d] = static_cast<scalar_t>(acc[d] * inv);
        lp[t * Lq + i] = m + std::log(sum);
      }
    }
  });
}

template <int DC, typename scalar_t>
void backward_impl(const at::Tensor& go_t, const at::Tensor& q, const at::Tensor& k,
                   const at::Tensor& v, const int64_t* index, const at::Tensor& out_t,
                   const at::Tensor& lse_t, double scale_d, at::Tensor& dq, at::Tensor& dk,
                   at::Tensor& dv) {
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  const int64_t N = q.size(0), H = q.size(1), S = q.size(2), Lq = q.size(3), D = q.size(4),
                E = k.size(0), Lk = k.size(3);
  const int64_t Dn = DC > 0 ? DC : D;
  const acc_t scale = static_cast<acc_t>(scale_d);
  const Strided5<const scalar_t> Q(q), K(k), V(v), GO(go_t), O(out_t);
  const auto lse_a = lse_t.accessor<acc_t, 4>();
  scalar_t* dqp = dq.data_ptr<scalar_t>();
  scalar_t* dkp = dk.data_ptr<scalar_t>();
  scalar_t* dvp = dv.data_ptr<scalar_t>();
  // Queries grouped by the k/v row they use (a counting sort), so one task owns a k/v row
  // and sums its gradient without atomics; each query belongs to exactly one task, so dq is
  // written by one task too.
  std::vector<int64_t> start(E + 1, 0), order(N);
  for (int64_t n = 0; n < N; ++n) ++start[(index ? index[n] : n) + 1];
  for (int64_t e = 0; e < E; ++e) start[e + 1] += start[e];
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t n = 0; n < N; ++n) order[fill[index ? index[n] : n]++] = n;
  }
  const int64_t work = std::max<int64_t>(1, (N / std::max<int64_t>(1, E)) * Lq * Lk * D * 3);
  const int64_t grain = std::max<int64_t>(1, 32768 / work);
  at::parallel_for(0, E * H * S, grain, [&](int64_t begin, int64_t end) {
    Scratch<acc_t> w(Lq, Lk, D);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t e = t / (H * S), h = (t / S) % H, s = t % S;
      scalar_t* dko = dkp + t * Lk * D;
      scalar_t* dvo = dvp + t * Lk * D;
      if (start[e] == start[e + 1]) {  // unused row: zero gradient
        for (int64_t x = 0; x < Lk * D; ++x) dko[x] = dvo[x] = scalar_t(0);
        continue;
      }
      load_tile(K.tile(e, h, s), K.s3, K.s4, Lk, D, w.k.data(), w.kT.data());
      load_tile(V.tile(e, h, s), V.s3, V.s4, Lk, D, static_cast<acc_t*>(nullptr), w.vT.data());
      std::fill(w.dk.begin(), w.dk.end(), acc_t(0));
      std::fill(w.dv.begin(), w.dv.end(), acc_t(0));
      for (int64_t u = start[e]; u < start[e + 1]; ++u) {
        const int64_t n = order[u];
        load_tile(Q.tile(n, h, s), Q.s3, Q.s4, Lq, D, w.q.data(), static_cast<acc_t*>(nullptr));
        load_tile(GO.tile(n, h, s), GO.s3, GO.s4, Lq, D, w.go.data(),
                  static_cast<acc_t*>(nullptr));
        load_tile(O.tile(n, h, s), O.s3, O.s4, Lq, D, w.o.data(), static_cast<acc_t*>(nullptr));
        for (int64_t i = 0; i < Lq; ++i) {
          const acc_t* qi = w.q.data() + i * Dn;
          const acc_t* goi = w.go.data() + i * Dn;
          const acc_t* oi = w.o.data() + i * Dn;
          acc_t* p = w.row.data();
          acc_t* ds = w.row2.data();
          // p = softmax row recomputed from the saved log-sum-exp.
          scores<DC>(qi, w.kT.data(), scale, Lk, D, p);
          const acc_t l = lse_a[n][h][s][i];
          for (int64_t j = 0; j < Lk; ++j) p[j] = exp_vec(p[j] - l);
          // ds = p * (dO_i . v_j - dO_i . o_i)
          acc_t delta = 0;
          for (int64_t d = 0; d < Dn; ++d) delta += goi[d] * oi[d];
          for (int64_t j = 0; j < Lk; ++j) ds[j] = -delta;
          for (int64_t d = 0; d < Dn; ++d) {
            const acc_t g = goi[d];
            const acc_t* vd = w.vT.data() + d * Lk;
            for (int64_t j = 0; j < Lk; ++j) ds[j] += g * vd[j];
          }
          for (int64_t j = 0; j < Lk; ++j) ds[j] *= p[j] * scale;
          // dv_j += p_j dO_i ; dk_j += ds_j q_i ; dq_i = sum_j ds_j k_j
          acc_t* acc = w.acc.data();
          for (int64_t d = 0; d < Dn; ++d) acc[d] = 0;
          for (int64_t j = 0; j < Lk; ++j) {
            const acc_t pj = p[j], dsj = ds[j];
            acc_t* dvj = w.dv.data() + j * Dn;
            acc_t* dkj = w.dk.data() + j * Dn;
            const acc_t* kj = w.k.data() + j * Dn;
            for (int64_t d = 0; d < Dn; ++d) {
              dvj[d] += pj * goi[d];
              dkj[d] += dsj * qi[d];
              acc[d] += dsj * kj[d];
            }
          }
          scalar_t* dqo = dqp + ((n * H + h) * S + s) * Lq * D + i * D;
          for (int64_t d = 0; d < Dn; ++d) dqo[d] = static_cast<scalar_t>(acc[d]);
        }
      }
      for (int64_t x = 0; x < Lk * D; ++x) {
        dko[x] = static_cast<scalar_t>(w.dk[x]);
        dvo[x] = static_cast<scalar_t>(w.dv[x]);
      }
    }
  });
}

// Calls fn with a compile-time head dim for the common sizes (unrolled inner loops), 0 otherwise.
template <typename Fn>
void with_head_dim(int64_t D, Fn&& fn) {
  switch (D) {
    case 8: fn(std::integral_constant<int, 8>()); break;
    case 16: fn(std::integral_constant<int, 16>()); break;
    case 32: fn(std::integral_constant<int, 32>()); break;
    case 64: fn(std::integral_constant<int, 64>()); break;
    default: fn(std::integral_constant<int, 0>()); break;
  }
}

void check_cpu(const at::Tensor& q, const std::optional<at::Tensor>& index, int64_t E) {
  TORCH_CHECK(q.scalar_type() == at::kFloat || q.scalar_type() == at::kDouble,
              "step_attention: q, k and v must be float32 or float64 on the CPU, got ",
              q.scalar_type());
  if (!index.has_value() || index->numel() == 0) return;
  const auto idx = index->accessor<int64_t, 1>();
  for (int64_t n = 0; n < index->size(0); ++n)
    TORCH_CHECK(idx[n] >= 0 && idx[n] < E, "step_attention: index[", n, "] = ", idx[n],
                " is out of range for k and v with E = ", E, " rows");
}

const int64_t* index_ptr(const std::optional<at::Tensor>& index, at::Tensor& holder) {
  if (!index.has_value()) return nullptr;
  holder = index->contiguous();
  return holder.data_ptr<int64_t>();
}

std::tuple<at::Tensor, at::Tensor> step_attention_cpu(const at::Tensor& q, const at::Tensor& k,
                                                      const at::Tensor& v,
                                                      const std::optional<at::Tensor>& index,
                                                      double scale) {
  check_step_attention_args(q, k, v, index);
  check_cpu(q, index, k.size(0));
  auto out = at::empty(q.sizes(), q.options().memory_format(at::MemoryFormat::Contiguous));
  auto lse = at::empty(q.sizes().slice(0, 4), q.options().dtype(lse_dtype(q.scalar_type())));
  if (out.numel() == 0) return {out, lse};
  at::Tensor holder;
  const int64_t* idx = index_ptr(index, holder);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "step_attention_cpu", [&] {
    with_head_dim(q.size(4), [&](auto dc) {
      forward_impl<decltype(dc)::value, scalar_t>(q, k, v, idx, out, lse, scale);
    });
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> step_attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& index, const at::Tensor& out, const at::Tensor& lse,
    double scale) {
  check_step_attention_backward_args(grad_out, q, k, v, index, out, lse);
  check_cpu(q, index, k.size(0));
  const auto contiguous = q.options().memory_format(at::MemoryFormat::Contiguous);
  auto dq = at::zeros(q.sizes(), contiguous);
  auto dk = at::zeros(k.sizes(), contiguous);
  auto dv = at::zeros(v.sizes(), contiguous);
  if (dk.numel() == 0 || q.numel() == 0) return {dq, dk, dv};
  at::Tensor holder;
  const int64_t* idx = index_ptr(index, holder);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "step_attention_backward_cpu", [&] {
    with_head_dim(q.size(4), [&](auto dc) {
      backward_impl<decltype(dc)::value, scalar_t>(grad_out, q, k, v, idx, out, lse, scale, dq,
                                                   dk, dv);
    });
  });
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(fdperf, CPU, m) {
  m.impl("step_attention", &step_attention_cpu);
  m.impl("step_attention_backward", &step_attention_backward_cpu);
}

}  // namespace fdperf
