"""Scoring new dives: video files or frame folders -> I3D features -> votes against exemplars.

`score_dives` is the library behind `fdperf score`. It reuses the other stages as they are:
`fdperf.extract.extract_features` (decoding, preprocessing and I3D with the exemplar store's own
settings, read from its attributes) writes the dives into a temporary store, and
`fdperf.evaluate.vote` scores them against exemplars of the given dive number, chosen as
`fdperf.evaluate` chooses them (`voting_exemplars`, same seed). Every dive of a call is scored
against the same exemplars, so their scores compare. Predicted transitions are mapped from the
96 sampled frames back to frame numbers of the input.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch

from ..backbone import RANDOM_INIT
from ..backbone.weights import file_sha256
from ..data import key_to_str, voting_exemplars
from ..device import resolve_device
from ..errors import UserError
from ..evaluate import vote
from ..extract import ExtractOptions, extract_features
from ..features.store import FeatureStore
from ..features.videoset import (
    VideoSet,
    as_annotations,
    dive_vocabulary,
    load_store,
    store_identity,
    video_set,
)
from ..tsa.checkpoint import check_store, load_model
from ..tsa.decode import set_decode
from ..video import FrameFolder, VideoFile, folder_frame_indices, probe, snippet_starts, video_frame_indices

VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
JPEG_EXTS = (".jpg", ".jpeg")
EVENT = "score"  # the event of the query keys in the temporary store: (EVENT, input number)


@dataclass
class DiveInput:
    """One dive to score: a video file (optionally cut to [start, end]) or a frame folder."""

    path: str
    kind: str  # "video" or "frames"
    start: int | None = None
    end: int | None = None

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    def frame_files(self) -> list[str]:
        return sorted(
            e.name for e in os.scandir(self.path) if e.is_file() and e.name.lower().endswith(JPEG_EXTS)
        )


def collect_inputs(paths, start: int | None = None, end: int | None = None) -> list[DiveInput]:
    """Inputs from the command line: video files, frame folders (JPEG files) and folders of
    videos (each video one dive). Errors name the path."""
    if (start is None) != (end is None):
        raise UserError("give both --start and --end (the dive's first and last frame), or neither")
    out = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isfile(p):
            out.append(DiveInput(p, "video", start, end))
        elif os.path.isdir(p):
            names = sorted(os.listdir(p))
            if any(n.lower().endswith(JPEG_EXTS) for n in names):
                out.append(DiveInput(p, "frames"))
                continue
            videos = [os.path.join(p, n) for n in names if n.lower().endswith(VIDEO_EXTS)]
            if not videos:
                raise UserError(f"{p}: neither JPEG frames nor video files ({', '.join(VIDEO_EXTS)})")
            out += [DiveInput(v, "video", start, end) for v in videos]
        else:
            raise UserError(f"input not found: {p}")
    if not out:
        raise UserError("no input dives given")
    if start is not None and any(i.kind == "frames" for i in out):
        raise UserError("--start/--end cut video files; a frame folder is already one dive")
    return out


class Sources:
    """The `resolve(key)` face of `fdperf.extract.Inputs` for a list of DiveInputs (key =
    (EVENT, position in the list)), so that extraction reads them exactly as a store's inputs."""

    def __init__(self, inputs: list[DiveInput]):
        self.inputs = inputs

    def resolve(self, key) -> FrameFolder | VideoFile:
        src = self.inputs[int(key[1])]
        if src.kind == "video":
            return VideoFile((EVENT, int(key[1])), src.path, src.start, src.end)
        names = src.frame_files()
        idx = folder_frame_indices(names)
        return FrameFolder((EVENT, int(key[1])), tuple(os.path.join(src.path, names[i]) for i in idx))

    def input_frames(self, i: int) -> np.ndarray:
        """Frame number in the input of each of the 96 sampled frames (numbered JPEG names give
        their number, other names their position in the sorted folder)."""
        src = self.inputs[i]
        if src.kind == "video":
            return video_frame_indices(self.resolve((EVENT, i)), probe(src.path)[1])
        names = src.frame_files()
        idx = folder_frame_indices(names)
        stems = [os.path.splitext(n)[0] for n in names]
        numbered = all(s.isdigit() for s in stems)
        return np.array([int(stems[j]) if numbered else int(j) for j in idx])


