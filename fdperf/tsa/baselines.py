"""The ablation baselines of the TSA paper (Table 3), on the same pair interface as TSA.

- F+R:   contrastive regression, a three-layer MLP on the query's and the exemplar's I3D features
         (averaged over snippets), trained in both directions.
- F+R*:  the same trained in one direction only (query -> exemplar).
- F+R#:  F+R with a learned dive-number embedding concatenated to each video's features.
- F+S+R: procedure segmentation (PSNet, transitions as TSA) and per-step regression on the
         concatenated query and exemplar step tokens, without cross-attention.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import ops
from .decode import check_decode, decode_config
from .decoder import native_dtype
from .model import PairModel, choose_bounds
from .psnet import PSNet
from .regressor import Regressor


class FeatureRegression(PairModel):
    method = "F+R"

    def __init__(
        self,
        feature_dim: int = 1024,
        hidden: int = 256,
        symmetric: bool = True,
        num_dive_numbers: int = 0,
        embed_dim: int = 16,
    ):
        super().__init__()
        self.feature_dim, self.hidden = feature_dim, hidden
        self.symmetric = symmetric
        self.num_dive_numbers, self.embed_dim = num_dive_numbers, embed_dim
        if num_dive_numbers:
            # one extra row for dive numbers unseen in training
            self.embedding = nn.Embedding(num_dive_numbers + 1, embed_dim)
            self.method = "F+R#"
        elif not symmetric:
            self.method = "F+R*"
        width = feature_dim + (embed_dim if num_dive_numbers else 0)
        self.mlp = nn.Sequential(
            nn.Linear(2 * width, hidden), nn.ReLU(), nn.Linear(hidden, 64), nn.ReLU(), nn.Linear(64, 1)
        )

    num_steps = 1

    def config(self) -> dict:
        return dict(
            feature_dim=self.feature_dim,
            hidden=self.hidden,
            symmetric=self.symmetric,
            num_dive_numbers=self.num_dive_numbers,
            embed_dim=self.embed_dim,
        )

    def encode(
        self, features, maps=None, dive_ids=None, gt_bounds=None, use_gt=False, query=True, memory=True
    ) -> dict:
        x = features.mean(1)
        if self.num_dive_numbers:
            if dive_ids is None:
                raise ValueError("F+R# needs the videos' dive-number ids")
            ids = dive_ids.clamp(0, self.num_dive_numbers)
            x = torch.cat([x, self.embedding(ids)], -1)
        return {"features": x}

    def step_deltas(self, qcache, ecache, q_index, e_index):
        pair = torch.cat(
            [qcache["features"].index_select(0, q_index), ecache["features"].index_select(0, e_index)], -1
        )
        return self.mlp(pair)  # [P, 1]


class SegmentRegression(PairModel):
    """F+S+R: PSNet segmentation, then per-step regression on [query step ; exemplar step]."""

    method = "F+S+R"
    segments = True

    def __init__(
        self,
        in_channels: int = 9,
        num_transitions: int = 2,
        fix_size: int = 5,
        dim: int = 64,
        decode: str = "window",
    ):
        super().__init__()
        self.in_channels, self.num_transitions, self.fix_size, self.dim = (
            in_channels,
            num_transitions,
            fix_size,
            dim,
        )
        self.decode = check_decode(decode)
        self.psnet = PSNet(in_channels, num_transitions)
        self.regressor = Regressor(2 * dim)

    @property
    def num_steps(self) -> int:
        return self.num_transitions + 1

    def config(self) -> dict:
        return dict(
            in_channels=self.in_channels,
            num_transitions=self.num_transitions,
            fix_size=self.fix_size,
            dim=self.dim,
            **decode_config(self.decode),
        )

    def encode(
        self, features, maps=None, dive_ids=None, gt_bounds=None, use_gt=False, query=True, memory=True
    ) -> dict:
        u, probs = self.psnet(features)
        bounds = choose_bounds(probs, gt_bounds, use_gt, self.decode)
        tokens = ops.segment_resample(native_dtype(u).transpose(1, 2), bounds, self.fix_size, tokens=True)
        return {"probs": probs, "bounds": bounds, "tokens": tokens}

    def step_deltas(self, qcache, ecache, q_index, e_index):
        pair = torch.cat(
            [qcache["tokens"].index_select(0, q_index), ecache["tokens"].index_select(0, e_index)], -1
        )  # [P, S, 5, 2C]
        return self.regressor(pair).squeeze(-1).mean(-1)  # [P, S]
