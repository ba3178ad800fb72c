"""The score regressor: MLP 64 -> 256 -> 64 -> 1 with ReLU, applied to every decoded token."""

from __future__ import annotations

import torch
from torch import nn


class Regressor(nn.Module):
    """Names follow the reference (`layer1..3`) so its `regressor_delta` state dict loads as is."""

    def __init__(self, in_dim: int = 64, hidden: int = 256):
        super().__init__()
        self.layer1 = nn.Linear(in_dim, hidden)
        self.layer2 = nn.Linear(hidden, 64)
        self.layer3 = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.layer1(x))
        x = torch.relu(self.layer2(x))
        return self.layer3(x)
