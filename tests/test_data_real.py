"""The data layer on the real FineDiving annotation files (all 3000 dives)."""

import numpy as np
import pytest

from fdperf import data


@pytest.fixture(scope="module")
def ann(real_annotations_dir):
    return data.load_annotations(real_annotations_dir)


def test_counts_and_split(ann):
    assert len(ann) == 3000
    assert (len(ann.train_keys), len(ann.test_keys)) == (2251, 749)
    assert not set(ann.train_keys) & set(ann.test_keys)
    assert len(ann.dive_numbers) == 52
    assert len(ann.sub_action_types) == 42
    assert all(isinstance(k[0], str) and isinstance(k[1], int) for k in ann.train_keys)


def _independent_transitions(frame_labels):
    # Written from docs/design.md §2 without fdperf's helpers: sample 96 frames, list the types in order
    # of first appearance, take the first index of each, keep [t[1], t[-1]].
    n = len(frame_labels)
    sampled = [frame_labels[int(i)] for i in np.linspace(0, n - 1, 96).astype(int)]
    seen, firsts = set(), []
    for i, lab in enumerate(sampled):
        if lab not in seen:
            seen.add(lab)
            firsts.append(i)
    changes = [i for i in range(1, 96) if sampled[i] != sampled[i - 1]]
    return [firsts[1], firsts[-1]], changes


def test_transition_labels_of_every_sample(ann):
    for key in ann.keys():
        s = ann[key]
        expected, changes = _independent_transitions(list(s.frame_labels))
        assert s.transitions.tolist() == expected, key
        assert s.all_transitions.tolist() == changes, key
        assert 0 < s.transitions[0] < s.transitions[1] < 96


def test_transition_counts_match_the_files(ann):
    # The files' steps_transit_frames count label changes: 2 (2209), 3 (568), 4 (223); the 96-frame
    # sampling keeps all of them but one.
    counts = np.bincount([len(ann[k].all_transitions) for k in ann.keys()])
    assert counts[2] + counts[3] + counts[4] == 3000 and counts[3] >= 560 and counts[4] >= 220
    file_counts = np.bincount([len(ann[k].transit_frames) for k in ann.keys()])
    assert file_counts[2:5].tolist() == [2209, 568, 223]


def test_every_test_dive_number_has_training_exemplars(ann):
    train_dn = {ann[k].dive_number for k in ann.train_keys}
    assert all(ann[k].dive_number in train_dn for k in ann.test_keys)
    rows, valid = data.voting_exemplars(ann, ann.test_keys, ann.train_keys, m=10, seed=0)
    assert rows.shape == (749, 10) and valid[:, 0].all()
    for i in range(0, 749, 37):
        dn = ann[ann.test_keys[i]].dive_number
        assert all(ann[ann.train_keys[r]].dive_number == dn for r in rows[i][valid[i]].tolist())


def test_record_fields(ann):
    s = ann[("01", 1)]
    assert (s.dive_number, s.score, s.difficulty) == ("407c", 88.0, 3.2)
    assert s.num_frames == len(s.frame_labels) and s.sampled_indices.shape == (96,)
    assert set(s.sub_action_names.values()) == {"Inward", "3.5 Soms.Tuck", "Entry"}
    with_judges = [k for k in ann.keys() if ann[k].judge_scores is not None]
    assert len(with_judges) == 3000
    assert ann["01/1"] is s
