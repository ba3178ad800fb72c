"""A cheap structural check of a JPEG file before it reaches a native decoder.

DALI's CPU image decoder dies with SIGSEGV on some inputs that are not JPEG files at all (an
empty file, random bytes), taking the whole extraction down. Every frame is therefore checked
first: non-empty, the SOI marker at the start, an EOI marker at the end (a truncated file has
none), and a frame header (SOFn) with a non-zero size that comes before the scan. That costs a
few microseconds per frame (the markers before the scan, not the compressed data) and also gives
each frame's size, so a folder of mixed sizes is refused before decoding.
"""

from __future__ import annotations

import struct
from typing import Sequence

import numpy as np

from .sources import SourceError

# SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): the markers that carry the frame size.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM: no length field
_SOS, _EOI = 0xDA, 0xD9
# Encoders and tools may pad after EOI; accept this much trailing data.
EOI_SLACK = 512


class JpegCheckError(ValueError):
    """A frame that is not a decodable JPEG; the message says why (the caller adds the file)."""


def jpeg_size(data) -> tuple[int, int]:
    """(height, width) from the headers of an encoded JPEG, or JpegCheckError saying what is wrong.

    `data` is bytes or a uint8 numpy array (read without copying the compressed data).
    """
    buf = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else data
    n = len(buf)
    if n == 0:
        raise JpegCheckError("empty file (0 bytes)")
    if n < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        raise JpegCheckError("not a JPEG file (no SOI marker FF D8 at the start)")
    if bytes(buf[max(0, n - EOI_SLACK) :]).rfind(b"\xff\xd9") < 0:
        raise JpegCheckError("truncated JPEG (no EOI marker FF D9 at the end)")
    return _frame_header(buf, n)


def _frame_header(buf, n: int) -> tuple[int, int]:
    """Walks the marker segments from after SOI to the first SOFn (before any SOS)."""
    pos = 2
    while pos + 4 <= n:
        if buf[pos] != 0xFF:
            raise JpegCheckError(f"corrupt JPEG header (no marker at byte {pos})")
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (_SOS, _EOI):
            raise JpegCheckError("corrupt JPEG header (no frame header before the image data)")
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        if length < 2 or pos + 2 + length > n:
            raise JpegCheckError(f"corrupt JPEG header (segment at byte {pos} runs past the end)")
        if marker in _SOF:
            if length < 8:
                raise JpegCheckError("corrupt JPEG frame header (too short)")
            height, width = struct.unpack(">HH", bytes(buf[pos + 5 : pos + 9]))
            components = buf[pos + 9]
            if height == 0 or width == 0:
                raise JpegCheckError(f"JPEG frame header gives an empty image ({width}x{height})")
            if components not in (1, 3, 4):
                raise JpegCheckError(f"JPEG with {components} colour components")
            return height, width
        pos += 2 + length
    raise JpegCheckError("corrupt JPEG header (no frame header)")


def read_checked_frames(files: Sequence[str]) -> list[np.ndarray]:
    """The encoded frames at `files` (each distinct file read and checked once), as uint8 arrays.

    Raises SourceError naming the file: unreadable, not a JPEG, truncated, or of another size
    than the first frame (DALI would fail on the batch without saying which file).
    """
    arrays: dict[str, np.ndarray] = {}
    first: tuple[str, tuple[int, int]] | None = None
    for path in dict.fromkeys(files):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise SourceError(f"cannot read frame {path}: {e.strerror or e}") from None
        try:
            size = jpeg_size(data)
        except JpegCheckError as e:
            raise SourceError(f"bad frame {path}: {e}; replace or remove the file") from None
        if first is None:
            first = (path, size)
        elif size != first[1]:
            raise SourceError(
                f"frames of mixed sizes: {path} is {size[1]}x{size[0]}, {first[0]} is "
                f"{first[1][1]}x{first[1][0]} (width x height); resize the folder's frames to one size"
            )
        arrays[path] = np.frombuffer(data, dtype=np.uint8)
    return [arrays[p] for p in files]
