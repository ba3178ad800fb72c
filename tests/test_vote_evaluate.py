"""Voting and `python -m fdperf.evaluate`: metrics JSON, the documented predictions CSV, exemplar
policies, batched decoding equal to one launch, baselines without segmentation."""
import csv
import json
import re
from pathlib import Path

import pytest
import torch

from fdperf.evaluate import __main__ as evaluate_cli
from fdperf.tsa import build_model
from fdperf.tsa.checkpoint import model_checkpoint, save_checkpoint
from fdperf.synthetic.features import make_synthetic_features
from fdperf.evaluate import evaluate

README = Path(__file__).resolve().parents[1] / "README.md"

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


def _documented_columns():
    """Column names in the README's table of the predictions CSV."""
    text = README.read_text()
    section = text[text.index("### Per-test-video predictions CSV"):]
    section = section[:section.index("\n### ", 1)]
    return set(re.findall(r"^\| `([a-z0-9_]+)`", section, flags=re.M))


def test_metrics_and_predictions_csv(data):
    root, store, ann, tsa, _ = data
    res = evaluate(tsa, store, ann, root / "ev", voter_number=4, device="cpu")
    m = json.loads(res.metrics_path.read_text())
    for key in ("rho", "rl2", "l2", "aiou50", "aiou75", "voter_number", "policy", "transitions",
                "method", "checkpoint_epoch", "num_pairs"):
        assert key in m, key
    assert m["voter_number"] == 4 and m["checkpoint_epoch"] == 4 and m["transitions"] == "predicted"
    rows = _read(res.predictions_path)
    assert [r["key"] for r in rows] == [f"synthetic/{i}" for i in range(16, 24)]
    expected = ["key", "dive_number", "difficulty", "true_score", "pred_score", "error", "true_t1",
                "true_t2", "pred_t1", "pred_t2", "tiou", "num_exemplars", "exemplar_keys",
                "exemplar_scores", "deltas", "step1_deltas", "step2_deltas", "step3_deltas"]
    assert list(rows[0]) == expected
    documented = _documented_columns()
    assert {"key", "true_score", "pred_score", "exemplar_keys", "deltas", "tiou"} <= documented
    for r in rows:
        n = int(r["num_exemplars"])
        ex = [float(x) for x in r["exemplar_scores"].split(";")]
        d = [float(x) for x in r["deltas"].split(";")]
        steps = [[float(x) for x in r[f"step{s}_deltas"].split(";")] for s in (1, 2, 3)]
        assert len(ex) == len(d) == n == len(r["exemplar_keys"].split(";")) == 4
        assert float(r["pred_score"]) == pytest.approx(sum(a + b for a, b in zip(ex, d)) / n, abs=2e-3)
        for j in range(n):
            assert d[j] == pytest.approx(sum(s[j] for s in steps) / 3, abs=2e-3)
        assert float(r["error"]) == pytest.approx(float(r["pred_score"]) - float(r["true_score"]), abs=2e-3)
        assert 1 <= int(r["pred_t1"]) < 48 <= int(r["pred_t2"]) < 96
        sample = ann[("synthetic", int(r["key"].split("/")[1]))]
        assert [int(r["true_t1"]), int(r["true_t2"])] == list(sample.transitions)
        assert all(ann[k].dive_number == sample.dive_number for k in r["exemplar_keys"].split(";"))


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
    rc = evaluate_cli.main([str(fr), str(store), str(root / "fr"), "--annotations", ann.folder,
                            "--voter_number", "3", "--device", "cpu"])
    assert rc == 0
    m = json.loads(capsys.readouterr().out)
    assert m["method"] == "F+R" and "aiou50" not in m
    rows = _read(root / "fr" / "predictions.csv")
    assert all(r["pred_t1"] == "" and r["step1_deltas"] == "" and r["tiou"] == "" for r in rows)
    with pytest.raises(SystemExit):
        evaluate_cli.main(["--help"])
    text = capsys.readouterr().out
    for opt in ("--voter_number", "--policy", "--transitions", "--layout", "--batch-pairs",
                "--config", "--seed", "--action_number_choosing", "--random_choosing", "--split"):
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
