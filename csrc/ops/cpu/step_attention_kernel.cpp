#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "../step_attention.h"

namespace fdperf {
namespace {

#define FD_INLINE_EXP inline __attribute__((always_inline))

// exp for float that the compiler vectorises (std::exp does not without -ffast-math):
// exp(x) = 2^k exp(r), k = round(x / ln 2), |r| <= ln(2)/2, exp(r) by its degree-6 Taylor
// polynomial (relative error about 2e-7). Inputs are scores minus their row maximum (<= 0);
// the exponent is clamped on the integer side (a float clamp becomes a branch that blocks
// vectorisation), so inputs below -87 give about 1e-38 instead of underflowing to 0.
FD_INLINE_EXP float exp_vec(float x) {
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
  int32_t ki = static_cast<int32_t>(k);
  ki = ki < -126 ? -126 : ki;
  const int32_t bits = (ki + 127) << 23;
  float two_k;
  std::memcpy(&two_k, &bits, sizeof(two_k));
  return p * two_k;
}
FD_INLINE_EXP double exp_vec(double x) { return std::exp(x); }

// The float kernels are compiled twice: for the baseline ISA and, on x86-64, for AVX2+FMA
// (picked at run time), because the loops below are written to be auto-vectorised and gain
// 2x from 8-wide vectors. The compute is in always-inline functions so that each entry point
// gets its own code generation.
#define FD_INLINE inline __attribute__((always_inline))
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FD_HAVE_AVX2 1
#define FD_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define FD_HAVE_AVX2 0
#endif

// Keys are processed in blocks of kLanes (two AVX2 vectors) held in registers.
constexpr int64_t kLanes = 16;
inline int64_t round_up(int64_t x) { return (x + kLanes - 1) / kLanes * kLanes; }

template <typename scalar_t>
using acc_of = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Strided view of one 5-d tensor: element (a, h, s, l, d).
template <typename T>
struct Strided5 {
  T* p = nullptr;
  int64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0;
  Strided5() = default;
  explicit Strided5(const at::Tensor& t)
      : p(static_cast<T*>(t.data_ptr())), s0(t.stride(0)), s1(t.stride(1)), s2(t.stride(2)),
        s3(t.stride(3)), s4(t.stride(4)) {}
  T* tile(int64_t a, int64_t h, int64_t s) const { return p + a * s0 + h * s1 + s * s2; }
};

// Everything a task needs; built once per call.
template <typename scalar_t>
struct AttnArgs {
  using acc_t = acc_of<scalar_t>;
  Strided5<const scalar_t> q, k, v, go, o;
  const int64_t* index = nullptr;  // forward: k/v row of each query (nullptr: identity)
  const int64_t* order = nullptr;  // backward: queries grouped by k/v row ...
  const int64_t* start = nullptr;  // ... row e owns order[start[e] .. start[e+1])
  scalar_t* out = nullptr;         // forward outputs (contiguous)
  acc_t* lse = nullptr;
  const acc_t* lse_in = nullptr;  // backward inputs/outputs (contiguous)
  scalar_t *dq = nullptr, *dk = nullptr, *dv = nullptr;
  int64_t H = 0, S = 0, Lq = 0, Lk = 0, D = 0;
  acc_t scale = 0;
};

// Per-thread scratch: one (row, head, step) k/v tile in the layouts the loops need, with the
// key axis padded to a multiple of kLanes (pad keys are zero).
template <typename acc_t>
struct Scratch {
  std::vector<acc_t> k, kT, vT, v, row, row2, acc, dk, dv;
  Scratch(int64_t Lk, int64_t D)
      : k(Lk * D), kT(D * round_up(Lk), 0), vT(D * round_up(Lk), 0), v(Lk * D), row(round_up(Lk)),
        row2(round_up(Lk)), acc(D), dk(Lk * D), dv(Lk * D) {}
};

// dst[d][j] = src[j][d] for j < rows (dst rows have length ld; the pad stays zero).
template <typename scalar_t, typename acc_t>
FD_INLINE void load_transposed(const scalar_t* src, int64_t s_row, int64_t s_col, int64_t rows,
                               int64_t D, int64_t ld, acc_t* dst) {
  for (int64_t d = 0; d < D; ++d)
    for (int64_t j = 0; j < rows; ++j)
      dst[d * ld + j] = static_cast<acc_t>(src[j * s_row + d * s_col]);
}

#if defined(__GNUC__) && !defined(__clang__)
// 8 x 8 float transpose with GCC vector extensions (lowered to AVX2 or SSE shuffles), for the
// common head dim 8 with unit-stride rows: the scalar transpose above was the kernels' hottest
// loop at TSA's shapes.
typedef float f8 __attribute__((vector_size(32)));
typedef int i8 __attribute__((vector_size(32)));

FD_INLINE void transpose8(const f8* r, f8* c) {
  const i8 lo = {0, 8, 1, 9, 4, 12, 5, 13}, hi = {2, 10, 3, 11, 6, 14, 7, 15};
  const i8 p01 = {0, 1, 8, 9, 4, 5, 12, 13}, p23 = {2, 3, 10, 11, 6, 7, 14, 15};
  const i8 h0 = {0, 1, 2, 3, 8, 9, 10, 11}, h1 = {4, 5, 6, 7, 12, 13, 14, 15};
  const f8 t0 = __builtin_shuffle(r[0], r[1], lo), t1 = __builtin_shuffle(r[0], r[1], hi);
  const f8 t2 = __builtin_shuffle(r[2], r[3], lo), t3 = __builtin_shuffle(r[2], r[3], hi);
  const f8 t4 = __builtin_shuffle(r[4], r[5], lo), t5 = __builtin_shuffle(r[4], r[5], hi);
  const f8 t6 = __builtin_shuffle(r[6], r[7], lo), t7 = __builtin_shuffle(r[6], r[7], hi);
  const f8 u0 = __builtin_shuffle(t0, t2, p01), u1 = __builtin_shuffle(t0, t2, p23);
  const f8 u2 = __builtin_shuffle(t1, t3, p01), u3 = __builtin_shuffle(t1, t3, p23);
  const f8 u4 = __builtin_shuffle(t4, t6, p01), u5 = __builtin_shuffle(t4, t6, p23);
  const f8 u6 = __builtin_shuffle(t5, t7, p01), u7 = __builtin_shuffle(t5, t7, p23);
  c[0] = __builtin_shuffle(u0, u4, h0);
  c[1] = __builtin_shuffle(u1, u5, h0);
  c[2] = __builtin_shuffle(u2, u6, h0);
  c[3] = __builtin_shuffle(u3, u7, h0);
  c[4] = __builtin_shuffle(u0, u4, h1);
  c[5] = __builtin_shuffle(u1, u5, h1);
  c[6] = __builtin_shuffle(u2, u6, h1);
  c[7] = __builtin_shuffle(u3, u7, h1);
}

// src rows [rows][8] (row stride s_row) -> dst [8][ld], pad columns zero.
FD_INLINE void load_transposed_d8(const float* src, int64_t s_row, int64_t rows, int64_t ld,
                                  float* dst) {
  for (int64_t j0 = 0; j0 < ld; j0 += 8) {
    f8 r[8], c[8];
    for (int i = 0; i < 8; ++i) {
      if (j0 + i < rows)
        std::memcpy(&r[i], src + (j0 + i) * s_row, sizeof(f8));
      else
        r[i] = f8{};
    }
    transpose8(r, c);
    for (int d = 0; d < 8; ++d) std::memcpy(dst + d * ld + j0, &c[d], sizeof(f8));
  }
}

// src [8][ld] -> dst rows [rows][8] (contiguous), the inverse of load_transposed_d8.
FD_INLINE void store_transposed_d8(const float* src, int64_t rows, int64_t ld, float* dst) {
  for (int64_t j0 = 0; j0 < ld; j0 += 8) {
    f8 r[8], c[8];
    for (int d = 0; d < 8; ++d) std::memcpy(&r[d], src + d * ld + j0, sizeof(f8));
    transpose8(r, c);
    for (int i = 0; i < 8 && j0 + i < rows; ++i) std::memcpy(dst + (j0 + i) * 8, &c[i], sizeof(f8));
  }
}
#define FD_HAVE_TRANSPOSE_D8 1
#else
#define FD_HAVE_TRANSPOSE_D8 0
#endif

// k or v tile transposed into [D][ld], through the vector transpose where it applies.
template <int DC, typename scalar_t, typename acc_t>
FD_INLINE void load_tile_transposed(const scalar_t* src, int64_t s_row, int64_t s_col, int64_t rows,
                                    int64_t D, int64_t ld, acc_t* dst) {
#if FD_HAVE_TRANSPOSE_D8
  if constexpr (DC == 8 && std::is_same_v<scalar_t, float>) {
    if (s_col == 1) return load_transposed_d8(src, s_row, rows, ld, dst);
  }
#endif
  load_transposed(src, s_row, s_col, rows, D, ld, dst);
}

// [D][ld] accumulators -> contiguous [rows][D] output rows.
template <int DC, typename scalar_t, typename acc_t>
FD_INLINE void store_tile_transposed(const acc_t* src, int64_t rows, int64_t D, int64_t ld,
                                     scalar_t* dst) {
#if FD_HAVE_TRANSPOSE_D8
  if constexpr (DC == 8 && std::is_same_v<scalar_t, float>)
    return store_transposed_d8(src, rows, ld, dst);
#endif
  for (int64_t j = 0; j < rows; ++j)
    for (int64_t d = 0; d < D; ++d) dst[j * D + d] = static_cast<scalar_t>(src[d * ld + j]);
}

template <typename scalar_t, typename acc_t>
FD_INLINE void load_rows(const scalar_t* src, int64_t s_row, int64_t s_col, int64_t rows, int64_t D,
                         acc_t* dst) {
  for (int64_t j = 0; j < rows; ++j)
    for (int64_t d = 0; d < D; ++d) dst[j * D + d] = static_cast<acc_t>(src[j * s_row + d * s_col]);
}

// row[j] = sum_d a[d] * bT[d][j] over whole blocks of kLanes keys, accumulated in registers.
template <int DC, typename acc_t>
FD_INLINE void block_dots(const acc_t* a, const acc_t* bT, int64_t ld, int64_t Drt, acc_t* row) {
  const int64_t D = DC > 0 ? DC : Drt;
  for (int64_t j0 = 0; j0 < ld; j0 += kLanes) {
    acc_t s[kLanes] = {};
    for (int64_t d = 0; d < D; ++d) {
      const acc_t ad = a[d];
      const acc_t* b = bT + d * ld + j0;
      for (int64_t l = 0; l < kLanes; ++l) s[l] += ad * b[l];
    }
    for (int64_t l = 0; l < kLanes; ++l) row[j0 + l] = s[l];
  }
}

template <typename acc_t>
FD_INLINE acc_t block_max(const acc_t* row, int64_t ld) {
  acc_t m[kLanes];
  for (int64_t l = 0; l < kLanes; ++l) m[l] = row[l];
  for (int64_t j0 = kLanes; j0 < ld; j0 += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) m[l] = m[l] > row[j0 + l] ? m[l] : row[j0 + l];
  acc_t r = m[0];
  for (int64_t l = 1; l < kLanes; ++l) r = m[l] > r ? m[l] : r;
  return r;
}

template <typename acc_t>
FD_INLINE acc_t block_sum(const acc_t* row, int64_t ld) {
  acc_t s[kLanes] = {};
  for (int64_t j0 = 0; j0 < ld; j0 += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) s[l] += row[j0 + l];
  acc_t r = 0;
  for (int64_t l = 0; l < kLanes; ++l) r += s[l];
  return r;
}

template <int DC, typename scalar_t>
FD_INLINE void forward_tasks(const AttnArgs<scalar_t>& a, int64_t begin, int64_t end) {
  using acc_t = acc_of<scalar_t>;
  const int64_t D = DC > 0 ? DC : a.D, Lk = a.Lk, ld = round_up(Lk), Lq = a.Lq;
  Scratch<acc_t> w(Lk, D);
  acc_t qbuf[DC > 0 ? DC : 1], accbuf[DC > 0 ? DC : 1], acc2buf[DC > 0 ? DC : 1];
  std::vector<acc_t> vecs(DC > 0 ? 0 : 3 * D);
  acc_t* qs = DC > 0 ? qbuf : vecs.data();
  acc_t* acc = DC > 0 ? accbuf : vecs.data() + D;
  acc_t* acc2 = DC > 0 ? acc2buf : vecs.data() + 2 * D;
  acc_t* row = w.row.data();
  // One task per (n, h, s): the k/v tile is loaded once and serves all Lq queries.
  for (int64_t t = begin; t < end; ++t) {
    const int64_t n = t / (a.H * a.S), h = (t / a.S) % a.H, s = t % a.S;
    const int64_t e = a.index ? a.index[n] : n;
    load_tile_transposed<DC>(a.k.tile(e, h, s), a.k.s3, a.k.s4, Lk, D, ld, w.kT.data());
    const acc_t* vr;
    int64_t vs;
    if (std::is_same_v<scalar_t, acc_t> && a.v.s4 == 1) {  // read v rows in place
      vr = reinterpret_cast<const acc_t*>(a.v.tile(e, h, s));
      vs = a.v.s3;
    } else {
      load_rows(a.v.tile(e, h, s), a.v.s3, a.v.s4, Lk, D, w.v.data());
      vr = w.v.data();
      vs = D;
    }
    const scalar_t* qt = a.q.tile(n, h, s);
    for (int64_t i = 0; i < Lq; ++i) {
      for (int64_t d = 0; d < D; ++d)
        qs[d] = static_cast<acc_t>(qt[i * a.q.s3 + d * a.q.s4]) * a.scale;
      block_dots<DC>(qs, w.kT.data(), ld, D, row);
      for (int64_t j = Lk; j < ld; ++j) row[j] = row[0];  // pad: never above the true max
      const acc_t m = block_max(row, ld);
      for (int64_t j = 0; j < ld; ++j) row[j] = exp_vec(row[j] - m);
      for (int64_t j = Lk; j < ld; ++j) row[j] = 0;
      const acc_t sum = block_sum(row, ld);
      // acc = sum_j p_j v_j with two independent chains (the FMA latency, not the throughput,
      // bounds a single chain at D = 8).
      for (int64_t d = 0; d < D; ++d) acc[d] = 0;
      for (int64_t d = 0; d < D; ++d) acc2[d] = 0;
      int64_t j = 0;
      for (; j + 1 < Lk; j += 2) {
        const acc_t p0 = row[j], p1 = row[j + 1];
        const acc_t* v0 = vr + j * vs;
        const acc_t* v1 = v0 + vs;
        for (int64_t d = 0; d < D; ++d) acc[d] += p0 * v0[d];
        for (int64_t d = 0; d < D; ++d) acc2[d] += p1 * v1[d];
      }
      if (j < Lk)
        for (int64_t d = 0; d < D; ++d) acc[d] += row[j] * vr[j * vs + d];
      for (int64_t d = 0; d < D; ++d) acc[d] += acc2[d];
      const acc_t inv = acc_t(1) / sum;
      scalar_t* o = a.out + (t * Lq + i) * D;
      for (int64_t d = 0; d < D; ++d) o[d] = static_cast<scalar_t>(acc[d] * inv);
      a.lse[t * Lq + i] = m + std::log(sum);
    }
  }
}

template <int DC, typename scalar_t>
FD_INLINE void backward_tasks(const AttnArgs<scalar_t>& a, int64_t begin, int64_t end) {
  using acc_t = acc_of<scalar_t>;
  const int64_t D = DC > 0 ? DC : a.D, Lk = a.Lk, ld = round_up(Lk), Lq = a.Lq;
  Scratch<acc_t> w(Lk, D);
  // Everything with the key axis along the vector lanes: P and dS [Lq][ld], and the k/v
  // gradient accumulators transposed, dkT/dvT [D][ld]; transposed back once per task.
  std::vector<acc_t> qm(Lq * D), gom(Lq * D), P(Lq * ld), DS(Lq * ld), qs(D), dkT(D * ld),
      dvT(D * ld);
  for (int64_t t = begin; t < end; ++t) {
    const int64_t e = t / (a.H * a.S), h = (t / a.S) % a.H, s = t % a.S;
    if (a.start[e] == a.start[e + 1]) {  // unused row: zero gradient
      std::fill(a.dk + t * Lk * D, a.dk + (t + 1) * Lk * D, scalar_t(0));
      std::fill(a.dv + t * Lk * D, a.dv + (t + 1) * Lk * D, scalar_t(0));
      continue;
    }
    load_tile_transposed<DC>(a.k.tile(e, h, s), a.k.s3, a.k.s4, Lk, D, ld, w.kT.data());
    load_tile_transposed<DC>(a.v.tile(e, h, s), a.v.s3, a.v.s4, Lk, D, ld, w.vT.data());
    std::fill(dkT.begin(), dkT.end(), acc_t(0));
    std::fill(dvT.begin(), dvT.end(), acc_t(0));
    for (int64_t u = a.start[e]; u < a.start[e + 1]; ++u) {
      const int64_t n = a.order[u];
      const scalar_t* qt = a.q.tile(n, h, s);
      const scalar_t* got = a.go.tile(n, h, s);
      const scalar_t* ot = a.o.tile(n, h, s);
      const int64_t row_id = (n * a.H + h) * a.S + s;
      // P_i = softmax row recomputed from the saved log-sum-exp;
      // dS_i = P_i (dO_i . v_j - dO_i . o_i) * scale.
      for (int64_t i = 0; i < Lq; ++i) {
        acc_t* qi = qm.data() + i * D;
        acc_t* goi = gom.data() + i * D;
        acc_t delta = 0;
        for (int64_t d = 0; d < D; ++d) {
          qi[d] = static_cast<acc_t>(qt[i * a.q.s3 + d * a.q.s4]);
          qs[d] = qi[d] * a.scale;
          goi[d] = static_cast<acc_t>(got[i * a.go.s3 + d * a.go.s4]);
          delta += goi[d] * static_cast<acc_t>(ot[i * a.o.s3 + d * a.o.s4]);
        }
        acc_t* p = P.data() + i * ld;
        acc_t* ds = DS.data() + i * ld;
        block_dots<DC>(qs.data(), w.kT.data(), ld, D, p);
        const acc_t l = a.lse_in[row_id * Lq + i];
        for (int64_t j = 0; j < ld; ++j) p[j] = exp_vec(p[j] - l);
        for (int64_t j = Lk; j < ld; ++j) p[j] = 0;
        block_dots<DC>(goi, w.vT.data(), ld, D, ds);
        for (int64_t j = 0; j < ld; ++j) ds[j] = p[j] * (ds[j] - delta) * a.scale;
      }
      // dvT[d] += sum_i dO_i[d] P_i ; dkT[d] += sum_i q_i[d] dS_i, vectorised over keys with
      // one block of kLanes keys held in registers across the queries.
      for (int64_t d = 0; d < D; ++d)
        for (int64_t j0 = 0; j0 < ld; j0 += kLanes) {
          acc_t av[kLanes], ak[kLanes];
          acc_t* dv = dvT.data() + d * ld + j0;
          acc_t* dk = dkT.data() + d * ld + j0;
          for (int64_t l = 0; l < kLanes; ++l) av[l] = dv[l];
          for (int64_t l = 0; l < kLanes; ++l) ak[l] = dk[l];
          for (int64_t i = 0; i < Lq; ++i) {
            const acc_t g = gom[i * D + d], qv = qm[i * D + d];
            const acc_t* p = P.data() + i * ld + j0;
            const acc_t* ds = DS.data() + i * ld + j0;
            for (int64_t l = 0; l < kLanes; ++l) av[l] += g * p[l];
            for (int64_t l = 0; l < kLanes; ++l) ak[l] += qv * ds[l];
          }
          for (int64_t l = 0; l < kLanes; ++l) dv[l] = av[l];
          for (int64_t l = 0; l < kLanes; ++l) dk[l] = ak[l];
        }
      // dq_i[d] = sum_j dS_i[j] k[j][d]: dot products over the keys, kLanes partial sums.
      scalar_t* dqo = a.dq + row_id * Lq * D;
      for (int64_t i = 0; i < Lq; ++i)
        for (int64_t d = 0; d < D; ++d) {
          const acc_t* ds = DS.data() + i * ld;
          const acc_t* kd = w.kT.data() + d * ld;
          acc_t part[kLanes] = {};
          for (int64_t j0 = 0; j0 < ld; j0 += kLanes)
            for (int64_t l = 0; l < kLanes; ++l) part[l] += ds[j0 + l] * kd[j0 + l];
          acc_t sum = 0;
          for (int64_t l = 0; l < kLanes; ++l) sum += part[l];
          dqo[i * D + d] = static_cast<scalar_t>(sum);
        }
    }
    store_tile_transposed<DC>(dkT.data(), Lk, D, ld, a.dk + t * Lk * D);
    store_tile_transposed<DC>(dvT.data(), Lk, D, ld, a.dv + t * Lk * D);
  }
}

// Entry points per ISA; the task loops above are inlined into each.
template <int DC, typename scalar_t>
void forward_base(const AttnArgs<scalar_t>& a, int64_t b, int64_t e) {
  forward_tasks<DC>(a, b, e);
}
template <int DC, typename scalar_t>
void backward_base(const AttnArgs<scalar_t>& a, int64_t b, int64_t e) {
  backward_tasks<DC>(a, b, e);
}
#if FD_HAVE_AVX2
template <int DC, typename scalar_t>
FD_TARGET_AVX2 void forward_avx2(const AttnArgs<scalar_t>& a, int64_t b, int64_t e) {
  forward_tasks<DC>(a, b, e);
}
template <int DC, typename scalar_t>
FD_TARGET_AVX2 void backward_avx2(const AttnArgs<scalar_t>& a, int64_t b, int64_t e) {
  backward_tasks<DC>(a, b, e);
}
#endif

// FDPERF_DISABLE_AVX2=1 forces the baseline build of the kernels (the tests use it to check it).
bool cpu_has_avx2() {
#if FD_HAVE_AVX2
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          std::getenv("FDPERF_DISABLE_AVX2") == nullptr;
  return has;
#else
  return false;
#endif
}

template <int DC, typename scalar_t>
void run_forward(const AttnArgs<scalar_t>& a, int64_t tasks) {
  auto fn = &forward_base<DC, scalar_t>;
#if FD_HAVE_AVX2
  if (cpu_has_avx2()) fn = &forward_avx2<DC, scalar_t>;
#endif
  const int64_t work = a.Lq * a.Lk * a.D + 2 * a.Lk * a.D;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work));
  at::parallel_for(0, tasks, grain, [&](int64_t b, int64_t e) { fn(a, b, e); });
}

