"""FineDiving annotations: safe loading, typed per-sample records and the train/test split."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from .safe_pickle import load_pickle
from .sampling import NUM_FRAMES, all_transitions, sample_frame_indices, transition_labels

Key = tuple  # (event: str, index: int)

FILES = {
    "aqa": "fine-grained_annotation_aqa.pkl",
    "fine": "FineDiving_fine-grained_annotation.pkl",
    "coarse": "FineDiving_coarse_annotation.pkl",
    "types": "Sub_action_Types_Table.pkl",
    "train": "train_split.pkl",
    "test": "test_split.pkl",
}


class AnnotationError(ValueError):
    """A FineDiving annotation file is missing or malformed; the message names file and key."""


def key_to_str(key: Key) -> str:
    """(event, index) -> 'event/index', the form used in feature stores and CSV files."""
    return f"{key[0]}/{int(key[1])}"


def key_from_str(text: str) -> Key:
    event, _, index = str(text).rpartition("/")
    if not event or not index.lstrip("-").isdigit():
        raise ValueError(f"not an 'event/index' key: {text!r}")
    return (event, int(index))


@dataclass(frozen=True, eq=False)
class Sample:
    """One dive instance. Transition fields are in the 96-sampled-frame index space."""

    key: Key
    dive_number: str
    score: float
    difficulty: float
    frame_labels: np.ndarray  # sub-action type of every frame of the trimmed instance
    transit_frames: np.ndarray  # the file's steps_transit_frames (original frame space)
    sub_action_names: dict  # type id -> name, for the types this dive uses
    judge_scores: tuple | None = None  # from the coarse file, when the key matches there
    num_transitions: int = 2
    sampled_indices: np.ndarray = field(init=False)
    sampled_labels: np.ndarray = field(init=False)
    transitions: np.ndarray = field(init=False)
    all_transitions: np.ndarray = field(init=False)

    def __post_init__(self):
        idx = sample_frame_indices(len(self.frame_labels), NUM_FRAMES)
        labels96 = self.frame_labels[idx]
        set_ = object.__setattr__  # frozen dataclass: derived fields are set once, here
        set_(self, "sampled_indices", idx)
        set_(self, "sampled_labels", labels96)
        set_(self, "all_transitions", all_transitions(labels96))
        set_(self, "transitions", transition_labels(labels96, self.num_transitions))

    @property
    def num_frames(self) -> int:
        return len(self.frame_labels)

    @property
    def num_steps(self) -> int:
        return len(self.all_transitions) + 1


class Annotations:
    """All samples of a FineDiving-style Annotations/ folder, with the official split."""

    def __init__(
        self, samples: dict, train_keys: list, test_keys: list, sub_action_types: dict, folder: str = ""
    ):
        self.samples = samples
        self.train_keys = train_keys
        self.test_keys = test_keys
        self.sub_action_types = sub_action_types
        self.folder = folder

    def __getitem__(self, key) -> Sample:
        key = _norm_key(key)
        try:
            return self.samples[key]
        except KeyError:
            raise KeyError(f"no annotation for key {key!r} in {self.folder or 'these annotations'}") from None

    def __contains__(self, key) -> bool:
        return _norm_key(key) in self.samples

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Key]:
        return iter(self.samples)

    def keys(self) -> list:
        return list(self.samples)

    @property
    def dive_numbers(self) -> list:
        return sorted({s.dive_number for s in self.samples.values()})

    def summary(self) -> str:
        steps = np.bincount([s.num_steps for s in self.samples.values()])
        scores = np.array([s.score for s in self.samples.values()])
        lines = [
            f"FineDiving annotations: {self.folder}",
            f"  samples {len(self)}  train {len(self.train_keys)}  test {len(self.test_keys)}",
            f"  dive numbers {len(self.dive_numbers)}  sub-action types {len(self.sub_action_types)}",
            f"  scores {scores.min():.1f} .. {scores.max():.1f} (median {np.median(scores):.1f})",
            "  steps per dive: " + ", ".join(f"{n}: {c}" for n, c in enumerate(steps) if c),
        ]
        return "\n".join(lines)


def _norm_key(key) -> Key:
    if isinstance(key, str):
        return key_from_str(key)
    if isinstance(key, (tuple, list)) and len(key) == 2:
        return (str(key[0]), int(key[1]))
    raise KeyError(f"a key is (event, index) or 'event/index', got {key!r}")


def _load(folder: str, name: str):
    path = os.path.join(folder, FILES[name])
    if not os.path.isfile(path):
        raise AnnotationError(f"missing annotation file: {path}")
    try:
        return load_pickle(path)
    except AnnotationError:
        raise
    except Exception as e:  # truncated or garbled file; UnsafePickleError keeps its own type
        if type(e).__name__ == "UnsafePickleError":
            raise
        raise AnnotationError(f"{path}: cannot read ({type(e).__name__}: {e})") from e


def _record(path: str, key, value, fine: dict | None, coarse: dict | None, num_transitions: int) -> Sample:
    where = f"{path}, key {key!r}"
    if not isinstance(key, tuple) or len(key) != 2:
        raise AnnotationError(f"{where}: a key must be an (event, index) tuple")
    if not isinstance(value, (list, tuple)) or len(value) != 5:
        raise AnnotationError(
            f"{where}: expected [dive_number, score, difficulty, steps_transit_frames, frames_labels]"
        )
    dive_number, score, difficulty, transit, labels = value
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        transit = np.asarray(transit, dtype=np.int64).reshape(-1)
        score, difficulty = float(score), float(difficulty)
    except (TypeError, ValueError) as e:
        raise AnnotationError(f"{where}: malformed record ({e})") from e
    if len(labels) == 0:
        raise AnnotationError(f"{where}: the annotation has no frames")
    names = {}
    if fine is not None and isinstance(fine.get("sub-action_types"), dict):
        names = {int(k): str(v) for k, v in fine["sub-action_types"].items()}
    judges = None
    if coarse is not None and coarse.get("judge_scores") is not None:
        judges = tuple(float(j) for j in coarse["judge_scores"])
    try:
        return Sample(
            key=(str(key[0]), int(key[1])),
            dive_number=str(dive_number),
            score=score,
            difficulty=difficulty,
            frame_labels=labels,
            transit_frames=transit,
            sub_action_names=names,
            judge_scores=judges,
            num_transitions=num_transitions,
        )
    except ValueError as e:
        raise AnnotationError(f"{where}: {e}") from e


def load_annotations(folder, num_transitions: int = 2) -> Annotations:
    """Loads a FineDiving Annotations/ folder (the six files) through a restricted unpickler.

    Raises AnnotationError naming the file and key for a missing file, a split key without
    annotation, an annotation with no frames or a malformed record.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise AnnotationError(f"annotations folder not found: {folder}")
    aqa = _load(folder, "aqa")
    fine = _load(folder, "fine")
    coarse = _load(folder, "coarse")
    types = _load(folder, "types")
    splits = {name: _load(folder, name) for name in ("train", "test")}
    aqa_path = os.path.join(folder, FILES["aqa"])
    for name, obj in (("aqa", aqa), ("fine", fine), ("coarse", coarse), ("types", types)):
        if not isinstance(obj, dict):
            raise AnnotationError(
                f"{os.path.join(folder, FILES[name])}: expected a dict, got {type(obj).__name__}"
            )
    samples = {}
    for key, value in aqa.items():
        rec = _record(aqa_path, key, value, fine.get(key), coarse.get(key), num_transitions)
        samples[rec.key] = rec
    split_keys = {}
    for name, keys in splits.items():
        path = os.path.join(folder, FILES[name])
        if not isinstance(keys, (list, tuple)):
            raise AnnotationError(f"{path}: expected a list of keys, got {type(keys).__name__}")
        out = []
        for key in keys:
            try:
                nkey = _norm_key(key)
            except (KeyError, ValueError, TypeError):
                raise AnnotationError(f"{path}: malformed split key {key!r}") from None
            if nkey not in samples:
                raise AnnotationError(f"{path}: split key {key!r} has no annotation in {aqa_path}")
            out.append(nkey)
        split_keys[name] = out
    overlap = set(split_keys["train"]) & set(split_keys["test"])
    if overlap:
        raise AnnotationError(
            f"{folder}: {len(overlap)} keys are in both splits, e.g. {next(iter(overlap))!r}"
        )
    sub_types = {int(k): str(v) for k, v in types.items()}
    return Annotations(samples, split_keys["train"], split_keys["test"], sub_types, folder)


def sample_tensors(annotations: Annotations, keys, device="cpu") -> dict:
    """Per-row tensors for `keys`: score, difficulty (float32), transitions int64 [N, L],
    dive_number ids (int64, into sorted(annotations.dive_numbers))."""
    dn = {d: i for i, d in enumerate(annotations.dive_numbers)}
    recs = [annotations[k] for k in keys]
    return {
        "score": torch.tensor([r.score for r in recs], dtype=torch.float32, device=device),
        "difficulty": torch.tensor([r.difficulty for r in recs], dtype=torch.float32, device=device),
        "transitions": torch.as_tensor(
            np.stack([r.transitions for r in recs]) if recs else np.zeros((0, 2), np.int64), device=device
        ),
        "dive_number": torch.tensor([dn[r.dive_number] for r in recs], dtype=torch.long, device=device),
    }
