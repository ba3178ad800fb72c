"""The one annotations writer: what it writes loads back as the records it was given, in the
published files' schema and pickle spelling, for every user (synthetic set, feature set, tests)."""

import os
import pickle
import pickletools

import numpy as np

from fdperf.data import AnnotationRecord, Annotations, load_annotations, write_annotations
from fdperf.data.annotations import FILES
from fdperf.synthetic import dive_records, sample_dives, split_dives
from fdperf.synthetic.features import make_synthetic_features

SAMPLE_FIELDS = (
    "key",
    "dive_number",
    "score",
    "difficulty",
    "judge_scores",
    "sub_action_names",
    "num_transitions",
)
ARRAY_FIELDS = ("frame_labels", "transit_frames", "sampled_labels", "transitions", "all_transitions")


def assert_same_annotations(a: Annotations, b: Annotations):
    assert a.keys() == b.keys()
    assert a.train_keys == b.train_keys and a.test_keys == b.test_keys
    assert a.sub_action_types == b.sub_action_types
    for key in a.keys():
        x, y = a[key], b[key]
        for name in SAMPLE_FIELDS:
            assert getattr(x, name) == getattr(y, name), (key, name)
        for name in ARRAY_FIELDS:
            u, v = getattr(x, name), getattr(y, name)
            assert u.dtype == v.dtype and np.array_equal(u, v), (key, name)


def _globals(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:2] == b"\x80\x03"  # protocol 3, as the published files
    return {arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


def test_records_load_back(tmp_path):
    labels = np.repeat(np.array([4, 25, 36], np.int64), [20, 40, 25])
    recs = [
        AnnotationRecord(
            ("ev", 1),
            "407c",
            88.0,
            3.2,
            labels,
            {4: "Inward", 25: "3.5 Soms.Tuck", 36: "Entry"},
            judge_scores=[9.5, 9.0, 9.5, 9.0, 8.5],
            start_frame=7378,
        ),
        AnnotationRecord(
            ("ev", 2),
            "107b",
            50.5,
            3.0,
            labels,
            {4: "a", 25: "b", 36: "c"},
            transit_frames=np.array([20, 60]),
        ),
    ]
    folder = write_annotations(tmp_path / "A", recs, [("ev", 1)], [("ev", 2)], {4: "Inward"})
    assert sorted(os.listdir(folder)) == sorted(FILES.values())
    ann = load_annotations(folder)
    one, two = ann[("ev", 1)], ann[("ev", 2)]
    assert one.dive_number == "407c" and one.score == 88.0 and one.difficulty == 3.2
    assert one.judge_scores == (9.5, 9.0, 9.5, 9.0, 8.5) and two.judge_scores is None
    assert np.array_equal(one.frame_labels, labels)
    assert one.transit_frames.tolist() == [19, 59]  # default: the last frame of each step
    assert two.transit_frames.tolist() == [20, 60]  # given: written as is
    assert one.sub_action_names == {4: "Inward", 25: "3.5 Soms.Tuck", 36: "Entry"}
    assert ann.train_keys == [("ev", 1)] and ann.test_keys == [("ev", 2)]
    assert ann.sub_action_types == {4: "Inward"}
    for name in FILES.values():
        assert _globals(os.path.join(folder, name)) <= {
            "numpy ndarray",
            "numpy dtype",
            "numpy.core.multiarray _reconstruct",
            "numpy.core.multiarray scalar",
        }
    with open(os.path.join(folder, FILES["coarse"]), "rb") as f:
        coarse = pickle.load(f)
    assert coarse[("ev", 1)]["start_frame"] == 7378 and coarse[("ev", 1)]["end_frame"] == 7378 + 84
    with open(os.path.join(folder, FILES["fine"]), "rb") as f:
        fine = pickle.load(f)
    assert all(type(t) is np.int64 for t in fine[("ev", 1)]["sub-action_types"])
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]


def test_loaded_annotations_round_trip(small_annotations, tmp_path):
    ann = load_annotations(small_annotations[0])
    again = write_annotations(
        tmp_path / "again", ann.samples.values(), ann.train_keys, ann.test_keys, ann.sub_action_types
    )
    assert_same_annotations(ann, load_annotations(again))


def test_synthetic_set_records_load_back(tmp_path):
    dives = sample_dives(13, seed=4)
    train, test = split_dives(dives, seed=4)
    recs = dive_records(dives)
    ann = load_annotations(write_annotations(tmp_path / "s", recs, train, test, {36: "Entry"}))
    for d in dives:
        s = ann[d.key]
        assert s.dive_number == d.plan.kind.dive_number and s.score == float(d.score)
        assert np.array_equal(s.frame_labels, d.frame_labels)
        assert list(s.judge_scores) == [float(a) for a in d.awards]
    # dives of one event follow each other in the notional broadcast
    starts = [r.start_frame for r in recs if r.key[0] == recs[0].key[0]]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_synthetic_feature_set_annotations_load_as_returned(tmp_path):
    _, ann = make_synthetic_features(tmp_path / "f", n_train=6, n_test=3, seed=2)
    assert_same_annotations(ann, load_annotations(ann.folder))


def test_real_annotations_round_trip(real_annotations_dir, tmp_path):
    ann = load_annotations(real_annotations_dir)
    again = write_annotations(
        tmp_path / "real", ann.samples.values(), ann.train_keys, ann.test_keys, ann.sub_action_types
    )
    assert_same_annotations(ann, load_annotations(again))


def test_real_annotations_skip_names_the_variable(monkeypatch):
    from conftest import ANNOTATIONS_ENV, real_annotations_missing

    monkeypatch.delenv(ANNOTATIONS_ENV, raising=False)
    assert ANNOTATIONS_ENV in real_annotations_missing()
    monkeypatch.setenv(ANNOTATIONS_ENV, "/nonexistent/Annotations")
    why = real_annotations_missing()
    assert ANNOTATIONS_ENV in why and FILES["aqa"] in why


def test_conftest_overrides_replace_or_leave_out_a_file(tmp_path):
    from conftest import write_annotation_set

    samples = {("ev", 1): ("107b", 50.0, 3.0, [30, 30, 30], [1, 20, 36])}
    folder = write_annotation_set(
        str(tmp_path), samples, [("ev", 1)], [], {FILES["aqa"]: None, FILES["types"]: {1: "x"}}
    )
    assert not os.path.exists(os.path.join(folder, FILES["aqa"]))
    with open(os.path.join(folder, FILES["types"]), "rb") as f:
        assert pickle.load(f) == {1: "x"}
