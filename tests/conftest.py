"""Shared fixtures: the real FineDiving annotations and small annotation sets in the same schema."""
import os
import pickle

import numpy as np
import pytest
import torch

REAL_ANNOTATIONS = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "finediving", "Annotations"))


@pytest.fixture(scope="session")
def real_annotations_dir():
    if not os.path.isfile(os.path.join(REAL_ANNOTATIONS, "fine-grained_annotation_aqa.pkl")):
        pytest.skip(f"real FineDiving annotations not found at {REAL_ANNOTATIONS}")
    return REAL_ANNOTATIONS


def _labels(lengths, types):
    return np.concatenate([np.full(n, t, dtype=np.int64) for n, t in zip(lengths, types)])


def write_annotation_set(folder, samples, train, test, overrides=None):
    """Writes the six FineDiving files for `samples`: {key: (dive_number, score, difficulty,
    step_lengths, step_types)}; `overrides` maps a file name to an object written instead."""
    os.makedirs(folder, exist_ok=True)
    aqa, fine, coarse = {}, {}, {}
    for key, (dn, score, dd, lengths, types) in samples.items():
        labels = _labels(lengths, types)
        transit = np.flatnonzero(labels[1:] != labels[:-1]).astype(np.int64)
        aqa[key] = [dn, float(score), float(dd), transit, labels]
        fine[key] = {"action_type": dn, "dive_score": float(score), "difficulty": float(dd),
                     "steps_transit_frames": transit, "frames_labels": labels,
                     "sub-action_types": {np.int64(t): f"type{t}" for t in types}}
        coarse[key] = {"action_type": dn, "start_frame": 0, "end_frame": int(sum(lengths)),
                       "dive_score": float(score), "difficulty": float(dd),
                       "judge_scores": [7.0, 7.5, 8.0, 8.0, 8.5]}
    files = {
        "fine-grained_annotation_aqa.pkl": aqa,
        "FineDiving_fine-grained_annotation.pkl": fine,
        "FineDiving_coarse_annotation.pkl": coarse,
        "Sub_action_Types_Table.pkl": {i: f"type{i}" for i in range(1, 43)},
        "train_split.pkl": list(train),
        "test_split.pkl": list(test),
    }
    files.update(overrides or {})
    for name, obj in files.items():
        if obj is None:
            continue
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(obj, f, protocol=3)
    return folder


@pytest.fixture
def small_annotations(tmp_path):
    """Eight dives of three dive numbers; returns (folder, samples, train, test)."""
    samples = {}
    rng = np.random.default_rng(0)
    dns = ["107b", "107b", "107b", "205c", "205c", "205c", "405b", "405b"]
    for i, dn in enumerate(dns):
        lengths = [int(rng.integers(10, 40)) for _ in range(3)]
        samples[("ev", i + 1)] = (dn, 50.0 + i, 3.0 + 0.2 * (i % 2), lengths, [1, 20, 36])
    keys = list(samples)
    train, test = keys[:2] + keys[3:5] + keys[6:7], [keys[2], keys[5], keys[7]]
    folder = write_annotation_set(str(tmp_path / "Annotations"), samples, train, test)
    return folder, samples, train, test


@pytest.fixture
def one_thread():
    """Tiny convolutions run faster on one thread than on two contended ones (2-core CI)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
