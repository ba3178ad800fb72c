"""The HDF5 feature store: I3D features of every video, written by `fdperf.extract`.

Layout (format 1; plain h5py users can read it without fdperf):

    keys           [N]                     variable-length UTF-8 strings "event/index"
    features       [N, (K,) S, 1024]       float32  (S = 9 snippets; K views axis only when K > 1)
    feature_maps   [N, (K,) S, 1024, 4, 4] float16  (Mixed_5c averaged over time)
    done           [N]                     bool     (row data is flushed before its flag is set)
    errors         [E]                     compound (key, reason), written at the end of a run
    attrs: format, complete, fdperf_version, backbone, weights_sha256 ("random-init" when none),
           preprocess, sampling, num_snippets, views, precision, torch_version, dali_version, ...

Every dataset is chunked per video and allocated in full when the file is created, so writing a
row afterwards touches only raw data, never HDF5 metadata: a `kill -9` can at worst leave a row
half-written, and that row's `done` flag is still False. `complete` becomes True only after the
last row is flushed.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import h5py
import numpy as np
import torch
from h5py import h5d, h5p, h5s, h5t

from ..data import key_from_str
from ..data import key_to_str as _key_to_str

FORMAT_VERSION = 1
MAP_SIZE = 4
CHANNELS = 1024
# Attributes that must match for a rerun to resume an existing file (versions may differ).
IDENTITY_ATTRS = ("format", "backbone", "weights_sha256", "preprocess", "sampling",
                  "num_snippets", "views", "precision", "seed", "shard")

Key = tuple[str, int]
_STR = h5py.string_dtype("utf-8")
_ERROR_DTYPE = np.dtype([("key", _STR), ("reason", _STR)])


class StoreError(RuntimeError):
    """An existing store cannot be resumed by this run (other keys or settings, not a store)."""


def key_to_str(key: Key | str) -> str:
    """(event, index) -> "event/index"; a string passes through."""
    return key if isinstance(key, str) else _key_to_str(key)


def _row_shapes(num_snippets: int, views: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    lead = (views, num_snippets) if views > 1 else (num_snippets,)
    return lead + (CHANNELS,), lead + (CHANNELS, MAP_SIZE, MAP_SIZE)


def _create_preallocated(f: h5py.File, name: str, shape: tuple[int, ...], dtype) -> h5py.Dataset:
    """A dataset chunked per row whose chunks all exist from the start (see module docstring)."""
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_chunk((1,) + tuple(shape[1:]))
    dcpl.set_alloc_time(h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5d.FILL_TIME_ALLOC)
    dcpl.set_fill_value(np.zeros((), dtype))
    dcpl.set_obj_track_times(False)  # no timestamps: equal runs give byte-identical files
    space = h5s.create_simple(shape)
    dsid = h5d.create(f.id, name.encode(), h5t.py_create(np.dtype(dtype)), space, dcpl=dcpl)
    return h5py.Dataset(dsid)


def _attr_value(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


class FeatureStoreWriter:
    """Creates or resumes a store; `write` rows in any order, then `finish`.

    `FeatureStoreWriter(path, keys, attrs=...)` creates the file when it does not exist and
    resumes it when it does (same keys and identity attributes, else an error naming the
    difference). `pending` lists rows whose `done` flag is not set.
    """

    def __init__(self, path: str | os.PathLike, keys: Sequence[Key | str], *, attrs: dict,
                 num_snippets: int = 9, views: int = 1, overwrite: bool = False):
        if views < 1 or num_snippets < 1:
            raise ValueError(f"views ({views}) and num_snippets ({num_snippets}) must be >= 1")
        self.path = os.fspath(path)
        self.key_strs = [key_to_str(k) for k in keys]
        if len(set(self.key_strs)) != len(self.key_strs):
            raise ValueError("feature store keys must be unique")
        attrs = dict(attrs, format=FORMAT_VERSION, num_snippets=num_snippets, views=views)
        attrs.setdefault("shard", "")
        self.attrs = attrs
        self.resumed = os.path.exists(self.path) and not overwrite
        if self.resumed:
            self._file = self._open_existing(attrs)
        else:
            self._file = self._create(attrs, num_snippets, views)
        self._done = self._file["done"][...].astype(bool)

    def _create(self, attrs: dict, num_snippets: int, views: int) -> h5py.File:
        # Written under a temporary name and renamed: a crash during creation leaves no file
        # that a rerun would try to resume.
        tmp = self.path + ".creating"
        n = len(self.key_strs)
        feat_shape, map_shape = _row_shapes(num_snippets, views)
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
            f.create_dataset("errors", shape=(0,), maxshape=(None,), dtype=_ERROR_DTYPE)
            for k, v in attrs.items():
                f.attrs[k] = v
            f.attrs["complete"] = False

    def _open_existing(self, attrs: dict) -> h5py.File:
        try:
            f = h5py.File(self.path, "r+")
        except OSError as e:
            raise StoreError(f"{self.path}: cannot reopen the existing feature store to resume "
                             f"it ({e}); remove it or pass overwrite=True (--overwrite)") from e
        try:
            if f.attrs.get("format") is None or "done" not in f:
                raise StoreError(f"{self.path} exists but is not an fdperf feature store; "
                                 "remove it or choose another output path")
            mismatched = [f"{a}: file has {_attr_value(f.attrs.get(a))!r}, this run {attrs.get(a)!r}"
                          for a in IDENTITY_ATTRS if _attr_value(f.attrs.get(a)) != attrs.get(a)]
            if mismatched:
                raise StoreError(f"{self.path} was written with other settings, so it cannot be "
                                 "resumed (remove it or pass overwrite=True, --overwrite): "
                                 + "; ".join(mismatched))
            stored = [k.decode() if isinstance(k, bytes) else k for k in f["keys"][...]]
            if stored != self.key_strs:
                raise StoreError(f"{self.path} holds another key list ({len(stored)} keys) than "
                                 f"this run ({len(self.key_strs)} keys); remove it or pass "
                                 "overwrite=True (--overwrite)")
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

    def write(self, rows: Sequence[int], features: np.ndarray, feature_maps: np.ndarray) -> None:
        """Writes whole rows, flushes, then marks them done and flushes again."""
        rows = np.asarray(rows, dtype=np.int64)
        feats, maps = self._file["features"], self._file["feature_maps"]
        if features.shape != (len(rows),) + feats.shape[1:]:
            raise ValueError(f"features shape {features.shape}, expected {(len(rows),) + feats.shape[1:]}")
        if feature_maps.shape != (len(rows),) + maps.shape[1:]:
            raise ValueError(f"feature_maps shape {feature_maps.shape}, "
                             f"expected {(len(rows),) + maps.shape[1:]}")
        features = np.ascontiguousarray(features, dtype=np.float32)
        feature_maps = np.ascontiguousarray(feature_maps, dtype=np.float16)
        for i, row in enumerate(rows):
            feats[row] = features[i]
            maps[row] = feature_maps[i]
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
        with h5py.File(self.path, "r") as f:
            # A sharded run's master file: virtual datasets read zeros for a missing shard.
            shards = [_attr_value(x) for x in f.attrs.get("shards", [])]
            lost = [s for s in shards
                    if not os.path.isfile(os.path.join(os.path.dirname(os.path.abspath(self.path)), s))]
            if lost:
                raise FileNotFoundError(f"{self.path} joins shard files that are missing beside it: "
                                        f"{lost}")
            missing = [d for d in ("keys", "features", "done") if d not in f]
            if missing:
                raise ValueError(f"{self.path} is not a feature store: no dataset(s) {missing}")
            self.attrs = {k: _attr_value(v) for k, v in f.attrs.items()}
            keys = [k.decode() if isinstance(k, bytes) else k for k in f["keys"][...]]
            done = f["done"][...].astype(bool)
            self.errors = [(_attr_value(k), _attr_value(r)) for k, r in f["errors"][...]] \
                if "errors" in f else []
            feat_shape = f["features"].shape
            if len(feat_shape) not in (3, 4):
                raise ValueError(f"{self.path}: features has shape {feat_shape}, expected "
                                 "[N, S, C] or [N, K, S, C]")
            self.has_maps = "feature_maps" in f
        if len(done) != len(keys) or feat_shape[0] != len(keys):
            raise ValueError(f"{self.path}: keys ({len(keys)}), done ({len(done)}) and features "
                             f"({feat_shape[0]}) disagree in length")
        not_done = int((~done).sum())
        if not_done and not allow_partial:
            reason = (f"{len(self.errors)} error(s), e.g. {self.errors[0][0]}: {self.errors[0][1]}"
                      if self.errors else "the extraction was interrupted; rerun the same command to finish it")
            raise ValueError(f"{self.path} is incomplete: {not_done} of {len(keys)} rows are not done "
                             f"({reason}). Pass allow_partial=True to read only the finished rows.")
        if not not_done and self.attrs.get("complete") is False and not allow_partial:
            raise ValueError(f"{self.path} is marked incomplete by its writer; rerun the extraction")
        self._rows = np.flatnonzero(done)
        self.keys: list[Key] = [key_from_str(keys[r]) for r in self._rows]
        self._index = {k: i for i, k in enumerate(self.keys)}
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

    def load(self, device: str | torch.device = "cpu", maps: bool = True, view: int | None = None,
             block_rows: int = 256) -> tuple[torch.Tensor, torch.Tensor | None]:
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
        return (f"FeatureStore({self.path!r}, {len(self)} videos, {self.num_snippets} snippets, "
                f"{self.views} view(s), backbone={self.attrs.get('backbone')!r})")
