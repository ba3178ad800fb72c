"""fdperf.ops kernels against their baselines, measured in the same run.

Each group compares one operator at one shape with: (a) the reference implementation (the
published code's per-sample loop / plain matmul-softmax-matmul on gathered k/v) and (b) the
best batched stock-PyTorch version (a gather/lerp for segment_resample, F.scaled_dot_product_attention
on gathered k/v for step_attention). Shapes: TSA training (B = 16 videos per step: 8 pairs x 2
directions, C = 64, T = 96, S = (4, 4), L = 2, points = 5; attention N = 16, H = 8, S = 3,
Lq = 5, Lk = 80, D = 8) and voting (E = 3000 cached exemplar rows, N = 7490 pairs).

Run: pytest benchmarks --benchmark-only   (add --benchmark-json=out.json to keep the numbers)
FDPERF_BENCH_SMALL=1 shrinks the voting shapes (N = 749, E = 300) and the rounds to a smoke run
(benchmarks/gpu_check.sh --cpu-dry-run uses it); the default is the full sizes above.
"""

import os

import pytest
import torch
import torch.nn.functional as F

from fdperf.ops import segment_resample, step_attention
from fdperf.ops.reference import (
    segment_resample_batched,
    segment_resample_reference,
    segment_tokens_reference,
    step_attention_reference,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SMALL = os.environ.get("FDPERF_BENCH_SMALL", "0") == "1"
# rounds for the fused/batched versions and for the slow references
FAST, SLOW = (2, 1) if SMALL else (50, 3)


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def run(benchmark, fn, rounds):
    def call():
        out = fn()
        sync()
        return out

    benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=1)


# ------------------------------------------------------------------------- segment_resample
def training_features(requires_grad):
    gen = torch.Generator().manual_seed(0)
    B, C, T = 16, 64, 96
    # PSNet's feature-map output [B, T, C, 4, 4] seen as [B, C, T, 4, 4] (docs/design.md §5).
    x = torch.randn(B, T, C, 4, 4, generator=gen).transpose(1, 2).to(DEVICE)
    cuts = torch.stack([torch.randperm(94, generator=gen)[:2].sort().values + 1 for _ in range(B)])
    return x.requires_grad_(requires_grad), cuts.to(DEVICE)


RESAMPLE = {
    "fused": lambda x, b: segment_resample(x, b, 5, tokens=True),
    "reference_loop": lambda x, b: segment_tokens_reference(x, b, 5),
    "batched_torch": lambda x, b: (
        segment_resample_batched(x, b, 5)
        .reshape(x.shape[0], x.shape[1], 3, -1)
        .permute(0, 2, 3, 1)
        .contiguous()
    ),
}


@pytest.mark.parametrize("impl", list(RESAMPLE))
def test_segment_resample_forward(benchmark, impl):
    benchmark.group = "segment_resample forward, training shapes (tokens)"
    x, bounds = training_features(False)
    fn = RESAMPLE[impl]
    torch.testing.assert_close(fn(x, bounds), segment_tokens_reference(x, bounds, 5))
    run(benchmark, lambda: fn(x, bounds), SLOW if impl == "reference_loop" else FAST)


@pytest.mark.parametrize("impl", list(RESAMPLE))
def test_segment_resample_forward_backward(benchmark, impl):
    benchmark.group = "segment_resample forward+backward, training shapes (tokens)"
    x, bounds = training_features(True)
    fn = RESAMPLE[impl]
    grad = torch.randn(16, 3, 80, 64, device=DEVICE)

    def step():
        x.grad = None
        fn(x, bounds).backward(grad)

    run(benchmark, step, SLOW if impl == "reference_loop" else FAST)


def test_segment_resample_frames_layout_forward(benchmark):
    benchmark.group = "segment_resample forward, training shapes (frames layout)"
    x, bounds = training_features(False)
    torch.testing.assert_close(segment_resample(x, bounds, 5), segment_resample_reference(x, bounds, 5))
    run(benchmark, lambda: segment_resample(x, bounds, 5), FAST)


# --------------------------------------------------------------------------- step_attention
def attention_inputs(N, E, with_index, requires_grad):
    gen = torch.Generator().manual_seed(1)
    H, S, Lq, Lk, D = 8, 3, 5, 80, 8
    q = torch.randn(N, H, S, Lq, D, generator=gen)
    k = torch.randn(E, H, S, Lk, D, generator=gen)
    v = torch.randn(E, H, S, Lk, D, generator=gen)
    index = torch.randint(0, E, (N,), generator=gen).to(DEVICE) if with_index else None
    q, k, v = (t.to(DEVICE).requires_grad_(requires_grad) for t in (q, k, v))
    return q, k, v, index


def sdpa_gathered(q, k, v, index):
    if index is not None:
        k, v = k[index], v[index]
    N, H, S, Lq, D = q.shape
    out = F.scaled_dot_product_attention(
        q.reshape(N, H * S, Lq, D), k.reshape(N, H * S, -1, D), v.reshape(N, H * S, -1, D)
    )
    return out.reshape(q.shape)


ATTENTION = {
    "fused": lambda q, k, v, i: step_attention(q, k, v, i),
    "eager_gathered": lambda q, k, v, i: step_attention_reference(q, k, v, i),
    "sdpa_gathered": sdpa_gathered,
}
SHAPES = {"training": (16, 16, False), "voting": (749, 300, True) if SMALL else (7490, 3000, True)}


@pytest.mark.parametrize("impl", list(ATTENTION))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_step_attention_forward(benchmark, shape, impl):
    benchmark.group = f"step_attention forward, {shape} shapes"
    q, k, v, index = attention_inputs(*SHAPES[shape], False)
    fn = ATTENTION[impl]
    with torch.no_grad():
        run(benchmark, lambda: fn(q, k, v, index), FAST if shape == "training" else SLOW)


@pytest.mark.parametrize("impl", list(ATTENTION))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_step_attention_forward_backward(benchmark, shape, impl):
    benchmark.group = f"step_attention forward+backward, {shape} shapes"
    q, k, v, index = attention_inputs(*SHAPES[shape], True)
    fn = ATTENTION[impl]
    grad = torch.randn_like(q)

    def step():
        q.grad = k.grad = v.grad = None
        fn(q, k, v, index).backward(grad)

    run(benchmark, step, FAST if shape == "training" else min(SLOW, 2))
