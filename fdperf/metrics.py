"""AQA metrics as the TSA reference computes them (docs/design.md §7).

Inputs are array-likes (lists, numpy arrays or tensors); results are Python floats.
"""

from __future__ import annotations

import numpy as np


def _as_1d(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds non-finite values")
    return a


def _pair(pred, true):
    p, t = _as_1d(pred, "pred"), _as_1d(true, "true")
    if p.shape != t.shape:
        raise ValueError(f"pred and true differ in length: {p.size} vs {t.size}")
    return p, t


def _ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(1, len(a) + 1)
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(pred, true) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks); NaN if constant."""
    p, t = _pair(pred, true)
    if p.size < 2:
        raise ValueError("spearman needs at least two samples")
    rp, rt = _ranks(p) - (p.size + 1) / 2, _ranks(t) - (t.size + 1) / 2
    denom = np.sqrt((rp * rp).sum() * (rt * rt).sum())
    return float((rp * rt).sum() / denom) if denom > 0 else float("nan")


def relative_l2(pred, true) -> float:
    """R-l2 x 100: mean(((y - y_hat) / (max y - min y))^2) * 100 (the reference's squared form)."""
    p, t = _pair(pred, true)
    span = t.max() - t.min()
    if span <= 0:
        raise ValueError("relative_l2 needs true scores that are not all equal")
    return float(np.mean(((t - p) / span) ** 2) * 100.0)


def l2(pred, true) -> float:
    """Mean squared error of the scores."""
    p, t = _pair(pred, true)
    return float(np.mean((t - p) ** 2))


def _bounds(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"{name} must be [N, L] transition frames with L >= 2, got shape {a.shape}")
    return a


def tiou(pred_bounds, true_bounds) -> np.ndarray:
    """Per-video temporal IoU of [t_1, t_last] (first and last transition) with the prediction."""
    p, t = _bounds(pred_bounds, "pred_bounds"), _bounds(true_bounds, "true_bounds")
    if p.shape[0] != t.shape[0]:
        raise ValueError(f"pred_bounds and true_bounds differ in length: {p.shape[0]} vs {t.shape[0]}")
    ps, pe = np.minimum(p[:, 0], p[:, -1]), np.maximum(p[:, 0], p[:, -1])
    ts, te = t[:, 0], t[:, -1]
    inter = np.clip(np.minimum(pe, te) - np.maximum(ps, ts), 0, None)
    union = (pe - ps) + (te - ts) - inter
    same = (ps == ts) & (pe == te)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), same.astype(float))
    return iou


def aiou(pred_bounds, true_bounds, threshold: float) -> float:
    """AIoU@d in percent: share of videos whose tIoU is at least `threshold`."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return float(np.mean(tiou(pred_bounds, true_bounds) >= threshold) * 100.0)
