"""Feature extraction: frames or videos -> 96-frame clips -> I3D -> HDF5 feature store.

`extract_features` is the library entry point behind `python -m fdperf.extract`. Per batch of
videos: resolve each key's input, read and decode the sampled frames (DALI; PyAV for H.264,
HEVC and MPEG-4 on the CPU), preprocess them with two gathers and a normalisation on the
device, run I3D over the 9 snippets, and write the rows (data first, `done` flag after). Decoding
of the next batch overlaps I3D on the current one. A key whose input is bad is recorded with its
reason and skipped; the run goes on.

Determinism: on the CPU each I3D forward holds one video's snippets (a fixed composition), so a
video's features do not depend on what else was in its batch, and a resumed run writes the same
bytes as an uninterrupted one.
"""

from __future__ import annotations

import collections
import functools
import io
import os
import queue
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import h5py
import numpy as np
import torch

from ..backbone import RANDOM_INIT, fuse_for_inference, load_i3d
from ..data import key_to_str
from ..device import resolve_device
from ..features.store import FeatureStoreWriter, StoreLock, join_shards
from ..version import __version__
from ..video import (
    DALI_CPU_CODECS,
    DaliVideoDecoder,
    DecodeError,
    FrameFolder,
    JpegDecoder,
    ParallelDecoder,
    SourceError,
    VideoError,
    VideoFile,
    decode_frames,
    frame_folder,
    gather_normalize,
    plan_for,
    probe,
    snippet_starts,
    to_snippets,
    video_file,
    video_frame_indices,
)
from ..video.jpeg_check import read_checked_frames

Key = tuple[str, int]
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BACKBONE = "i3d-inception-v1-kinetics400 (model_rgb.pth layout), Mixed_5c"
SAMPLING = (
    "96 frames: np.linspace(first, last, 96).astype(int) over the instance's frame numbers; "
    "snippets of 16 frames starting at 0, 10, 20, ..."
)
PREPROCESS_DOC = {
    "reference": "PIL NEAREST squash to 112x200 (w x h), centre crop 112x112, /255, ImageNet mean/std",
    "aspect": "PIL NEAREST resize of the short side to 112 (aspect kept), centre crop, /255, ImageNet mean/std",
}


@dataclass
class ExtractOptions:
    """Settings of one extraction (None: chosen from the device)."""

    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    precision: str | None = None  # fp32 | bf16 | fp16; bf16 on a GPU, fp32 on the CPU
    preprocess: str = "reference"  # reference | aspect
    views: int = 1  # >1: K augmented training views per video
    seed: int = 0  # augmentation (views) and random-init seed
    batch_videos: int | None = None  # videos decoded per batch (4 CPU, 32 GPU)
    i3d_videos: int | None = None  # videos per I3D forward (1 CPU for determinism, 16 GPU)
    readers: int | None = None  # parallel DALI pipelines (1 CPU, 4 GPU)
    dali_threads: int | None = None  # threads per DALI pipeline
    torch_threads: int | None = None  # torch intra-op threads (CPU)
    io_threads: int = 8  # file-reading threads
    num_snippets: int = 9  # fewer only for quick tests; the reference uses 9
    channels_last: bool | None = None  # channels_last_3d memory format (default on)
    fuse: bool = True  # fold batch norm and merge 1x1 convolutions
    overwrite: bool = False
    progress: bool = True


@dataclass
class Inputs:
    """Where the videos come from: exactly one of frames_root, videos_root, video_list."""

    frames_root: str | None = None
    videos_root: str | None = None
    video_ext: str = ".mp4"
    untrimmed_bounds: dict | None = None  # key -> (start_frame, end_frame) for untrimmed
    video_list: dict | None = None  # key -> (path, start, end)

    def __post_init__(self):
        given = [x is not None for x in (self.frames_root, self.videos_root, self.video_list)]
        if sum(given) != 1:
            raise ValueError("give exactly one input: a frames root, a videos root or a video list")

    def resolve(self, key: Key) -> FrameFolder | VideoFile:
        if self.frames_root is not None:
            return frame_folder(self.frames_root, key)
        if self.video_list is not None:
            if key not in self.video_list:
                raise SourceError(f"{key_to_str(key)} is not in the video list")
            path, start, end = self.video_list[key]
            if not os.path.isfile(path):
                raise SourceError(f"video file not found: {path}")
            return VideoFile(key, path, start, end)
        if self.untrimmed_bounds is not None:
            if key not in self.untrimmed_bounds:
                raise SourceError(f"{key_to_str(key)} has no start/end frames in the coarse annotation")
            start, end = self.untrimmed_bounds[key]
            return video_file(self.videos_root, key, self.video_ext, start, end, untrimmed=True)
        return video_file(self.videos_root, key, self.video_ext)


