"""fdperf.ops.segment_resample against the per-segment F.interpolate reference."""

import subprocess
import sys

import pytest
import torch

from fdperf.ops import segment_resample
from fdperf.ops.reference import segment_resample_reference, segment_tokens_reference

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA is not available on this machine")


def random_bounds(B, T, L, gen, device="cpu"):
    """Strictly increasing int64 [B, L] inside (0, T)."""
    rows = [torch.randperm(T - 1, generator=gen)[:L].sort().values + 1 for _ in range(B)]
    return torch.stack(rows).to(device) if rows else torch.zeros(0, L, dtype=torch.long)


def make_x(B, C, T, spatial, layout, dtype, gen, device="cpu"):
    """x [B, C, T, *S] in one of several memory layouts (most of them non-contiguous)."""
    if layout == "contiguous":
        x = torch.randn(B, C, T, *spatial, generator=gen, dtype=dtype)
    elif layout == "time_last":  # [B, *S, C, T] permuted: no dim is unit-stride where expected
        x = torch.randn(B, *spatial, C, T, generator=gen, dtype=dtype)
        n = len(spatial)
        x = x.permute(0, n + 1, n + 2, *range(1, n + 1))
    elif layout == "strided":  # every other frame and channel of a bigger tensor
        x = torch.randn(B, 2 * C, 2 * T, *spatial, generator=gen, dtype=dtype)[:, ::2, 1::2]
    elif layout == "tsa":  # the decoder's path: [B, T, C, *S] viewed from PSNet's output
        x = torch.randn(B, T, C, *spatial, generator=gen, dtype=dtype).transpose(1, 2)
    else:
        raise ValueError(layout)
    return x.to(device)


# (B, C, T, spatial, L, points, layout)
SAMPLES = [
    (2, 3, 10, (), 1, 5, "contiguous"),
    (3, 4, 12, (), 2, 1, "strided"),
    (2, 2, 9, (3,), 3, 4, "time_last"),
    (1, 3, 7, (2,), 4, 2, "contiguous"),
    (2, 3, 16, (2, 3), 2, 5, "tsa"),
    (3, 2, 8, (2, 2), 1, 1, "strided"),
    (2, 2, 6, (3, 2), 4, 3, "time_last"),
    (2, 5, 5, (), 4, 6, "contiguous"),  # T = L + 1: every segment is one frame
]
IDS = [f"B{s[0]}C{s[1]}T{s[2]}S{'x'.join(map(str, s[3])) or '0'}L{s[4]}P{s[5]}-{s[6]}" for s in SAMPLES]


def sample(spec, dtype, device="cpu", seed=0):
    B, C, T, spatial, L, points, layout = spec
    gen = torch.Generator().manual_seed(seed)
    x = make_x(B, C, T, spatial, layout, dtype, gen, device)
    return x, random_bounds(B, T, L, gen, device), points


@pytest.mark.parametrize("tokens", [False, True], ids=["frames", "tokens"])
@pytest.mark.parametrize("spec", SAMPLES, ids=IDS)
def test_float32_forward_backward_match_reference(spec, tokens):
    x, bounds, points = sample(spec, torch.float32)
    ref_fn = segment_tokens_reference if tokens else segment_resample_reference
    xa = x.detach().clone().requires_grad_()
    xb = x.detach().clone().requires_grad_()
    got = segment_resample(xa, bounds, points, tokens=tokens)
    want = ref_fn(xb, bounds, points)
    assert got.shape == want.shape and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(want)
    got.backward(grad)
    want.backward(grad)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tokens", [False, True], ids=["frames", "tokens"])
@pytest.mark.parametrize("spec", SAMPLES[:6], ids=IDS[:6])
def test_float64_gradcheck(spec, tokens):
    x, bounds, points = sample(spec, torch.float64)
    x = x.detach().requires_grad_()
    # fast_mode (random projections) keeps the larger samples cheap; small ones get the full check.
    assert torch.autograd.gradcheck(
        lambda t: segment_resample(t, bounds, points, tokens), (x,), fast_mode=x.numel() > 200
    )


@pytest.mark.parametrize("tokens", [False, True], ids=["frames", "tokens"])
@pytest.mark.parametrize("spec", SAMPLES, ids=IDS)
def test_opcheck(spec, tokens):
    x, bounds, points = sample(spec, torch.float32)
    torch.library.opcheck(
        torch.ops.fdperf.segment_resample.default, (x.detach().requires_grad_(), bounds, points, tokens)
    )