def extraction_options(
    store: FeatureStore, device: torch.device, precision: str | None, progress: bool
) -> ExtractOptions:
    """The exemplar store's extraction settings (preprocess, snippets, backbone execution, seed)."""
    a = store.attrs
    starts = [int(s) for s in np.atleast_1d(a.get("snippet_starts", snippet_starts(store.num_snippets)))]
    if starts != snippet_starts(len(starts)):
        raise UserError(f"{store.path}: snippet starts {starts} are not fdperf's; cannot extract alike")
    exec_ = str(a.get("backbone_exec", ""))
    same_device = a.get("device_type") == device.type
    return ExtractOptions(
        device=str(device),
        preprocess=str(a.get("preprocess", "reference")),
        num_snippets=len(starts),
        seed=int(a.get("seed", 0)),
        precision=precision or (str(a["precision"]) if same_device and "precision" in a else None),
        fuse=not exec_.startswith("as written"),
        channels_last=("channels_last_3d" in exec_) if exec_ else None,
        overwrite=True,
        progress=progress,
    )


def check_backbone(store: FeatureStore, weights, random_init: bool) -> None:
    """The dives' I3D must be the one the exemplars were extracted with."""
    want = store.attrs.get("weights_sha256")
    if weights is None and not random_init:
        raise UserError(
            "give the I3D weights the exemplar store was made with (--weights), or "
            "--random-init for a store made with a random I3D"
        )
    if weights is not None and not os.path.isfile(weights):
        raise UserError(f"I3D weights file not found: {weights}")
    have = RANDOM_INIT if weights is None else file_sha256(weights)
    if want and have != want:
        raise UserError(
            f"{weights or '--random-init'}: not the I3D of the exemplar store {store.path} "
            f"(weights sha256 {have[:16]}..., the store's {str(want)[:16]}...)"
        )


class _WithQuery:
    """Annotations plus one unlabelled query of a given dive number (for `voting_exemplars`)."""

    KEY = ("__query__", 0)

    def __init__(self, annotations, dive_number: str):
        self.annotations, self.query = annotations, SimpleNamespace(dive_number=dive_number)

    def __getitem__(self, key):
        return self.query if tuple(key) == self.KEY else self.annotations[key]


def pick_exemplars(annotations, store: FeatureStore, dive_number: str, m: int, seed: int):
    """(the annotations' spelling of `dive_number`, exemplar keys): up to `m` training dives of
    that dive number with features in `store`, drawn as `fdperf.evaluate` draws a test dive's."""
    train = [k for k in annotations.train_keys if k in store]
    spelled = sorted(
        {
            annotations[k].dive_number
            for k in train
            if annotations[k].dive_number.lower() == dive_number.strip().lower()
        }
    )
    if not spelled:
        raise UserError(
            f"dive number {dive_number}: no training dive of it in {annotations.folder or 'the annotations'} "
            f"has features in {store.path}, so there is no exemplar to compare with"
        )
    rows, valid = voting_exemplars(
        _WithQuery(annotations, spelled[0]), [_WithQuery.KEY], train, m=m, policy="dive_number", seed=seed
    )
    return spelled[0], [train[r] for r in rows[0][valid[0]].tolist()]


