"""A synthetic feature set on which procedure-aware scoring is learnable (tests, demos).

Each video has 96 frames in three steps (transitions t1 in {18, 28, 38}, t2 in {58, 68, 78}). Snippet j
(frames 10j..10j+15) carries its step's pattern plus `quality[step] * v` with the SAME direction v
in every step, and the score is `60 + 8 * (q_1 - q_2 + q_3)` (q_s of step s). Averaging snippets
(what F+R sees) mixes the steps' qualities, so only a model that segments the video and compares
step by step can read the score off the features.
"""

from __future__ import annotations

import os

import numpy as np

from ..data import Annotations, Sample, write_annotations
from ..features.store import FeatureStoreWriter

STEP_TYPES = (1, 13, 36)  # Forward, 1.5 Soms.Pike, Entry (FineDiving's type ids)
WEIGHTS = np.array([1.0, -1.0, 1.0])


def _snippet_steps(t1: int, t2: int, snippets: int = 9) -> np.ndarray:
    centres = np.arange(snippets) * 10 + 7.5
    return (centres >= t1).astype(int) + (centres >= t2).astype(int)


def _write_store(out_dir, keys, feats, maps, views: int, map_size: int) -> str:
    """`out_dir/features.h5` through the store writer, every row done."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "features.h5")
    attrs = {"backbone": "synthetic", "weights_sha256": "random-init"}
    with FeatureStoreWriter(path, keys, attrs=attrs, views=views, map_size=map_size, overwrite=True) as store:
        store.write(np.arange(len(keys)), feats, maps)
        store.finish()
    return path


def make_synthetic_features(
    out_dir,
    n_train: int = 96,
    n_test: int = 48,
    seed: int = 0,
    map_size: int = 1,
    dive_numbers: int = 4,
    noise: float = 0.3,
    pattern_scale: float = 1.0,
    views: int = 1,
    late_share: float = 0.0,
):
    """Writes `features.h5` (through fdperf's FeatureStoreWriter) and `Annotations/` (the six
    FineDiving files, through fdperf's annotations writer) into `out_dir`; returns (store path,
    Annotations).

    `map_size` is the spatial size of the feature maps (the real store has 4; 1 keeps CPU
    tests fast). `pattern_scale` sets how visible the steps (hence the transitions) are. Train
    and test videos share the dive numbers. `views` > 1 adds a views axis (as `fdperf.extract
    --views K`): each view is the video's features plus its own small perturbation.
    `late_share`: about that share of the videos (half each) starts its second step late
    (t1 in {48, 58}, t2 in {68, 78}) or its last step early (t1 in {8, 18}, t2 in {28, 38}):
    transitions outside the reference's two decoding windows.
    """
    rng = np.random.default_rng(seed)
    late_rng = np.random.default_rng([seed, 4])  # its own stream: late_share=0 changes nothing
    n = n_train + n_test
    patterns = pattern_scale * rng.standard_normal((3, 1024)).astype(np.float32)
    v = np.ones(1024, np.float32)
    feats = np.empty((n, 9, 1024), np.float32)
    samples, keys = {}, []
    for i in range(n):
        key = ("synthetic", i)
        # transitions 2 frames before a snippet's centre, so that "frame f lies in step s" and
        # "the snippet nearest to f lies in step s" agree: the labels describe the features exactly
        t1, t2 = 10 * int(rng.integers(1, 4)) + 8, 10 * int(rng.integers(5, 8)) + 8
        if late_share:
            r, j = late_rng.uniform(), int(late_rng.integers(2))
            if r < late_share:
                t1, t2 = (48 + 10 * j, 68 + 10 * j) if r < late_share / 2 else (8 + 10 * j, 28 + 10 * j)
        q = rng.standard_normal(3).astype(np.float32)
        steps = _snippet_steps(t1, t2)
        feats[i] = patterns[steps] + q[steps, None] * v + noise * rng.standard_normal((9, 1024))
        labels = np.concatenate(
            [np.full(t1, STEP_TYPES[0]), np.full(t2 - t1, STEP_TYPES[1]), np.full(96 - t2, STEP_TYPES[2])]
        ).astype(np.int64)
        dn = f"{101 + 2 * (i % dive_numbers)}b"
        score = float(60.0 + 8.0 * (WEIGHTS @ q))
        samples[key] = Sample(
            key=key,
            dive_number=dn,
            score=score,
            difficulty=2.0 + 0.1 * (i % dive_numbers),
            frame_labels=labels,
            transit_frames=np.array([t1, t2], np.int64),
            sub_action_names={t: str(t) for t in STEP_TYPES},
        )
        keys.append(key)
    maps = feats[..., None, None] + noise * rng.standard_normal((n, 9, 1024, map_size, map_size)).astype(
        np.float32
    )
    if views > 1:  # augmented views: small per-view perturbations of the same video
        feats = feats[:, None] + 0.1 * noise * rng.standard_normal((n, views, 9, 1024)).astype(np.float32)
        maps = maps[:, None] + 0.1 * noise * rng.standard_normal((n, views) + maps.shape[1:]).astype(
            np.float32
        )
    path = _write_store(out_dir, keys, feats, maps, views, map_size)
    folder = os.path.join(out_dir, "Annotations")
    types = {t: str(t) for t in STEP_TYPES}
    write_annotations(folder, samples.values(), keys[:n_train], keys[n_train:], types)
    ann = Annotations(samples, keys[:n_train], keys[n_train:], types, folder=folder)
    return path, ann
