"""A reduced demo (8 dives, 2 epochs) runs end to end and writes every output; a rerun reuses
the synthetic set and the feature store."""

import csv
import hashlib
import html
import json
import os

import numpy as np
import pytest
from PIL import Image

from fdperf.data import key_to_str, load_annotations
from fdperf.demo import run_demo
from fdperf.demo.__main__ import main as demo_main


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demo"))
    summary = run_demo(out, videos=8, epochs=2, device="cpu", seed=1, progress=False, report_videos=2)
    return out, summary


def test_demo_writes_every_output(demo_run, capsys):
    out, summary = demo_run
    ann = load_annotations(os.path.join(out, "data", "Annotations"))
    assert len(ann) == 8 and len(ann.test_keys) >= 1
    for name in (
        "features.h5",
        "transition_probs.npz",
        "demo_summary.json",
        "report/index.html",
        "report/summary.png",
        "tsa/last.pt",
        "fr/last.pt",
        "tsa/train_log.jsonl",
        "tsa/eval/predictions.csv",
        "fr/eval/predictions.csv",
        "tsa/eval/metrics.json",
    ):
        assert os.path.isfile(os.path.join(out, name)), name
    pngs = os.listdir(os.path.join(out, "report", "videos"))
    assert len(pngs) == min(2, len(ann.test_keys))
    with Image.open(os.path.join(out, "report", "videos", pngs[0])) as im:
        assert im.size == (1200, 800)
    with np.load(os.path.join(out, "transition_probs.npz")) as z:
        assert sorted(z.files) == sorted(key_to_str(k) for k in ann.test_keys)
        p = z[z.files[0]]
        assert p.shape == (96, 2) and ((p >= 0) & (p <= 1)).all()
    with open(os.path.join(out, "demo_summary.json")) as f:
        saved = json.load(f)
    assert saved["i3d"].startswith("random-init") and saved["epochs"] == 2
    assert set(saved["metrics"]) == {"TSA", "F+R"}
    assert saved["metrics"]["TSA"]["aiou50"] is not None and saved["metrics"]["F+R"]["aiou50"] is None
    assert summary["out"] == os.path.abspath(out)
    _check_outputs_agree(out, ann, saved)


def _check_outputs_agree(out, ann, saved):
    """The summary's metrics are the evaluations' own; predictions, probabilities and the report's
    index cover exactly the test videos."""
    test = sorted(key_to_str(k) for k in ann.test_keys)
    assert saved["num_test"] == len(test) and saved["num_train"] == len(ann.train_keys)
    for method, sub in (("TSA", "tsa"), ("F+R", "fr")):
        with open(os.path.join(out, sub, "eval", "metrics.json")) as f:
            evaluated = json.load(f)
        assert evaluated["method"] == method and evaluated["num_videos"] == len(test)
        assert saved["metrics"][method] == {k: evaluated.get(k) for k in saved["metrics"][method]}
        assert set(saved["metrics"][method]) >= {"rho", "rl2", "aiou50", "aiou75", "num_videos"}
        with open(os.path.join(out, sub, "eval", "predictions.csv"), newline="") as f:
            assert sorted(r["key"] for r in csv.DictReader(f)) == test
    assert saved["tsa_reaches_target"] == (saved["metrics"]["TSA"]["rho"] >= saved["rho_target"])
    with open(os.path.join(out, "report", "index.html")) as f:
        page = f.read()
    for key in test:  # every test video has a row, also those beyond report_videos' PNGs
        assert f"<td>{html.escape(key)}</td>" in page or f">{html.escape(key)}</a></td>" in page, key
    linked = [
        name for name in os.listdir(os.path.join(out, "report", "videos")) if f'href="videos/{name}"' in page
    ]
    assert len(linked) == len(os.listdir(os.path.join(out, "report", "videos")))


def _fingerprint(path):
    st = os.stat(path)
    with open(path, "rb") as f:
        return st.st_ino, st.st_size, hashlib.sha256(f.read()).hexdigest()


def test_rerun_reuses_set_and_store(demo_run, capsys):
    out, _ = demo_run
    store = os.path.join(out, "features.h5")
    before = _fingerprint(store)
    with open(os.path.join(out, "data", "Annotations", "train_split.pkl"), "rb") as f:
        split = f.read()
    assert (
        demo_main(
            ["--out", out, "--videos", "8", "--epochs", "1", "--device", "cpu", "--seed", "1", "--quiet"]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "reusing the synthetic set" in text and "0 videos extracted, 8 reused" in text
    assert "RANDOMLY INITIALISED" in text
    for token in ("rho", "R-l2", "AIoU@0.5", "AIoU@0.75", "TSA", "F+R"):
        assert token in text
    assert text.rstrip().endswith(f"output folder: {os.path.abspath(out)}")
    with open(os.path.join(out, "data", "Annotations", "train_split.pkl"), "rb") as f:
        assert f.read() == split
    # the same file (not re-created: same inode) with the same bytes, and nothing was extracted
    assert _fingerprint(store) == before
    with open(os.path.join(out, "demo_summary.json")) as f:
        saved = json.load(f)
    assert saved["epochs"] == 1  # the rerun's own summary, agreeing with its evaluations
    _check_outputs_agree(out, load_annotations(os.path.join(out, "data", "Annotations")), saved)


def test_bad_options(tmp_path, capsys):
    assert demo_main(["--out", str(tmp_path), "--videos", "3"]) == 2
    assert "at least 8 dives" in capsys.readouterr().err
    assert demo_main(["--out", str(tmp_path), "--weights", str(tmp_path / "none.pth")]) == 2
    assert "--weights" in capsys.readouterr().err


def test_random_i3d_weights_keep_unit_scale(tmp_path):
    import torch

    from fdperf.backbone import load_i3d
    from fdperf.demo import random_i3d_weights

    path = random_i3d_weights(str(tmp_path / "i3d.pth"), seed=3)
    model, sha = load_i3d(path)  # strict model_rgb.pth layout
    assert sha != "random-init"
    again = torch.load(random_i3d_weights(str(tmp_path / "again.pth"), seed=3), weights_only=True)
    assert all(torch.equal(v, again[k]) for k, v in model.state_dict().items())
    clip = torch.rand(1, 3, 16, 112, 112, generator=torch.Generator().manual_seed(0)) * 4 - 2
    with torch.no_grad():
        feats, maps = model(clip)
    # He init keeps a random network's output at unit scale (PyTorch's default shrinks it ~1e6x)
    assert feats.abs().mean() > 0.1 and maps.shape == (1, 1024, 4, 4)
    # the file holds exactly the extractor's --random-init network for the same seed
    same, _ = load_i3d(random_init=True, seed=3)
    assert all(torch.equal(v, same.state_dict()[k]) for k, v in model.state_dict().items())
