"""TSA's procedure-aware cross-attention decoder (docs/design.md §5) on `fdperf.ops.step_attention`.

Three pre-norm blocks: q = q + proj(attn(LN_q(q), LN_v(v))); q = q + MLP(LN_2(q)). Every step
attends only to the same step of the exemplar, and all steps, heads and pairs go through one
`step_attention` launch; `index` names the exemplar (memory) row of each query row, so cached
exemplars are shared by many queries without being copied. Module names follow the reference
(`model.{i}.norm_q`, `.norm_v`, `.attn.q_map/k_map/v_map/proj`, `.norm2`, `.mlp.fc1/fc2`).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import ops


def native_dtype(x: torch.Tensor) -> torch.Tensor:
    """fdperf's CPU kernels take float32/float64: under bf16 autocast on the CPU, hand them float32."""
    if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16):
        return x.float()
    return x


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q_map = nn.Linear(dim, dim, bias=False)
        self.k_map = nn.Linear(dim, dim, bias=False)
        self.v_map = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        # [R, S, T, C] -> [R, H, S, T, D]
        R, S, T, C = x.shape
        return x.view(R, S, T, self.heads, C // self.heads).permute(0, 3, 1, 2, 4)

    def forward(self, q: torch.Tensor, mem: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        N, S, T, C = q.shape
        qh = self._heads(self.q_map(q))
        kh = self._heads(self.k_map(mem))
        vh = self._heads(self.v_map(mem))
        out = ops.step_attention(
            native_dtype(qh), native_dtype(kh), native_dtype(vh), index=index, scale=self.scale
        )  # [N, H, S, T, D]
        return self.proj(out.permute(0, 2, 3, 1, 4).reshape(N, S, T, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_v = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, q, mem, index):
        q = q + self.attn(self.norm_q(q), self.norm_v(mem), index)
        return q + self.mlp(self.norm2(q))


class Decoder(nn.Module):
    """q [N, S, Tq, C] (query step tokens), mem [E, S, Tk, C] (exemplar step tokens),
    index int64 [N] into mem's rows (None: row i uses row i) -> [N, S, Tq, C]."""

    def __init__(self, dim: int = 64, heads: int = 8, layers: int = 3, mlp_ratio: float = 4.0):
        super().__init__()
        self.model = nn.ModuleList(DecoderBlock(dim, heads, mlp_ratio) for _ in range(layers))

    def forward(self, q: torch.Tensor, mem: torch.Tensor, index: torch.Tensor | None = None):
        if q.dim() != 4 or mem.dim() != 4 or q.shape[1] != mem.shape[1] or q.shape[3] != mem.shape[3]:
            raise ValueError(
                f"decoder expects q [N, S, Tq, C] and mem [E, S, Tk, C] with the same "
                f"S and C, got {tuple(q.shape)} and {tuple(mem.shape)}"
            )
        for block in self.model:
            q = block(q, mem, index)
        return q