def test_tokens_layout_is_time_major():
    # token = t * prod(S) + s inside a step, channels last (docs/design.md §5, feature-map path).
    x, bounds, points = sample((2, 3, 12, (2, 2), 2, 5, "contiguous"), torch.float64)
    frames = segment_resample(x, bounds, points)  # [B, C, 15, 2, 2]
    tokens = segment_resample(x, bounds, points, tokens=True)  # [B, 3, 20, C]
    assert tokens.shape == (2, 3, 20, 3)
    for step in range(3):
        for t in range(points):
            for s in range(4):
                torch.testing.assert_close(
                    tokens[:, step, t * 4 + s], frames[:, :, step * points + t].flatten(2)[..., s]
                )


def test_one_frame_segment_repeats_and_endpoints_are_exact():
    x = torch.arange(10, dtype=torch.float64).view(1, 1, 10)
    out = segment_resample(x, torch.tensor([[1, 6]]), 5)[0, 0]
    torch.testing.assert_close(out[:5], torch.zeros(5, dtype=torch.float64))  # segment [0, 1)
    torch.testing.assert_close(out[5:10], torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64))
    torch.testing.assert_close(out[10:], torch.tensor([6.0, 6.75, 7.5, 8.25, 9.0], dtype=torch.float64))


def test_empty_batch_and_channels():
    out = segment_resample(torch.zeros(0, 3, 10, 2), torch.zeros(0, 2, dtype=torch.long), 5)
    assert out.shape == (0, 3, 15, 2)
    x = torch.zeros(2, 0, 10, requires_grad=True)
    out = segment_resample(x, torch.tensor([[3, 5], [2, 8]]), 4, tokens=True)
    assert out.shape == (2, 3, 4, 0)
    out.sum().backward()
    assert x.grad.shape == x.shape


def test_torch_compile_fullgraph():
    x, bounds, points = sample((2, 4, 16, (2, 2), 2, 5, "tsa"), torch.float32)

    def f(x, bounds):
        return segment_resample(x * 2, bounds, points, tokens=True).square().mean()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    xa = x.detach().clone().requires_grad_()
    xb = x.detach().clone().requires_grad_()
    compiled(xa, bounds).backward()
    f(xb, bounds).backward()
    torch.testing.assert_close(xa.grad, xb.grad)


BAD = [
    (lambda: (torch.zeros(2, 3), torch.tensor([[1], [1]]), 5), "x must be \\[B, C, T\\]"),
    (lambda: (torch.zeros(1, 1, 8, 2, 2, 2), torch.tensor([[3]]), 5), "x must be \\[B, C, T\\]"),
    (
        lambda: (torch.zeros(2, 3, 8, dtype=torch.long), torch.tensor([[1], [2]]), 5),
        "x must be a floating tensor",
    ),
    (
        lambda: (torch.zeros(2, 3, 8, dtype=torch.half), torch.tensor([[1], [2]]), 5),
        "x must be float32 or float64 on the CPU",
    ),
    (lambda: (torch.zeros(2, 3, 8), torch.tensor([1, 2]), 5), "bounds must be \\[B, L\\]"),
    (lambda: (torch.zeros(2, 3, 8), torch.tensor([[1], [2]], dtype=torch.int32), 5), "bounds must be int64"),
    (lambda: (torch.zeros(2, 3, 8), torch.tensor([[1]]), 5), "bounds has 1 rows but x has batch size 2"),
    (lambda: (torch.zeros(2, 3, 8), torch.tensor([[1], [2]]), 0), "points must be at least 1"),
    (lambda: (torch.zeros(1, 3, 2), torch.tensor([[1, 2]]), 5), "too few for 3 non-empty segments"),
    (
        lambda: (torch.zeros(2, 3, 8), torch.tensor([[1, 4], [5, 5]]), 5),
        "strictly increasing.*row 1 is \\[5, 5\\]",
    ),
    (lambda: (torch.zeros(1, 3, 8), torch.tensor([[4, 2]]), 5), "strictly increasing"),
    (lambda: (torch.zeros(1, 3, 8), torch.tensor([[0, 2]]), 5), "inside \\(0, T = 8\\)"),
    (lambda: (torch.zeros(1, 3, 8), torch.tensor([[2, 8]]), 5), "inside \\(0, T = 8\\)"),
    (lambda: (torch.zeros(1, 3, 8), torch.tensor([[-3, 2]]), 5), "inside \\(0, T = 8\\)"),
]


