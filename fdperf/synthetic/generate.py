"""Writes a synthetic dataset in the FineDiving layout: JPEG frame folders and the six annotation files.

Layout under `out`:
    frames/<event>/<index>/00000.jpg ...   455x256 JPEG frames, 70 to 140 per dive
    Annotations/                            the six FineDiving pickles (same schema and types)
    synth.json                              what was generated (written last: marks a complete set)

Every dive draws its plan from its own seed sequence `(seed, dive number in the set)`, so the set
is the same for a seed whatever the number of worker processes.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..data.writer import AnnotationRecord
from ..data.writer import write_annotations as write_finediving_annotations
from ..version import __version__
from .dives import CATALOGUE, SUB_ACTION_TYPES, DiveKind, dive_score, judge_awards
from .render import DivePlan, DiveRenderer

EVENT_SIZE = 12  # dives per synthetic event (a competition round)
SUITS = ((222, 46, 40), (230, 70, 30), (205, 40, 70))
MANIFEST = "synth.json"


@dataclass(frozen=True)
class SyntheticDive:
    key: tuple  # (event, index)
    plan: DivePlan
    awards: list  # the five judges' awards
    score: float

    @property
    def frame_labels(self) -> np.ndarray:
        types = self.plan.kind.step_types()
        return np.concatenate([np.full(n, t, dtype=np.int64) for n, t in zip(self.plan.step_frames, types)])


@dataclass(frozen=True)
class SyntheticDataset:
    root: str
    frames_dir: str
    annotations_dir: str
    train_keys: list
    test_keys: list


def _event_key(i: int) -> tuple:
    return (f"SynthDiving_3m_r{i // EVENT_SIZE + 1:02d}", i % EVENT_SIZE + 1)


# Step shares of a dive whose flight starts late (take-off > 52% of the frames: first transition
# in the second half) or ends early (entry > 52%: last transition in the first half). Either way
# the reference's window decoding cannot place its transitions (fdperf.tsa.decode).
LATE = {"start": lambda u1, u3: (u1 + 0.28, 0.75 * u3), "end": lambda u1, u3: (0.75 * u1, u3 + 0.32)}


def plan_dive(kind: DiveKind, rng: np.random.Generator, late: str | None = None) -> DivePlan:
    """Draws one dive's qualities, timing and nuisances; `late` "start" or "end" (see LATE)."""
    qualities = tuple(float(q) for q in rng.uniform(0.0, 1.0, 3))
    total = int(rng.integers(70, 141))
    u1, u3 = rng.uniform(0.24, 0.36), rng.uniform(0.20, 0.30)
    if late is not None:  # same draws either way: other dives of the set do not change
        u1, u3 = LATE[late](u1, u3)
    n1 = int(round(total * u1))
    n3 = int(round(total * u3))
    n2 = total - n1 - n3
    twist_share = 0.0
    steps = (n1, n2, n3)
    if kind.twists:
        twist_share = float(rng.uniform(0.3, 0.4))
        n2b = int(round(n2 * twist_share))
        steps = (n1, n2 - n2b, n2b, n3)
        twist_share = n2b / n2
    return DivePlan(
        kind=kind,
        qualities=qualities,
        step_frames=steps,
        twist_share=twist_share,
        x_offset=float(rng.uniform(-5, 5)),
        tilt_sign=int(rng.choice([-1, 1])),
        brightness=float(rng.uniform(0.94, 1.06)),
        suit=SUITS[int(rng.integers(len(SUITS)))],
        spray_seed=int(rng.integers(2**31)),
    )


