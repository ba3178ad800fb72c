"""Decoded frames kept on the device for end-to-end training, and the reference transforms on them.

The cache holds each video's 96 sampled frames after the reference's nearest squash to 112 wide x
200 high, as uint8 on the training device ([N, 96, 200, 112, 3]: 6.45 MB a video, about 19 GB for
all of FineDiving). Every later transform only picks rows and columns of these frames, so once a
video is cached it is never decoded again:

- test transform: rows 44..155 (centre crop), all columns;
- training transform (the reference's order: random horizontal flip, squash, random 112x112
  crop): flipping before a nearest squash picks source column W-1-c[j] where the squash of the
  unflipped frame picks c[j]. When the column table is mirror-symmetric (W-1-c[j] == c[111-j],
  true for FineDiving's 455-wide frames) that is the cached frame read right to left; a video whose
  table is not symmetric gets its flipped squash cached as well, so the result is always exactly
  PIL's.

Frames are decoded by the extractor's own reader (`fdperf.extract._Preparer`: DALI CPU/nvJPEG/
NVDEC, PyAV, the PIL fallback), in a background thread one batch ahead of the training step.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ..data import key_to_str
from ..errors import UserError
from ..extract import _Preparer
from ..video import MEAN, STD, pil_nearest_tables
from ..video.preprocess import CROP, SQUASH_HEIGHT, SQUASH_WIDTH

CENTRE_TOP = int(round((SQUASH_HEIGHT - CROP) / 2.0))  # torchvision CenterCrop: 44
MAX_TOP = SQUASH_HEIGHT - CROP  # RandomCrop offsets 0..88 (left is 0)


class DecodeFailed(UserError):
    """A training or test video could not be read or decoded (end-to-end training needs all)."""


def mirror_symmetric(width: int) -> bool:
    """Whether flip-then-squash equals squash-then-flip for frames `width` pixels wide."""
    _, cols = pil_nearest_tables((1, width), (1, SQUASH_WIDTH))
    return bool(np.array_equal(width - 1 - cols, cols[::-1]))


def squash(frames: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> [T, 200, 112, 3] by PIL's NEAREST tables (of the flipped frame)."""
    h, w = frames.shape[1], frames.shape[2]
    rows, cols = pil_nearest_tables((h, w), (SQUASH_HEIGHT, SQUASH_WIDTH))
    if flip:
        cols = w - 1 - cols
    dev = frames.device
    return frames.index_select(1, torch.as_tensor(rows, device=dev)).index_select(
        2, torch.as_tensor(cols, device=dev)
    )


class _SquashPreparer(_Preparer):
    """The extractor's reader and decoders, returning squashed uint8 frames instead of clips."""

    def _preprocess(self, rows, frames):
        out = []
        for r in rows:
            fr = frames[r].to(self.device, non_blocking=True)
            flipped = None if mirror_symmetric(fr.shape[2]) else squash(fr, flip=True)
            out.append((squash(fr), flipped))
        return out


@dataclass
class Draw:
    """One training transform per clip: horizontal flip and the top row of the crop."""

    flip: torch.Tensor  # [B] bool (CPU)
    top: torch.Tensor  # [B] int64 in 0..88 (CPU)

    @staticmethod
    def random(n: int, gen: torch.Generator) -> "Draw":
        flip = torch.randint(2, (n,), generator=gen).bool()
        return Draw(flip, torch.randint(MAX_TOP + 1, (n,), generator=gen))


class FrameCache:
    """Squashed frames of `keys` on `device`, decoded on first use (see the module docstring)."""

    def __init__(self, keys, inputs, options, device: torch.device):
        self.keys, self.device = list(keys), device
        self.frames: torch.Tensor | None = None  # [N, 96, 200, 112, 3] uint8
        self.flipped: dict[int, torch.Tensor] = {}  # rows with an asymmetric column table
        self.cached = np.zeros(len(self.keys), dtype=bool)
        self.decoded = 0  # videos decoded so far (for the log)
        self._prep = self._pool = None  # inputs None: frames come from put()
        if inputs is not None:
            self._prep = _SquashPreparer(inputs, self.keys, options, device)
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fdperf-frames")
            self._batch = options.batch_videos

    def close(self):
        if self._prep is not None:
            self._pool.shutdown(wait=True)
            self._prep.close()

    def request(self, rows) -> Future | None:
        """Starts decoding the rows not cached yet (background thread); None when all are."""
        missing = sorted({int(r) for r in rows if not self.cached[int(r)]})
        if not missing:
            return None
        if self._prep is None:
            raise ValueError(f"{len(missing)} video(s) are not cached and this cache has no reader")
        return self._pool.submit(self._decode, missing)

    def _decode(self, rows: list[int]):
        return [self._prep.submit(rows[i : i + self._batch])() for i in range(0, len(rows), self._batch)]

    def complete(self, future: Future | None) -> None:
        """Waits for a request and stores its frames (raises DecodeFailed on a bad video)."""
        if future is None:
            return
        for prepared in future.result():
            if prepared.errors:
                row, reason = prepared.errors[0]
                raise DecodeFailed(
                    f"{key_to_str(self.keys[row])}: {reason} (end-to-end training "
                    f"needs every video; {len(prepared.errors)} failed in this batch)"
                )
            for r, (frames, flipped) in zip(prepared.rows, prepared.clips):
                self._store(r, frames, flipped)

    def _store(self, row: int, frames: torch.Tensor, flipped: torch.Tensor | None) -> None:
        if self.frames is None:
            self.frames = torch.zeros(
                (len(self.keys),) + tuple(frames.shape), dtype=torch.uint8, device=self.device
            )
        self.frames[row].copy_(frames)
        if flipped is not None:
            self.flipped[row] = flipped
        self.cached[row] = True
        self.decoded += 1

    def ensure(self, rows) -> None:
        self.complete(self.request(rows))

    def put(self, row: int, frames: torch.Tensor) -> None:
        """Caches already decoded uint8 frames [T, H, W, 3] of `row` (tests, benchmarks)."""
        fr = frames.to(self.device)
        self._store(row, squash(fr), None if mirror_symmetric(fr.shape[2]) else squash(fr, True))

    def train_clips(self, rows, draw: Draw) -> torch.Tensor:
        """The reference training transform of `rows`: normalised float32 [B, 3, T, 112, 112]."""
        out = []
        for r, flip, top in zip(rows.tolist(), draw.flip.tolist(), draw.top.tolist()):
            if flip and r in self.flipped:
                x = self.flipped[r]
            else:
                x = self.frames[r].flip(2) if flip else self.frames[r]
            out.append(x[:, top : top + CROP])
        return normalise(torch.stack(out))

    def test_clips(self, rows) -> torch.Tensor:
        """The test transform (centre crop) of `rows`: normalised float32 [B, 3, T, 112, 112]."""
        idx = torch.as_tensor(rows, device=self.device)
        return normalise(self.frames.index_select(0, idx)[:, :, CENTRE_TOP : CENTRE_TOP + CROP])


def normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 [B, T, 112, 112, 3] -> float32 [B, 3, T, 112, 112]: /255 then ImageNet mean/std, in the
    reference's float32 order (ToTensor, Normalize), so the values are bitwise torchvision's."""
    x = x.permute(0, 4, 1, 2, 3).to(torch.float32).div_(255.0)
    mean = torch.tensor(MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1, 1)
    return x.sub_(mean).div_(std)
