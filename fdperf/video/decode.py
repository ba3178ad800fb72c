"""DALI decoding of JPEG frames and video clips into uint8 torch frames on the target device.

One pipeline per decoder object. JPEG: encoded frames of several videos per run, decoded on the
CPU (`device="cpu"`) or with nvJPEG / the hardware JPEG decoder (`"cuda"`, DALI's `mixed`
decoder). Video: DALI's `decoders.video` picks the requested frames of each clip; on the CPU it
handles VP8, VP9 and MJPEG, on the GPU every codec NVDEC has (one pipeline keeps one hardware
decoder busy, so several run in parallel through `ParallelDecoder`).

A failing batch is retried one video at a time on a fresh pipeline, so one bad file costs its
own video only; `decode` returns, per video, either frames or a `DecodeError`.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch


@dataclass
class DecodeError:
    reason: str


def _dali():
    # Imported lazily: DALI is only needed once a pipeline is built.
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import feed_ndarray

    return fn, pipeline_def, types, feed_ndarray


def _dali_reason(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    useful = [
        ln
        for ln in lines
        if not ln.startswith(
            (
                "Critical error",
                "Current pipeline",
                "File ",
                "which was used",
                "Error in",
                "return ",
                "encountered",
            )
        )
    ]
    return useful[0] if useful else (lines[0] if lines else type(err).__name__)


class _Pipe:
    """A DALI pipeline built on first use and rebuilt after an error."""

    def __init__(self, graph: Callable, batch_size: int, num_threads: int, device: torch.device):
        self.graph, self.batch_size, self.num_threads = graph, batch_size, num_threads
        self.device = device
        self._pipe = None

    def run(self, feeds: dict[str, list]):
        _, pipeline_def, _, _ = _dali()
        if self._pipe is None:
            device_id = None if self.device.type == "cpu" else (self.device.index or 0)
            self._pipe = pipeline_def(
                self.graph,
                batch_size=self.batch_size,
                num_threads=self.num_threads,
                device_id=device_id,
                prefetch_queue_depth=1,
                exec_dynamic=True,
            )()
            self._pipe.build()
        try:
            for name, data in feeds.items():
                self._pipe.feed_input(name, data)
            (out,) = self._pipe.run()
            return out
        except Exception:
            self._pipe = None  # DALI may leave the pipeline unusable after an operator error
            raise


def _to_torch(tensor, device: torch.device) -> torch.Tensor:
    """A dense DALI tensor (CPU or GPU) copied into a new torch tensor on `device`."""
    *_, feed_ndarray = _dali()
    out = torch.empty(tuple(tensor.shape()), dtype=torch.uint8, device=device)
    stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
    feed_ndarray(tensor, out, cuda_stream=stream)
    return out


def _samples(out, device: torch.device) -> list[torch.Tensor]:
    """Every sample of a batch output as its own torch tensor (one copy when shapes agree)."""
    if out.is_dense_tensor():
        return list(_to_torch(out.as_tensor(), device).unbind(0))
    return [_to_torch(out[i], device) for i in range(len(out))]  # mixed sizes: per-sample copies


def _group(frames: list[torch.Tensor], counts: Sequence[int]) -> list[torch.Tensor]:
    """Per-video [T, H, W, 3] tensors from per-frame samples, `counts[i]` frames for video i."""
    res, start = [], 0
    for c in counts:
        res.append(torch.stack(frames[start : start + c]))
        start += c
    return res


class JpegDecoder:
    """JPEG frames -> uint8 RGB [T, H, W, 3] per video, on `device` (CPU or CUDA)."""

    def __init__(self, device: str | torch.device = "cpu", max_frames: int = 96 * 4, num_threads: int = 2):
        self.device = torch.device(device)
        dali_device = "cpu" if self.device.type == "cpu" else "mixed"

        def graph():
            fn, _, types, _ = _dali()
            enc = fn.external_source(name="enc", dtype=types.UINT8, no_copy=False)
            return fn.decoders.image(enc, device=dali_device, output_type=types.RGB)

        self._pipe = _Pipe(graph, max_frames, num_threads, self.device)
        self.max_frames = max_frames

    def decode(self, videos: Sequence[Sequence[np.ndarray]]) -> list[torch.Tensor | DecodeError]:
        """`videos[i]` is the list of encoded frames of video i (at most max_frames in all)."""
        counts = [len(v) for v in videos]
        if sum(counts) > self.max_frames:
            raise ValueError(f"{sum(counts)} frames in one batch, the decoder holds {self.max_frames}")
        try:
            out = self._pipe.run({"enc": [f for v in videos for f in v]})
            if out.is_dense_tensor():  # the usual case: one copy, then views per video
                return list(torch.split(_to_torch(out.as_tensor(), self.device), counts))
            return _group(_samples(out, self.device), counts)
        except RuntimeError as e:
            if len(videos) == 1:
                return [DecodeError(f"JPEG decoding failed: {_dali_reason(e)}")]
        return [self.decode([v])[0] for v in videos]


class DaliVideoDecoder:
    """Encoded video files -> uint8 RGB frames [len(indices), H, W, 3] at the given indices."""

    def __init__(self, device: str | torch.device = "cpu", max_videos: int = 4, num_threads: int = 2):
        self.device = torch.device(device)
        dali_device = "cpu" if self.device.type == "cpu" else "mixed"

        def graph():
            fn, _, types, _ = _dali()
            enc = fn.external_source(name="enc", dtype=types.UINT8)
            frames = fn.external_source(name="frames", dtype=types.INT32)
            return fn.decoders.video(enc, device=dali_device, frames=frames)

        self._pipe = _Pipe(graph, max_videos, num_threads, self.device)
        self.max_videos = max_videos

    def decode(self, videos: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[torch.Tensor | DecodeError]:
        """`videos[i]` = (file bytes as uint8 array, frame indices)."""
        if len(videos) > self.max_videos:
            raise ValueError(f"{len(videos)} videos in one batch, the decoder holds {self.max_videos}")
        try:
            out = self._pipe.run(
                {"enc": [v[0] for v in videos], "frames": [np.asarray(v[1], np.int32) for v in videos]}
            )
            return _samples(out, self.device)
        except RuntimeError as e:
            if len(videos) == 1:
                return [DecodeError(f"video decoding failed: {_dali_reason(e)}")]
        return [self.decode([v])[0] for v in videos]


class ParallelDecoder:
    """Several decoders (pipelines) fed round-robin from a thread pool; results keep input order.

    On a GPU each video pipeline keeps one hardware decoder busy, so N pipelines use N of them.
    """

    def __init__(self, factory: Callable[[], JpegDecoder | DaliVideoDecoder], n: int):
        if n < 1:
            raise ValueError(f"need at least one decoder, got {n}")
        self._decoders = [factory() for _ in range(n)]
        self._locks = [threading.Lock() for _ in range(n)]
        self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="fdperf-decode") if n > 1 else None
        self._next = 0

    def _run(self, i, batch):
        with self._locks[i]:
            return self._decoders[i].decode(batch)

    def submit(self, batch):
        """A future (or a finished value when there is one decoder) of `decode(batch)`."""
        i = self._next
        self._next = (self._next + 1) % len(self._decoders)
        if self._pool is None:
            return _Done(self._run(i, batch))
        return self._pool.submit(self._run, i, batch)

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class _Done:
    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value