@dataclass
class ExtractResult:
    path: str
    total: int  # keys in this store (or shard)
    extracted: int  # rows written by this run
    skipped: int  # rows already done by an earlier run
    errors: list = field(default_factory=list)  # (key, reason)
    complete: bool = False
    seconds: float = 0.0
    timings: dict = field(default_factory=dict)  # seconds per stage (prepare runs alongside I3D)

    @property
    def videos_per_s(self) -> float:
        return self.extracted / self.seconds if self.seconds > 0 else 0.0


# ---- device and model -------------------------------------------------------------------------


def _dali_version() -> str:
    try:
        import nvidia.dali as dali

        return dali.__version__
    except ImportError:
        return "not installed"


def _settings(opts: ExtractOptions, device: torch.device) -> ExtractOptions:
    gpu = device.type == "cuda"
    o = ExtractOptions(**vars(opts))
    o.precision = o.precision or ("bf16" if gpu else "fp32")
    if o.precision not in PRECISIONS:
        raise ValueError(f"unknown precision {o.precision!r}; choose one of {list(PRECISIONS)}")
    o.batch_videos = o.batch_videos or (32 if gpu else 4)
    o.i3d_videos = o.i3d_videos or (16 if gpu else 1)
    o.readers = o.readers or (4 if gpu else 1)
    o.dali_threads = o.dali_threads or (4 if gpu else max(1, min(4, os.cpu_count() or 1)))
    # channels_last_3d: faster on GPUs and also on the CPU (oneDNN; ~25% on this I3D, AVX2).
    o.channels_last = True if o.channels_last is None else o.channels_last
    if o.seed < 0:
        raise ValueError(f"seed must be >= 0, got {o.seed}")
    if o.views < 1 or o.num_snippets < 1 or o.num_snippets > 9:
        raise ValueError("views must be >= 1 and num_snippets between 1 and 9")
    for name in ("batch_videos", "i3d_videos", "readers", "dali_threads", "io_threads"):
        if getattr(o, name) < 1:
            raise ValueError(f"{name} must be >= 1")
    return o


class Backbone:
    """I3D on the device with the chosen precision; `__call__` maps clips to store rows."""

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        precision: str,
        channels_last: bool,
        starts: list[int],
        chunk_videos: int,
    ):
        self.device, self.starts, self.chunk = device, starts, chunk_videos
        self.dtype = PRECISIONS[precision]
        self.channels_last = channels_last
        model = model.to(device)
        self.model = model.to(memory_format=torch.channels_last_3d) if channels_last else model

    @torch.inference_mode()
    def __call__(self, clips: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """clips [N, 3, 96, 112, 112] float32 -> features [N, S, 1024] f32, maps [N, S, 1024, 4, 4] f16."""
        feats, maps = [], []
        s = len(self.starts)
        for i in range(0, clips.shape[0], self.chunk):
            x = to_snippets(clips[i : i + self.chunk], self.starts)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
                f, m = self.model(x)
            n = x.shape[0] // s
            feats.append(f.float().reshape(n, s, -1))
            maps.append(m.float().reshape((n, s) + m.shape[1:]).to(torch.float16))
        return torch.cat(feats).cpu().numpy(), torch.cat(maps).cpu().numpy()


# ---- decoding ---------------------------------------------------------------------------------


# Instances of one untrimmed competition video are neighbours in key order: probe and read
# each file once for all of them (two files held at most).
@functools.lru_cache(maxsize=64)
def _probe_cached(path: str, mtime_ns: int, size: int) -> tuple[str, int]:
    return probe(path)


@functools.lru_cache(maxsize=2)
def _read_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)
    data.setflags(write=False)
    return data


