"""I3D (Inception-v1 inflated to 3D) in the `model_rgb.pth` state-dict layout (docs/design.md §4).

Module names follow that file (`conv3d_1a_7x7.conv3d.weight`, `mixed_4f.branch_1.1.batch3d.
running_var`, ..., `conv3d_0c_1x1.conv3d.bias` for the Kinetics logits), so the published
weights load strictly. Padding is TensorFlow's "SAME" as the converted weights expect: per axis
max(kernel - stride, 0) zeros, the odd one at the end; max-pools use ceil mode after zero
padding (inputs are post-ReLU, so zeros never win over real values).

`I3D.forward` returns what the feature store keeps: the 1024-d feature (Mixed_5c averaged over
time and space) and the feature map (Mixed_5c averaged over time, [1024, 4, 4] at 112x112).
`fuse_for_inference` folds batch norm into the convolutions and merges each Mixed block's three
1x1 convolutions into one, which is what extraction runs.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

# (in_channels, [b0, b1a, b1b, b2a, b2b, b3]) of each Mixed block, in order.
MIXED = {
    "mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}
FEATURE_DIM = 1024


def same_padding(kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> tuple[int, ...]:
    """F.pad amounts (W, H, T pairs) for TF "SAME" with the reference's fixed formula."""
    pads = []
    for k, s in zip(reversed(kernel), reversed(stride)):
        total = max(k - s, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


def _split_padding(pad: tuple[int, ...]) -> tuple[tuple[int, ...] | None, tuple[int, int, int]]:
    """Symmetric padding goes into the convolution; asymmetric padding needs an F.pad first."""
    if all(pad[i] == pad[i + 1] for i in range(0, 6, 2)):
        return None, (pad[4], pad[2], pad[0])
    return pad, (0, 0, 0)


class Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm3d + ReLU; the logits unit has a bias and neither of the others."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel=(1, 1, 1),
        stride=(1, 1, 1),
        bn: bool = True,
        relu: bool = True,
        bias: bool = False,
    ):
        super().__init__()
        self.pre_pad, conv_pad = _split_padding(same_padding(kernel, stride))
        self.conv3d = nn.Conv3d(in_ch, out_ch, kernel, stride=stride, padding=conv_pad, bias=bias)
        self.batch3d = nn.BatchNorm3d(out_ch) if bn else None
        self.relu = relu

    def forward(self, x):
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad)
        x = self.conv3d(x)
        if self.batch3d is not None:
            x = self.batch3d(x)
        return F.relu(x) if self.relu else x


class MaxPool3dSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.pad = same_padding(kernel, stride)

    def forward(self, x):
        return F.max_pool3d(F.pad(x, self.pad), self.kernel, self.stride, ceil_mode=True)


class Mixed(nn.Module):
    def __init__(self, in_ch: int, ch: tuple[int, ...]):
        super().__init__()
        self.branch_0 = Unit3D(in_ch, ch[0])
        self.branch_1 = nn.Sequential(Unit3D(in_ch, ch[1]), Unit3D(ch[1], ch[2], (3, 3, 3)))
        self.branch_2 = nn.Sequential(Unit3D(in_ch, ch[3]), Unit3D(ch[3], ch[4], (3, 3, 3)))
        self.branch_3 = nn.Sequential(MaxPool3dSame((3, 3, 3), (1, 1, 1)), Unit3D(in_ch, ch[5]))

    def forward(self, x):
        return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x), self.branch_3(x)], 1)


