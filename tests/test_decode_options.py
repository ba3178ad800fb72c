"""The decode option through training, checkpoints and evaluation; the generators' late dives."""

import csv
import json

import numpy as np
import pytest

from fdperf.data import sample_frame_indices, transition_labels
from fdperf.evaluate import __main__ as evaluate_cli
from fdperf.evaluate import evaluate
from fdperf.synthetic import sample_dives
from fdperf.synthetic.features import make_synthetic_features
from fdperf.train import train
from fdperf.tsa.checkpoint import read_checkpoint
from fdperf.tsa.decode import representable

pytestmark = pytest.mark.usefixtures("one_thread")


def _synthdive_transitions(dives):
    out = []
    for d in dives:
        labels = d.frame_labels
        out.append(transition_labels(labels[sample_frame_indices(len(labels))]))
    return np.stack(out)


def test_synthdive_late_share():
    plain = sample_dives(24, seed=3)
    assert [d.plan for d in sample_dives(24, seed=3, late_share=0.0)] == [d.plan for d in plain]
    assert representable(_synthdive_transitions(plain), "window").all()
    late = sample_dives(24, seed=3, late_share=1.0)
    t = _synthdive_transitions(late)
    assert not representable(t, "window").any() and representable(t, "ordered").all()
    assert (t[:, 0] >= 48).any() and (t[:, 1] < 48).any()  # both kinds: late start, early end
    # the late draw does not disturb the other dives' plans or scores
    half = sample_dives(24, seed=3, late_share=0.5)
    kept = [i for i, d in enumerate(half) if d.plan == plain[i].plan]
    assert 0 < len(kept) < 24 and all(half[i].score == plain[i].score for i in range(24))
    with pytest.raises(ValueError, match="late_share"):
        sample_dives(4, late_share=1.5)


def test_feature_set_late_share(tmp_path):
    _, ann0 = make_synthetic_features(tmp_path / "a", n_train=12, n_test=4, seed=1)
    _, ann1 = make_synthetic_features(tmp_path / "b", n_train=12, n_test=4, seed=1, late_share=0.5)
    t0 = np.stack([s.transitions for s in ann0.samples.values()])
    t1 = np.stack([s.transitions for s in ann1.samples.values()])
    assert representable(t0, "window").all()
    late = ~representable(t1, "window")
    assert 0 < late.sum() < len(t1) and representable(t1, "ordered").all()
    assert np.array_equal(t0[~late], t1[~late])  # the other videos are unchanged


@pytest.fixture(scope="module")
def late_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("late")
    store, _ = make_synthetic_features(root / "data", n_train=8, n_test=4, seed=2, late_share=0.5)
    return root, store, str(root / "data" / "Annotations")


def test_train_stores_decode_and_evaluate_uses_or_overrides_it(late_set, tmp_path):
    _, store, ann = late_set
    res = train(
        store,
        ann,
        tmp_path / "run",
        max_epoch=1,
        bs_train=4,
        voter_number=2,
        device="cpu",
        progress=False,
        log=lambda s: None,
        decode="ordered",
        prob_tas_threshold=0.0,
    )
    ck = read_checkpoint(res.last_checkpoint)
    assert ck["config"]["decode"] == "ordered" and ck["settings"]["decode"] == "ordered"
    m = evaluate(res.last_checkpoint, store, ann, tmp_path / "ev", voter_number=2, device="cpu")
    assert m.metrics["decode"] == "ordered"
    assert (
        evaluate_cli.main(
            [
                str(res.last_checkpoint),
                str(store),
                str(tmp_path / "ev2"),
                "--annotations",
                ann,
                "--voter_number",
                "2",
                "--device",
                "cpu",
                "--decode",
                "window",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "ev2" / "metrics.json").read_text())["decode"] == "window"
    with open(tmp_path / "ev2" / "predictions.csv", newline="") as f:
        pred = np.array([[int(r["pred_t1"]), int(r["pred_t2"])] for r in csv.DictReader(f)])
    assert representable(pred, "window").all()
