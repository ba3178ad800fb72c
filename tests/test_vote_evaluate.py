"""Voting and `python -m fdperf.evaluate`: metrics JSON, the predictions CSV (every column of
`PREDICTION_COLUMNS` checked against the votes and annotations), exemplar policies, batched
decoding equal to one launch, baselines without segmentation."""

import csv
import json

import numpy as np
import pytest
import torch

from fdperf import metrics as M
from fdperf.evaluate import PREDICTION_COLUMNS, evaluate, prediction_columns, write_csv
from fdperf.evaluate import __main__ as evaluate_cli
from fdperf.synthetic.features import make_synthetic_features
from fdperf.tsa import build_model
from fdperf.tsa.checkpoint import model_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vote")
    store, ann = make_synthetic_features(root / "data", n_train=16, n_test=8, seed=7, map_size=2)
    torch.manual_seed(0)
    tsa = save_checkpoint(root / "tsa.pt", model_checkpoint(build_model("TSA"), epoch=4))
    fr = save_checkpoint(root / "fr.pt", model_checkpoint(build_model("F+R"), epoch=4))
    return root, store, ann, tsa, fr


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _floats(text):
    return [float(x) for x in text.split(";")]


def test_prediction_columns_constant():
    assert PREDICTION_COLUMNS == prediction_columns(2) and len(PREDICTION_COLUMNS) == 18
    assert PREDICTION_COLUMNS[:6] == ("key", "dive_number", "difficulty", "true_score", "pred_score", "error")
    three = prediction_columns(3)
    assert "true_t3" in three and "pred_t3" in three and three[-1] == "step4_deltas"
    assert len(set(PREDICTION_COLUMNS)) == len(PREDICTION_COLUMNS)


def test_writer_refuses_rows_off_the_columns(tmp_path):
    row = dict.fromkeys(PREDICTION_COLUMNS, "")
    write_csv(tmp_path / "ok.csv", [row])
    assert next(csv.reader(open(tmp_path / "ok.csv"))) == list(PREDICTION_COLUMNS)
    with pytest.raises(ValueError, match="row 0 has columns"):
        write_csv(tmp_path / "bad.csv", [{**row, "extra": 1}])


def test_metrics_and_predictions_csv(data):
    root, store, ann, tsa, _ = data
    res = evaluate(tsa, store, ann, root / "ev", voter_number=4, device="cpu")
    m = json.loads(res.metrics_path.read_text())
    for key in (
        "rho",
        "rl2",
        "l2",
        "aiou50",
        "aiou75",
        "voter_number",
        "policy",
        "transitions",
        "method",
        "checkpoint_epoch",
        "num_pairs",
    ):
        assert key in m, key
    assert m["voter_number"] == 4 and m["checkpoint_epoch"] == 4 and m["transitions"] == "predicted"
    with open(res.predictions_path, newline="") as f:
        assert next(csv.reader(f)) == list(PREDICTION_COLUMNS)
    rows = _read(res.predictions_path)
    assert [r["key"] for r in rows] == [f"synthetic/{i}" for i in range(16, 24)]
    v = res.votes
    scores, deltas, steps = v.scores.numpy(), v.deltas.numpy(), v.step_deltas.numpy()
    bounds = v.bounds.numpy()
    true_bounds = np.stack([ann[("synthetic", 16 + i)].transitions for i in range(len(rows))])
    tious = M.tiou(bounds, true_bounds)
    train_keys = {f"{e}/{i}" for e, i in ann.train_keys}
    for i, r in enumerate(rows):
        assert set(r) == set(PREDICTION_COLUMNS)
        sample = ann[("synthetic", 16 + i)]
        assert r["dive_number"] == sample.dive_number
        assert float(r["difficulty"]) == pytest.approx(sample.difficulty)
        assert float(r["true_score"]) == pytest.approx(sample.score, abs=1e-4)
        assert float(r["pred_score"]) == pytest.approx(scores[i], abs=1e-4)
        assert float(r["error"]) == pytest.approx(scores[i] - sample.score, abs=2e-4)
        assert [int(r["true_t1"]), int(r["true_t2"])] == list(sample.transitions)
        assert [int(r["pred_t1"]), int(r["pred_t2"])] == list(bounds[i])
        assert 1 <= int(r["pred_t1"]) < 48 <= int(r["pred_t2"]) < 96
        assert float(r["tiou"]) == pytest.approx(tious[i], abs=1e-4)
        keys = r["exemplar_keys"].split(";")
        n = int(r["num_exemplars"])
        assert n == len(keys) == 4 and set(keys) <= train_keys and r["key"] not in keys
        assert all(ann[k].dive_number == sample.dive_number for k in keys)
        ex = _floats(r["exemplar_scores"])
        assert ex == pytest.approx([ann[k].score for k in keys], abs=1e-4)
        d = _floats(r["deltas"])
        assert d == pytest.approx(deltas[i], abs=1e-4)
        for s in range(3):
            assert _floats(r[f"step{s + 1}_deltas"]) == pytest.approx(steps[i, :, s], abs=1e-4)
        for j in range(n):
            assert d[j] == pytest.approx(steps[i, j].mean(), abs=2e-4)
        assert float(r["pred_score"]) == pytest.approx(sum(a + b for a, b in zip(ex, d)) / n, abs=2e-3)