def sample_dives(num_videos: int, seed: int = 0, kinds=CATALOGUE, late_share: float = 0.0) -> list:
    """The dives of a set, each with its plan and judging. Dive numbers are balanced over the
    first `num_videos // 4` kinds (all of them from 32 dives on), so that every dive number has
    at least four dives: enough for a test dive with training exemplars. About `late_share` of
    the dives (half each) have a flight that starts late or ends early (see LATE)."""
    if not 0.0 <= late_share <= 1.0:
        raise ValueError(f"late_share must be in [0, 1], got {late_share}")
    if num_videos < 1:
        raise ValueError(f"num_videos must be >= 1, got {num_videos}")
    kinds = kinds[: max(1, min(len(kinds), num_videos // 4))]
    order = np.random.default_rng([seed, 1]).permutation(num_videos)
    dives = []
    for i in range(num_videos):
        kind = kinds[int(order[i]) % len(kinds)]
        rng = np.random.default_rng([seed, 2, i])
        r = np.random.default_rng([seed, 4, i]).uniform() if late_share else 1.0
        plan = plan_dive(kind, rng, None if r >= late_share else ("start" if r < late_share / 2 else "end"))
        awards = judge_awards(plan.qualities, rng)
        dives.append(SyntheticDive(_event_key(i), plan, awards, dive_score(awards, kind.difficulty)))
    return dives


def split_dives(dives: list, seed: int = 0, test_share: float = 0.25) -> tuple:
    """Train/test keys per dive number: about `test_share` of each dive number goes to test, and
    every test dive number keeps at least one training exemplar."""
    if not 0.0 < test_share < 1.0:
        raise ValueError(f"test_share must be in (0, 1), got {test_share}")
    rng = np.random.default_rng([seed, 3])
    by_dn = {}
    for d in dives:
        by_dn.setdefault(d.plan.kind.dive_number, []).append(d.key)
    test = set()
    for dn in sorted(by_dn):
        keys = by_dn[dn]
        n_test = min(int(round(len(keys) * test_share)), len(keys) - 1)
        for j in rng.permutation(len(keys))[:n_test]:
            test.add(keys[int(j)])
    train_keys = [d.key for d in dives if d.key not in test]
    test_keys = [d.key for d in dives if d.key in test]
    return train_keys, test_keys


def dive_records(dives: list) -> list:
    """The annotation records of `dives`; the dives of an event follow each other in one notional
    untrimmed broadcast (the coarse file's start frames), 1500 frames apart."""
    records, start = [], {}
    for d in dives:
        kind, labels = d.plan.kind, d.frame_labels
        first = start.get(d.key[0], 250)
        records.append(
            AnnotationRecord(
                key=d.key,
                dive_number=kind.dive_number,
                score=float(d.score),
                difficulty=float(kind.difficulty),
                frame_labels=labels,
                sub_action_names={t: SUB_ACTION_TYPES[t] for t in kind.step_types()},
                judge_scores=[float(a) for a in d.awards],
                start_frame=int(first),
            )
        )
        start[d.key[0]] = first + len(labels) + 1500
    return records


def write_annotations(folder: str, dives: list, train_keys: list, test_keys: list) -> None:
    """The six FineDiving annotation files for `dives` (through `fdperf.data.write_annotations`)."""
    write_finediving_annotations(folder, dive_records(dives), train_keys, test_keys, SUB_ACTION_TYPES)


def write_frames(frames_dir: str, dive: SyntheticDive, quality: int = 90) -> int:
    """Renders one dive into `<frames_dir>/<event>/<index>/%05d.jpg`; returns the frame count."""
    folder = os.path.join(frames_dir, dive.key[0], str(dive.key[1]))
    os.makedirs(folder, exist_ok=True)
    n = 0
    for n, frame in enumerate(DiveRenderer(dive.plan).frames(), start=1):
        Image.fromarray(frame).save(os.path.join(folder, f"{n - 1:05d}.jpg"), quality=quality)
    return n


def _write_one(args):
    frames_dir, dive = args
    return write_frames(frames_dir, dive)


def read_manifest(root: str) -> dict | None:
    try:
        with open(os.path.join(root, MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def manifest_for(num_videos: int, seed: int, test_share: float, late_share: float = 0.0) -> dict:
    out = {
        "generator": "fdperf.synthetic",
        "fdperf_version": __version__,
        "videos": int(num_videos),
        "seed": int(seed),
        "test_share": float(test_share),
    }
    if late_share:
        out["late_share"] = float(late_share)
    return out


def generate_dataset(
    out: str,
    num_videos: int = 120,
    seed: int = 0,
    *,
    test_share: float = 0.25,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    late_share: float = 0.0,
) -> SyntheticDataset:
    """Generates `num_videos` synthetic dives under `out` (see the module docstring).

    Refuses an `out` that already holds frames/, Annotations/ or synth.json unless `overwrite`
    (which deletes those three, nothing else).
    """
    out = os.fspath(out)
    frames_dir = os.path.join(out, "frames")
    ann_dir = os.path.join(out, "Annotations")
    existing = [p for p in (frames_dir, ann_dir, os.path.join(out, MANIFEST)) if os.path.exists(p)]
    if existing and not overwrite:
        raise FileExistsError(
            f"{out} already holds a generated set ({', '.join(existing)}); "
            "pass overwrite=True (--overwrite) to replace it"
        )
    for p in existing:
        shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    dives = sample_dives(num_videos, seed, late_share=late_share)
    train_keys, test_keys = split_dives(dives, seed, test_share)
    os.makedirs(frames_dir, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, 2, num_videos))
    jobs = [(frames_dir, d) for d in dives]
    bar = _progress(num_videos, "render dives", progress)
    if workers == 1:
        for job in jobs:
            _write_one(job)
            bar.update(1)
    else:
        # spawn, not fork: the parent may have started torch's thread pools.
        with mp.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_one, jobs, chunksize=2):
                bar.update(1)
    bar.close()
    write_annotations(ann_dir, dives, train_keys, test_keys)
    with open(os.path.join(out, MANIFEST + ".tmp"), "w") as f:
        json.dump(manifest_for(num_videos, seed, test_share, late_share), f, indent=1)
    os.replace(os.path.join(out, MANIFEST + ".tmp"), os.path.join(out, MANIFEST))
    return SyntheticDataset(out, frames_dir, ann_dir, train_keys, test_keys)


def _progress(total, desc, enabled):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="dive", disable=not enabled, leave=False)
