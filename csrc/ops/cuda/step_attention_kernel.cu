// CUDA kernels of step_attention. One block per (query row n, head h, step s) covers all Lq
// queries against the k/v tile of row index[n], read in place (k[index] is never gathered).
// Scores live in shared memory (rows in chunks when Lq * Lk is large), math in float (double
// for float64). The backward recomputes the probabilities from the saved log-sum-exp and adds
// the k/v gradients of every query that used a row with atomics into a float buffer (plain
// adds when index is None: a block then owns its k/v tile).
//
// Index values are validated inside the kernels, never on the host (no sync in the hot path):
// a bad index trips a device-side assert (CUDA_KERNEL_ASSERT_MSG, like PyTorch's own index
// kernels) and is clamped so nothing is read out of bounds where asserts are compiled out.
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

#include "../step_attention.h"

namespace fdperf {
namespace {

constexpr int kThreads = 128;
constexpr int64_t kSharedBytes = 40 * 1024;

template <typename T>
struct Tile5 {
  const T* p;
  int64_t s0, s1, s2, s3, s4;
  __device__ __forceinline__ const T* at(int64_t a, int64_t h, int64_t s) const {
    return p + a * s0 + h * s1 + s * s2;
  }
};

template <typename T>
Tile5<T> tile_of(const at::Tensor& t) {
  return {t.data_ptr<T>(), t.stride(0), t.stride(1), t.stride(2), t.stride(3), t.stride(4)};
}

struct Dims {
  int64_t H, S, Lq, Lk, D, E, rows;  // rows: query rows per shared-memory chunk
};

__device__ __forceinline__ int64_t kv_row(const int64_t* index, int64_t n, int64_t E) {
  if (index == nullptr) return n;
  int64_t e = index[n];
  CUDA_KERNEL_ASSERT_MSG(e >= 0 && e < E, "step_attention: index out of range for k and v");
  return e < 0 ? 0 : (e >= E ? E - 1 : e);
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_max(acc_t v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(Tile5<scalar_t> q, Tile5<scalar_t> k, Tile5<scalar_t> v,
                               const int64_t* __restrict__ index, scalar_t* __restrict__ out,
                               acc_t* __restrict__ lse, Dims dm, acc_t scale) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* sc = reinterpret_cast<acc_t*>(smem_raw);  // [rows][Lk]
  acc_t* inv = sc + dm.rows * dm.Lk;               // [rows]
  const int64_t task = blockIdx.x;
  const int64_t n = task / (dm.H * dm.S), h = (task / dm.S) % dm.H, s = task % dm.S;
  const int64_t e = kv_row(index, n, dm.E);
  const scalar_t* qt = q.at(n, h, s);
  const scalar_t* kt = k.at(e, h, s);
  const scalar_t* vt = v.at(e, h, s);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int64_t i0 = 0; i0 < dm.Lq; i0 += dm.rows) {
    const int64_t rows = min(dm.rows, dm.Lq - i0);
    for (int64_t x = threadIdx.x; x < rows * dm.Lk; x += blockDim.x) {
      const int64_t i = x / dm.Lk, j = x % dm.Lk;
      acc_t dot = 0;
      for (int64_t d = 0; d < dm.D; ++d)
        dot += static_cast<acc_t>(qt[(i0 + i) * q.s3 + d * q.s4]) *
               static_cast<acc_t>(kt[j * k.s3 + d * k.s4]);
      sc[x] = dot * scale;
    }
    __syncthreads();
    for (int64_t i = warp; i < rows; i += warps) {  // softmax of row i by one warp
      acc_t* row = sc + i * dm.Lk;
      acc_t m = -INFINITY;
      for (int64_t j = lane; j < dm.Lk; j += 32) m = max(m, row[j]);
      m = warp_max(m);
      acc_t sum = 0;
      for (int64_t j = lane; j < dm.Lk; j += 32) {
        const acc_t p = exp(row[j] - m);
        row[j] = p;
        sum += p;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        inv[i] = acc_t(1) / sum;
        lse[task * dm.Lq + i0 + i] = m + log(sum);
      }
    }
    __syncthreads();
    for (int64_t x = threadIdx.x; x < rows * dm.D; x += blockDim.x) {
      const int64_t i = x / dm.D, d = x % dm.D;
      const acc_t* row = sc + i * dm.Lk;
      acc_t acc = 0;
      for (int64_t j = 0; j < dm.Lk; ++j)
        acc += row[j] * static_cast<acc_t>(vt[j * v.s3 + d * v.s4]);
      out[(task * dm.Lq + i0 + i) * dm.D + d] = static_cast<scalar_t>(acc * inv[i]);
    }
    __syncthreads();
  }
}

template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(Tile5<scalar_t> go, Tile5<scalar_t> q, Tile5<scalar_t> k,
                                Tile5<scalar_t> v, Tile5<scalar_t> o,
                                const int64_t* __restrict__ index, const acc_t* __restrict__ lse,
                                scalar_t* __restrict__ dq, acc_t* __restrict__ dk,
                                acc_t* __restrict__ dv, Dims dm, acc_t scale) {
  extern __shared__ unsigned char smem_raw[];
  acc_t* ps = reinterpret_cast<acc_t*>(smem_raw);  // [rows][Lk] probabilities, then dS
  acc_t* delta = ps + dm.rows * dm.Lk;             // [rows] dO_i . O_i
  const int64_t task = blockIdx.x;
  const int64_t n = task / (dm.H * dm.S), h = (task / dm.S) % dm.H, s = task % dm.S;
  const int64_t e = kv_row(index, n, dm.E);
  const bool shared_rows = index != nullptr;  // other blocks may add to the same k/v row
  const scalar_t *qt = q.at(n, h, s), *kt = k.at(e, h, s), *vt = v.at(e, h, s);
  const scalar_t *got = go.at(n, h, s), *ot = o.at(n, h, s);
  acc_t* dkt = dk + ((e * dm.H + h) * dm.S + s) * dm.Lk * dm.D;
  acc_t* dvt = dv + ((e * dm.H + h) * dm.S + s) * dm.Lk * dm.D;
  for (int64_t i0 = 0; i0 < dm.Lq; i0 += dm.rows) {
    const int64_t rows = min(dm.rows, dm.Lq - i0);
    for (int64_t i = threadIdx.x; i < rows; i += blockDim.x) {
      acc_t acc = 0;
      for (int64_t d = 0; d < dm.D; ++d)
        acc += static_cast<acc_t>(got[(i0 + i) * go.s3 + d * go.s4]) *
               static_cast<acc_t>(ot[(i0 + i) * o.s3 + d * o.s4]);
      delta[i] = acc;
    }
    // Pass 1: P_ij into the shared array, then dv_j = sum_i P_ij dO_i.
    for (int64_t x = threadIdx.x; x < rows * dm.Lk; x += blockDim.x) {
      const int64_t i = x / dm.Lk, j = x % dm.Lk;
      acc_t qk = 0;
      for (int64_t d = 0; d < dm.D; ++d)
        qk += static_cast<acc_t>(qt[(i0 + i) * q.s3 + d * q.s4]) *
              static_cast<acc_t>(kt[j * k.s3 + d * k.s4]);
      ps[x] = exp(qk * scale - lse[task * dm.Lq + i0 + i]);
    }
    __syncthreads();
    for (int64_t x = threadIdx.x; x < dm.Lk * dm.D; x += blockDim.x) {
      const int64_t j = x / dm.D, d = x % dm.D;
      acc_t av = 0;
      for (int64_t i = 0; i < rows; ++i)
        av += ps[i * dm.Lk + j] * static_cast<acc_t>(got[(i0 + i) * go.s3 + d * go.s4]);
      if (shared_rows)
        atomicAdd(dvt + x, av);
      else
        dvt[x] += av;
    }
    __syncthreads();
    // Pass 2: the same array turned into dS_ij = P_ij (dO_i . v_j - delta_i) * scale in place,
    // then dq_i = sum_j dS_ij k_j and dk_j = sum_i dS_ij q_i.
    for (int64_t x = threadIdx.x; x < rows * dm.Lk; x += blockDim.x) {
      const int64_t i = x / dm.Lk, j = x % dm.Lk;
      acc_t gv = 0;
      for (int64_t d = 0; d < dm.D; ++d)
        gv += static_cast<acc_t>(got[(i0 + i) * go.s3 + d * go.s4]) *
              static_cast<acc_t>(vt[j * v.s3 + d * v.s4]);
      ps[x] = ps[x] * (gv - delta[i]) * scale;
    }
    __syncthreads();
    for (int64_t x = threadIdx.x; x < rows * dm.D; x += blockDim.x) {
      const int64_t i = x / dm.D, d = x % dm.D;
      acc_t acc = 0;
      for (int64_t j = 0; j < dm.Lk; ++j)
        acc += ps[i * dm.Lk + j] * static_cast<acc_t>(kt[j * k.s3 + d * k.s4]);
      dq[(task * dm.Lq + i0 + i) * dm.D + d] = static_cast<scalar_t>(acc);
    }
    for (int64_t x = threadIdx.x; x < dm.Lk * dm.D; x += blockDim.x) {
      const int64_t j = x / dm.D, d = x % dm.D;
      acc_t ak = 0;
      for (int64_t i = 0; i < rows; ++i)
        ak += ps[i * dm.Lk + j] * static_cast<acc_t>(qt[(i0 + i) * q.s3 + d * q.s4]);
      if (shared_rows)
        atomicAdd(dkt + x, ak);
      else
        dkt[x] += ak;
    }
    __syncthreads();
  }
}

// Query rows per shared-memory chunk, so that one [rows][Lk] array and one [rows] array fit in
// kSharedBytes (the forward and the backward use the same layout, so they accept the same Lk).
int64_t rows_per_chunk(int64_t Lq, int64_t Lk, size_t elem) {
  const int64_t per_row = (Lk + 1) * static_cast<int64_t>(elem);
  TORCH_CHECK(per_row <= kSharedBytes, "step_attention: Lk = ", Lk,
              " keys do not fit the CUDA kernel's shared memory (at most ",
              kSharedBytes / static_cast<int64_t>(elem) - 1, " keys for this dtype)");
  return std::max<int64_t>(1, std::min<int64_t>(Lq, kSharedBytes / per_row));
}

// One block per (n, h, s): the task count is the grid size, which CUDA caps at 2^31 - 1.
int64_t grid_tasks(const at::Tensor& q, const char* op) {
  const int64_t tasks = q.size(0) * q.size(1) * q.size(2);
  TORCH_CHECK(tasks <= std::numeric_limits<int32_t>::max(), op, ": N x H x S = ", tasks,
              " (row, head, step) tasks exceed the CUDA grid limit of ",
              std::numeric_limits<int32_t>::max(), " blocks");
  return tasks;
}

std::tuple<at::Tensor, at::Tensor> step_attention_cuda(const at::Tensor& q, const at::Tensor& k,
                                                       const at::Tensor& v,
                                                       const std::optional<at::Tensor>& index,
                                                       double scale) {
  check_step_attention_args(q, k, v, index);
  c10::cuda::CUDAGuard guard(q.device());
  const int64_t tasks = grid_tasks(q, "step_attention");
  auto out = at::empty(q.sizes(), q.options().memory_format(at::MemoryFormat::Contiguous));
  auto lse = at::empty(q.sizes().slice(0, 4), q.options().dtype(lse_dtype(q.scalar_type())));
  if (out.numel() == 0) {
    fill_empty_head_lse(lse, q, k);
    return {out, lse};
  }
  at::Tensor idx = index.has_value() ? index->contiguous() : at::Tensor();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "step_attention_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        Dims dm{q.size(1), q.size(2), q.size(3), k.size(3), q.size(4), k.size(0), 0};
        dm.rows = rows_per_chunk(dm.Lq, dm.Lk, sizeof(acc_t));
        const size_t smem = (dm.rows * dm.Lk + dm.rows) * sizeof(acc_t);
        forward_kernel<scalar_t, acc_t><<<static_cast<unsigned>(tasks), kThreads, smem, stream>>>(
            tile_of<scalar_t>(q), tile_of<scalar_t>(k), tile_of<scalar_t>(v),
            idx.defined() ? idx.data_ptr<int64_t>() : nullptr, out.data_ptr<scalar_t>(),
            lse.data_ptr<acc_t>(), dm, static_cast<acc_t>(scale));
      });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> step_attention_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& index, const at::Tensor& out, const at::Tensor& lse,
    double scale) {
  check_step_attention_backward_args(grad_out, q, k, v, index, out, lse);
  c10::cuda::CUDAGuard guard(q.device());
  const int64_t tasks = grid_tasks(q, "step_attention_backward");
  // With an index, several blocks may add to one k/v row: float atomics, whose order varies.
  if (index.has_value() && q.numel() > 0 && k.numel() > 0)
    at::globalContext().alertNotDeterministic("step_attention_backward (CUDA, with index)");
  const auto contiguous = q.options().memory_format(at::MemoryFormat::Contiguous);
  const auto acc_opts = q.options().dtype(lse_dtype(q.scalar_type()));
  auto dq = at::zeros(q.sizes(), contiguous);
  auto dk_acc = at::zeros(k.sizes(), acc_opts);
  auto dv_acc = at::zeros(v.sizes(), acc_opts);
  if (q.numel() > 0 && k.numel() > 0) {
    at::Tensor idx = index.has_value() ? index->contiguous() : at::Tensor();
    const auto lse_c = lse.contiguous();
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, q.scalar_type(), "step_attention_backward_cuda", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          Dims dm{q.size(1), q.size(2), q.size(3), k.size(3), q.size(4), k.size(0), 0};
          dm.rows = rows_per_chunk(dm.Lq, dm.Lk, sizeof(acc_t));
          const size_t smem = (dm.rows * dm.Lk + dm.rows) * sizeof(acc_t);
          backward_kernel<scalar_t, acc_t>
              <<<static_cast<unsigned>(tasks), kThreads, smem, stream>>>(
                  tile_of<scalar_t>(grad_out), tile_of<scalar_t>(q), tile_of<scalar_t>(k),
                  tile_of<scalar_t>(v), tile_of<scalar_t>(out),
                  idx.defined() ? idx.data_ptr<int64_t>() : nullptr, lse_c.data_ptr<acc_t>(),
                  dq.data_ptr<scalar_t>(), dk_acc.data_ptr<acc_t>(), dv_acc.data_ptr<acc_t>(), dm,
                  static_cast<acc_t>(scale));
        });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {dq, dk_acc.to(k.scalar_type()).contiguous(), dv_acc.to(v.scalar_type()).contiguous()};
}

}  // namespace

TORCH_LIBRARY_IMPL(fdperf, CUDA, m) {
  m.impl("step_attention", &step_attention_cuda);
  m.impl("step_attention_backward", &step_attention_backward_cuda);
}

}  // namespace fdperf
