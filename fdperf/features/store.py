"""The HDF5 feature store: I3D features of every video, written by `fdperf.extract`.

Layout (format 1; plain h5py users can read it without fdperf):

    keys           [N]                     variable-length UTF-8 strings "event/index"
    features       [N, (K,) S, 1024]       float32  (S = 9 snippets; K views axis only when K > 1)
    feature_maps   [N, (K,) S, 1024, 4, 4] float16  (Mixed_5c averaged over time)
    done           [N]                     bool     (row data is flushed before its flag is set)
    errors         [E]                     compound (key, reason), written at the end of a run
    warnings       [N]                     fixed-length UTF-8 (1024 bytes): what the input of a row
                                           made the extractor accept (a short frame folder, skipped
                                           files), lines joined by newlines; empty for most rows
    attrs: format, complete, fdperf_version, backbone, weights_sha256 ("random-init" when none),
           preprocess, sampling, num_snippets, views, precision, torch_version, dali_version, ...

Every dataset is chunked per video and allocated in full when the file is created, so writing a
row afterwards touches only raw data, never HDF5 metadata: a `kill -9` can at worst leave a row
half-written, and that row's `done` flag is still False. `complete` becomes True only after the
last row is flushed.

One writer at a time: a writer holds `<store>.lock` (see `StoreLock`) from opening to closing, so
a second run, with `--overwrite` or not, is refused with the holder's PID and host.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
import warnings
from typing import Iterable, Sequence

import h5py
import numpy as np
import torch
from h5py import h5d, h5p, h5s, h5t

from ..data import key_from_str
from ..data import key_to_str as _key_to_str
from ..errors import UserError, one_line

FORMAT_VERSION = 1
MAP_SIZE = 4
CHANNELS = 1024
# Attributes that must match for a rerun to resume an existing file (versions may differ).
IDENTITY_ATTRS = (
    "format",
    "backbone",
    "weights_sha256",
    "preprocess",
    "sampling",
    "num_snippets",
    "views",
    "precision",
    "seed",
    "shard",
)

Key = tuple[str, int]
_STR = h5py.string_dtype("utf-8")
_ERROR_DTYPE = np.dtype([("key", _STR), ("reason", _STR)])
WARNING_BYTES = 1024
_WARNING_DTYPE = h5py.string_dtype("utf-8", WARNING_BYTES)


class StoreError(RuntimeError, UserError):
    """A store that cannot be created, resumed or read (other keys or settings, not a store, ...)."""


class StoreLockedError(StoreError):
    """Another run writes this store; the message names its PID and host."""


def key_to_str(key: Key | str) -> str:
    """(event, index) -> "event/index"; a string passes through."""
    return key if isinstance(key, str) else _key_to_str(key)


def _row_shapes(
    num_snippets: int, views: int, map_size: int = MAP_SIZE
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    lead = (views, num_snippets) if views > 1 else (num_snippets,)
    return lead + (CHANNELS,), lead + (CHANNELS, map_size, map_size)


def _create_preallocated(f: h5py.File, name: str, shape: tuple[int, ...], dtype) -> h5py.Dataset:
    """A dataset chunked per row whose chunks all exist from the start (see module docstring)."""
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_chunk((1,) + tuple(shape[1:]))
    dcpl.set_alloc_time(h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5d.FILL_TIME_ALLOC)
    if np.dtype(dtype).kind != "S":
        # HDF5 stores a string fill value with stray bytes (runs would differ); its default
        # fill is zeros anyway.
        dcpl.set_fill_value(np.zeros((), dtype))
    dcpl.set_obj_track_times(False)  # no timestamps: equal runs give byte-identical files
    space = h5s.create_simple(shape)
    dsid = h5d.create(f.id, name.encode(), h5t.py_create(np.dtype(dtype)), space, dcpl=dcpl)
    return h5py.Dataset(dsid)


def _warning_bytes(messages: Sequence[str]) -> bytes:
    """Messages joined by newlines, cut to the fixed width at a UTF-8 character boundary."""
    data = "\n".join(messages).encode("utf-8")
    if len(data) > WARNING_BYTES:
        data = data[: WARNING_BYTES - 3].decode("utf-8", "ignore").encode("utf-8") + b"..."
    return data


def _open_failure(path: str, error: OSError, fix: str) -> str:
    """One line on why HDF5 could not open `path`, naming the file and the fix."""
    text = one_line(error)
    if "lock" in text.lower():
        return f"{path} is open in another program (HDF5 file lock: {text}); close it there, then rerun"
    return f"{path} cannot be opened as an HDF5 file ({text}): it is truncated or corrupt; {fix}"


def _attr_value(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _describe(holder: dict) -> str:
    return (
        f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
        f"started {holder.get('started', '?')}"
    )


class StoreLock:
    """`<store>.lock`: the PID, host and start time of the run that writes `<store>`.

    Taken with `flock` on the lock file, so the kernel releases it when the holder dies however it
    dies; the file's content then says who held it. A lock file left by a run that is gone (its
    flock free, its PID not running on this host) is taken over with a warning. A lock file naming
    another host whose flock is free is not taken over: that host's run may still be alive on a
    file system whose locks do not reach here.
    """

    def __init__(self, store_path: str | os.PathLike):
        self.store = os.fspath(store_path)
        self.path = self.store + ".lock"
        self._fd: int | None = None

    def acquire(self) -> "StoreLock":
        if os.path.isdir(self.store):
            raise StoreError(
                f"{self.store} is a directory; give the store a file name, e.g. "
                f"{os.path.join(self.store, 'feats.h5')}"
            )
        for _ in range(10):  # the holder may unlink the file between our open and flock
            fd = self._open()
            try:
                if self._try_take(fd):
                    self._fd = fd
                    return self
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        raise StoreLockedError(f"{self.store}: could not take the lock {self.path}; rerun")

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            folder = os.path.dirname(os.path.abspath(self.store))
            raise StoreError(
                f"cannot write the store {self.store}: {e.strerror} ({self.path}); "
                f"choose an existing, writable folder instead of {folder}"
            ) from e

    def _try_take(self, fd: int) -> bool:
        """True when `fd` now holds the lock; False to retry on a lock file unlinked meanwhile."""
        flocked = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreLockedError(self._held_message(_read_holder(fd))) from None
            flocked = False  # a file system without flock: the PID check alone decides
        try:
            if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                return False
        except FileNotFoundError:
            return False
        holder = _read_holder(fd)
        if holder:
            self._check_stale(holder, flocked)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        return True

    def _check_stale(self, holder: dict, flocked: bool) -> None:
        here = holder.get("host") in (socket.gethostname(), "?")  # "?": an unreadable lock file
        pid = holder.get("pid")
        alive = isinstance(pid, int) and _pid_alive(pid)
        if not here or (alive and not flocked):
            raise StoreLockedError(
                self._held_message(holder) + f"; if that run has stopped, remove {self.path}"
            )
        warnings.warn(
            f"{self.store}: taking over the lock of a run that did not finish "
            f"({_describe(holder)}: no longer running)",
            stacklevel=4,
        )

    def _held_message(self, holder: dict) -> str:
        return (
            f"{self.store} is in use by another fdperf run ({_describe(holder)}); wait for it "
            "to finish or stop it, then rerun (--overwrite does not override this lock)"
        )

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # before closing: nobody can take a lock we still hold
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {"pid": "?", "host": "?", "started": "? (unreadable lock file)"}


class FeatureStoreWriter:
    """Creates or resumes a store; `write` rows in any order, then `finish`.

    `FeatureStoreWriter(path, keys, attrs=...)` creates the file when it does not exist and
    resumes it when it does (same keys and identity attributes, else an error naming the
    difference). `pending` lists rows whose `done` flag is not set. The store's `StoreLock` is
    held from here to `close`.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        keys: Sequence[Key | str],
        *,
        attrs: dict,
        num_snippets: int = 9,
        views: int = 1,
        map_size: int = MAP_SIZE,
        overwrite: bool = False,
        lock: StoreLock | None = None,
    ):
        if views < 1 or num_snippets < 1:
            raise ValueError(f"views ({views}) and num_snippets ({num_snippets}) must be >= 1")
        self.path = os.fspath(path)
        self.key_strs = [key_to_str(k) for k in keys]
        if len(set(self.key_strs)) != len(self.key_strs):
            raise ValueError("feature store keys must be unique")
        attrs = dict(attrs, format=FORMAT_VERSION, num_snippets=num_snippets, views=views)
        attrs.setdefault("shard", "")
        self.attrs = attrs
        # `lock`: this store's lock, already taken by the caller; the writer releases it.
        self._lock = lock or StoreLock(self.path).acquire()
        try:
            self.resumed = os.path.exists(self.path) and not overwrite
            if self.resumed:
                self._file = self._open_existing(attrs)
            else:
                self._file = self._create(attrs, num_snippets, views, map_size)
            self._done = self._file["done"][...].astype(bool)
            # Stores written before the warnings dataset existed resume without it.
            self._warnings = self._file["warnings"] if "warnings" in self._file else None
        except BaseException:
            if getattr(self, "_file", None) is not None:
                self._file.close()
            self._lock.release()
            raise

    def _create(self, attrs: dict, num_snippets: int, views: int, map_size: int) -> h5py.File:
        # Written under a temporary name and renamed: a crash during creation leaves no file
        # that a rerun would try to resume.
        tmp = self.path + ".creating"
        n = len(self.key_strs)
        feat_shape, map_shape = _row_shapes(num_snippets, views, map_size)
        try:
            self._fill_new(tmp, attrs, n, feat_shape, map_shape)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        os.replace(tmp, self.path)
        return h5py.File(self.path, "r+")

    def _fill_new(self, tmp: str, attrs: dict, n: int, feat_shape, map_shape) -> None:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("keys", data=np.array(self.key_strs, dtype=object), dtype=_STR)
            _create_preallocated(f, "features", (n,) + feat_shape, np.float32)
            _create_preallocated(f, "feature_maps", (n,) + map_shape, np.float16)
            _create_preallocated(f, "done", (n,), np.bool_)
            _create_preallocated(f, "warnings", (n,), _WARNING_DTYPE)
            f.create_dataset("errors", shape=(0,), maxshape=(None,), dtype=_ERROR_DTYPE)
            for k, v in attrs.items():
                f.attrs[k] = v
            f.attrs["complete"] = False

    def _open_existing(self, attrs: dict) -> h5py.File:
        try:
            f = h5py.File(self.path, "r+")
        except OSError as e:
            raise StoreError(
                _open_failure(self.path, e, "remove it or pass overwrite=True (--overwrite) to start over")
            ) from e
        try:
            if f.attrs.get("format") is None or "done" not in f:
                raise StoreError(
                    f"{self.path} exists but is not an fdperf feature store; "
                    "remove it or choose another output path"
                )
            mismatched = [
                f"{a}: file has {_attr_value(f.attrs.get(a))!r}, this run {attrs.get(a)!r}"
                for a in IDENTITY_ATTRS
                if _attr_value(f.attrs.get(a)) != attrs.get(a)
            ]
            if mismatched:
                raise StoreError(
                    f"{self.path} was written with other settings, so it cannot be "
                    "resumed (remove it or pass overwrite=True, --overwrite): " + "; ".join(mismatched)
                )
            stored = [k.decode() if isinstance(k, bytes) else k for k in f["keys"][...]]
            if stored != self.key_strs:
                raise StoreError(
                    f"{self.path} holds another key list ({len(stored)} keys) than "
                    f"this run ({len(self.key_strs)} keys); remove it or pass "
                    "overwrite=True (--overwrite)"
                )
        except BaseException:
            f.close()
            raise
        # Refresh only what changed (e.g. versions): rewriting equal attributes would move them
        # in the file, and a resumed store should be byte-identical to an uninterrupted one.
        for k, v in attrs.items():
            if k not in f.attrs or not np.array_equal(np.asarray(f.attrs[k]), np.asarray(v)):
                f.attrs[k] = v
        if f.attrs.get("complete", False):
            f.attrs["complete"] = False
        f.flush()
        return f

    @property
    def pending(self) -> np.ndarray:
        """Row indices (ascending) whose data is not yet written."""
        return np.flatnonzero(~self._done)

    def write(
        self,
        rows: Sequence[int],
        features: np.ndarray,
        feature_maps: np.ndarray,
        warnings: dict[int, Sequence[str]] | None = None,
    ) -> None:
        """Writes whole rows (and their `warnings`, row -> messages), flushes, then marks them
        done and flushes again."""
        rows = np.asarray(rows, dtype=np.int64)
        feats, maps = self._file["features"], self._file["feature_maps"]
        if features.shape != (len(rows),) + feats.shape[1:]:
            raise ValueError(f"features shape {features.shape}, expected {(len(rows),) + feats.shape[1:]}")
        if feature_maps.shape != (len(rows),) + maps.shape[1:]:
            raise ValueError(
                f"feature_maps shape {feature_maps.shape}, expected {(len(rows),) + maps.shape[1:]}"
            )
        features = np.ascontiguousarray(features, dtype=np.float32)
        feature_maps = np.ascontiguousarray(feature_maps, dtype=np.float16)
        for i, row in enumerate(rows):
            feats[row] = features[i]
            maps[row] = feature_maps[i]
            if self._warnings is not None:
                self._warnings[row] = _warning_bytes((warnings or {}).get(int(row), ()))
        self._file.flush()
        done = self._file["done"]
        for row in rows:
            done[row] = True
        self._file.flush()
        self._done[rows] = True

    def finish(self, errors: Iterable[tuple[Key | str, str]] = ()) -> bool:
        """Records this run's errors; marks the file complete when every row is done."""
        errors = [(key_to_str(k), str(r)) for k, r in errors]
        ds = self._file["errors"]
        ds.resize((len(errors),))
        if errors:
            ds[...] = np.array(errors, dtype=_ERROR_DTYPE)
        self._file.flush()
        complete = bool(self._done.all()) and not errors
        self._file.attrs["complete"] = complete
        self._file.flush()
        return complete

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()
        self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FeatureStore:
    """Read access to a finished store (or a sharded run's master file).

    Refuses a file whose rows are not all done (an interrupted or failed extraction) unless
    `allow_partial=True`, which exposes only the finished rows.
    """

    def __init__(self, path: str | os.PathLike, *, allow_partial: bool = False):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"feature store {self.path} does not exist")
        if os.path.isdir(self.path):
            raise StoreError(f"{self.path} is a directory, not a feature store file")
        try:
            f = h5py.File(self.path, "r")
        except OSError as e:
            raise StoreError(_open_failure(self.path, e, "extract it again")) from e
        with f:
            # A sharded run's master file: virtual datasets read zeros for a missing shard.
            shards = [_attr_value(x) for x in f.attrs.get("shards", [])]
            lost = [
                s
                for s in shards
                if not os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(self.path)), s))
            ]
            if lost:
                raise FileNotFoundError(f"{self.path} joins shard files that are missing beside it: {lost}")
            missing = [d for d in ("keys", "features", "done") if d not in f]
            if missing:
                raise ValueError(f"{self.path} is not a feature store: no dataset(s) {missing}")
            self.attrs = {k: _attr_value(v) for k, v in f.attrs.items()}
            keys = [k.decode() if isinstance(k, bytes) else k for k in f["keys"][...]]
            done = f["done"][...].astype(bool)
            self.errors = (
                [(_attr_value(k), _attr_value(r)) for k, r in f["errors"][...]] if "errors" in f else []
            )
            feat_shape = f["features"].shape
            if len(feat_shape) not in (3, 4):
                raise ValueError(
                    f"{self.path}: features has shape {feat_shape}, expected [N, S, C] or [N, K, S, C]"
                )
            self.has_maps = "feature_maps" in f
            notes = f["warnings"][...] if "warnings" in f else np.zeros(len(keys), dtype="S1")
        if len(done) != len(keys) or feat_shape[0] != len(keys):
            raise ValueError(
                f"{self.path}: keys ({len(keys)}), done ({len(done)}) and features "
                f"({feat_shape[0]}) disagree in length"
            )
        not_done = int((~done).sum())
        if not_done and not allow_partial:
            reason = (
                f"{len(self.errors)} error(s), e.g. {self.errors[0][0]}: {self.errors[0][1]}"
                if self.errors
                else "the extraction was interrupted; rerun the same command to finish it"
            )
            raise ValueError(
                f"{self.path} is incomplete: {not_done} of {len(keys)} rows are not done "
                f"({reason}). Pass allow_partial=True to read only the finished rows."
            )
        if not not_done and self.attrs.get("complete") is False and not allow_partial:
            raise ValueError(f"{self.path} is marked incomplete by its writer; rerun the extraction")
        self._rows = np.flatnonzero(done)
        self.keys: list[Key] = [key_from_str(keys[r]) for r in self._rows]
        self._index = {k: i for i, k in enumerate(self.keys)}
        # (key, message) for what the extractor accepted with a warning (short folders, ...).
        self.warnings: list[tuple[Key, str]] = [
            (self.keys[i], line)
            for i, r in enumerate(self._rows)
            for line in _attr_value(notes[r]).splitlines()
            if line
        ]
        # The views axis exists exactly when features is 4-D (K > 1 views).
        self.views = int(feat_shape[1]) if len(feat_shape) == 4 else 1
        self.num_snippets = int(feat_shape[-2])

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key) -> bool:
        return self._as_key(key) in self._index

    @staticmethod
    def _as_key(key) -> Key:
        return key_from_str(key) if isinstance(key, str) else (key[0], int(key[1]))

    def index_of(self, key: Key | str) -> int:
        """Row of `key` in `keys` and in the tensors that `load` returns."""
        try:
            return self._index[self._as_key(key)]
        except KeyError:
            raise KeyError(f"{key_to_str(key)} is not in feature store {self.path}") from None

    def load(
        self,
        device: str | torch.device = "cpu",
        maps: bool = True,
        view: int | None = None,
        block_rows: int = 256,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The whole store in memory: features float32 and feature maps float32 (or None).

        Shapes `[N, S, 1024]` / `[N, S, 1024, 4, 4]`, with a views axis after N when the store
        has several views and `view` is None; `view=v` picks one view.
        """
        device = torch.device(device)
        if view is not None and not 0 <= view < self.views:
            raise ValueError(f"view {view} out of range: {self.path} has {self.views} view(s)")
        if maps and not self.has_maps:
            raise ValueError(f"{self.path} has no feature_maps dataset; pass maps=False")
        with h5py.File(self.path, "r") as f:
            feats = self._read(f["features"], view, block_rows, device)
            fmaps = self._read(f["feature_maps"], view, block_rows, device) if maps else None
        return feats, fmaps

    def _read(self, ds: h5py.Dataset, view, block_rows, device) -> torch.Tensor:
        # Reads block by block into one host buffer in the stored dtype, then converts on the
        # target device (half the transfer for the float16 maps).
        row_shape = ds.shape[1:]
        if self.views > 1 and view is not None:
            row_shape = row_shape[1:]
        out = np.empty((len(self._rows),) + row_shape, dtype=ds.dtype)
        rows = self._rows
        contiguous = len(rows) == ds.shape[0]
        for start in range(0, len(rows), block_rows):
            stop = min(start + block_rows, len(rows))
            if contiguous:
                block = ds[start:stop] if self.views == 1 or view is None else ds[start:stop, view]
            else:
                sel = rows[start:stop]
                block = ds[sel] if self.views == 1 or view is None else ds[sel, view]
            out[start:stop] = block
        return torch.from_numpy(out).to(device).float()

    def __repr__(self) -> str:
        return (
            f"FeatureStore({self.path!r}, {len(self)} videos, {self.num_snippets} snippets, "
            f"{self.views} view(s), backbone={self.attrs.get('backbone')!r})"
        )


def join_shards(
    out: str | os.PathLike,
    keys: Sequence[Key | str],
    shard_paths: Sequence[str],
    shard_rows: Sequence[np.ndarray],
) -> bool:
    """Joins shard stores into one master store at `out` with HDF5 virtual datasets.

    `shard_paths[i]` holds rows `shard_rows[i]` (a contiguous block) of `keys`. `keys` and
    `errors` are copied; the row datasets are virtual, mapped onto the shards by relative file
    names (keep the files together). Written under `out`'s lock, to a temporary name, then
    renamed. Returns completeness (every shard complete).
    """
    out = os.fspath(out)
    if os.path.isdir(out):
        raise StoreError(f"{out} is a directory; give the store a file name")
    errors, complete, attrs, layouts, missing = [], True, None, {}, set()
    for path, rows in zip(shard_paths, shard_rows):
        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise StoreError(_open_failure(path, e, "rerun the sharded extraction")) from e
        with f:
            attrs = dict(f.attrs) if attrs is None else attrs
            complete &= bool(f.attrs.get("complete", False))
            errors += [(_attr_value(k), _attr_value(r)) for k, r in f["errors"][...]]
            for name in ("features", "feature_maps", "done", "warnings"):
                if name not in f:  # only stores older than the warnings dataset lack one
                    missing.add(name)
                    continue
                ds = f[name]
                if name not in layouts:
                    layouts[name] = h5py.VirtualLayout(shape=(len(keys),) + ds.shape[1:], dtype=ds.dtype)
                if len(rows):
                    src = h5py.VirtualSource(os.path.basename(path), name, shape=ds.shape)
                    layouts[name][int(rows[0]) : int(rows[-1]) + 1] = src
    for name in missing:
        layouts.pop(name, None)
    with StoreLock(out):
        _write_master_file(
            out,
            [key_to_str(k) for k in keys],
            layouts,
            errors,
            attrs or {},
            [os.path.basename(p) for p in shard_paths],
            complete,
        )
    return complete


def _write_master_file(
    out: str,
    key_strs: list[str],
    layouts: dict,
    errors: list,
    attrs: dict,
    shard_names: list[str],
    complete: bool,
) -> None:
    tmp = out + ".creating"
    try:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("keys", data=np.array(key_strs, dtype=object), dtype=_STR)
            for name, layout in layouts.items():
                f.create_virtual_dataset(name, layout, fillvalue=np.zeros((), layout.dtype))
            f.create_dataset("errors", data=np.array(errors, dtype=_ERROR_DTYPE), maxshape=(None,))
            for k, v in attrs.items():
                f.attrs[k] = v
            f.attrs["shard"] = ""
            f.attrs["shards"] = np.array(shard_names, dtype=object)
            f.attrs["complete"] = complete
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, out)
