"""The visual report of a voting run: one PNG per test video, a summary PNG and a static index.html.

Input is the per-test-video predictions CSV that `fdperf.evaluate` writes (columns in
docs/reference/predictions-csv.md), read by column name. Optional inputs add to the pictures:
- transition probabilities (PSNet's curves): an .npz with one [96, L] array per key
  ("event/index"), or columns `prob_t1..prob_tL` (96 `;`-separated values) in the CSV;
- training logs (`train_log.jsonl` of `fdperf.train`): the summary's training curves;
- other methods' predictions CSVs: drawn beside the main one in the summary scatter;
- the frames folder (`<frames>/<event>/<index>/*.jpg`): a strip of frames along each timeline.

Rendering is headless (matplotlib's Agg backend).
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
import re
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .. import metrics as M  # noqa: E402

NUM_FRAMES = 96
REQUIRED = ("key", "true_score", "pred_score")
STEP_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3")
VIDEO_DPI, VIDEO_SIZE = 100, (12.0, 8.0)  # per-video PNG: 1200 x 800 px
SUMMARY_DPI, SUMMARY_SIZE = 100, (13.0, 5.5)  # summary PNG: 1300 x 550 px


class ReportError(ValueError):
    """A report input is missing or malformed; the message names the file and what is wrong."""


@dataclass
class VideoRow:
    key: str
    true_score: float | None  # None: a dive without a judged score (fdperf score)
    pred_score: float
    dive_number: str = ""
    difficulty: float | None = None
    true_t: list = field(default_factory=list)
    pred_t: list = field(default_factory=list)
    tiou: float | None = None
    exemplar_keys: list = field(default_factory=list)
    exemplar_scores: list = field(default_factory=list)
    deltas: list = field(default_factory=list)
    step_deltas: list = field(default_factory=list)  # per step: one value per exemplar
    probs: np.ndarray | None = None  # [96, L] transition probabilities


def _float(value, where):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ReportError(f"{where}: not a number: {value!r}") from None
    if not math.isfinite(x):  # a NaN would reach the plots and fail there, after videos/ exists
        raise ReportError(f"{where}: not a finite number: {value!r}")
    return x


def _floats(cell, where):
    cell = (cell or "").strip()
    return [] if not cell else [_float(v, where) for v in cell.split(";")]


def _numbered(columns, prefix, suffix=""):
    pat = re.compile(rf"^{re.escape(prefix)}(\d+){re.escape(suffix)}$")
    found = sorted((int(m.group(1)), c) for c in columns if (m := pat.match(c)))
    return [c for _, c in found]


@dataclass(frozen=True)
class _Columns:
    """The numbered columns a predictions CSV has (transitions, per-step deltas, probabilities)."""

    true_t: list
    pred_t: list
    steps: list
    probs: list

    @classmethod
    def of(cls, columns):
        return cls(
            _numbered(columns, "true_t"),
            _numbered(columns, "pred_t"),
            _numbered(columns, "step", "_deltas"),
            _numbered(columns, "prob_t"),
        )


def _read_row(rec: dict, cols: _Columns, where: str) -> VideoRow:
    """One CSV record as a VideoRow; `where` is "file, line n" (the column is added)."""

    def num(c):
        return _float(rec[c], f"{where}, column {c}")

    def nums(c):
        return _floats(rec.get(c), f"{where}, column {c}")

    row = VideoRow(
        key=rec["key"],
        true_score=num("true_score"),
        pred_score=num("pred_score"),
        dive_number=rec.get("dive_number") or "",
    )
    if rec.get("difficulty"):
        row.difficulty = num("difficulty")
    row.true_t = [int(num(c)) for c in cols.true_t if rec.get(c)]
    row.pred_t = [int(num(c)) for c in cols.pred_t if rec.get(c)]
    if rec.get("tiou"):
        row.tiou = num("tiou")
    row.exemplar_keys = [k for k in (rec.get("exemplar_keys") or "").split(";") if k]
    row.exemplar_scores = nums("exemplar_scores")
    row.deltas = nums("deltas")
    row.step_deltas = [nums(c) for c in cols.steps]
    if not any(row.step_deltas):
        row.step_deltas = []
    lengths = {
        len(row.exemplar_keys),
        len(row.exemplar_scores),
        len(row.deltas),
        *(len(s) for s in row.step_deltas),
    } - {0}
    if len(lengths) > 1:
        raise ReportError(f"{where}: exemplar lists of different lengths {sorted(lengths)}")
    probs = [nums(c) for c in cols.probs]
    if any(probs):
        if any(len(p) != NUM_FRAMES for p in probs):
            raise ReportError(f"{where}: prob_t columns need {NUM_FRAMES} values each")
        row.probs = np.asarray(probs, dtype=np.float64).T
    return row


def read_predictions(path) -> list[VideoRow]:
    """Reads a predictions CSV by column name; fails naming the missing columns, or the line and
    column of a value that is not a finite number."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ReportError(f"predictions file not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise ReportError(
                f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(columns) or 'none'}); "
                "expected the predictions CSV of fdperf.evaluate (docs/reference/predictions-csv.md)"
            )
        cols = _Columns.of(columns)
        rows = [_read_row(rec, cols, f"{path}, line {n}") for n, rec in enumerate(reader, start=2)]
    if not rows:
        raise ReportError(f"{path}: no rows")
    return rows


