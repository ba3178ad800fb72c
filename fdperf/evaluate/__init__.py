"""Multi-exemplar voting and evaluation of a trained TSA (or baseline) checkpoint.

Every video is encoded once (PSNet, transitions, step tokens): test videos as queries, the
training videos that serve as exemplars as memories. All (query, exemplar) pairs are then decoded
in batched launches through `step_attention`'s index, which points each pair at its exemplar's
cached tokens instead of copying them. Score of a query = mean over its exemplars j of
`y_j + delta_j` (docs/design.md §7).

`evaluate` refuses a store of another identity than the checkpoint's training store (unless
`allow_store_mismatch`), NaN/inf features and non-finite votes; predictions.csv has the columns
`prediction_columns(L)` (`PREDICTION_COLUMNS` for FineDiving's L = 2 transitions).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import metrics as M
from ..data import key_to_str, voting_exemplars
from ..data.exemplars import POLICIES
from ..device import resolve_device
from ..errors import UserError
from ..features.videoset import (
    VideoSet,
    as_annotations,
    dive_vocabulary,
    load_store,
    open_store,
    store_identity,
    video_set,
)
from ..options import ConfigError, int_at_least, one_of
from ..tsa import PairModel
from ..tsa.decode import set_decode

TRANSITIONS = ("predicted", "oracle")
SPLITS = ("test", "train")


def prediction_columns(num_transitions: int = 2) -> tuple:
    """The columns of predictions.csv, in order, for videos with `num_transitions` transitions:
    the query (key, dive_number, difficulty, true_score, pred_score, error = pred - true), its
    true and predicted transitions (sampled-frame indices; empty for methods without them), tIoU,
    then its exemplars (`;`-separated, one entry per exemplar: keys, scores, deltas and the deltas
    of every step)."""
    L = num_transitions
    return (
        ("key", "dive_number", "difficulty", "true_score", "pred_score", "error")
        + tuple(f"true_t{k + 1}" for k in range(L))
        + tuple(f"pred_t{k + 1}" for k in range(L))
        + ("tiou", "num_exemplars", "exemplar_keys", "exemplar_scores", "deltas")
        + tuple(f"step{s + 1}_deltas" for s in range(L + 1))
    )


# predictions.csv of FineDiving (2 transitions, 3 steps): the one list of its columns
PREDICTION_COLUMNS = prediction_columns(2)


class NonFiniteVotes(UserError, ValueError):
    """Voting produced NaN/inf scores (a checkpoint with non-finite weights)."""


def _encode(
    model: PairModel,
    videos: VideoSet,
    rows: torch.Tensor,
    use_gt: bool,
    query: bool,
    memory: bool,
    chunk: int,
) -> dict:
    """model.encode over `rows` of `videos` in chunks of `chunk` videos, caches concatenated."""
    parts = []
    for start in range(0, rows.numel(), chunk):
        r = rows[start : start + chunk]
        maps = (
            None
            if (videos.maps is None or not memory or not model.needs_maps)
            else videos.maps.index_select(0, r)
        )
        parts.append(
            model.encode(
                videos.features.index_select(0, r),
                maps,
                videos.dive_ids.index_select(0, r),
                videos.bounds.index_select(0, r),
                use_gt=use_gt,
                query=query,
                memory=memory,
            )
        )
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


@dataclass
class Votes:
    """Voting output for Nq queries and M exemplar slots (tensors on the voting device)."""

    scores: torch.Tensor  # [Nq] predicted scores
    deltas: torch.Tensor  # [Nq, M] relative score per exemplar
    step_deltas: torch.Tensor  # [Nq, M, S]
    valid: torch.Tensor  # [Nq, M] bool
    bounds: torch.Tensor | None  # [Nq, L] query transitions used (None: no segmentation)


@torch.no_grad()
def vote(
    model: PairModel,
    queries: VideoSet,
    exemplars: VideoSet,
    rows: torch.Tensor,
    valid: torch.Tensor,
    transitions: str = "predicted",
    batch_pairs: int | None = None,
    encode_chunk: int = 512,
    amp: bool = False,
) -> Votes:
    """Scores every query against its exemplars `rows` [Nq, M] (rows of `exemplars`, `valid`
    marks the real ones). PSNet runs once per video; pairs are decoded in batches of
    `batch_pairs` (all at once by default)."""
    if transitions not in TRANSITIONS:
        raise ValueError(f"transitions must be one of {TRANSITIONS}, got {transitions!r}")
    if rows.shape != valid.shape or rows.dim() != 2:
        raise ValueError(
            f"rows and valid must both be [Nq, M], got {tuple(rows.shape)} and {tuple(valid.shape)}"
        )
    if not bool(valid.any(1).all()):
        raise ValueError("every query needs at least one valid exemplar")
    device = queries.features.device
    was_training = model.training
    model.eval()
    oracle = transitions == "oracle"
    rows, valid = rows.to(device), valid.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        used, slot = torch.unique(rows[valid], return_inverse=True)  # exemplars actually voting
        lookup = torch.zeros(len(exemplars), dtype=torch.long, device=device)
        lookup[used] = torch.arange(used.numel(), device=device)
        ecache = _encode(model, exemplars, used, oracle, query=False, memory=True, chunk=encode_chunk)
        qcache = _encode(
            model,
            queries,
            torch.arange(len(queries), device=device),
            oracle,
            query=True,
            memory=False,
            chunk=encode_chunk,
        )
        nq, m = rows.shape
        q_index = torch.arange(nq, device=device).repeat_interleave(m)
        e_index = lookup[rows.reshape(-1)]
        step = batch_pairs or q_index.numel()
        sd = torch.cat(
            [
                model.step_deltas(qcache, ecache, q_index[s : s + step], e_index[s : s + step]).float()
                for s in range(0, q_index.numel(), step)
            ]
        )
    model.train(was_training)
    sd = sd.reshape(nq, m, -1)
    deltas = sd.mean(-1)
    w = valid.float()
    scores = ((deltas + exemplars.scores[rows]) * w).sum(1) / w.sum(1)
    return Votes(scores, deltas, sd, valid, qcache.get("bounds"))


def score_metrics(pred, true, pred_bounds=None, true_bounds=None) -> dict:
    """rho, R-l2 (x100, squared as the reference), L2 and, with transitions, AIoU@0.5/0.75 (%)."""
    out = {
        "rho": M.spearman(pred, true),
        "rl2": M.relative_l2(pred, true),
        "l2": M.l2(pred, true),
        "num_videos": int(len(true)),
    }
    if pred_bounds is not None:
        out["aiou50"] = M.aiou(pred_bounds, true_bounds, 0.5)
        out["aiou75"] = M.aiou(pred_bounds, true_bounds, 0.75)
    return out


def predictions_table(queries: VideoSet, exemplars: VideoSet, rows, votes: Votes, annotations) -> list:
    """The rows of predictions.csv, dicts keyed by `prediction_columns(L)` in that order."""
    scores = votes.scores.cpu().numpy()
    true = queries.scores.cpu().numpy()
    gt = queries.bounds.cpu().numpy()
    pb = None if votes.bounds is None else votes.bounds.cpu().numpy()
    tious = None if pb is None else M.tiou(pb, gt)
    rows, valid = rows.cpu().numpy(), votes.valid.cpu().numpy()
    deltas, sd = votes.deltas.cpu().numpy(), votes.step_deltas.cpu().numpy()
    ex_scores = exemplars.scores.cpu().numpy()
    L = gt.shape[1]
    segments = pb is not None
    table = []
    for i, key in enumerate(queries.keys):
        sample = annotations[key]
        js = np.flatnonzero(valid[i])
        row = {
            "key": key_to_str(key),
            "dive_number": sample.dive_number,
            "difficulty": f"{sample.difficulty:g}",
            "true_score": f"{true[i]:.4f}",
            "pred_score": f"{scores[i]:.4f}",
            "error": f"{scores[i] - true[i]:.4f}",
        }
        for k in range(L):
            row[f"true_t{k + 1}"] = int(gt[i, k])
        for k in range(L):
            row[f"pred_t{k + 1}"] = int(pb[i, k]) if segments else ""
        row["tiou"] = f"{tious[i]:.4f}" if segments else ""
        row["num_exemplars"] = len(js)
        row["exemplar_keys"] = ";".join(key_to_str(exemplars.keys[rows[i, j]]) for j in js)
        row["exemplar_scores"] = ";".join(f"{ex_scores[rows[i, j]]:.4f}" for j in js)
        row["deltas"] = ";".join(f"{deltas[i, j]:.4f}" for j in js)
        for s in range(L + 1):
            row[f"step{s + 1}_deltas"] = ";".join(f"{sd[i, j, s]:.4f}" for j in js) if segments else ""
        table.append(row)
    return table


def write_csv(path, table: list, columns=PREDICTION_COLUMNS) -> Path:
    """Writes `table` (rows from `predictions_table`) with exactly `columns`, in that order."""
    path = Path(path)
    for i, row in enumerate(table):
        if tuple(row) != tuple(columns):
            raise ValueError(f"{path}: row {i} has columns {list(row)}, expected {list(columns)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows(table)
    return path


@dataclass
class EvalResult:
    metrics: dict  # rho, rl2, l2, aiou50, aiou75, settings, timings
    metrics_path: Path
    predictions_path: Path
    votes: Votes = field(repr=False)


def check_options(
    voter_number: int,
    policy: str,
    seed: int,
    transitions: str | None,
    split: str,
    batch_pairs: int | None,
    view: int | None,
) -> None:
    """Range checks of evaluate's options, before anything is loaded (ConfigError)."""
    int_at_least("voter_number", voter_number, 1)
    int_at_least("seed", seed, 0)
    one_of("policy", policy, POLICIES)
    if transitions is not None:
        one_of("transitions", transitions, TRANSITIONS)
    one_of("split", split, SPLITS)
    if batch_pairs is not None:
        int_at_least("batch-pairs", batch_pairs, 1)
    if view is not None:
        int_at_least("view", view, 0)


