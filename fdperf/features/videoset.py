"""Per-split tensors of a loaded feature store, shared by training and evaluation.

`load_store` puts a whole store on a device; `video_set` gathers one split's rows with their
labels (scores, transitions, dive-number ids) into a `VideoSet`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import key_to_str, load_annotations, sample_tensors


@dataclass
class VideoSet:
    """Per-video tensors of one split, all on one device (rows follow `keys`)."""
    keys: list
    features: torch.Tensor                 # [N, snippets, 1024]
    maps: torch.Tensor | None              # [N, snippets, 1024, H, W] or None
    scores: torch.Tensor                   # [N] float32
    bounds: torch.Tensor                   # [N, L] int64, ground-truth transitions
    dive_ids: torch.Tensor                 # [N] int64 into the dive-number vocabulary
    difficulty: torch.Tensor               # [N] float32

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


def load_store(store_path, device, maps: bool = True, view: int | None = None,
               all_views: bool = False):
    """(FeatureStore, features, maps) with the whole store on `device`.

    A multi-view store gives view `view` (default 0), or with `all_views` every view on an axis
    after N ([N, K, S, 1024]) when `view` is None.
    """
    from .store import FeatureStore  # the store module pulls in h5py: import on use
    store = FeatureStore(store_path)
    if store.views > 1 and view is None and not all_views:
        view = 0
    feats, fmaps = store.load(device=device, maps=maps, view=view)
    return store, feats, fmaps


def video_set(store, feats, fmaps, annotations, keys, vocabulary: list, device) -> VideoSet:
    """Gathers `keys`' rows of a loaded store and their labels; names missing keys."""
    missing = [k for k in keys if k not in store]
    if missing:
        raise KeyError(f"{len(missing)} of {len(keys)} videos are not in feature store {store.path}, "
                       f"e.g. {key_to_str(missing[0])}; extract them first (python -m fdperf.extract)")
    rows = torch.tensor([store.index_of(k) for k in keys], dtype=torch.long, device=feats.device)
    labels = sample_tensors(annotations, keys, device=device)
    vocab = {d: i for i, d in enumerate(vocabulary)}
    dive = torch.tensor([vocab.get(annotations[k].dive_number, len(vocabulary)) for k in keys],
                        dtype=torch.long, device=device)
    return VideoSet(list(keys), feats.index_select(0, rows).to(device),
                    None if fmaps is None else fmaps.index_select(0, rows).to(device),
                    labels["score"], labels["transitions"], dive, labels["difficulty"])