def read_probabilities(path) -> dict:
    """An .npz of transition probabilities: key "event/index" -> [96, L] array."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: np.asarray(z[k], dtype=np.float64) for k in z.files}
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: cannot read transition probabilities ({e})") from e
    for k, v in out.items():
        if v.ndim != 2 or v.shape[0] != NUM_FRAMES:
            raise ReportError(f"{path}: probabilities of {k} have shape {v.shape}, expected [96, L]")
    return out


def read_train_log(path) -> list[dict]:
    """Records of a `train_log.jsonl` (one JSON object per epoch)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ReportError(f"training log not found: {path}")
    recs = []
    with open(path) as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    raise ReportError(f"{path}, line {n}: not JSON ({e})") from None
                if "epoch" not in rec or "loss" not in rec:
                    raise ReportError(f"{path}, line {n}: a training record needs 'epoch' and 'loss'")
                recs.append(rec)
    return recs


def split_metrics(rows: list[VideoRow]) -> dict:
    """rho, R-l2 and, with transitions, AIoU@0.5/0.75, recomputed from the CSV rows."""
    pred = np.array([r.pred_score for r in rows])
    true = np.array([r.true_score for r in rows])
    out = {"rho": M.spearman(pred, true), "rl2": M.relative_l2(pred, true), "num_videos": len(rows)}
    if all(r.pred_t and r.true_t for r in rows):
        pb = np.array([[r.pred_t[0], r.pred_t[-1]] for r in rows])
        tb = np.array([[r.true_t[0], r.true_t[-1]] for r in rows])
        out["aiou50"] = M.aiou(pb, tb, 0.5)
        out["aiou75"] = M.aiou(pb, tb, 0.75)
    return out


def video_filename(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key.replace("/", "__")) + ".png"


def _frame_strip(frames_dir, key, count=6):
    folder = os.path.join(frames_dir, *key.split("/"))
    if not os.path.isdir(folder):
        return None
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpg", ".jpeg", ".png")))
    if not names:
        return None
    from PIL import Image

    sampled = np.linspace(0, len(names) - 1, NUM_FRAMES).astype(int)  # the 96 sampled frames
    picks = np.linspace(0, NUM_FRAMES - 1, count).round().astype(int)
    tiles = []
    for p in picks:
        with Image.open(os.path.join(folder, names[sampled[p]])) as im:
            tiles.append(np.asarray(im.convert("RGB").resize((342, 192))))
    return picks, tiles


def _step_bar(ax, bounds, y, label, height):
    edges = [0, *bounds, NUM_FRAMES]
    for s in range(len(edges) - 1):
        ax.barh(
            y,
            edges[s + 1] - edges[s],
            left=edges[s],
            height=height,
            color=STEP_COLOURS[s % len(STEP_COLOURS)],
            edgecolor="white",
        )
        ax.text(
            (edges[s] + edges[s + 1]) / 2,
            y,
            f"step {s + 1}",
            ha="center",
            va="center",
            color="white",
            fontsize=8,
        )
    ax.text(-1, y, label, ha="right", va="center", fontsize=9)


def video_title(row: VideoRow, method: str = "") -> str:
    title = f"{row.key}   dive {row.dive_number}" + (f" (DD {row.difficulty:g})" if row.difficulty else "")
    true = "" if row.true_score is None else f"   true {row.true_score:.2f}"
    return f"{title}{true}   predicted {row.pred_score:.2f}" + (f"   [{method}]" if method else "")


def draw_frame_strip(ax, strip) -> None:
    """Panel: frames sampled along the video (or a note that no frames folder was given)."""
    if strip is None:
        ax.axis("off")
        ax.text(0.5, 0.5, "frames not given (--frames)", ha="center", va="center", color="grey")
        return
    picks, tiles = strip
    ax.imshow(np.concatenate(tiles, axis=1))
    ax.set_xticks(
        [(i + 0.5) * tiles[0].shape[1] for i in range(len(picks))], [f"frame {p}" for p in picks], fontsize=7
    )
    ax.set_yticks([])