@dataclass
class _Prepared:
    rows: list[int]  # rows whose clips follow
    clips: torch.Tensor | None  # [len(rows) * K, 3, 96, 112, 112]
    errors: list  # (row, reason)
    seconds: float
    notes: dict = field(default_factory=dict)  # row -> warnings (short folder, skipped files, ...)


class _Preparer:
    """Reads, decodes and preprocesses batches of videos (runs in a background thread)."""

    def __init__(self, inputs: Inputs, keys: Sequence[Key], opts: ExtractOptions, device: torch.device):
        self.inputs, self.keys, self.opts, self.device = inputs, keys, opts, device
        self.io = ThreadPoolExecutor(max_workers=opts.io_threads, thread_name_prefix="fdperf-io")
        frames = 96 * opts.batch_videos
        self.jpeg = ParallelDecoder(lambda: JpegDecoder(device, frames, opts.dali_threads), opts.readers)
        self.video = ParallelDecoder(
            lambda: DaliVideoDecoder(device, opts.batch_videos, opts.dali_threads), opts.readers
        )

    def close(self):
        self.io.shutdown(wait=True)
        self.jpeg.close()
        self.video.close()

    @staticmethod
    def _read_frames(src: FrameFolder):
        # Checked before DALI sees them: its native decoder crashes on some non-JPEG input.
        try:
            return read_checked_frames(src.files)
        except SourceError as e:
            return e

    def _video_plan(self, src: VideoFile):
        """(use DALI?, frame indices, file bytes or None) of one video, or a SourceError."""
        try:
            st = os.stat(src.path)
            codec, count = _probe_cached(src.path, st.st_mtime_ns, st.st_size)
            idx = video_frame_indices(src, count)
        except (VideoError, SourceError, OSError) as e:
            return SourceError(str(e))
        dali = self.device.type == "cuda" or codec in DALI_CPU_CODECS
        return dali, idx, (_read_cached(src.path, st.st_mtime_ns, st.st_size) if dali else None)

    def submit(self, rows: list[int]):
        """Starts reading and decoding `rows`; returns a callable that finishes the batch."""
        t0 = time.perf_counter()
        srcs: dict[int, object] = {}
        for r in rows:
            try:
                srcs[r] = self.inputs.resolve(self.keys[r])
            except (SourceError, OSError) as e:
                srcs[r] = SourceError(str(e))
        reads = {
            r: self.io.submit(self._read_frames if isinstance(s, FrameFolder) else self._video_plan, s)
            for r, s in srcs.items()
            if not isinstance(s, SourceError)
        }
        errors = [(r, str(s)) for r, s in srcs.items() if isinstance(s, SourceError)]
        notes = {r: list(s.warnings) for r, s in srcs.items() if isinstance(s, FrameFolder) and s.warnings}
        frames: dict[int, torch.Tensor] = {}
        jpeg_rows, jpeg_data, vid_rows, vid_data = [], [], [], []
        for r, fut in reads.items():
            got = fut.result()
            if isinstance(got, SourceError):
                errors.append((r, str(got)))
            elif isinstance(srcs[r], FrameFolder):
                jpeg_rows.append(r)
                jpeg_data.append(got)
            elif got[0]:
                vid_rows.append(r)
                vid_data.append((got[2], got[1]))
            else:  # H.264 / HEVC / MPEG-4 on the CPU: PyAV
                try:
                    frames[r] = torch.from_numpy(decode_frames(srcs[r].path, got[1]))
                except VideoError as e:
                    errors.append((r, str(e)))
        pending = []
        if jpeg_rows:
            pending.append((jpeg_rows, self.jpeg.submit(jpeg_data)))
        if vid_rows:
            pending.append((vid_rows, self.video.submit(vid_data)))

        encoded = dict(zip(jpeg_rows, jpeg_data))

        def finish() -> _Prepared:
            for rws, fut in pending:
                for r, out in zip(rws, fut.result()):
                    if not isinstance(out, DecodeError):
                        frames[r] = out
                    elif not isinstance(srcs[r], FrameFolder):
                        errors.append((r, f"{srcs[r].path}: {out.reason}"))
                    else:
                        got = _pil_decode(srcs[r].files, encoded[r])
                        if isinstance(got, str):
                            errors.append((r, got))
                        else:
                            frames[r] = got
                            notes.setdefault(r, []).append(
                                f"DALI could not decode {os.path.dirname(srcs[r].files[0])} "
                                f"({out.reason}); decoded with PIL instead"
                            )
            ok = [r for r in rows if r in frames]
            clips = self._preprocess(ok, frames) if ok else None
            errors.sort()
            return _Prepared(ok, clips, errors, time.perf_counter() - t0, notes)

        return finish

    def _preprocess(self, rows: list[int], frames: dict[int, torch.Tensor]) -> torch.Tensor:
        o = self.opts
        k = o.views
        out = torch.empty((len(rows) * k, 3, 96, 112, 112), dtype=torch.float32, device=self.device)
        for i, r in enumerate(rows):
            fr = frames[r].to(self.device, non_blocking=True)
            h, w = fr.shape[1], fr.shape[2]
            for v in range(k):
                plan = plan_for(o.preprocess, h, w, None if k == 1 else v, o.seed, key_to_str(self.keys[r]))
                gather_normalize(fr, plan, out=out[i * k + v])
        return out


