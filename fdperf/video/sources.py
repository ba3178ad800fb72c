"""Where each video's 96 frames come from: frame folders or video files, and which frames.

Frame folders follow the released dataset, `<root>/<event>/<index>/<frame:05d>.jpg`. As the
reference loader does, the 96 frames are `np.linspace(first, last, 96).astype(int)` over the frame
numbers in the file names, minus the first number, as positions in the sorted file list.
Videos are `<root>/<event>/<index>.<ext>` (one trimmed instance per file), untrimmed
`<root>/<event>.<ext>` cut by the coarse annotation's start and end frames, or listed in a file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from ..data import key_from_str, sample_frame_indices
from ..errors import UserError

NUM_FRAMES = 96
_NUMBERED = re.compile(r"^(\d+)$")


class SourceError(ValueError, UserError):
    """A key whose input cannot be used; the message says why (recorded per key, not raised)."""


@dataclass(frozen=True)
class FrameFolder:
    key: tuple[str, int]
    files: tuple[str, ...]  # the 96 sampled JPEG paths, in clip order
    warnings: tuple[str, ...] = ()  # what the sampling had to accept (short folder, skipped files)


@dataclass(frozen=True)
class VideoFile:
    key: tuple[str, int]
    path: str
    start: int | None = None  # first and last frame of the instance (inclusive); None: all
    end: int | None = None


def folder_frame_indices(names: list[str], n: int = NUM_FRAMES) -> np.ndarray:
    """Positions in the sorted file list of the `n` sampled frames (see module docstring)."""
    stems = [os.path.splitext(os.path.basename(f))[0] for f in names]
    if all(_NUMBERED.match(s) for s in stems):
        first, last = int(stems[0]), int(stems[-1])
        if last - first + 1 == len(names):  # contiguous numbering: the reference formula
            return np.linspace(first, last, n).astype(int) - first
    # Gaps or non-numeric names: the reference would index past the list; sample positions.
    return sample_frame_indices(len(names), n)


def frame_folder(root: str, key, n: int = NUM_FRAMES) -> FrameFolder:
    folder = os.path.join(root, key[0], str(int(key[1])))
    if not os.path.isdir(folder):
        raise SourceError(f"frame folder not found: {folder}")
    names, skipped = [], []
    for e in os.scandir(folder):
        if e.name.lower().endswith((".jpg", ".jpeg")) and e.is_file():
            names.append(e.name)
        elif e.is_file() and not e.name.startswith("."):  # hidden files (.DS_Store, ...) are never frames
            skipped.append(e.name)
    if not names:
        raise SourceError(f"no JPEG frames in {folder}" + (f" (only {_listing(skipped)})" if skipped else ""))
    names.sort()
    idx = folder_frame_indices(names, n)
    return FrameFolder(
        (key[0], int(key[1])),
        tuple(os.path.join(folder, names[i]) for i in idx),
        _folder_warnings(folder, len(names), sorted(skipped), n),
    )


def _listing(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _folder_warnings(folder: str, frames: int, skipped: list[str], n: int) -> tuple[str, ...]:
    """What a user should know about a folder the sampling accepted (recorded in the store)."""
    out = []
    if frames < n:
        out.append(f"{folder} has only {frames} frame(s), fewer than the {n} sampled: frames are repeated")
    if skipped:
        out.append(
            f"{folder}: skipped {len(skipped)} file(s) that are not .jpg/.jpeg frames "
            f"({_listing(skipped)}); convert them to JPEG if they are frames"
        )
    return tuple(out)


def video_file(
    root: str,
    key,
    ext: str = ".mp4",
    start: int | None = None,
    end: int | None = None,
    untrimmed: bool = False,
) -> VideoFile:
    name = key[0] if untrimmed else os.path.join(key[0], str(int(key[1])))
    path = os.path.join(root, name + ext)
    if not os.path.isfile(path):
        raise SourceError(f"video file not found: {path}")
    return VideoFile((key[0], int(key[1])), path, start, end)


def video_frame_indices(src: VideoFile, frame_count: int, n: int = NUM_FRAMES) -> np.ndarray:
    """Frame numbers to decode: linspace over the instance (the whole file when not cut)."""
    if src.start is None:
        return sample_frame_indices(frame_count, n)
    if not 0 <= src.start <= src.end:
        raise SourceError(f"{src.path}: bad instance bounds start_frame={src.start}, end_frame={src.end}")
    if src.end >= frame_count:
        raise SourceError(f"{src.path}: end_frame {src.end} is past the video's {frame_count} frames")
    return np.linspace(src.start, src.end, n).astype(int)


def read_video_list(path: str) -> dict[tuple[str, int], tuple[str, int | None, int | None]]:
    """Lines `event/index <TAB> video path [<TAB> start_frame <TAB> end_frame]`; '#' comments."""
    entries = {}
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) not in (2, 4):
                raise ValueError(f"{path}:{lineno}: expected 'key<TAB>path[<TAB>start<TAB>end]'")
            try:
                key = key_from_str(parts[0])
                bounds = (int(parts[2]), int(parts[3])) if len(parts) == 4 else (None, None)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
            video = parts[1] if os.path.isabs(parts[1]) else os.path.join(base, parts[1])
            entries[key] = (video, *bounds)
    return entries


def read_keys_file(path: str) -> list[tuple[str, int]]:
    """One `event/index` per line ('#' comments and blank lines ignored)."""
    keys = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                try:
                    keys.append(key_from_str(line))
                except ValueError as e:
                    raise ValueError(f"{path}:{lineno}: {e}") from None
    return keys


def discover_frame_keys(root: str) -> list[tuple[str, int]]:
    """Every `<event>/<index>` folder under a frame root (index folders with integer names)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"frames root not found: {root}")
    keys = []
    for ev in sorted(os.scandir(root), key=lambda e: e.name):
        if ev.is_dir():
            keys += [
                (ev.name, int(ix.name)) for ix in os.scandir(ev.path) if ix.is_dir() and ix.name.isdigit()
            ]
    return sorted(keys)


__all__ = [
    "FrameFolder",
    "VideoFile",
    "SourceError",
    "NUM_FRAMES",
    "folder_frame_indices",
    "frame_folder",
    "video_file",
    "video_frame_indices",
    "read_video_list",
    "read_keys_file",
    "discover_frame_keys",
]