@pytest.mark.parametrize("make,message", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_validation_errors(make, message):
    x, bounds, points = make()
    with pytest.raises(RuntimeError, match=message):
        segment_resample(x, bounds, points)


def test_backward_validation_errors():
    bounds = torch.tensor([[2, 5]])
    op = torch.ops.fdperf.segment_resample_backward
    with pytest.raises(RuntimeError, match="grad has shape"):
        op(torch.zeros(1, 3, 14), bounds, 5, False, [1, 3, 8], [])
    with pytest.raises(RuntimeError, match="grad has shape"):
        op(torch.zeros(1, 3, 15, 3), bounds, 5, True, [1, 3, 8], [])
    with pytest.raises(RuntimeError, match="strictly increasing"):
        op(torch.zeros(1, 3, 15), torch.tensor([[5, 2]]), 5, False, [1, 3, 8], [])


# ------------------------------------------------------------------------------------ CUDA
@needs_cuda
@pytest.mark.parametrize("tokens", [False, True], ids=["frames", "tokens"])
@pytest.mark.parametrize("spec", SAMPLES, ids=IDS)
def test_cuda_float32_matches_reference(spec, tokens):
    x, bounds, points = sample(spec, torch.float32, device="cuda")
    ref_fn = segment_tokens_reference if tokens else segment_resample_reference
    xa = x.detach().clone().requires_grad_()
    xb = x.detach().clone().requires_grad_()
    got = segment_resample(xa, bounds, points, tokens=tokens)
    want = ref_fn(xb, bounds, points)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(want)
    got.backward(grad)
    want.backward(grad)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-6)
    torch.library.opcheck(
        torch.ops.fdperf.segment_resample.default, (x.detach().requires_grad_(), bounds, points, tokens)
    )


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("tokens", [False, True], ids=["frames", "tokens"])
def test_cuda_low_precision_error_at_most_twice_reference(dtype, tokens):
    # Judged like flash-attention: our error against the float32 reference is at most twice
    # the error of the reference itself computed in the low precision.
    x, bounds, points = sample((4, 64, 96, (4, 4), 2, 5, "tsa"), torch.float32, device="cuda")
    ref_fn = segment_tokens_reference if tokens else segment_resample_reference
    x32 = x.detach().requires_grad_()
    xlo = x.detach().to(dtype).requires_grad_()
    xref = x.detach().to(dtype).requires_grad_()
    want, got, ref_lo = (
        ref_fn(x32, bounds, points),
        segment_resample(xlo, bounds, points, tokens),
        ref_fn(xref, bounds, points),
    )
    assert got.dtype == dtype
    assert (got.float() - want).abs().max() <= 2 * (ref_lo.float() - want).abs().max() + 1e-6
    grad = torch.randn_like(want)
    for out, inp in ((want, x32), (got, xlo), (ref_lo, xref)):
        out.backward(grad.to(out.dtype))
    err = (xlo.grad.float() - x32.grad).abs().max()
    assert err <= 2 * (xref.grad.float() - x32.grad).abs().max() + 1e-6


@needs_cuda
def test_cuda_device_mismatch():
    with pytest.raises(RuntimeError, match="bounds is on cpu"):
        segment_resample(torch.zeros(1, 2, 8, device="cuda"), torch.tensor([[3]]), 5)


@needs_cuda
def test_cuda_invalid_bounds_trip_a_device_assert():
    # On CUDA bad bounds are caught inside the kernel (no host sync): the kernel asserts, which
    # poisons the CUDA context, so the check runs in a child process.
    code = (
        "import torch, fdperf.ops as o; x = torch.zeros(1, 2, 8, device='cuda');"
        "o.segment_resample(x, torch.tensor([[5, 2]], device='cuda'), 5); torch.cuda.synchronize()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "segment_resample: bounds" in proc.stderr or "device-side assert" in proc.stderr


@pytest.mark.parametrize("spec", SAMPLES[:5], ids=IDS[:5])
def test_batched_baseline_matches_reference(spec):
    # segment_resample_batched is the benchmarks' stock-PyTorch baseline: it must be right too.
    from fdperf.ops.reference import segment_resample_batched

    x, bounds, points = sample(spec, torch.float64)
    torch.testing.assert_close(
        segment_resample_batched(x, bounds, points), segment_resample_reference(x, bounds, points)
    )


@pytest.mark.parametrize("layout", ["contiguous", "tsa", "time_last", "strided"])
def test_gradient_takes_the_layout_of_x(layout):
    # A dense x gets its gradient in its own strides (autograd then needs no layout copy);
    # a non-dense one (a strided slice) gets a contiguous gradient.
    x, bounds, points = sample((2, 3, 12, (2, 2), 2, 5, layout), torch.float32)
    x = x.detach().requires_grad_()
    segment_resample(x, bounds, points, tokens=True).sum().backward()
    if layout == "strided":
        assert x.grad.is_contiguous()
    else:
        assert x.grad.stride() == x.stride()
    op = torch.ops.fdperf.segment_resample_backward
    gx = op(torch.ones(2, 3, 20, 3), bounds, points, True, list(x.shape), list(x.stride()))
    torch.testing.assert_close(gx, x.grad)
