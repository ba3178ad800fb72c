"""The synthetic dive generator: FineDiving layout and schema, consistency, determinism, step locality."""

import dataclasses
import os
import pickle
import pickletools

import numpy as np
import pytest
from PIL import Image

from fdperf.data import load_annotations
from fdperf.data.annotations import FILES
from fdperf.synthetic import (
    CATALOGUE,
    DiveRenderer,
    dive_score,
    generate_dataset,
    judge_awards,
    read_manifest,
    sample_dives,
    split_dives,
)
from fdperf.synthetic.__main__ import main as synth_main


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    ds = generate_dataset(str(root), num_videos=10, seed=5, workers=1, progress=False)
    return ds


def test_annotations_load_like_finediving(synth_set):
    ann = load_annotations(synth_set.annotations_dir)
    assert len(ann) == 10
    assert set(ann.train_keys).isdisjoint(ann.test_keys)
    assert set(ann.train_keys) | set(ann.test_keys) == set(ann.keys())
    assert ann.train_keys == synth_set.train_keys and ann.test_keys == synth_set.test_keys
    train_dns = {ann[k].dive_number for k in ann.train_keys}
    assert all(ann[k].dive_number in train_dns for k in ann.test_keys)
    assert ann.sub_action_types[36] == "Entry" and len(ann.sub_action_types) == 42
    for key in ann.keys():
        s = ann[key]
        assert isinstance(key[0], str) and isinstance(key[1], int)
        assert 70 <= s.num_frames <= 140
        assert s.frame_labels.dtype == np.int64 and s.transit_frames.dtype == np.int64
        # steps_transit_frames = last frame of each step, as in the published files
        assert np.array_equal(s.transit_frames, np.flatnonzero(np.diff(s.frame_labels)))
        assert s.frame_labels[-1] == 36 and s.num_steps in (3, 4)
        assert 0 < s.transitions[0] < 48 <= s.transitions[1] < 96
        assert set(s.sub_action_names) == set(np.unique(s.frame_labels).tolist())
        assert len(s.judge_scores) == 5
        assert s.score == pytest.approx(s.difficulty * sum(sorted(s.judge_scores)[1:4]), abs=0.006)