def _transitions(model: PairModel, requested: str | None, checkpoint) -> str:
    """The transitions to vote with: oracle for TSA-oracle by default; refused for methods
    that predict none (the F+R family), where "oracle" would be recorded but mean nothing."""
    if requested is None:
        return "oracle" if getattr(model, "oracle", False) else "predicted"
    if requested == "oracle" and not model.segments:
        raise ConfigError(
            f"--transitions oracle: {checkpoint} holds a {model.method} model, which "
            "has no transitions; leave --transitions out (it applies to TSA, "
            "TSA-oracle and F+S+R)"
        )
    return requested


def _check_votes(votes: Votes, queries: VideoSet, checkpoint) -> None:
    """Refuses NaN/inf scores (the features are checked on loading: the weights are to blame)."""
    bad = torch.nonzero(~torch.isfinite(votes.scores)).flatten().tolist()
    if bad:
        more = f" and {len(bad) - 1} other video(s)" if len(bad) > 1 else ""
        raise NonFiniteVotes(
            f"{checkpoint}: voting gave a non-finite score for "
            f"{key_to_str(queries.keys[bad[0]])}{more}; the checkpoint's weights are "
            "not finite (a diverged training?): evaluate another checkpoint"
        )


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def write_outputs(out_dir, result: dict, queries: VideoSet, exemplars: VideoSet, rows, votes, ann):
    """`metrics.json` and `predictions.csv` of one evaluation; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(result, indent=2) + "\n")
    table = predictions_table(queries, exemplars, rows, votes, ann)
    pred_path = write_csv(out / "predictions.csv", table, prediction_columns(queries.bounds.shape[1]))
    return metrics_path, pred_path


def evaluate(
    checkpoint,
    store_path,
    annotations,
    out_dir,
    *,
    voter_number: int = 10,
    policy: str = "dive_number",
    seed: int = 0,
    transitions: str | None = None,
    device=None,
    layout: str | None = None,
    view: int | None = None,
    batch_pairs: int | None = None,
    amp: bool = False,
    split: str = "test",
    allow_store_mismatch: bool = False,
    log=None,
    decode: str | None = None,
) -> EvalResult:
    """Votes with `checkpoint` (fdperf's or a reference `last.pth`) on the `split` videos of a
    feature store; writes `metrics.json` and `predictions.csv` into `out_dir`.

    transitions: "predicted" or "oracle" (ground truth; refused for methods without
    transitions); default "oracle" for TSA-oracle checkpoints, "predicted" otherwise. policy:
    exemplar choice ("dive_number", "random", "difficulty"); voter_number: exemplars per query
    (M). A store whose identity differs from the checkpoint's training store is refused unless
    `allow_store_mismatch` (recorded as metrics["store_check"]); warnings go to `log` (stderr).
    decode: transition decoding ("window" or "ordered"); default: the checkpoint's.
    """
    from ..tsa.checkpoint import check_store, load_model

    check_options(voter_number, policy, seed, transitions, split, batch_pairs, view)
    log = log or _stderr
    device = resolve_device(device)
    model, ckpt = load_model(checkpoint, layout=layout, map_location="cpu")
    set_decode(model, decode)
    model.to(device)
    transitions = _transitions(model, transitions, checkpoint)
    ann = as_annotations(annotations, getattr(model, "num_transitions", 2))
    vocab = ckpt.get("dive_numbers") or dive_vocabulary(ann, ann.train_keys)
    t0 = time.perf_counter()
    store = open_store(store_path)
    identity = store_identity(store)
    store_check = check_store(
        ckpt, identity, checkpoint_path=checkpoint, store_path=store.path, allow=allow_store_mismatch, log=log
    )
    store, feats, fmaps = load_store(store, device, maps=model.needs_maps, view=view)
    qkeys = ann.test_keys if split == "test" else ann.train_keys
    queries = video_set(store, feats, fmaps, ann, qkeys, vocab, device)
    exemplars = video_set(store, feats, fmaps, ann, ann.train_keys, vocab, device)
    del feats, fmaps
    t_load = time.perf_counter() - t0
    rows, valid = voting_exemplars(ann, qkeys, ann.train_keys, m=voter_number, policy=policy, seed=seed)
    t0 = time.perf_counter()
    votes = vote(
        model, queries, exemplars, rows, valid, transitions=transitions, batch_pairs=batch_pairs, amp=amp
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t_vote = time.perf_counter() - t0
    _check_votes(votes, queries, checkpoint)
    result = score_metrics(
        votes.scores, queries.scores, None if votes.bounds is None else votes.bounds, queries.bounds
    )
    result.update(
        method=ckpt.get("method", model.method),
        checkpoint=str(checkpoint),
        checkpoint_format=ckpt.get("format"),
        checkpoint_epoch=ckpt.get("epoch"),
        store=str(store_path),
        split=split,
        voter_number=voter_number,
        policy=policy,
        seed=seed,
        transitions=transitions,
        layout=getattr(model, "layout", None),
        decode=getattr(model, "decode", None),
        num_pairs=int(valid.sum()),
        device=str(device),
        amp=amp,
        store_identity=identity,
        store_check=store_check,
        seconds_load=t_load,
        seconds_vote=t_vote,
    )
    metrics_path, pred_path = write_outputs(out_dir, result, queries, exemplars, rows, votes, ann)
    return EvalResult(result, metrics_path, pred_path, votes)
