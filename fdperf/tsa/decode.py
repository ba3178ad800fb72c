"""Transition decoding: PSNet's per-frame transition probabilities -> L transition frames.

Two decoders, both on the device without a host synchronisation (CUDA-graph safe):
- "window" (the reference, the default): t_k = argmax of column k inside the k-th of L equal
  windows ([0, 48) and [48, 96) for L = 2), a 0 raised to 1. It cannot output a dive whose first
  transition lies in the second half or whose last lies in the first (6.9% of FineDiving).
- "ordered": the strictly increasing t_1 < ... < t_L in [1, T) that maximises
  sum_k log p[t_k, k], by dynamic programming over the frames (one pass per transition).

Ties (both decoders): the earliest positions win. For "ordered", among the optimal tuples the
lexicographically smallest one (smallest t_1, then smallest t_2, ...).
"""

from __future__ import annotations

import torch

from .. import ops

DECODERS = ("window", "ordered")
# Stand-in for -inf / NaN scores (log 0): finite, so that masked (infeasible) positions, which
# are -inf, always lose against any real tuple, even one of log-probabilities 0.
_FLOOR = -1e30


def check_decode(decode: str) -> str:
    if decode not in DECODERS:
        raise ValueError(f"unknown transition decoding {decode!r}; choose one of {DECODERS}")
    return decode


def decode_config(decode: str) -> dict:
    """The decode entry of a model config: none for the default "window", so that checkpoints
    written before the option existed keep their exact config (training resumes compare it)."""
    return {} if decode == "window" else {"decode": decode}


def ordered_transitions(scores: torch.Tensor, min_index: int = 1) -> torch.Tensor:
    """Best strictly increasing transitions under additive per-frame scores.

    scores [B, T, L] (log-probabilities: score of transition k at frame t) -> int64 [B, L] with
    min_index <= t_1 < ... < t_L < T maximising sum_k scores[b, t_k, k]; ties go to the
    lexicographically smallest tuple. `min_index` = 1 keeps the first segment non-empty, as the
    reference's window decoding does. Vectorised over the batch, O(B*T*L), no host sync.
    """
    if scores.dim() != 3:
        raise ValueError(f"scores must be [B, T, L], got {tuple(scores.shape)}")
    B, T, L = scores.shape
    if L < 1 or T - min_index < L or min_index < 0:
        raise ValueError(f"cannot place {L} strictly increasing transitions in [{min_index}, {T})")
    s = scores if scores.dtype == torch.float64 else scores.float()
    s = s.nan_to_num(nan=_FLOOR, neginf=_FLOOR).clamp_min(_FLOOR)
    t = torch.arange(T, device=s.device)
    ninf = s.new_full((B, 1), float("-inf"))
    # Backward pass: best[k][:, t] = best total of transitions k..L-1 with t_k = t
    # (-inf where t_k = t cannot be completed). `after` = max over t' > t of best[k+1].
    best = [None] * L
    after = None
    for k in reversed(range(L)):
        h = s[:, :, k] if after is None else s[:, :, k] + after
        h = h.masked_fill(t < min_index + k, float("-inf"))
        best[k] = h
        at_or_after = h.flip(1).cummax(1).values.flip(1)
        after = torch.cat([at_or_after[:, 1:], ninf], 1)
    # Forward pass: the earliest t_k attaining the optimum given t_{k-1}; argmax returns the
    # first maximal index, hence the lexicographically smallest optimal tuple.
    out = []
    prev = torch.full((B, 1), min_index - 1, dtype=torch.long, device=s.device)
    for k in range(L):
        tk = best[k].masked_fill(t <= prev, float("-inf")).argmax(1, keepdim=True)
        out.append(tk)
        prev = tk
    return torch.cat(out, 1)


def decode_transitions(probs: torch.Tensor, decode: str = "window", min_index: int = 1) -> torch.Tensor:
    """Transitions int64 [B, L] from probabilities `probs` [B, T, L] with `decode`."""
    p = probs.detach().float()
    if decode == "window":
        return ops.window_argmax(p, None, min_index)
    if decode == "ordered":
        return ordered_transitions(p.clamp_min(torch.finfo(p.dtype).tiny).log(), min_index)
    raise ValueError(f"unknown transition decoding {decode!r}; choose one of {DECODERS}")


def set_decode(model, decode: str | None):
    """Overrides a loaded model's decoding (models without transitions ignore it)."""
    if decode is not None and hasattr(model, "decode"):
        model.decode = check_decode(decode)
    return model


def representable(bounds, decode: str, T: int = 96, min_index: int = 1):
    """Bool per row of true transitions `bounds` [N, L] (numpy or tensor): can `decode` output
    exactly these transitions? window: t_k in [max(k*w, min_index), (k+1)*w), w = T // L;
    ordered: min_index <= t_1 < ... < t_L < T."""
    b = torch.as_tensor(bounds).long()
    if decode == "window":
        w = T // b.shape[1]
        k = torch.arange(b.shape[1])
        return ((b >= (k * w).clamp_min(min_index)) & (b < (k + 1) * w)).all(1)
    if decode == "ordered":
        inc = (b[:, 1:] > b[:, :-1]).all(1)
        return inc & (b[:, 0] >= min_index) & (b[:, -1] < T)
    raise ValueError(f"unknown transition decoding {decode!r}; choose one of {DECODERS}")
