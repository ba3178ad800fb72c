"""Per-split tensors of a loaded feature store, shared by training and evaluation.

`load_store` puts a whole store on a device (and refuses NaN/inf in it); `video_set` gathers
one split's rows with their labels (scores, transitions, dive-number ids) into a `VideoSet`;
`store_identity` is what a checkpoint records of the store it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import key_to_str, load_annotations, sample_tensors
from ..errors import UserError

# Store attributes that define the feature space a model learns on: a checkpoint is only valid
# on stores that agree on them (precision, views, seeds and versions do not change the space).
IDENTITY_ATTRS = ("backbone", "weights_sha256", "preprocess", "sampling", "num_snippets")


class NonFiniteFeatures(UserError, ValueError):
    """A feature store holds NaN or inf values."""


@dataclass
class VideoSet:
    """Per-video tensors of one split, all on one device (rows follow `keys`)."""

    keys: list
    features: torch.Tensor  # [N, snippets, 1024]
    maps: torch.Tensor | None  # [N, snippets, 1024, H, W] or None
    scores: torch.Tensor  # [N] float32
    bounds: torch.Tensor  # [N, L] int64, ground-truth transitions
    dive_ids: torch.Tensor  # [N] int64 into the dive-number vocabulary
    difficulty: torch.Tensor  # [N] float32

    def __len__(self):
        return len(self.keys)


def as_annotations(annotations, num_transitions: int = 2):
    """A loaded `Annotations` object, or the folder to load one from."""
    if hasattr(annotations, "train_keys"):
        return annotations
    return load_annotations(annotations, num_transitions=num_transitions)


def dive_vocabulary(annotations, train_keys) -> list:
    """Dive numbers seen in training, sorted; F+R# maps any other dive number to one extra id."""
    return sorted({annotations[k].dive_number for k in train_keys})


def open_store(store_path):
    """The store's header (keys, attributes, shapes) without its tensors; a FeatureStore
    passes through."""
    from .store import FeatureStore  # the store module pulls in h5py: import on use

    return store_path if isinstance(store_path, FeatureStore) else FeatureStore(store_path)


def load_store(store_path, device, maps: bool = True, view: int | None = None, all_views: bool = False):
    """(FeatureStore, features, maps) with the whole store on `device`.

    A multi-view store gives view `view` (default 0), or with `all_views` every view on an axis
    after N ([N, K, S, 1024]) when `view` is None. Refuses NaN/inf values (NonFiniteFeatures),
    so that no bad row can silently move a vote or end training in an unrelated error.
    """
    store = open_store(store_path)
    if store.views > 1 and view is None and not all_views:
        view = 0
    feats, fmaps = store.load(device=device, maps=maps, view=view)
    check_finite(store, "features", feats)
    if fmaps is not None:
        check_finite(store, "feature_maps", fmaps)
    return store, feats, fmaps


def check_finite(store, dataset: str, values: torch.Tensor, block_rows: int = 64) -> None:
    """Raises NonFiniteFeatures naming the store, the dataset and the first bad video."""
    bad = []
    for start in range(0, values.shape[0], block_rows):  # blocks: no full-size bool copy
        ok = torch.isfinite(values[start : start + block_rows]).flatten(1).all(1)
        bad.extend((start + torch.nonzero(~ok).flatten()).tolist())
    if bad:
        first = key_to_str(store.keys[bad[0]])
        more = f" and {len(bad) - 1} other video(s)" if len(bad) > 1 else ""
        raise NonFiniteFeatures(
            f"feature store {store.path}: dataset {dataset!r} holds NaN/inf values for video "
            f"{first}{more}; re-extract the store (python -m fdperf.extract) or remove those rows"
        )


def store_identity(store) -> dict:
    """What a checkpoint records of its training store: IDENTITY_ATTRS (None where the store
    lacks one) and the per-video shapes of its datasets (views axis left out)."""
    import h5py

    store = open_store(store)
    ident = {a: store.attrs.get(a) for a in IDENTITY_ATTRS}
    ident["num_snippets"] = store.num_snippets  # from the shape: always there
    with h5py.File(store.path, "r") as f:
        for name in ("features", "feature_maps"):
            if name in f:
                shape = f[name].shape[2:] if store.views > 1 else f[name].shape[1:]
                ident[f"{name}_shape"] = [int(n) for n in shape]
            else:
                ident[f"{name}_shape"] = None
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in ident.items()}


def video_set(store, feats, fmaps, annotations, keys, vocabulary: list, device) -> VideoSet:
    """Gathers `keys`' rows of a loaded store and their labels; names missing keys."""
    missing = [k for k in keys if k not in store]
    if missing:
        raise KeyError(
            f"{len(missing)} of {len(keys)} videos are not in feature store {store.path}, "
            f"e.g. {key_to_str(missing[0])}; extract them first (python -m fdperf.extract)"
        )
    rows = torch.tensor([store.index_of(k) for k in keys], dtype=torch.long, device=feats.device)
    labels = sample_tensors(annotations, keys, device=device)
    vocab = {d: i for i, d in enumerate(vocabulary)}
    dive = torch.tensor(
        [vocab.get(annotations[k].dive_number, len(vocabulary)) for k in keys],
        dtype=torch.long,
        device=device,
    )
    return VideoSet(
        list(keys),
        feats.index_select(0, rows).to(device),
        None if fmaps is None else fmaps.index_select(0, rows).to(device),
        labels["score"],
        labels["transitions"],
        dive,
        labels["difficulty"],
    )
