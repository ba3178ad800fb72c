"""Pure-PyTorch reference implementations of the fdperf operators: the test oracles.

They follow the published TSA code literally (a Python loop over samples, boundaries read
back to the host, one F.interpolate per segment; plain matmul-softmax-matmul attention), so
they are slow by design and exact by construction.
"""

import torch
import torch.nn.functional as F

_MODES = {0: "linear", 1: "bilinear", 2: "trilinear"}


def segment_resample_reference(x: torch.Tensor, bounds: torch.Tensor, points: int) -> torch.Tensor:
    """x [B, C, T, *S], bounds int64 [B, L] -> [B, C, (L+1)*points, *S].

    Segment j = [b_{j-1}, b_j) with b_{-1} = 0 and b_L = T, each resampled to `points`
    samples by F.interpolate(..., align_corners=True) ('linear', 'bilinear' or 'trilinear'
    by the number of spatial dims, which keep their size).
    """
    B, C, T = x.shape[:3]
    spatial = tuple(x.shape[3:])
    if len(spatial) not in _MODES:
        raise ValueError(f"segment_resample_reference: at most 2 spatial dims, got {len(spatial)}")
    mode = _MODES[len(spatial)]
    out = []
    for b in range(B):
        cuts = [0] + [int(t) for t in bounds[b].tolist()] + [T]
        segs = []
        for a, e in zip(cuts[:-1], cuts[1:]):
            seg = x[b : b + 1, :, a:e]
            segs.append(F.interpolate(seg, size=(points, *spatial), mode=mode, align_corners=True))
        out.append(torch.cat(segs, dim=2))
    return torch.cat(out, dim=0)


def segment_tokens_reference(x: torch.Tensor, bounds: torch.Tensor, points: int) -> torch.Tensor:
    """The decoder's token layout of segment_resample: [B, L+1, points*prod(S), C].

    Inside a step, tokens are time-major: token = t * prod(S) + s.
    """
    y = segment_resample_reference(x, bounds, points)  # [B, C, (L+1)*P, *S]
    B, C = y.shape[:2]
    steps = bounds.shape[1] + 1
    y = y.reshape(B, C, steps, -1)  # (P, *S) flattened time-major
    return y.permute(0, 2, 3, 1).contiguous()


def step_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    index: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(q @ k[index]^T * scale) @ v[index] per step.

    q [N, H, S, Lq, D]; k, v [E, H, S, Lk, D]; index int64 [N] (None: row i uses row i).
    """
    if scale is None:
        scale = q.shape[-1] ** -0.5
    if index is not None:
        k, v = k[index], v[index]
    attn = torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1)
    return attn @ v


def segment_resample_batched(x: torch.Tensor, bounds: torch.Tensor, points: int) -> torch.Tensor:
    """The same result as segment_resample_reference in a few batched torch ops (no Python
    loop, no host sync): the source frames and weights of every output sample are computed
    from `bounds` on the device, then two gathers and a lerp. A benchmark baseline.
    """
    B, C, T = x.shape[:3]
    spatial = x.shape[3:]
    a = torch.cat([bounds.new_zeros(B, 1), bounds], 1)  # segment starts [B, L+1]
    e = torch.cat([bounds, bounds.new_full((B, 1), T)], 1)  # segment ends
    last = (e - a - 1).unsqueeze(-1)  # [B, L+1, 1]
    p = torch.arange(points, device=x.device, dtype=x.dtype)
    scale = last.to(x.dtype) / (points - 1) if points > 1 else torch.zeros_like(last, dtype=x.dtype)
    src = scale * p  # [B, L+1, P]
    i0 = torch.minimum(src.long(), last)
    w1 = (src - i0.to(x.dtype)).clamp(0, 1)
    i1 = torch.minimum(i0 + 1, last)
    start = a.unsqueeze(-1)
    view = (B, 1, -1) + (1,) * len(spatial)
    expand = (B, C, -1) + tuple(spatial)
    t0 = (start + i0).reshape(view).expand(expand)
    t1 = (start + i1).reshape(view).expand(expand)
    return torch.lerp(x.gather(2, t0), x.gather(2, t1), w1.reshape(view))
