"""The TSA head on cached I3D features (docs/design.md §5) and the interface every method shares.

A method encodes each video once (`encode`: PSNet, transitions, step tokens) and then scores
any list of (query, exemplar) pairs from those caches (`step_deltas`), so training decodes a
batch's two directions in one call and voting reuses a video's encoding for all its pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .decode import check_decode, decode_config, decode_transitions
from .decoder import Decoder, native_dtype
from .psnet import PSNet
from .regressor import Regressor

LAYOUTS = ("reference", "spatial")


class PairModel(nn.Module):
    """Common face of TSA and its baselines.

    Subclasses set `method`, `segments` (whether they predict transitions: adds the BCE loss
    and the transition schedule) and `symmetric` (both directions in the loss).
    """

    method = "base"
    segments = False
    symmetric = True
    needs_maps = False

    def config(self) -> dict:
        """Constructor keywords, stored in checkpoints to rebuild the model."""
        raise NotImplementedError

    def encode(
        self, features, maps=None, dive_ids=None, gt_bounds=None, use_gt=False, query=True, memory=True
    ) -> dict:
        raise NotImplementedError

    def step_deltas(
        self, qcache: dict, ecache: dict, q_index: torch.Tensor, e_index: torch.Tensor
    ) -> torch.Tensor:
        """Relative scores [P, S] of query rows `q_index` against exemplar rows `e_index`
        (the pair's delta is their mean over S)."""
        raise NotImplementedError


def choose_bounds(probs: torch.Tensor, gt_bounds, use_gt, decode: str = "window") -> torch.Tensor:
    """Predicted transitions from `probs` [B, 96, L], or `gt_bounds` where `use_gt` holds.

    `use_gt` may be a Python bool or a 0-d bool tensor on the device: the tensor form keeps the
    ground-truth/predicted schedule branch-free (one CUDA graph serves both phases).
    `decode`: "window" (the reference) or "ordered" (fdperf.tsa.decode).
    """
    pred = decode_transitions(probs, decode, 1)
    if gt_bounds is None:
        if isinstance(use_gt, torch.Tensor) or use_gt:
            raise ValueError("ground-truth transitions requested but gt_bounds is None")
        return pred
    if isinstance(use_gt, torch.Tensor):
        return torch.where(use_gt, gt_bounds, pred)
    return gt_bounds if use_gt else pred


class TSA(PairModel):
    """PSNet -> transitions -> segment resampling -> step cross-attention -> regressor.

    `layout` says how the [B, snippets, 1024, H, W] feature maps enter PSNet: "reference" is the
    reference's plain reshape to [B*H*W, snippets, 1024] (it mixes spatial and channel axes;
    checkpoints trained by the reference need it), "spatial" moves the H*W positions to the
    batch axis properly.
    """

    method = "TSA"
    segments = True
    needs_maps = True

    def __init__(
        self,
        in_channels: int = 9,
        num_transitions: int = 2,
        fix_size: int = 5,
        layout: str = "reference",
        dim: int = 64,
        heads: int = 8,
        layers: int = 3,
        oracle: bool = False,
        decode: str = "window",
    ):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown feature-map layout {layout!r}; choose one of {LAYOUTS}")
        if num_transitions < 1 or fix_size < 1:
            raise ValueError("num_transitions and fix_size must be >= 1")
        self.in_channels, self.num_transitions, self.fix_size = in_channels, num_transitions, fix_size
        self.layout, self.dim, self.heads, self.layers = layout, dim, heads, layers
        self.oracle = oracle  # TSA-oracle: ground-truth transitions at test time
        self.decode = check_decode(decode)  # how predicted transitions are read off PSNet
        self.psnet = PSNet(in_channels, num_transitions)
        self.decoder = Decoder(dim, heads, layers)
        self.regressor = Regressor(dim)

    @property
    def num_steps(self) -> int:
        return self.num_transitions + 1

    def config(self) -> dict:
        return dict(
            in_channels=self.in_channels,
            num_transitions=self.num_transitions,
            fix_size=self.fix_size,
            layout=self.layout,
            dim=self.dim,
            heads=self.heads,
            layers=self.layers,
            oracle=self.oracle,
            **decode_config(self.decode),
        )

    def map_units(self, maps: torch.Tensor) -> torch.Tensor:
        """Feature maps [B, snippets, 1024, H, W] -> PSNet units [B, 64, 96, H, W]."""
        if maps.dim() != 5:
            raise ValueError(f"feature maps must be [B, snippets, 1024, H, W], got {tuple(maps.shape)}")
        B, T, C, H, W = maps.shape
        if self.layout == "reference":
            u = self.psnet.units(maps.reshape(B * H * W, T, C))  # [B*HW, 96, 64]
            return u.reshape(B, u.shape[1], u.shape[2], H, W).transpose(1, 2)
        u = self.psnet.units(maps.permute(0, 3, 4, 1, 2).reshape(B * H * W, T, C))
        return u.reshape(B, H, W, u.shape[1], u.shape[2]).permute(0, 4, 3, 1, 2)

    def encode(
        self, features, maps=None, dive_ids=None, gt_bounds=None, use_gt=False, query=True, memory=True
    ) -> dict:
        u, probs = self.psnet(features)  # [B, 96, 64], [B, 96, L]
        if self.oracle and not self.training:
            use_gt = True
        bounds = choose_bounds(probs, gt_bounds, use_gt, self.decode)
        cache = {"probs": probs, "bounds": bounds}
        if query:  # the query's 5 tokens per step, from the 1-D features
            cache["tokens"] = ops.segment_resample(
                native_dtype(u).transpose(1, 2), bounds, self.fix_size, tokens=True
            )
        if memory:  # the exemplar's 5*H*W tokens per step, from the feature maps
            if maps is None:
                raise ValueError("TSA needs feature maps for exemplars (the store's feature_maps)")
            cache["memory"] = ops.segment_resample(
                native_dtype(self.map_units(maps)), bounds, self.fix_size, tokens=True
            )
        return cache

    def step_deltas(self, qcache, ecache, q_index, e_index):
        q = qcache["tokens"].index_select(0, q_index)  # [P, S, 5, C]
        out = self.decoder(q, ecache["memory"], e_index)  # [P, S, 5, C]
        return self.regressor(out).squeeze(-1).mean(-1)  # [P, S]


def pair_loss(
    model: PairModel,
    cache: dict,
    deltas: torch.Tensor,
    y_q: torch.Tensor,
    y_e: torch.Tensor,
    gt_bounds: torch.Tensor | None,
) -> torch.Tensor:
    """The reference loss for a training batch encoded as [queries; exemplars] (2N rows).

    `deltas` [2N]: rows :N are query->exemplar, rows N: exemplar->query.
    MSE(d_12, y_1 - y_2) + MSE(d_21, y_2 - y_1) (the second only for symmetric methods)
    + BCE(p, onehot(t)) over both videos for methods that segment.
    """
    n = y_q.shape[0]
    loss = F.mse_loss(deltas[:n].float(), y_q - y_e)
    if model.symmetric:
        loss = loss + F.mse_loss(deltas[n:].float(), y_e - y_q)
    if model.segments:
        probs = cache["probs"].float()
        target = torch.zeros_like(probs).scatter_(1, gt_bounds.unsqueeze(1), 1.0)
        with torch.autocast(probs.device.type, enabled=False):
            loss = loss + F.binary_cross_entropy(probs, target)
    return loss