def draw_transition_probabilities(ax, probs) -> None:
    """PSNet's per-frame transition probabilities [96, L] as one curve per transition."""
    if probs is None:
        ax.text(48, 0.5, "no transition probabilities for this method", ha="center", color="grey")
        return
    for k in range(probs.shape[1]):
        ax.plot(
            np.arange(NUM_FRAMES),
            probs[:, k],
            color=STEP_COLOURS[(k + 1) % 5],
            lw=1.5,
            label=f"P(transition {k + 1}) (left axis)",
        )


def draw_transitions(ax, row: VideoRow) -> None:
    """True (solid) and predicted (dashed) transitions as vertical lines, with legend entries."""
    for t in row.true_t:
        ax.axvline(t, color="black", lw=1.5)
    for t in row.pred_t:
        ax.axvline(t, color="crimson", lw=1.5, ls="--")
    if row.true_t:
        ax.plot([], [], color="black", lw=1.5, label="true transition")
    if row.pred_t:
        ax.plot([], [], color="crimson", lw=1.5, ls="--", label="predicted transition")


def draw_timeline(ax, row: VideoRow) -> None:
    """Panel: true and predicted steps as bars above PSNet's transition probabilities."""
    bars = [(b, label) for b, label in ((row.true_t, "true"), (row.pred_t, "predicted")) if b]
    # Probabilities on their own scale (PSNet's peaks are often far below 1), step bars above.
    top = max(0.05, 1.1 * float(row.probs.max())) if row.probs is not None else 1.0
    for i, (b, label) in enumerate(bars):
        _step_bar(ax, b, top * (1.22 + 0.32 * i), label, 0.26 * top)
    draw_transition_probabilities(ax, row.probs)
    ax.axhline(top * 1.05, color="grey", lw=0.5)
    draw_transitions(ax, row)
    ax.set_xlim(0, NUM_FRAMES)
    ax.set_ylim(0, top * (1.1 + 0.32 * max(len(bars), 1)))
    ax.set_yticks([0, top / 2.2, top / 1.1], [f"{v:.2g}" for v in (0, top / 2.2, top / 1.1)])
    ax.set_xlabel("sampled frame (of 96)")
    ax.legend(
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        fontsize=8,
        ncol=5,
        frameon=False,
        title="timeline" + (f" (tIoU {row.tiou:.2f})" if row.tiou is not None else ""),
        title_fontsize=9,
    )


def draw_step_deltas(ax, row: VideoRow) -> None:
    """Panel: per exemplar, the relative score of each step (bars) and their mean (diamond)."""
    m = len(row.deltas)
    if m:
        x = np.arange(m)
        if row.step_deltas:
            width = 0.8 / len(row.step_deltas)
            for s, d in enumerate(row.step_deltas):
                ax.bar(
                    x - 0.4 + width * (s + 0.5), d, width, color=STEP_COLOURS[s % 5], label=f"step {s + 1}"
                )
        ax.scatter(x, row.deltas, color="black", marker="D", s=18, zorder=3, label="delta (mean)")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(x, [f"{s:.1f}" for s in row.exemplar_scores] if row.exemplar_scores else x, fontsize=7)
        ax.set_xlabel("exemplar (its score)")
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.5, 0.5, "no exemplar deltas", ha="center", transform=ax.transAxes, color="grey")
    ax.set_title("relative score, query minus exemplar", fontsize=10)


def draw_votes(ax, row: VideoRow) -> None:
    """Panel: each exemplar's score and vote (score + delta) against the true and predicted score."""
    m = len(row.deltas)
    if m and len(row.exemplar_scores) == m:
        votes = np.asarray(row.exemplar_scores) + np.asarray(row.deltas)
        ax.scatter(np.arange(m), row.exemplar_scores, color="grey", label="exemplar score", s=18)
        ax.scatter(np.arange(m), votes, color=STEP_COLOURS[0], label="exemplar + delta (vote)", s=22)
        ax.set_xticks(np.arange(m), [str(j + 1) for j in range(m)], fontsize=7)
        ax.set_xlabel("exemplar")
    if row.true_score is not None:
        ax.axhline(row.true_score, color="black", lw=1.5, label=f"true {row.true_score:.2f}")
    ax.axhline(row.pred_score, color="crimson", lw=1.5, ls="--", label=f"predicted {row.pred_score:.2f}")
    ax.set_ylabel("score")
    ax.set_title(
        "voting: predicted" + (" vs true" if row.true_score is not None else "") + " score", fontsize=10
    )
    ax.legend(fontsize=7)


