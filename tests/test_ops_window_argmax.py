"""fdperf.ops.window_argmax against an argmax-per-window oracle."""

import pytest
import torch

from fdperf.ops import window_argmax

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA is not available on this machine")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]


def oracle(probs, window, min_index=1):
    cols = [probs[:, window * k : window * (k + 1), k].argmax(1) + window * k for k in range(probs.shape[2])]
    return torch.stack(cols, 1).clamp_min(min_index)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("B,T,K", [(1, 96, 2), (7, 96, 2), (4, 30, 3), (3, 10, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_oracle(B, T, K, dtype, device):
    probs = torch.rand(B, T, K, dtype=dtype, generator=torch.Generator().manual_seed(B * T + K))
    out = window_argmax(probs.to(device))
    assert out.dtype == torch.long and out.shape == (B, K) and out.device == probs.to(device).device
    assert torch.equal(out.cpu(), oracle(probs, T // K))


@pytest.mark.parametrize("device", DEVICES)
def test_float64_is_compared_in_float64(device):
    # 0.7 and 0.70000001 are one float32 apart only in float64: a float32 comparison ties them
    # and returns the first.
    probs = torch.tensor([[[0.7], [0.70000001]]], dtype=torch.float64, device=device)
    assert window_argmax(probs, 2, 0).tolist() == [[1]]
    probs = torch.tensor([[[0.70000001], [0.7]]], dtype=torch.float64, device=device)
    assert window_argmax(probs, 2, 0).tolist() == [[0]]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_matches_oracle(dtype, device):
    probs = torch.rand(5, 96, 2, generator=torch.Generator().manual_seed(3)).to(dtype)
    assert torch.equal(window_argmax(probs.to(device)).cpu(), oracle(probs.float(), 48))


def test_strided_input_ties_and_min_index():
    probs = torch.zeros(2, 2, 96).transpose(1, 2)  # non-contiguous, all ties
    assert window_argmax(probs).tolist() == [[1, 48], [1, 48]]  # 0 raised to 1
    assert window_argmax(probs, min_index=0).tolist() == [[0, 48], [0, 48]]
    probs = torch.rand(3, 96, 2)
    assert torch.equal(window_argmax(probs, window=40), oracle(probs, 40))


@pytest.mark.parametrize("shape", [(2, 96, 2), (0, 96, 2)])
def test_opcheck(shape):
    torch.library.opcheck(torch.ops.fdperf.window_argmax.default, (torch.rand(*shape), 48, 1))


@pytest.mark.parametrize(
    "args,message",
    [
        ((torch.rand(4, 96), 48, 1), "probs must be \\[B, T, K\\]"),
        ((torch.rand(4, 96, 2), 0, 1), "window must be positive"),
        ((torch.rand(4, 96, 2), 49, 1), "exceeds the length"),
        ((torch.ones(4, 96, 2, dtype=torch.long), 48, 1), "must be a floating tensor"),
        ((torch.rand(4, 96, 2), 48, 96), "min_index must be in"),
    ],
)
def test_validation_errors(args, message):
    with pytest.raises(RuntimeError, match=message):
        torch.ops.fdperf.window_argmax(*args)


@needs_cuda
def test_cuda_nan_and_ties_follow_torch_argmax():
    probs = torch.tensor([[[0.2], [float("nan")], [0.9], [0.9]]], device="cuda")
    assert window_argmax(probs, 4, 0).tolist() == [[1]]
    probs = torch.tensor([[[0.9], [0.3], [0.9], [0.1]]], device="cuda")
    assert window_argmax(probs, 4, 0).tolist() == [[0]]


@needs_cuda
def test_cuda_grid_size_overflow_is_refused_by_name():
    # 2^38 windows need 2^31 blocks of 128 threads, past CUDA's grid; an expanded (stride-0)
    # tensor gives the shape without the memory, and the check comes before any allocation.
    probs = torch.zeros(1, 1, 1, device="cuda").expand(2**32, 64, 64)
    with pytest.raises(RuntimeError, match="window_argmax: B x K = 274877906944 windows exceed"):
        window_argmax(probs, 1, 0)