@dataclass
class DiveScore:
    """The result for one input: its score, votes, transitions and steps, or its error."""

    input: DiveInput
    error: str | None = None
    score: float | None = None
    exemplars: list = field(default_factory=list)  # {key, score, delta, vote, step_deltas}
    transitions: list = field(default_factory=list)  # in the 96 sampled frames
    transition_frames: list = field(default_factory=list)  # in frame numbers of the input
    steps: list = field(default_factory=list)  # {step, first_frame, last_frame, relative_score}
    probs: np.ndarray | None = field(default=None, repr=False)  # [96, L]

    def to_json(self) -> dict:
        out = {
            "input": self.input.path,
            "name": self.input.name,
            "kind": self.input.kind,
            "start": self.input.start,
            "end": self.input.end,
        }
        if self.error is not None:
            return {**out, "error": self.error}
        return {
            **out,
            "score": self.score,
            "transitions_sampled": self.transitions,
            "transition_frames": self.transition_frames,
            "steps": self.steps,
            "exemplars": self.exemplars,
        }


@dataclass
class ScoreRun:
    dives: list
    dive_number: str
    difficulty: float
    settings: dict
    seconds: dict

    @property
    def failed(self) -> list:
        return [d for d in self.dives if d.error is not None]


def _extract(
    inputs, work_dir, store: FeatureStore, weights, random_init, device, precision, progress
) -> tuple[str, dict]:
    """Features of the inputs in a store under `work_dir`; returns (path, {row: error})."""
    opts = extraction_options(store, device, precision, progress and len(inputs) > 1)
    path = os.path.join(work_dir, "dives.h5")
    keys = [(EVENT, i) for i in range(len(inputs))]
    res = extract_features(
        path, keys, Sources(inputs), weights=weights, random_init=random_init, options=opts
    )
    return path, {int(k[1]): reason for k, reason in res.errors}


def _query_set(
    path: str, rows: list[int], device, num_transitions: int, dive_id: int, difficulty: float
) -> VideoSet:
    """The scored dives as a VideoSet (no labels: zero scores and placeholder transitions,
    which voting with predicted transitions never reads)."""
    qstore = FeatureStore(path, allow_partial=True)
    feats, _ = qstore.load(device, maps=False)
    idx = torch.tensor([qstore.index_of((EVENT, r)) for r in rows], dtype=torch.long, device=device)
    n = len(rows)
    placeholder = torch.arange(1, num_transitions + 1, device=device).expand(n, -1).contiguous()
    return VideoSet(
        [(EVENT, r) for r in rows],
        feats.index_select(0, idx),
        None,
        torch.zeros(n, device=device),
        placeholder,
        torch.full((n,), dive_id, dtype=torch.long, device=device),
        torch.full((n,), difficulty, device=device),
    )


def _load_model(checkpoint, layout, decode, device, num_snippets: int):
    model, ckpt = load_model(checkpoint, layout=layout, map_location="cpu")
    set_decode(model, decode)
    if getattr(model, "oracle", False):
        model.oracle = False  # a new dive has no ground-truth transitions: predict them
    if getattr(model, "in_channels", num_snippets) != num_snippets:
        raise UserError(
            f"{checkpoint}: the model takes {model.in_channels} snippets per video, "
            f"the exemplar store has {num_snippets}"
        )
    return model.to(device).eval(), ckpt


