"""The visual report: renders from a small predictions CSV in fdperf.evaluate's layout."""

import csv
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from fdperf.report import ReportError, read_predictions, split_metrics, video_filename, write_report
from fdperf.report.__main__ import main as report_main

KEYS = ["SynthDiving_3m_r01/1", "SynthDiving_3m_r01/2", "SynthDiving_3m_r02/7"]


def _write_csv(path, segments=True, drop=()):
    rng = np.random.default_rng(0)
    rows = []
    for i, key in enumerate(KEYS):
        ex_scores = rng.uniform(40, 90, 4)
        sd = rng.normal(0, 5, (4, 3))
        deltas = sd.mean(1)
        true = 60.0 + 10 * i
        pred = float(np.mean(ex_scores + deltas))
        row = {
            "key": key,
            "dive_number": "107c",
            "difficulty": "3",
            "true_score": f"{true:.4f}",
            "pred_score": f"{pred:.4f}",
            "error": f"{pred - true:.4f}",
            "true_t1": 30 + i,
            "true_t2": 70,
            "pred_t1": (31 + i) if segments else "",
            "pred_t2": 68 if segments else "",
            "tiou": "0.9000" if segments else "",
            "num_exemplars": 4,
            "exemplar_keys": ";".join(f"SynthDiving_3m_r03/{j}" for j in range(4)),
            "exemplar_scores": ";".join(f"{s:.4f}" for s in ex_scores),
            "deltas": ";".join(f"{d:.4f}" for d in deltas),
        }
        for s in range(3):
            row[f"step{s + 1}_deltas"] = ";".join(f"{d:.4f}" for d in sd[:, s]) if segments else ""
        rows.append({k: v for k, v in row.items() if k not in drop})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        arr = np.asarray(im.convert("RGB"))
    assert arr.std() > 10, f"{path} is blank"
    return arr.shape[1], arr.shape[0]


@pytest.fixture
def inputs(tmp_path):
    tsa = _write_csv(tmp_path / "tsa.csv")
    fr = _write_csv(tmp_path / "fr.csv", segments=False)
    log = tmp_path / "train_log.jsonl"
    with open(log, "w") as f:
        for e in range(4):
            rec = {
                "epoch": e,
                "loss": 10.0 / (e + 1),
                "train_rho": 0.2 * e,
                "gt_transitions": e < 1,
                "seconds": 1.0,
            }
            if e % 2 == 1:
                rec["test"] = {"rho": 0.3 * e, "rl2": 1.0, "aiou50": 50.0, "aiou75": 20.0}
            f.write(json.dumps(rec) + "\n")
    probs = {k: np.random.default_rng(1).uniform(0, 1, (96, 2)) for k in KEYS}
    np.savez(tmp_path / "probs.npz", **probs)
    frames = tmp_path / "frames"
    for key in KEYS[:1]:
        d = frames.joinpath(*key.split("/"))
        d.mkdir(parents=True)
        for i in range(20):
            Image.fromarray(np.full((256, 455, 3), 10 * i, np.uint8)).save(d / f"{i:05d}.jpg")
    return tmp_path, tsa, fr, str(log), str(tmp_path / "probs.npz"), str(frames)


def test_report_writes_every_picture(inputs):
    tmp, tsa, fr, log, probs, frames = inputs
    rep = write_report(
        tsa,
        str(tmp / "out"),
        compare={"F+R": fr},
        train_logs={"TSA": log},
        probabilities=probs,
        frames_dir=frames,
    )
    assert _png(rep.summary) == (1300, 550)
    assert sorted(rep.videos) == sorted(KEYS)
    for path in rep.videos.values():
        assert _png(path) == (1200, 800)
    page = open(rep.index).read()
    assert 'src="summary.png"' in page
    for key in KEYS:
        link = f"videos/{video_filename(key)}"
        assert f'href="{link}"' in page and os.path.isfile(os.path.join(rep.out_dir, link))
    assert "F+R" in page and "TSA" in page


def test_probabilities_reach_the_rows(inputs):
    tmp, tsa, *_, probs, _ = inputs
    rows = read_predictions(tsa)
    assert rows[0].probs is None and rows[0].pred_t == [31, 68] and len(rows[0].step_deltas) == 3
    write_report(rows, str(tmp / "o2"), probabilities=probs, max_videos=1)
    assert rows[0].probs.shape == (96, 2)
    assert len(os.listdir(tmp / "o2" / "videos")) == 1


def test_metrics_from_the_csv(inputs):
    _, tsa, fr, *_ = inputs
    m = split_metrics(read_predictions(tsa))
    assert set(m) == {"rho", "rl2", "num_videos", "aiou50", "aiou75"} and m["aiou50"] == 100.0
    m = split_metrics(read_predictions(fr))
    assert "aiou50" not in m and m["num_videos"] == 3


def test_missing_columns_are_named(tmp_path):
    bad = _write_csv(tmp_path / "bad.csv", drop=("pred_score",))
    with pytest.raises(ReportError, match=re.escape("missing column(s) pred_score")):
        read_predictions(bad)
    with pytest.raises(ReportError, match="not found"):
        read_predictions(tmp_path / "nope.csv")
    np.savez(tmp_path / "p.npz", **{KEYS[0]: np.zeros((10, 2))})
    with pytest.raises(ReportError, match=r"expected \[96, L\]"):
        write_report(
            _write_csv(tmp_path / "ok.csv"), str(tmp_path / "o"), probabilities=str(tmp_path / "p.npz")
        )


def test_cli(inputs, capsys):
    tmp, tsa, fr, log, probs, frames = inputs
    out = str(tmp / "cli")
    assert (
        report_main(
            [
                "--predictions",
                tsa,
                "--out",
                out,
                "--compare",
                f"F+R={fr}",
                "--train-log",
                f"TSA={log}",
                "--probabilities",
                probs,
                "--max-videos",
                "1",
            ]
        )
        == 0
    )
    assert "index.html" in capsys.readouterr().out
    assert report_main(["--predictions", tsa, "--out", out, "--compare", fr]) == 2
    assert "NAME=PATH" in capsys.readouterr().err


@pytest.mark.parametrize(
    "column,value,bad",
    [
        ("pred_score", "nan", "nan"),
        ("true_score", "inf", "inf"),
        ("deltas", "1.0;nan;2.0;3.0", "nan"),
        ("tiou", "-inf", "-inf"),
    ],
)
def test_non_finite_values_are_refused_before_anything_is_written(tmp_path, capsys, column, value, bad):
    path = _write_csv(tmp_path / "p.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    rows[1][column] = value
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(ReportError) as err:
        read_predictions(path)
    # one line naming the file, the row (line 3: the second video) and the column
    assert str(err.value) == f"{path}, line 3, column {column}: not a finite number: {bad!r}"
    out = tmp_path / "out"
    with pytest.raises(ReportError, match=f"line 3, column {column}"):
        write_report(path, str(out))
    assert not out.exists()
    assert report_main(["--predictions", path, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"python -m fdperf.report: error: {err.value}\n"
    assert not out.exists()