template <int DC, typename scalar_t>
void run_backward(const AttnArgs<scalar_t>& a, int64_t tasks, int64_t queries_per_row) {
  auto fn = &backward_base<DC, scalar_t>;
#if FD_HAVE_AVX2
  if (cpu_has_avx2()) fn = &backward_avx2<DC, scalar_t>;
#endif
  const int64_t work = std::max<int64_t>(1, queries_per_row * a.Lq * a.Lk * a.D * 5);
  const int64_t grain = std::max<int64_t>(1, 32768 / work);
  at::parallel_for(0, tasks, grain, [&](int64_t b, int64_t e) { fn(a, b, e); });
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
  if (out.numel() == 0) {
    fill_empty_head_lse(lse, q, k);
    return {out, lse};
  }
  at::Tensor holder;
  const int64_t* idx = index_ptr(index, holder);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "step_attention_cpu", [&] {
    AttnArgs<scalar_t> a;
    a.q = Strided5<const scalar_t>(q);
    a.k = Strided5<const scalar_t>(k);
    a.v = Strided5<const scalar_t>(v);
    a.index = idx;
    a.out = out.data_ptr<scalar_t>();
    a.lse = lse.data_ptr<acc_of<scalar_t>>();
    a.H = q.size(1), a.S = q.size(2), a.Lq = q.size(3), a.Lk = k.size(3), a.D = q.size(4);
    a.scale = static_cast<acc_of<scalar_t>>(scale);
    with_head_dim(a.D,
                  [&](auto dc) { run_forward<decltype(dc)::value>(a, q.size(0) * a.H * a.S); });
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
  // The kernel writes every element: each query row is handled by exactly one task, and a
  // task zero-fills the gradient of a k/v row that no query used.
  auto dq = at::empty(q.sizes(), contiguous);
  auto dk = at::empty(k.sizes(), contiguous);
  auto dv = at::empty(v.sizes(), contiguous);
  if (dk.numel() == 0 || q.numel() == 0) return {dq.zero_(), dk.zero_(), dv.zero_()};
  at::Tensor holder;
  const int64_t* idx = index_ptr(index, holder);
  const auto lse_c = lse.contiguous();
  // Queries grouped by the k/v row they use (a counting sort), so one task owns a k/v row and
  // sums its gradient without atomics; each query belongs to exactly one task, so dq is
  // written by one task too.
  const int64_t N = q.size(0), E = k.size(0);
  std::vector<int64_t> start(E + 1, 0), order(N);
  for (int64_t n = 0; n < N; ++n) ++start[(idx ? idx[n] : n) + 1];
  for (int64_t e = 0; e < E; ++e) start[e + 1] += start[e];
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t n = 0; n < N; ++n) order[fill[idx ? idx[n] : n]++] = n;
  }
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "step_attention_backward_cpu", [&] {
    AttnArgs<scalar_t> a;
    a.q = Strided5<const scalar_t>(q);
    a.k = Strided5<const scalar_t>(k);
    a.v = Strided5<const scalar_t>(v);
    a.go = Strided5<const scalar_t>(grad_out);
    a.o = Strided5<const scalar_t>(out);
    a.order = order.data();
    a.start = start.data();
    a.lse_in = lse_c.data_ptr<acc_of<scalar_t>>();
    a.dq = dq.data_ptr<scalar_t>();
    a.dk = dk.data_ptr<scalar_t>();
    a.dv = dv.data_ptr<scalar_t>();
    a.H = q.size(1), a.S = q.size(2), a.Lq = q.size(3), a.Lk = k.size(3), a.D = q.size(4);
    a.scale = static_cast<acc_of<scalar_t>>(scale);
    const int64_t per_row = std::max<int64_t>(1, N / std::max<int64_t>(1, E));
    with_head_dim(a.D,
                  [&](auto dc) { run_backward<decltype(dc)::value>(a, E * a.H * a.S, per_row); });
  });
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(fdperf, CPU, m) {
  m.impl("step_attention", &step_attention_cpu);
  m.impl("step_attention_backward", &step_attention_backward_cpu);
}

}  // namespace fdperf