def test_value_types_match_the_published_files(synth_set):
    with open(os.path.join(synth_set.annotations_dir, FILES["aqa"]), "rb") as f:
        data = f.read()
    assert data[:2] == b"\x80\x03"  # protocol 3
    globals_ = {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
    assert globals_ <= {
        "numpy ndarray",
        "numpy dtype",
        "numpy.core.multiarray _reconstruct",
        "numpy.core.multiarray scalar",
    }
    aqa = pickle.loads(data)  # our own freshly written file
    key, value = next(iter(aqa.items()))
    assert [type(v) for v in value[:3]] == [str, float, float]
    assert value[3].dtype == np.int64 and value[4].dtype == np.int64
    with open(os.path.join(synth_set.annotations_dir, FILES["coarse"]), "rb") as f:
        coarse = pickle.load(f)
    rec = coarse[key]
    assert isinstance(rec["start_frame"], int) and rec["end_frame"] - rec["start_frame"] + 1 == len(value[4])
    assert all(isinstance(j, float) for j in rec["judge_scores"])


def test_frame_folders(synth_set):
    ann = load_annotations(synth_set.annotations_dir)
    for key in ann.keys():
        folder = os.path.join(synth_set.frames_dir, key[0], str(key[1]))
        names = sorted(os.listdir(folder))
        assert names == [f"{i:05d}.jpg" for i in range(ann[key].num_frames)]
    with Image.open(os.path.join(folder, names[0])) as im:
        assert im.format == "JPEG" and im.size == (455, 256) and im.mode == "RGB"
    assert read_manifest(synth_set.root)["videos"] == 10


def test_deterministic_for_a_seed_whatever_the_workers(tmp_path):
    a = generate_dataset(str(tmp_path / "a"), num_videos=3, seed=11, workers=1, progress=False)
    b = generate_dataset(str(tmp_path / "b"), num_videos=3, seed=11, workers=2, progress=False)
    c = generate_dataset(str(tmp_path / "c"), num_videos=3, seed=12, workers=1, progress=False)
    for name in FILES.values():
        with (
            open(os.path.join(a.annotations_dir, name), "rb") as fa,
            open(os.path.join(b.annotations_dir, name), "rb") as fb,
        ):
            assert fa.read() == fb.read(), name
    for dirpath, _, files in os.walk(a.frames_dir):
        for f in files:
            other = os.path.join(b.frames_dir, os.path.relpath(os.path.join(dirpath, f), a.frames_dir))
            with open(os.path.join(dirpath, f), "rb") as fa, open(other, "rb") as fb:
                assert fa.read() == fb.read()

    def scores(ds):
        ann = load_annotations(ds.annotations_dir)
        return [ann[k].score for k in ds.train_keys + ds.test_keys]

    assert scores(a) != scores(c)


def _frames(plan):
    return np.stack(list(DiveRenderer(plan).frames())).astype(np.int16)


@pytest.mark.parametrize("step", [0, 1, 2])
def test_each_quality_changes_its_own_step(step):
    plan = sample_dives(1, seed=2)[0].plan
    hi = dataclasses.replace(plan, qualities=tuple(1.0 if i == step else 0.5 for i in range(3)))
    lo = dataclasses.replace(plan, qualities=tuple(0.0 if i == step else 0.5 for i in range(3)))
    diff = np.abs(_frames(hi) - _frames(lo)).mean(axis=(1, 2, 3))
    n1, *flight, n3 = plan.step_frames
    bounds = np.cumsum([0, n1, sum(flight), n3])
    own = diff[bounds[step] : bounds[step + 1]]
    # the step itself changes a lot (large area of the frame, in most of its frames)
    assert own.max() > 1.0 and (own > 0.05).mean() > 0.5
    # later steps do not change, except the flight, which starts at the take-off's apex
    untouched = [s for s in range(3) if s != step and not (step == 0 and s == 1)]
    for s in untouched:
        assert diff[bounds[s] : bounds[s + 1]].max() == 0.0, f"quality of step {step} changed step {s}"


def test_judging_rule():
    assert dive_score([7.0, 9.0, 8.0, 8.5, 2.0], 3.0) == pytest.approx(3.0 * (7.0 + 8.0 + 8.5))
    with pytest.raises(ValueError, match="5 judges"):
        dive_score([7.0, 8.0], 3.0)
    rng = np.random.default_rng(0)
    good = np.mean([sum(judge_awards((1.0, 1.0, 1.0), rng)) for _ in range(50)])
    bad = np.mean([sum(judge_awards((0.0, 0.0, 0.0), rng)) for _ in range(50)])
    assert good > bad + 25  # five awards: about 7 points apart each
    awards = judge_awards((0.3, 0.9, 0.6), rng)
    assert all(0.0 <= a <= 10.0 and (2 * a).is_integer() for a in awards)


def test_split_balances_dive_numbers():
    dives = sample_dives(len(CATALOGUE) * 4, seed=0)
    train, test = split_dives(dives, seed=0, test_share=0.25)
    by_key = {d.key: d.plan.kind.dive_number for d in dives}
    for kind in CATALOGUE:
        n_test = sum(by_key[k] == kind.dive_number for k in test)
        assert n_test == 1
    with pytest.raises(ValueError, match="test_share"):
        split_dives(dives, test_share=1.5)


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    out = str(tmp_path / "set")
    assert synth_main(["--out", out, "--videos", "2", "--seed", "1", "--workers", "1", "--quiet"]) == 0
    assert "2 dives" in capsys.readouterr().out
    assert synth_main(["--out", out, "--videos", "2", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert synth_main(["--out", out, "--videos", "0"]) == 2
