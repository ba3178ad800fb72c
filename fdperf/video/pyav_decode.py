"""Video probing and the CPU decoder for codecs DALI cannot decode on the CPU (H.264, HEVC, MPEG-4).

PyAV (FFmpeg) decodes the stream once, front to back, and keeps only the requested frames.
"""
from __future__ import annotations

import os

import av
import numpy as np

# Codecs DALI's CPU video decoder handles (DESIGN §5); everything else goes through PyAV on the CPU.
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})


class VideoError(RuntimeError):
    """A video that cannot be opened or decoded; the message names the file and the reason."""


def probe(path: str | os.PathLike) -> tuple[str, int]:
    """(codec name, frame count). Counts packets when the container does not store a count."""
    path = os.fspath(path)
    try:
        with av.open(path) as c:
            if not c.streams.video:
                raise VideoError(f"{path}: no video stream")
            stream = c.streams.video[0]
            codec = stream.codec_context.name
            count = int(stream.frames or 0)
            if count <= 0:
                count = sum(1 for pkt in c.demux(stream) if pkt.size)
    except av.FFmpegError as e:
        raise VideoError(f"{path}: cannot open video ({e})") from e
    if count <= 0:
        raise VideoError(f"{path}: the video has no frames")
    return codec, count


def decode_frames(path: str | os.PathLike, indices: np.ndarray) -> np.ndarray:
    """uint8 RGB frames [len(indices), H, W, 3] at `indices` (any order, repeats allowed)."""
    path = os.fspath(path)
    indices = np.asarray(indices, dtype=np.int64)
    wanted = set(indices.tolist())
    last = int(indices.max())
    kept: dict[int, np.ndarray] = {}
    decoded = 0
    try:
        with av.open(path) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"  # frame and slice threads inside FFmpeg
            for i, frame in enumerate(c.decode(stream)):
                decoded = i + 1
                if i in wanted:
                    kept[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
    except (av.FFmpegError, IndexError) as e:
        raise VideoError(f"{path}: decoding failed ({e})") from e
    missing = sorted(wanted - kept.keys())
    if missing:
        raise VideoError(f"{path}: the stream ends before frame {missing[0]} "
                         f"(it has {decoded} decodable frames; truncated file?)")
    return np.stack([kept[i] for i in indices.tolist()])