def _pil_decode(files: Sequence[str], encoded: Sequence[np.ndarray]) -> torch.Tensor | str:
    """The checked decoder behind DALI: frames [T, H, W, 3] uint8, or the reason naming the file.

    Used only for a video DALI refused although every frame passed `read_checked_frames`.
    """
    from PIL import Image

    decoded: dict[str, np.ndarray] = {}
    for path, data in zip(files, encoded):
        if path in decoded:
            continue
        try:
            with Image.open(io.BytesIO(data.tobytes())) as im:
                decoded[path] = np.asarray(im.convert("RGB"))
        except Exception as e:  # noqa: BLE001 (PIL raises many types for broken files)
            return f"corrupt JPEG {path}: {e}"
    return torch.from_numpy(np.stack([decoded[p] for p in files]))


def _prefetching(batches: Iterable[list[int]], prep: _Preparer, depth: int = 2):
    """Yields prepared batches; a background thread stays up to `depth` batches ahead."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        # Up to `readers` batches in flight, so that parallel pipelines all have work.
        inflight: collections.deque = collections.deque()
        try:
            for rows in batches:
                if stop.is_set():
                    break
                inflight.append(prep.submit(rows))
                if len(inflight) >= prep.opts.readers:
                    q.put(inflight.popleft()())
            while inflight and not stop.is_set():
                q.put(inflight.popleft()())
        except BaseException as e:  # surfaces in the consumer
            q.put(e)
        q.put(None)

    th = threading.Thread(target=work, name="fdperf-prepare", daemon=True)
    th.start()
    try:
        while (item := q.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while th.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                th.join(0.05)


# ---- the run ----------------------------------------------------------------------------------


def store_attrs(
    opts: ExtractOptions, sha: str, weights: str | None, device: torch.device, shard: str = ""
) -> dict:
    return {
        "fdperf_version": __version__,
        "backbone": BACKBONE,
        "weights_sha256": sha,
        "weights_file": os.path.basename(weights) if weights else RANDOM_INIT,
        "preprocess": opts.preprocess,
        "preprocess_detail": PREPROCESS_DOC[opts.preprocess],
        "sampling": SAMPLING,
        "snippet_starts": np.array(snippet_starts(opts.num_snippets)),
        "precision": opts.precision,
        "seed": opts.seed,
        "device_type": device.type,
        "backbone_exec": (
            f"{'fused' if opts.fuse else 'as written'}, "
            f"{'channels_last_3d' if opts.channels_last else 'contiguous'}, "
            f"{opts.i3d_videos} video(s) per forward"
        ),
        "torch_version": str(torch.__version__),
        "dali_version": _dali_version(),
        "h5py_version": h5py.__version__,
        "shard": shard,
    }


class InputWarning(UserWarning):
    """An input the extractor accepted with a change a user should know about (recorded in the
    store's `warnings` dataset): a short frame folder, skipped files, a decoder fallback."""


def _non_finite(feats: np.ndarray, maps: np.ndarray) -> list[str | None]:
    """Per row: None when features and maps are finite, else what is not (for the errors entry)."""
    out = []
    for f, m in zip(feats, maps):
        bad = [
            f"{name}: {int(np.isnan(x).sum())} NaN, {int(np.isinf(x).sum())} inf"
            for name, x in (("features", f), ("feature_maps", m))
            if not np.isfinite(x).all()
        ]
        out.append("; ".join(bad) or None)
    return out


def _run_batch(
    batch: _Prepared,
    backbone: Backbone,
    writer: FeatureStoreWriter,
    keys: list,
    views: int,
    result: ExtractResult,
    timings: dict,
) -> None:
    """I3D on one prepared batch; finite rows are written, the others become errors."""
    result.errors += [(keys[r], reason) for r, reason in batch.errors]
    for r, messages in sorted(batch.notes.items()):
        for m in messages:
            warnings.warn(f"{key_to_str(keys[r])}: {m}", InputWarning, stacklevel=2)
    if not batch.rows:
        return
    t0 = time.perf_counter()
    feats, maps = backbone(batch.clips)
    if views > 1:
        feats = feats.reshape((len(batch.rows), views) + feats.shape[1:])
        maps = maps.reshape((len(batch.rows), views) + maps.shape[1:])
    t1 = time.perf_counter()
    # A non-finite row would silently move every vote it takes part in: never mark it done.
    bad = _non_finite(feats, maps)
    keep = [i for i, b in enumerate(bad) if b is None]
    result.errors += [
        (
            keys[batch.rows[i]],
            f"I3D output is not finite ({b}); row not written: "
            "check the weights file and this video's frames",
        )
        for i, b in enumerate(bad)
        if b
    ]
    if keep:
        rows = [batch.rows[i] for i in keep]
        writer.write(
            rows, feats[keep], maps[keep], warnings={r: batch.notes[r] for r in rows if r in batch.notes}
        )
    timings["backbone"] += t1 - t0
    timings["write"] += time.perf_counter() - t1
    result.extracted += len(keep)


def _open_store(out, keys, weights, random_init, opts, device, shard, lock):
    """(writer, I3D): loads I3D and creates or resumes the store under `lock`."""
    model, sha = load_i3d(weights, random_init=random_init, seed=opts.seed)
    if sha == RANDOM_INIT:
        warnings.warn(
            "extracting with a randomly initialised I3D (--random-init): the features "
            "are meaningless for assessment; the store records weights_sha256='random-init'",
            stacklevel=3,
        )
    if opts.fuse:
        model = fuse_for_inference(model)
    attrs = store_attrs(opts, sha, os.fspath(weights) if weights else None, device, shard)
    writer = FeatureStoreWriter(
        out,
        keys,
        attrs=attrs,
        num_snippets=opts.num_snippets,
        views=opts.views,
        overwrite=opts.overwrite,
        lock=lock,
    )
    return writer, model


def extract_features(
    out: str | os.PathLike,
    keys: Sequence[Key],
    inputs: Inputs,
    *,
    weights: str | os.PathLike | None = None,
    random_init: bool = False,
    options: ExtractOptions | None = None,
    shard: str = "",
    on_progress: Callable[[int], None] | None = None,
) -> ExtractResult:
    """Extracts I3D features of `keys` into the store `out` (created, or resumed when it exists).

    Returns an ExtractResult; bad inputs are in `.errors` and leave `.complete` False.
    """
    t_start = time.perf_counter()
    opts = options or ExtractOptions()
    device = resolve_device(opts.device)
    opts = _settings(opts, device)
    if opts.torch_threads:
        torch.set_num_threads(opts.torch_threads)
    keys = [(str(k[0]), int(k[1])) for k in keys]
    if not keys:
        raise ValueError("no keys to extract")
    # The lock first: a store in use is refused before anything is loaded.
    lock = StoreLock(out).acquire()
    try:
        writer, model = _open_store(out, keys, weights, random_init, opts, device, shard, lock)
    except BaseException:
        lock.release()
        raise
    result = ExtractResult(os.fspath(out), len(keys), 0, len(keys) - len(writer.pending))
    timings = {"prepare": 0.0, "backbone": 0.0, "write": 0.0}
    backbone = Backbone(
        model, device, opts.precision, opts.channels_last, snippet_starts(opts.num_snippets), opts.i3d_videos
    )
    pending = writer.pending.tolist()
    batches = [pending[i : i + opts.batch_videos] for i in range(0, len(pending), opts.batch_videos)]
    prep = _Preparer(inputs, keys, opts, device)
    bar = None
    if opts.progress and pending:
        from tqdm import tqdm

        bar = tqdm(
            total=len(pending),
            unit="video",
            desc=f"extract{(' ' + shard) if shard else ''}",
            dynamic_ncols=True,
        )
    try:
        for batch in _prefetching(batches, prep):
            timings["prepare"] += batch.seconds
            _run_batch(batch, backbone, writer, keys, opts.views, result, timings)
            n = len(batch.rows) + len(batch.errors)
            if bar is not None:
                bar.update(n)
                # tqdm shows s/video below 1 video/s; state videos/s explicitly.
                bar.set_postfix_str(f"{bar.n / max(bar.format_dict['elapsed'], 1e-9):.2f} videos/s")
            if on_progress is not None:
                on_progress(n)
        result.complete = writer.finish(result.errors)
    finally:
        if bar is not None:
            bar.close()
        prep.close()
        writer.close()
    result.seconds = time.perf_counter() - t_start
    result.timings = timings
    return result


# ---- sharded runs (torchrun) ------------------------------------------------------------------


def shard_rows(n: int, rank: int, world: int) -> np.ndarray:
    """Contiguous block of rows for `rank` (sizes differ by at most one)."""
    return np.array_split(np.arange(n), world)[rank]


def shard_path(out: str, rank: int, world: int) -> str:
    stem, ext = os.path.splitext(os.fspath(out))
    return f"{stem}.shard{rank:03d}-of-{world:03d}{ext or '.h5'}"


def write_master(out: str, keys: Sequence[Key], world: int) -> bool:
    """Joins the shard files into one store at `out` (`fdperf.features.store.join_shards`).

    `features`, `feature_maps`, `done` and `warnings` are virtual datasets mapped onto the shards
    by relative file names (keep the files together). Returns completeness.
    """
    out = os.fspath(out)
    return join_shards(
        out,
        keys,
        [shard_path(out, r, world) for r in range(world)],
        [shard_rows(len(keys), r, world) for r in range(world)],
    )


def distributed_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def extract_sharded(
    out: str,
    keys: Sequence[Key],
    inputs: Inputs,
    *,
    rank: int,
    world: int,
    local_rank: int = 0,
    barrier: Callable[[], None] | None = None,
    **kwargs,
) -> tuple[ExtractResult, bool | None]:
    """One rank of a sharded run: its block of keys into its shard, then (rank 0) the master file.

    Returns (this rank's result, completeness of the joined store on rank 0, else None).
    `barrier` must wait for every rank (torch.distributed.barrier under torchrun).
    """
    opts = kwargs.pop("options", None) or ExtractOptions()
    if opts.device in ("auto", "cuda") and torch.cuda.is_available():
        opts = ExtractOptions(**dict(vars(opts), device=f"cuda:{local_rank}"))
    keys = [(str(k[0]), int(k[1])) for k in keys]
    rows = shard_rows(len(keys), rank, world)
    shard_keys = [keys[i] for i in rows]
    path = shard_path(out, rank, world)
    if not shard_keys:
        raise ValueError(f"{world} ranks for {len(keys)} keys: every rank needs at least one key")
    result = extract_features(path, shard_keys, inputs, options=opts, shard=f"{rank}/{world}", **kwargs)
    if barrier is not None:
        barrier()
    complete = write_master(out, keys, world) if rank == 0 else None
    return result, complete
