"""I3D and the TSA head as one trainable module, with the reference's optimiser groups.

`EndToEnd.forward` is a whole training step's forward: I3D on this process's clips (bf16 autocast
and channels_last_3d on CUDA, float32 on the CPU, optionally with activation checkpointing per
I3D block), the features of every process gathered (under torchrun), the head on the whole global
batch (queries and exemplars in one PSNet call, as today's TSA training), the reference loss.
Batch norms of I3D stay in eval mode (the reference's `fix_bn`): running statistics are never
updated, their affine weights are trained.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..backbone.i3d import I3D
from ..tsa import pair_loss
from ..tsa.model import TSA
from ..video import to_snippets
from . import ddp


class EndToEnd(nn.Module):
    def __init__(
        self,
        backbone: I3D,
        head: TSA,
        starts: list[int],
        *,
        amp: bool = False,
        channels_last: bool = False,
        checkpoint_activations: bool = False,
    ):
        super().__init__()
        self.backbone, self.head, self.starts = backbone, head, list(starts)
        self.amp, self.channels_last = amp, channels_last
        self.checkpoint_activations = checkpoint_activations
        # the Kinetics logits are not on the feature path: no gradient, not in the optimiser
        # (DistributedDataParallel also refuses parameters that never get one)
        for p in backbone.conv3d_0c_1x1.parameters():
            p.requires_grad_(False)
        if channels_last:
            backbone.to(memory_format=torch.channels_last_3d)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.backbone.modules():  # fix_bn: running statistics stay at Kinetics' values
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed_5c of snippets [B, 3, 16, 112, 112], checkpointed per block when asked."""
        for name in I3D._TRUNK:
            block = getattr(self.backbone, name)
            if self.checkpoint_activations and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x

    def features(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips [B, 3, 96, 112, 112] -> features [B, S, 1024] and maps [B, S, 1024, 4, 4] (float32)."""
        x = to_snippets(clips, self.starts)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.amp):
            fmap = self.trunk(x).mean(dim=2)
            feats = fmap.mean(dim=(2, 3))
        b, s = clips.shape[0], len(self.starts)
        return feats.float().reshape(b, s, -1), fmap.float().reshape((b, s) + fmap.shape[1:])

    def forward(self, clips, layout: torch.Tensor, scores, bounds, dive_ids, use_gt):
        """One step's loss on this process's clips [n_q local queries; n_q local exemplars].

        `layout` orders the gathered clips of all processes as [queries; exemplars] of the global
        batch; `scores`, `bounds`, `dive_ids` are per global row in that order. Every process computes
        the same global loss; `ddp.gather` hands each its clips' gradient summed over processes, so
        DistributedDataParallel's average of the I3D gradients is the one-process gradient.
        Returns (loss to backward, loss to report, deltas of the global batch's queries).
        """
        feats, maps = self.features(clips)
        feats, maps = ddp.gather(feats), ddp.gather(maps)
        feats, maps = feats.index_select(0, layout), maps.index_select(0, layout)
        n = scores.shape[0] // 2
        head = self.head
        with torch.autocast(clips.device.type, dtype=torch.bfloat16, enabled=self.amp):
            cache = head.encode(feats, maps, dive_ids, bounds, use_gt=use_gt)
            q_index = torch.arange(2 * n, device=clips.device)
            e_index = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(clips.device)
            deltas = head.step_deltas(cache, cache, q_index, e_index).float().mean(1)
        # as TrainStep: NaN probabilities (diverged weights) would make BCE fail with an unrelated
        # error; zeroed here, the reported loss turns NaN for the epoch's check instead
        finite = torch.isfinite(cache["probs"]).all()
        cache = {**cache, "probs": torch.nan_to_num(cache["probs"], nan=0.0)}
        loss = pair_loss(head, cache, deltas, scores[:n], scores[n:], bounds)
        reported = torch.where(finite, loss.detach(), torch.full_like(loss.detach(), float("nan")))
        return loss, reported, deltas[:n].detach()


def optimizer_groups(model: EndToEnd, base_lr: float, lr_factor: float) -> list[dict]:
    """The reference's Adam groups: I3D at base_lr * lr_factor; PSNet, decoder, regressor at base_lr."""

    def trainable(module):
        return [p for p in module.parameters() if p.requires_grad]

    head = model.head
    return [
        {"params": trainable(model.backbone), "lr": base_lr * lr_factor, "name": "i3d"},
        {"params": trainable(head.psnet), "lr": base_lr, "name": "psnet"},
        {"params": trainable(head.decoder), "lr": base_lr, "name": "decoder"},
        {"params": trainable(head.regressor), "lr": base_lr, "name": "regressor"},
    ]
