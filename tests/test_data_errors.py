"""Loader errors on small annotation sets written in the FineDiving schema."""

import os

import numpy as np
import pytest
from conftest import write_annotation_set

from fdperf import data


def test_small_set_loads(small_annotations):
    folder, samples, train, test = small_annotations
    ann = data.load_annotations(folder)
    assert ann.train_keys == train and ann.test_keys == test
    key = train[0]
    lengths = samples[key][3]
    s = ann[key]
    assert s.judge_scores == (7.0, 7.5, 8.0, 8.0, 8.5)
    # first frame index of each step in the 96-frame space
    idx = np.linspace(0, sum(lengths) - 1, 96).astype(int)
    assert s.transitions.tolist() == [
        int(np.argmax(idx >= lengths[0])),
        int(np.argmax(idx >= lengths[0] + lengths[1])),
    ]


def test_missing_file_is_named(small_annotations):
    folder = small_annotations[0]
    os.remove(os.path.join(folder, "test_split.pkl"))
    with pytest.raises(data.AnnotationError, match="missing annotation file: .*test_split.pkl"):
        data.load_annotations(folder)


def test_missing_folder():
    with pytest.raises(data.AnnotationError, match="annotations folder not found"):
        data.load_annotations("/nonexistent/Annotations")


def test_split_key_without_annotation(tmp_path):
    samples = {("ev", 1): ("107b", 50.0, 3.0, [30, 30, 30], [1, 20, 36])}
    folder = write_annotation_set(str(tmp_path), samples, [("ev", 1)], [("ev", 99)])
    with pytest.raises(
        data.AnnotationError, match=r"test_split.pkl: split key \('ev', 99\) has no annotation"
    ):
        data.load_annotations(folder)


def test_annotation_with_no_frames(tmp_path):
    samples = {("ev", 1): ("107b", 50.0, 3.0, [30, 30, 30], [1, 20, 36])}
    aqa = {("ev", 1): ["107b", 50.0, 3.0, np.array([29, 59]), np.array([], dtype=np.int64)]}
    folder = write_annotation_set(
        str(tmp_path), samples, [("ev", 1)], [], {"fine-grained_annotation_aqa.pkl": aqa}
    )
    with pytest.raises(
        data.AnnotationError,
        match=r"fine-grained_annotation_aqa.pkl, key \('ev', 1\): the annotation has no frames",
    ):
        data.load_annotations(folder)


@pytest.mark.parametrize(
    "value, message",
    [
        (["107b", 50.0, 3.0], "expected \\[dive_number"),
        (["107b", "not a score", 3.0, np.array([1]), np.array([1, 2])], "malformed record"),
        (["107b", 50.0, 3.0, np.array([1]), np.array([1, 1, 1])], "need at least 2 transitions"),
    ],
)
def test_malformed_record(tmp_path, value, message):
    samples = {("ev", 1): ("107b", 50.0, 3.0, [30, 30, 30], [1, 20, 36])}
    folder = write_annotation_set(
        str(tmp_path), samples, [("ev", 1)], [], {"fine-grained_annotation_aqa.pkl": {("ev", 1): value}}
    )
    with pytest.raises(data.AnnotationError, match=r"key \('ev', 1\): .*" + message):
        data.load_annotations(folder)


def test_truncated_file(small_annotations):
    folder = small_annotations[0]
    path = os.path.join(folder, "FineDiving_coarse_annotation.pkl")
    blob = open(path, "rb").read()
    open(path, "wb").write(blob[: len(blob) // 2])
    with pytest.raises(data.AnnotationError, match="FineDiving_coarse_annotation.pkl: cannot read"):
        data.load_annotations(folder)


def test_key_forms(small_annotations):
    ann = data.load_annotations(small_annotations[0])
    assert ann["ev/1"] is ann[("ev", 1)] and ("ev", 1) in ann
    assert data.key_to_str(("ev", 1)) == "ev/1" and data.key_from_str("a/b_c/7") == ("a/b_c", 7)
    with pytest.raises(KeyError, match="no annotation for key"):
        ann[("ev", 1000)]
    with pytest.raises(ValueError, match="not an 'event/index' key"):
        data.key_from_str("noindex")
