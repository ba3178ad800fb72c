"""PSNet, TSA's procedure-segmentation network (docs/design.md §5).

Module names follow the reference implementation so that its state dicts load unchanged:
`inc.conv.conv.{0,1,3,4}`, `down{1..4}.mpconv.1.conv.{0,1,3,4}`, `tas.layer{1,2,3}`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _folded(conv: nn.Conv1d, bn: nn.BatchNorm1d):
    """Conv weights with an eval-mode BatchNorm folded in (one pass over the activations less)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return conv.weight * scale[:, None, None], (conv.bias - bn.running_mean) * scale + bn.bias


class DoubleConv(nn.Module):
    """(Conv1d k3 p1, BatchNorm1d, ReLU) x 2."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(in_ch, out_ch, 3, padding=1),
            nn.BatchNorm1d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv1d(out_ch, out_ch, 3, padding=1),
            nn.BatchNorm1d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.conv(x)

    def infer(self, x):
        """Inference (voting) on channels-last [N, C, 1, L] activations: BatchNorm folded into
        the convolutions, each Conv1d run as a (1 x 3) Conv2d (oneDNN's NHWC kernels are ~1.7x
        faster at PSNet's small channel counts), ReLU in place."""
        for i in (0, 3):
            w, b = _folded(self.conv[i], self.conv[i + 1])
            x = torch.relu_(F.conv2d(x, w.unsqueeze(2), b, padding=(0, 1)))
        return x


class InConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = DoubleConv(in_ch, out_ch)

    def forward(self, x):
        return self.conv(x)

    def infer(self, x):
        return self.conv.infer(x)


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """MaxPool1d(2) as a max over pairs: same values and the same gradient routing (to the first
    maximum of each pair), about a quarter faster than max_pool1d's kernel on the CPU."""
    L = x.shape[-1] // 2 * 2
    return x[..., :L].unflatten(-1, (-1, 2)).max(-1).values


class Down(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.mpconv = nn.Sequential(nn.MaxPool1d(2), DoubleConv(in_ch, out_ch))

    def forward(self, x):
        return self.mpconv[1](max_pool2(x))

    def infer(self, x):
        return self.mpconv[1].infer(F.max_pool2d(x, (1, 2)))


class TransitionHead(nn.Module):
    """MLP 64 -> 128 -> 64 -> L with ReLU and a sigmoid: per-frame transition probabilities."""

    def __init__(self, in_dim: int, num_transitions: int):
        super().__init__()
        self.layer1 = nn.Linear(in_dim, 128)
        self.layer2 = nn.Linear(128, 64)
        self.layer3 = nn.Linear(64, num_transitions)

    def forward(self, x):
        x = torch.relu(self.layer1(x))
        x = torch.relu(self.layer2(x))
        return torch.sigmoid(self.layer3(x))


class PSNet(nn.Module):
    """[B, snippets, 1024] -> (u [B, 96, 64], p [B, 96, L]).

    The snippets are the convolution's channels and the feature axis its length; the 96
    output channels are the 96 "frames" and the 64 remaining positions their features.
    """

    def __init__(self, in_channels: int = 9, num_transitions: int = 2):
        super().__init__()
        self.inc = InConv(in_channels, 12)
        self.down1 = Down(12, 24)
        self.down2 = Down(24, 48)
        self.down3 = Down(48, 96)
        self.down4 = Down(96, 96)
        self.tas = TransitionHead(64, num_transitions)
        self.frames = 96

    def units(self, x: torch.Tensor) -> torch.Tensor:
        """The per-frame features u [B, 96, 64] without the transition head."""
        if x.dim() != 3 or x.shape[-1] != 1024:
            raise ValueError(f"PSNet expects [B, snippets, 1024] features, got {tuple(x.shape)}")
        blocks = (self.inc, self.down1, self.down2, self.down3, self.down4)
        if self.training or torch.is_grad_enabled():
            for block in blocks:
                x = block(x)
            return x
        x = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # [B, C, 1, L]
        for block in blocks:
            x = block.infer(x)
        # [B, 96, 64] whose transpose [B, 64, 96] (what segment_resample reads) is contiguous
        return x.squeeze(2)

    def forward(self, x: torch.Tensor):
        u = self.units(x)
        return u, self.tas(u)
