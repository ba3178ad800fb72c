"""Python face of the native operators: argument handling, fake kernels and autograd.

The kernels themselves live in csrc/ (C++ for the CPU, CUDA for the GPU) and are registered
as torch.ops.fdperf.*; `fdperf.ops.reference` holds the pure-PyTorch oracles they are tested
against.
"""
import torch

import fdperf  # noqa: F401  (loads fdperf._C, which registers the operators)

__all__ = ["window_argmax"]


@torch.library.register_fake("fdperf::window_argmax")
def _window_argmax_fake(probs, window, min_index=1):
    torch._check(probs.dim() == 3, lambda: "window_argmax: probs must be [B, T, K]")
    return probs.new_empty((probs.shape[0], probs.shape[2]), dtype=torch.long)


def window_argmax(probs: torch.Tensor, window: int | None = None, min_index: int = 1) -> torch.Tensor:
    """Predicted transitions from transition probabilities `probs` [B, T, K] (DESIGN §2).

    t_k = argmax(probs[:, window*k : window*(k+1), k]) + window*k, raised to `min_index`
    (the reference turns a 0 into 1 so that the first segment is never empty). `window`
    defaults to T // K. Returns int64 [B, K] on probs' device, without a host sync.
    """
    if window is None:
        window = probs.shape[1] // max(probs.shape[2], 1)
    return torch.ops.fdperf.window_argmax(probs, window, min_index)
