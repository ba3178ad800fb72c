"""Frame preprocessing as row/column gathers on decoded uint8 frames (docs/design.md §3 and §10).

The reference squashes every frame with PIL's NEAREST resize to 112 wide x 200 high, crops the
centre 112x112 (rows 44..155), scales to [0, 1] and normalises with the ImageNet statistics.
A nearest-neighbour resize followed by a crop picks source rows and columns, so the whole
transform is one gather per axis on the decoded batch: no per-frame work, on any device.
PIL's source-index table is not exactly floor((i + 0.5) * in / out), so the table is taken from
PIL itself: it resizes an image whose pixels hold their own coordinates.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CROP = 112
SQUASH_WIDTH, SQUASH_HEIGHT = 112, 200
PREPROCESS_MODES = ("reference", "aspect")


@functools.lru_cache(maxsize=64)
def pil_nearest_tables(in_hw: tuple[int, int], out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Source row and column of every output pixel of PIL's `resize(NEAREST)`, exactly."""
    (h, w), (oh, ow) = in_hw, out_hw
    if min(h, w, oh, ow) < 1:
        raise ValueError(f"cannot resize {in_hw} to {out_hw}")
    # One probe image per axis: PIL's NEAREST resize is separable (an axis-aligned affine map).
    rows = np.asarray(Image.fromarray(np.arange(h, dtype=np.int32)[:, None]).resize((1, oh), Image.NEAREST))
    cols = np.asarray(Image.fromarray(np.arange(w, dtype=np.int32)[None, :]).resize((ow, 1), Image.NEAREST))
    return rows[:, 0].astype(np.int64), cols[0].astype(np.int64)


def _centre_offset(size: int, crop: int) -> int:
    # torchvision's CenterCrop: int(round((size - crop) / 2)).
    return int(round((size - crop) / 2.0))


@dataclass(frozen=True)
class CropPlan:
    """Which source rows and columns make the 112x112 output (flip included)."""

    rows: np.ndarray
    cols: np.ndarray


def plan_reference(
    h: int, w: int, *, top: int | None = None, left: int | None = None, flip: bool = False
) -> CropPlan:
    """The reference transform: NEAREST squash to 112x200, then a 112x112 crop.

    `top`/`left` default to the centre crop (the test-time transform); training views pass
    random offsets and `flip` as the reference's RandomCrop and RandomHorizontalFlip do.
    """
    rows, cols = pil_nearest_tables((h, w), (SQUASH_HEIGHT, SQUASH_WIDTH))
    top = _centre_offset(SQUASH_HEIGHT, CROP) if top is None else top
    left = _centre_offset(SQUASH_WIDTH, CROP) if left is None else left
    if not (0 <= top <= SQUASH_HEIGHT - CROP and 0 <= left <= SQUASH_WIDTH - CROP):
        raise ValueError(f"crop offset ({top}, {left}) outside the {SQUASH_WIDTH}x{SQUASH_HEIGHT} frame")
    rows, cols = rows[top : top + CROP], cols[left : left + CROP]
    return CropPlan(rows, cols[::-1].copy() if flip else cols)


def plan_aspect(h: int, w: int, *, flip: bool = False) -> CropPlan:
    """Short side to 112 (NEAREST, aspect kept, long side as torchvision's Resize(112)), centre crop."""
    if h <= w:
        oh, ow = CROP, int(CROP * w / h)
    else:
        oh, ow = int(CROP * h / w), CROP
    rows, cols = pil_nearest_tables((h, w), (oh, ow))
    top, left = _centre_offset(oh, CROP), _centre_offset(ow, CROP)
    rows, cols = rows[top : top + CROP], cols[left : left + CROP]
    return CropPlan(rows, cols[::-1].copy() if flip else cols)


def plan_for(mode: str, h: int, w: int, view: int | None = None, seed: int = 0, key: str = "") -> CropPlan:
    """The plan of one video: the test-time transform (view None) or training view `view`.

    A view's flip and crop offset come from (seed, key, view) alone, so resumed and sharded
    runs draw the same augmentation for the same video.
    """
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"unknown preprocess mode {mode!r}; choose one of {PREPROCESS_MODES}")
    if view is None:
        return plan_reference(h, w) if mode == "reference" else plan_aspect(h, w)
    rng = np.random.default_rng([seed, zlib.crc32(key.encode()), view])
    flip = bool(rng.integers(2))
    if mode == "aspect":
        return plan_aspect(h, w, flip=flip)
    top = int(rng.integers(SQUASH_HEIGHT - CROP + 1))
    left = int(rng.integers(SQUASH_WIDTH - CROP + 1))
    return plan_reference(h, w, top=top, left=left, flip=flip)


def gather_normalize(
    frames: torch.Tensor, plan: CropPlan, out: torch.Tensor | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 frames [T, H, W, 3] (any device) -> normalised clip [3, T, 112, 112].

    Same arithmetic as the reference (ToTensor: x / 255; Normalize: (x - mean) / std, in
    float32), so the values are bitwise those of the PIL + torchvision pipeline.
    """
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    dev = frames.device
    rows = torch.as_tensor(plan.rows, device=dev)
    cols = torch.as_tensor(plan.cols, device=dev)
    x = frames.index_select(1, rows).index_select(2, cols)  # [T, 112, 112, 3] uint8
    x = x.permute(3, 0, 1, 2).to(torch.float32).div_(255.0)  # [3, T, 112, 112]
    mean = torch.tensor(MEAN, dtype=torch.float32, device=dev).view(3, 1, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32, device=dev).view(3, 1, 1, 1)
    x = x.sub_(mean).div_(std)
    if out is not None:
        out.copy_(x)
        return out
    return x.to(dtype) if dtype != torch.float32 else x


def snippet_starts(num_snippets: int = 9, stride: int = 10) -> list[int]:
    """Snippet start frames in the 96-frame clip: 0, 10, ..., 80 (the reference's nine)."""
    return [stride * i for i in range(num_snippets)]


def to_snippets(clips: torch.Tensor, starts: list[int], length: int = 16) -> torch.Tensor:
    """[B, 3, 96, 112, 112] -> [B * S, 3, 16, 112, 112], video-major (b, s) order."""
    if clips.shape[2] < starts[-1] + length:
        raise ValueError(f"clips have {clips.shape[2]} frames, snippets need {starts[-1] + length}")
    b = clips.shape[0]
    snips = torch.stack([clips[:, :, s : s + length] for s in starts], dim=1)
    return snips.reshape((b * len(starts),) + snips.shape[2:])
