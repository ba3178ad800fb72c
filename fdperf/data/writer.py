"""Writes the six FineDiving annotation files: the one writer of the format that
`fdperf.data.load_annotations` reads (the synthetic generator, the synthetic feature set and the
tests all go through it).

Schema, as in the published release (`FILES` names the files):
    aqa     {(event, index): [dive_number, score, difficulty, steps_transit_frames, frames_labels]}
    fine    {(event, index): {action_type, dive_score, difficulty, steps_transit_frames,
                              frames_labels, sub-action_types {np.int64 type id: name}}}
    coarse  {(event, index): {action_type, start_frame, end_frame (inclusive), dive_score,
                              difficulty, judge_scores (list of float, or None)}}
    types   {type id: name};  train / test: lists of (event, index) keys
Values are Python str/float/int and int64 arrays; pickles are protocol 3 with numpy's
reconstructors named under `numpy.core`, so numpy 1 can read them as it reads the published files.
"""

from __future__ import annotations

import os
import pickle
import pickletools
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .annotations import FILES


@dataclass(frozen=True)
class AnnotationRecord:
    """One dive as the files describe it. A loaded `Sample` has the same fields (all but
    `start_frame`), so `write_annotations` also takes an `Annotations`' samples."""

    key: tuple  # (event, index)
    dive_number: str
    score: float
    difficulty: float
    frame_labels: np.ndarray  # sub-action type of every frame
    sub_action_names: dict  # type id -> name, for the types this dive uses
    transit_frames: np.ndarray | None = None  # None: the last frame of every step but the last
    judge_scores: list | None = None
    start_frame: int = 0  # where the dive starts in its untrimmed broadcast


def finediving_pickle(obj) -> bytes:
    """Protocol-3 pickle naming numpy's reconstructors under `numpy.core`, as the published files
    do (numpy 2 writes `numpy._core`, which numpy 1 cannot read)."""
    data = pickle.dumps(obj, protocol=3)
    out, last = [], 0
    for op, arg, pos in pickletools.genops(data):
        if op.name == "GLOBAL" and arg.startswith("numpy._core.multiarray "):
            end = data.index(b"\n", data.index(b"\n", pos) + 1) + 1
            module, name = arg.replace("numpy._core.", "numpy.core.", 1).split(" ")
            out += [data[last:pos], f"c{module}\n{name}\n".encode()]
            last = end
    out.append(data[last:])
    return b"".join(out)


def write_pickle(path, obj) -> None:
    """One annotation-style pickle, written under a temporary name and renamed (no torn file)."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(finediving_pickle(obj))
    os.replace(tmp, path)


def _transit(rec, labels: np.ndarray) -> np.ndarray:
    if rec.transit_frames is not None:
        return np.asarray(rec.transit_frames, dtype=np.int64)
    return np.flatnonzero(labels[1:] != labels[:-1]).astype(np.int64)


def annotation_dicts(records: Iterable) -> tuple[dict, dict, dict]:
    """The aqa, fine-grained and coarse dicts of `records` (AnnotationRecord or Sample)."""
    aqa, fine, coarse = {}, {}, {}
    for rec in records:
        labels = np.asarray(rec.frame_labels, dtype=np.int64)
        transit = _transit(rec, labels)
        dn, score, dd = str(rec.dive_number), float(rec.score), float(rec.difficulty)
        aqa[rec.key] = [dn, score, dd, transit, labels]
        fine[rec.key] = {
            "action_type": dn,
            "dive_score": score,
            "difficulty": dd,
            "steps_transit_frames": transit,
            "frames_labels": labels,
            "sub-action_types": {np.int64(t): str(n) for t, n in rec.sub_action_names.items()},
        }
        start = int(getattr(rec, "start_frame", 0))
        judges = rec.judge_scores
        coarse[rec.key] = {
            "action_type": dn,
            "start_frame": start,
            "end_frame": start + len(labels) - 1,
            "dive_score": score,
            "difficulty": dd,
            "judge_scores": None if judges is None else [float(j) for j in judges],
        }
    return aqa, fine, coarse


def write_annotations(
    folder, records: Iterable, train_keys: Iterable, test_keys: Iterable, sub_action_types: dict
) -> str:
    """Writes the six files for `records` (AnnotationRecord, or a loaded Annotations' Sample
    objects) into `folder` (created if missing); returns the folder.

    `sub_action_types` is the types table ({type id: name}); the split files list the keys in the
    order given. `load_annotations(folder)` gives back the records' fields.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    aqa, fine, coarse = annotation_dicts(records)
    contents = {
        "aqa": aqa,
        "fine": fine,
        "coarse": coarse,
        "types": dict(sub_action_types),
        "train": list(train_keys),
        "test": list(test_keys),
    }
    for name, obj in contents.items():
        write_pickle(os.path.join(folder, FILES[name]), obj)
    return folder
