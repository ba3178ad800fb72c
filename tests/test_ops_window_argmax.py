"""fdperf.ops.window_argmax against an argmax-per-window oracle."""
import pytest
import torch

from fdperf.ops import window_argmax


def oracle(probs, window, min_index=1):
    cols = [probs[:, window * k:window * (k + 1), k].argmax(1) + window * k
            for k in range(probs.shape[2])]
    return torch.stack(cols, 1).clamp_min(min_index)


@pytest.mark.parametrize("B,T,K", [(1, 96, 2), (7, 96, 2), (4, 30, 3), (3, 10, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_oracle(B, T, K, dtype):
    probs = torch.rand(B, T, K, dtype=dtype, generator=torch.Generator().manual_seed(B * T + K))
    out = window_argmax(probs)
    assert out.dtype == torch.long and out.shape == (B, K)
    assert torch.equal(out, oracle(probs, T // K))


def test_strided_input_ties_and_min_index():
    probs = torch.zeros(2, 2, 96).transpose(1, 2)  # non-contiguous, all ties
    assert window_argmax(probs).tolist() == [[1, 48], [1, 48]]  # 0 raised to 1
    assert window_argmax(probs, min_index=0).tolist() == [[0, 48], [0, 48]]
    probs = torch.rand(3, 96, 2)
    assert torch.equal(window_argmax(probs, window=40), oracle(probs, 40))


@pytest.mark.parametrize("shape", [(2, 96, 2), (0, 96, 2)])
def test_opcheck(shape):
    torch.library.opcheck(torch.ops.fdperf.window_argmax.default, (torch.rand(*shape), 48, 1))


@pytest.mark.parametrize("args,message", [
    ((torch.rand(4, 96), 48, 1), "probs must be \\[B, T, K\\]"),
    ((torch.rand(4, 96, 2), 0, 1), "window must be positive"),
    ((torch.rand(4, 96, 2), 49, 1), "exceeds the length"),
    ((torch.ones(4, 96, 2, dtype=torch.long), 48, 1), "must be a floating tensor"),
    ((torch.rand(4, 96, 2), 48, 96), "min_index must be in"),
])
def test_validation_errors(args, message):
    with pytest.raises(RuntimeError, match=message):
        torch.ops.fdperf.window_argmax(*args)