class I3D(nn.Module):
    def __init__(self, num_classes: int = 400, in_channels: int = 3):
        super().__init__()
        self.conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.maxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.conv3d_2b_1x1 = Unit3D(64, 64)
        self.conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.maxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.mixed_3b = Mixed(*MIXED["mixed_3b"])
        self.mixed_3c = Mixed(*MIXED["mixed_3c"])
        self.maxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        for name in ("mixed_4b", "mixed_4c", "mixed_4d", "mixed_4e", "mixed_4f"):
            setattr(self, name, Mixed(*MIXED[name]))
        self.maxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.mixed_5b = Mixed(*MIXED["mixed_5b"])
        self.mixed_5c = Mixed(*MIXED["mixed_5c"])
        # Kinetics logits: part of the weights file, unused for features.
        self.conv3d_0c_1x1 = Unit3D(FEATURE_DIM, num_classes, bn=False, relu=False, bias=True)

    _TRUNK = (
        "conv3d_1a_7x7",
        "maxPool3d_2a_3x3",
        "conv3d_2b_1x1",
        "conv3d_2c_3x3",
        "maxPool3d_3a_3x3",
        "mixed_3b",
        "mixed_3c",
        "maxPool3d_4a_3x3",
        "mixed_4b",
        "mixed_4c",
        "mixed_4d",
        "mixed_4e",
        "mixed_4f",
        "maxPool3d_5a_2x2",
        "mixed_5b",
        "mixed_5c",
    )

    def mixed_5c_output(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] -> Mixed_5c [B, 1024, T/8, H/32, W/32]."""
        for name in self._TRUNK:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Snippets [B, 3, 16, 112, 112] -> (features [B, 1024], feature maps [B, 1024, 4, 4])."""
        fmap = self.mixed_5c_output(x).mean(dim=2)
        return fmap.mean(dim=(2, 3)), fmap

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Kinetics-400 class scores (averaged over the remaining time steps)."""
        pooled = self.mixed_5c_output(x).mean(dim=(3, 4), keepdim=True)
        return self.conv3d_0c_1x1(pooled).mean(dim=(2, 3, 4))


# ---- inference fusion -------------------------------------------------------------------------


class _FusedConv(nn.Module):
    """Conv3d with batch norm folded in (bias), then ReLU."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride, pre_pad, conv_pad):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.stride, self.pre_pad, self.conv_pad = stride, pre_pad, conv_pad

    def forward(self, x):
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad)
        return F.relu(F.conv3d(x, self.weight, self.bias, self.stride, self.conv_pad))


def _fold(unit: Unit3D) -> tuple[torch.Tensor, torch.Tensor]:
    bn, w = unit.batch3d, unit.conv3d.weight.detach()
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    bias = bn.bias.detach() - bn.running_mean * scale
    return w * scale.view(-1, 1, 1, 1, 1), bias


def _fused(unit: Unit3D) -> _FusedConv:
    w, b = _fold(unit)
    return _FusedConv(w, b, unit.conv3d.stride, unit.pre_pad, unit.conv3d.padding)


class _FusedMixed(nn.Module):
    """One 1x1 convolution for the three branch inputs that share the block input."""

    def __init__(self, m: Mixed):
        super().__init__()
        parts = [_fold(m.branch_0), _fold(m.branch_1[0]), _fold(m.branch_2[0])]
        self.splits = [p[0].shape[0] for p in parts]
        self.entry = _FusedConv(
            torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), (1, 1, 1), None, (0, 0, 0)
        )
        self.conv_1 = _fused(m.branch_1[1])
        self.conv_2 = _fused(m.branch_2[1])
        self.pool_3 = m.branch_3[0]
        self.conv_3 = _fused(m.branch_3[1])

    def forward(self, x):
        b0, b1, b2 = torch.split(self.entry(x), self.splits, dim=1)
        return torch.cat([b0, self.conv_1(b1), self.conv_2(b2), self.conv_3(self.pool_3(x))], 1)


class FusedI3D(nn.Module):
    """Inference-only I3D: same outputs as `I3D.forward` up to float rounding."""

    def __init__(self, model: I3D):
        super().__init__()
        layers = []
        for name in I3D._TRUNK:
            mod = getattr(model, name)
            if isinstance(mod, Unit3D):
                layers.append(_fused(mod))
            elif isinstance(mod, Mixed):
                layers.append(_FusedMixed(mod))
            else:
                layers.append(copy.deepcopy(mod))
        self.trunk = nn.Sequential(*layers)

    def forward(self, x):
        fmap = self.trunk(x).mean(dim=2)
        return fmap.mean(dim=(2, 3)), fmap


@torch.no_grad()
def fuse_for_inference(model: I3D) -> FusedI3D:
    if model.training:
        raise ValueError("fuse_for_inference needs a model in eval mode (batch norm statistics frozen)")
    return FusedI3D(model).eval()
