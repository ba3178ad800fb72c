"""Python face of the native operators: argument handling, fake kernels and autograd.

The kernels themselves live in csrc/ (C++ for the CPU, CUDA for the GPU) and are registered
as torch.ops.fdperf.*; `fdperf.ops.reference` holds the pure-PyTorch oracles they are tested
against.
"""

import math

import torch

from .. import _native

_native.load()  # fdperf._C registers the operators these wrappers call

__all__ = ["window_argmax", "segment_resample", "step_attention"]


# ---------------------------------------------------------------------------- window_argmax
@torch.library.register_fake("fdperf::window_argmax")
def _window_argmax_fake(probs, window, min_index=1):
    torch._check(probs.dim() == 3, lambda: "window_argmax: probs must be [B, T, K]")
    return probs.new_empty((probs.shape[0], probs.shape[2]), dtype=torch.long)


def window_argmax(probs: torch.Tensor, window: int | None = None, min_index: int = 1) -> torch.Tensor:
    """Predicted transitions from transition probabilities `probs` [B, T, K] (docs/design.md §5).

    t_k = argmax(probs[:, window*k : window*(k+1), k]) + window*k, raised to `min_index`
    (the reference turns a 0 into 1 so that the first segment is never empty). `window`
    defaults to T // K. Returns int64 [B, K] on probs' device, without a host sync.
    """
    if window is None:
        window = probs.shape[1] // max(probs.shape[2], 1)
    return torch.ops.fdperf.window_argmax(probs, window, min_index)


# ------------------------------------------------------------------------- segment_resample
def _resample_shape(x_shape, L, points, tokens):
    B, C = x_shape[0], x_shape[1]
    if tokens:
        return (B, L + 1, points * math.prod(x_shape[3:]), C)
    return (B, C, (L + 1) * points, *x_shape[3:])


@torch.library.register_fake("fdperf::segment_resample")
def _segment_resample_fake(x, bounds, points, tokens=False):
    torch._check(3 <= x.dim() <= 5, lambda: "segment_resample: x must be [B, C, T, *S], 0-2 spatial dims")
    torch._check(bounds.dim() == 2, lambda: "segment_resample: bounds must be [B, L]")
    torch._check(bounds.dtype == torch.long, lambda: "segment_resample: bounds must be int64")
    torch._check(points >= 1, lambda: "segment_resample: points must be at least 1")
    shape = _resample_shape(x.shape, bounds.shape[1], points, tokens)
    return x.new_empty(shape)


def _is_dense(size, stride):
    """True when `stride` lays `size` out without gaps or overlaps (the kernels' rule)."""
    if len(stride) != len(size):
        return False
    expected = 1
    for d in sorted(range(len(size)), key=lambda d: stride[d]):
        if size[d] == 1:
            continue
        if stride[d] != expected:
            return False
        expected *= size[d]
    return True


@torch.library.register_fake("fdperf::segment_resample_backward")
def _segment_resample_backward_fake(grad, bounds, points, tokens, x_size, x_stride):
    if _is_dense(x_size, x_stride):
        return grad.new_empty_strided(x_size, x_stride)
    return grad.new_empty(x_size)


def _segment_resample_setup(ctx, inputs, output):
    x, bounds, points, tokens = inputs
    ctx.save_for_backward(bounds)
    ctx.points, ctx.tokens, ctx.x_size, ctx.x_stride = points, tokens, list(x.shape), list(x.stride())


def _segment_resample_backward(ctx, grad):
    (bounds,) = ctx.saved_tensors
    gx = torch.ops.fdperf.segment_resample_backward(
        grad, bounds, ctx.points, ctx.tokens, ctx.x_size, ctx.x_stride
    )
    return gx, None, None, None


torch.library.register_autograd(
    "fdperf::segment_resample", _segment_resample_backward, setup_context=_segment_resample_setup
)


def segment_resample(
    x: torch.Tensor, bounds: torch.Tensor, points: int, tokens: bool = False
) -> torch.Tensor:
    """Cut x [B, C, T, *S] at bounds [B, L] and resample each segment to `points` frames.

    Segment j is frames [b_{j-1}, b_j) (b_{-1} = 0, b_L = T), linearly interpolated with
    align_corners=True, exactly as `F.interpolate` per segment (a 1-frame segment repeats).
    `bounds` (int64, strictly increasing inside (0, T)) stays on x's device: no host sync.
    Returns [B, C, (L+1)*points, *S], or with tokens=True the decoder layout
    [B, L+1, points*prod(S), C] (time-major inside a step: token = t*prod(S) + s).
    Differentiable in x. 0 to 2 spatial dims; float32/float64 on the CPU, float32/float16/
    bfloat16 (and float64) on CUDA.
    """
    return torch.ops.fdperf.segment_resample(x, bounds, points, tokens)


# --------------------------------------------------------------------------- step_attention
@torch.library.register_fake("fdperf::step_attention")
def _step_attention_fake(q, k, v, index, scale):
    torch._check(q.dim() == 5, lambda: "step_attention: q must be [N, H, S, Lq, D]")
    torch._check(k.dim() == 5, lambda: "step_attention: k must be [E, H, S, Lk, D]")
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    out = q.new_empty(q.shape)
    return out, q.new_empty(q.shape[:4], dtype=lse_dtype)


@torch.library.register_fake("fdperf::step_attention_backward")
def _step_attention_backward_fake(grad_out, q, k, v, index, out, lse, scale):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape))


def _step_attention_setup(ctx, inputs, output):
    q, k, v, index, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, index, out, lse)
    ctx.scale = scale
    ctx.mark_non_differentiable(lse)


def _step_attention_backward(ctx, grad_out, grad_lse):
    q, k, v, index, out, lse = ctx.saved_tensors
    dq, dk, dv = torch.ops.fdperf.step_attention_backward(grad_out, q, k, v, index, out, lse, ctx.scale)
    return dq, dk, dv, None, None


torch.library.register_autograd(
    "fdperf::step_attention", _step_attention_backward, setup_context=_step_attention_setup
)


def step_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    index: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(q @ k[index]^T * scale) @ v[index], each step s on its own, in one kernel.

    q [N, H, S, Lq, D]; k, v [E, H, S, Lk, D]; index int64 [N] naming the k/v row of each
    query row (None: E == N and row i uses row i); scale defaults to D ** -0.5. k[index] is
    never materialised. Returns [N, H, S, Lq, D]; differentiable in q, k and v (k/v gradients
    sum over every query row that used the row).
    """
    if scale is None:
        scale = q.shape[-1] ** -0.5 if q.shape[-1] else 1.0  # D == 0: no scores to scale
    out, _ = torch.ops.fdperf.step_attention(q, k, v, index, float(scale))
    return out
