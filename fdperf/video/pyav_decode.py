"""Video probing and the CPU decoder for codecs DALI cannot decode on the CPU (H.264, HEVC, MPEG-4).

PyAV (FFmpeg) decodes the stream once, front to back, and keeps only the requested frames.
"""

from __future__ import annotations

import os

import av
import numpy as np

from ..errors import UserError

# Codecs DALI's CPU video decoder handles (docs/design.md §10); everything else goes through PyAV on the CPU.
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})


class VideoError(RuntimeError, UserError):
    """A video that cannot be opened or decoded; the message names the file and the reason."""


# What FFmpeg/PyAV may raise on a damaged or hostile file: FFmpegError, but also
# UnicodeDecodeError from corrupt metadata, IndexError, EOFError, ... Any of them means "this
# file cannot be used", never a reason to stop the run.
_BAD_FILE = (av.FFmpegError, ValueError, OSError, IndexError, EOFError, RuntimeError, TypeError)


def probe(path: str | os.PathLike) -> tuple[str, int]:
    """(codec name, frame count). Counts packets when the container does not store a count."""
    path = os.fspath(path)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    try:
        with av.open(path) as c:
            if not c.streams.video:
                raise VideoError(f"{path}: no video stream")
            stream = c.streams.video[0]
            codec = stream.codec_context.name
            count = int(stream.frames or 0)
            if count <= 0:
                count = sum(1 for pkt in c.demux(stream) if pkt.size)
    except VideoError:
        raise
    except _BAD_FILE as e:
        raise VideoError(f"{path}: cannot open video ({type(e).__name__}: {e})") from e
    if count <= 0:
        raise VideoError(f"{path}: the video has no frames")
    return codec, count


# Seek only when the first wanted frame is this far in (an untrimmed competition video);
# decoding from the start is exact and cheap for short clips.
SEEK_MIN_FRAMES = 250


def decode_frames(path: str | os.PathLike, indices: np.ndarray) -> np.ndarray:
    """uint8 RGB frames [len(indices), H, W, 3] at `indices` (any order, repeats allowed).

    Frame i is the i-th decoded frame. Instances deep inside a long video start from a seek to
    the key frame before them, with frame numbers from timestamps; that needs a constant frame
    rate, so any timestamp off the frame grid makes it fall back to decoding from the start.
    """
    path = os.fspath(path)
    indices = np.asarray(indices, dtype=np.int64)
    wanted = set(indices.tolist())
    try:
        kept = None
        if int(indices.min()) >= SEEK_MIN_FRAMES:
            kept = _decode_seeking(path, wanted)
        if kept is None:
            kept = _decode_from_start(path, wanted)
    except _BAD_FILE as e:
        raise VideoError(f"{path}: decoding failed ({type(e).__name__}: {e})") from e
    missing = sorted(wanted - kept.keys())
    if missing:
        raise VideoError(
            f"{path}: the stream ends before frame {missing[0]} "
            f"(truncated file, or fewer frames than the instance bounds say)"
        )
    return np.stack([kept[i] for i in indices.tolist()])


def _decode_from_start(path: str, wanted: set[int]) -> dict[int, np.ndarray]:
    last = max(wanted)
    kept = {}
    with av.open(path) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads inside FFmpeg
        for i, frame in enumerate(c.decode(stream)):
            if i in wanted:
                kept[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    return kept


def _decode_seeking(path: str, wanted: set[int]) -> dict[int, np.ndarray] | None:
    """Seek + decode with frame numbers from timestamps; None when the stream is not on a grid."""
    first, last = min(wanted), max(wanted)
    with av.open(path) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        rate, tb = stream.average_rate, stream.time_base
        if not rate or not tb:
            return None
        # The first frame's timestamp is frame 0's (streams need not start at 0).
        start_pts = next(iter(c.decode(stream))).pts
        if start_pts is None:
            return None
        c.seek(start_pts + int((first / rate) / tb), stream=stream, backward=True, any_frame=False)
        kept = {}
        for n, frame in enumerate(c.decode(stream)):
            if frame.pts is None:
                return None
            pos = float((frame.pts - start_pts) * tb * rate)
            i = round(pos)
            if abs(pos - i) > 1e-3 or (n == 0 and i > first):
                return None  # variable frame rate or an imprecise seek: decode from the start
            if i in wanted:
                kept[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
        return kept