def render_video(row: VideoRow, path, frames_dir=None, method: str = "") -> str:
    """One test video's PNG: frame strip, timeline with transitions and probabilities, step
    deltas per exemplar, the exemplars' votes against the true score."""
    strip = _frame_strip(frames_dir, row.key) if frames_dir else None
    fig = plt.figure(figsize=VIDEO_SIZE, dpi=VIDEO_DPI)
    grid = fig.add_gridspec(
        3,
        2,
        height_ratios=[1.25, 1.2, 1.4],
        hspace=0.45,
        wspace=0.22,
        left=0.08,
        right=0.98,
        top=0.9,
        bottom=0.08,
    )
    fig.suptitle(video_title(row, method), fontsize=12)
    draw_frame_strip(fig.add_subplot(grid[0, :]), strip)
    draw_timeline(fig.add_subplot(grid[1, :]), row)
    draw_step_deltas(fig.add_subplot(grid[2, 0]), row)
    draw_votes(fig.add_subplot(grid[2, 1]), row)
    fig.savefig(path, dpi=VIDEO_DPI)
    plt.close(fig)
    return os.fspath(path)


def draw_score_scatter(ax, methods: dict) -> None:
    """Panel: predicted against true score of every method, with the diagonal."""
    lo, hi = np.inf, -np.inf
    for i, (name, rows) in enumerate(methods.items()):
        true = np.array([r.true_score for r in rows])
        pred = np.array([r.pred_score for r in rows])
        m = split_metrics(rows)
        ax.scatter(
            true,
            pred,
            s=22,
            alpha=0.8,
            color=STEP_COLOURS[i % 5],
            label=f"{name}: rho {m['rho']:.3f}, R-l2 {m['rl2']:.3f}",
        )
        lo, hi = min(lo, true.min(), pred.min()), max(hi, true.max(), pred.max())
    pad = 0.05 * (hi - lo + 1e-9)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=1, ls=":")
    ax.set_xlabel("true score")
    ax.set_ylabel("predicted score")
    ax.set_title(f"test split ({len(next(iter(methods.values())))} videos)")
    ax.legend(fontsize=8)


def draw_training_curves(ax_loss, logs: dict) -> None:
    """Panel: training loss (log scale, solid) and test rho (right axis, dashed) per epoch."""
    if not logs:
        ax_loss.axis("off")
        ax_loss.text(0.5, 0.5, "no training log given", ha="center", color="grey")
        return
    ax_rho = ax_loss.twinx()
    for i, (name, recs) in enumerate(logs.items()):
        ep = [r["epoch"] + 1 for r in recs]
        c = STEP_COLOURS[i % 5]
        ax_loss.plot(ep, [r["loss"] for r in recs], color=c, lw=1.5, label=f"{name} loss")
        test = [(r["epoch"] + 1, r["test"]["rho"]) for r in recs if "test" in r]
        if test:
            ax_rho.plot(*zip(*test), color=c, lw=1.2, ls="--", marker=".", label=f"{name} test rho")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (log)")
    ax_rho.set_ylabel("test rho (dashed)")
    ax_rho.set_ylim(-0.2, 1.0)
    h1, l1 = ax_loss.get_legend_handles_labels()
    h2, l2 = ax_rho.get_legend_handles_labels()
    ax_loss.legend(h1 + h2, l1 + l2, fontsize=8, loc="center right")
    ax_loss.set_title("training curves")


def render_summary(methods: dict, logs: dict, path) -> str:
    """Predicted vs true scores of every method, and the training curves."""
    fig, (ax, ax_loss) = plt.subplots(
        1, 2, figsize=SUMMARY_SIZE, dpi=SUMMARY_DPI, gridspec_kw={"left": 0.06, "right": 0.93, "wspace": 0.3}
    )
    draw_score_scatter(ax, methods)
    draw_training_curves(ax_loss, logs)
    fig.savefig(path, dpi=SUMMARY_DPI)
    plt.close(fig)
    return os.fspath(path)


def _fmt(v, digits=4):
    return "" if v is None else f"{v:.{digits}f}"


def _metric_rows(methods: dict) -> list[str]:
    rows = []
    for name, rs in methods.items():
        m = split_metrics(rs)
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{m['rho']:.4f}</td><td>{m['rl2']:.4f}</td>"
            f"<td>{_fmt(m.get('aiou50'), 2)}</td><td>{_fmt(m.get('aiou75'), 2)}</td>"
            f"<td>{m['num_videos']}</td></tr>"
        )
    return rows