def test_batched_pairs_equal_one_launch_and_oracle_uses_ground_truth(data):
    root, store, ann, tsa, _ = data
    one = evaluate(tsa, store, ann, root / "one", voter_number=3, device="cpu")
    chunked = evaluate(tsa, store, ann, root / "chunk", voter_number=3, device="cpu", batch_pairs=5)
    assert torch.allclose(one.votes.scores, chunked.votes.scores, atol=1e-5)
    oracle = evaluate(tsa, store, ann, root / "oracle", voter_number=3, device="cpu", transitions="oracle")
    rows = _read(oracle.predictions_path)
    assert all(r["pred_t1"] == r["true_t1"] and r["pred_t2"] == r["true_t2"] for r in rows)
    assert oracle.metrics["aiou75"] == 100.0


@pytest.mark.parametrize("policy", ["random", "difficulty"])
def test_other_policies(data, policy):
    root, store, ann, tsa, _ = data
    res = evaluate(tsa, store, ann, root / policy, voter_number=2, device="cpu", policy=policy)
    assert res.metrics["policy"] == policy and res.metrics["num_pairs"] == 16


def test_baseline_without_segmentation_and_cli(data, capsys):
    root, store, ann, _, fr = data
    rc = evaluate_cli.main(
        [
            str(fr),
            str(store),
            str(root / "fr"),
            "--annotations",
            ann.folder,
            "--voter_number",
            "3",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    m = json.loads(capsys.readouterr().out)
    assert m["method"] == "F+R" and "aiou50" not in m
    rows = _read(root / "fr" / "predictions.csv")
    empty = ("pred_t1", "pred_t2", "tiou", "step1_deltas", "step2_deltas", "step3_deltas")
    assert all(list(r) == list(PREDICTION_COLUMNS) for r in rows)
    assert all(r[c] == "" for r in rows for c in empty)
    assert all(r[c] != "" for r in rows for c in PREDICTION_COLUMNS if c not in empty)
    with pytest.raises(SystemExit):
        evaluate_cli.main(["--help"])
    text = capsys.readouterr().out
    for opt in (
        "--voter_number",
        "--policy",
        "--transitions",
        "--layout",
        "--batch-pairs",
        "--config",
        "--seed",
        "--action_number_choosing",
        "--random_choosing",
        "--split",
    ):
        assert opt in text
    assert all(a.help for a in evaluate_cli.build_parser()._actions)


def test_bad_requests_are_named(data, tmp_path):
    root, store, ann, tsa, _ = data
    with pytest.raises(ValueError, match="transitions"):
        evaluate(tsa, store, ann, tmp_path, transitions="psychic", device="cpu")
    with pytest.raises(ValueError, match="policy"):
        evaluate(tsa, store, ann, tmp_path, policy="height", device="cpu")
    smaller, _ = make_synthetic_features(tmp_path / "other", n_train=4, n_test=2, seed=1)
    with pytest.raises(KeyError, match="not in feature store"):  # ann's test videos are not in it
        evaluate(tsa, smaller, ann, tmp_path, device="cpu", voter_number=2)