def score_dives(
    inputs: list[DiveInput],
    *,
    checkpoint,
    store,
    annotations,
    dive_number: str,
    weights=None,
    random_init: bool = False,
    voter_number: int = 10,
    seed: int = 0,
    decode: str | None = None,
    layout: str | None = None,
    device=None,
    precision: str | None = None,
    view: int | None = None,
    progress: bool = True,
) -> ScoreRun:
    """Scores `inputs` (dives of `dive_number`) with `checkpoint` against up to `voter_number`
    exemplars of that dive number from the feature store `store` and its `annotations`.
    Inputs that cannot be read are returned with their error; the others with their scores."""
    device = resolve_device(device)
    fstore = FeatureStore(store)
    check_backbone(fstore, weights, random_init)
    model, ckpt = _load_model(checkpoint, layout, decode, device, fstore.num_snippets)
    # the exemplars' features must come from the kind of store the checkpoint was trained on
    check_store(
        ckpt,
        store_identity(fstore),
        checkpoint_path=checkpoint,
        store_path=store,
        log=lambda line: print(line, file=sys.stderr),
    )
    L = getattr(model, "num_transitions", 2)
    ann = as_annotations(annotations, L)
    dn, ex_keys = pick_exemplars(ann, fstore, dive_number, voter_number, seed)
    vocab = ckpt.get("dive_numbers") or dive_vocabulary(ann, ann.train_keys)
    difficulty = float(ann[ex_keys[0]].difficulty)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fdperf-score-") as tmp:
        path, errors = _extract(inputs, tmp, fstore, weights, random_init, device, precision, progress)
        ok = [i for i in range(len(inputs)) if i not in errors]
        if not ok:
            first = min(errors)
            raise UserError(
                errors[first]
                if inputs[first].path in errors[first]
                else f"{inputs[first].path}: {errors[first]}"
            )
        queries = _query_set(path, ok, device, L, vocab.index(dn) if dn in vocab else len(vocab), difficulty)
    t_extract = time.perf_counter() - t0
    t0 = time.perf_counter()
    s, feats, fmaps = load_store(store, device, maps=model.needs_maps, view=view)
    exemplars = video_set(s, feats, fmaps, ann, ex_keys, vocab, device)
    del feats, fmaps
    m = len(ex_keys)
    rows = torch.arange(m, device=device).expand(len(ok), m)
    votes = vote(model, queries, exemplars, rows, torch.ones_like(rows, dtype=torch.bool))
    probs = None
    if model.segments:
        with torch.no_grad():
            probs = model.encode(queries.features, query=True, memory=False)["probs"].float().cpu().numpy()
    t_vote = time.perf_counter() - t0
    sources = Sources(inputs)
    dives = [DiveScore(inp, error=errors.get(i)) for i, inp in enumerate(inputs)]
    for j, i in enumerate(ok):
        _fill(dives[i], j, votes, exemplars, sources.input_frames(i), None if probs is None else probs[j])
    settings = {
        "checkpoint": str(checkpoint),
        "method": ckpt.get("method", model.method),
        "store": str(store),
        "annotations": str(getattr(ann, "folder", annotations)),
        "dive_number": dn,
        "voter_number": voter_number,
        "seed": seed,
        "decode": getattr(model, "decode", None),
        "device": str(device),
        "weights": RANDOM_INIT if weights is None else str(weights),
    }
    return ScoreRun(dives, dn, difficulty, settings, {"extract": t_extract, "vote": t_vote})


def _fill(dive: DiveScore, j: int, votes, exemplars: VideoSet, frames: np.ndarray, probs) -> None:
    """Row j of the votes into `dive`, transitions mapped to the input's frame numbers."""
    ex_scores = exemplars.scores.cpu().numpy()
    deltas, sd = votes.deltas[j].cpu().numpy(), votes.step_deltas[j].cpu().numpy()
    dive.score = float(votes.scores[j])
    dive.exemplars = [
        {
            "key": key_to_str(k),
            "score": float(ex_scores[e]),
            "delta": float(deltas[e]),
            "vote": float(ex_scores[e] + deltas[e]),
            "step_deltas": [float(v) for v in sd[e]],
        }
        for e, k in enumerate(exemplars.keys)
    ]
    dive.probs = probs
    if votes.bounds is None:  # a method without steps (F+R): one step, the whole dive
        dive.steps = [
            {
                "step": 1,
                "first_frame": int(frames[0]),
                "last_frame": int(frames[-1]),
                "relative_score": float(sd[:, 0].mean()),
            }
        ]
        return
    b = votes.bounds[j].cpu().tolist()
    dive.transitions = [int(t) for t in b]
    dive.transition_frames = [int(frames[t]) for t in b]
    firsts = [int(frames[0])] + dive.transition_frames
    lasts = [f - 1 for f in dive.transition_frames] + [int(frames[-1])]
    dive.steps = [
        {
            "step": s + 1,
            "first_frame": firsts[s],
            "last_frame": max(lasts[s], firsts[s]),
            "relative_score": float(sd[:, s].mean()),
        }
        for s in range(len(firsts))
    ]