def _video_rows(rows: list, video_pngs: dict) -> list[str]:
    esc = html.escape
    out = []
    for r in rows:
        png = video_pngs.get(r.key)
        link = f'<a href="{esc(png)}">{esc(r.key)}</a>' if png else esc(r.key)
        out.append(
            f"<tr><td>{link}</td><td>{esc(r.dive_number)}</td><td>{r.true_score:.2f}</td>"
            f"<td>{r.pred_score:.2f}</td><td>{r.pred_score - r.true_score:+.2f}</td>"
            f"<td>{_fmt(r.tiou, 2)}</td></tr>"
        )
    return out


def write_index(out_dir, methods: dict, main: str, summary_png: str, video_pngs: dict, title: str) -> str:
    """index.html: the metrics table, the summary picture and one linked row per test video."""
    esc = html.escape
    metric_rows = _metric_rows(methods)
    video_rows = _video_rows(methods[main], video_pngs)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>{esc(title)}</h1>
<h2>Test-split metrics</h2>
<table><tr><th>method</th><th>rho</th><th>R-l2 (x100)</th><th>AIoU@0.5 (%)</th><th>AIoU@0.75 (%)</th><th>videos</th></tr>
{chr(10).join(metric_rows)}
</table>
<h2>Summary</h2>
<img src="{esc(summary_png)}" alt="predicted vs true scores and training curves">
<h2>Test videos ({esc(main)})</h2>
<table><tr><th>video</th><th>dive number</th><th>true</th><th>predicted</th><th>error</th><th>tIoU</th></tr>
{chr(10).join(video_rows)}
</table>
</body></html>
"""
    path = os.path.join(out_dir, "index.html")
    with open(path, "w") as f:
        f.write(page)
    return path


@dataclass
class Report:
    out_dir: str
    index: str
    summary: str
    videos: dict  # key -> PNG path


def _attach_probabilities(rows: list, probabilities) -> None:
    probs = probabilities if isinstance(probabilities, dict) else read_probabilities(probabilities)
    for r in rows:
        if r.key in probs:
            r.probs = np.asarray(probs[r.key], dtype=np.float64)


def _render_videos(rows: list, out_dir, frames_dir, method: str, progress: bool) -> dict:
    """videos/<key>.png per row; returns key -> path relative to out_dir."""
    os.makedirs(os.path.join(out_dir, "videos"), exist_ok=True)
    iterator = rows
    if progress:
        from tqdm import tqdm

        iterator = tqdm(rows, desc="report", unit="video", leave=False)
    videos = {}
    for r in iterator:
        rel = os.path.join("videos", video_filename(r.key))
        render_video(r, os.path.join(out_dir, rel), frames_dir, method)
        videos[r.key] = rel
    return videos


def write_report(
    predictions,
    out_dir,
    *,
    method: str = "TSA",
    compare: dict | None = None,
    train_logs: dict | None = None,
    probabilities=None,
    frames_dir=None,
    max_videos: int | None = None,
    title: str = "fdperf report",
    progress: bool = False,
) -> Report:
    """Writes `summary.png`, `videos/<key>.png` per test video and `index.html` into `out_dir`.

    predictions: a predictions CSV path (or rows from read_predictions) of `method`;
    compare: {name: CSV path} of other methods, drawn in the summary and the metrics table;
    train_logs: {name: train_log.jsonl path}; probabilities: an .npz path or {key: [96, L]};
    frames_dir: the frames root, for the frame strips; max_videos: draw only the first N videos.
    Every input is read and checked before anything is written.
    """
    rows = predictions if isinstance(predictions, list) else read_predictions(predictions)
    methods = {method: rows}
    for name, p in (compare or {}).items():
        if name in methods:
            raise ReportError(f"two prediction sets are called {name!r}")
        methods[name] = read_predictions(p)
    logs = {name: read_train_log(p) for name, p in (train_logs or {}).items()}
    if probabilities is not None:
        _attach_probabilities(rows, probabilities)
    if frames_dir is not None and not os.path.isdir(frames_dir):
        raise ReportError(f"frames folder not found: {frames_dir}")
    os.makedirs(out_dir, exist_ok=True)
    summary = render_summary(methods, logs, os.path.join(out_dir, "summary.png"))
    chosen = rows if max_videos is None else rows[:max_videos]
    videos = _render_videos(chosen, out_dir, frames_dir, method, progress)
    index = write_index(out_dir, methods, method, "summary.png", videos, title)
    return Report(out_dir, index, summary, {k: os.path.join(out_dir, v) for k, v in videos.items()})
