"""Frame sampling and transition labels (docs/design.md §2)."""

import numpy as np
import pytest

from fdperf.data import all_transitions, sample_frame_indices, transition_labels


def test_linspace_sampling_and_repeats():
    idx = sample_frame_indices(101)
    assert idx.shape == (96,) and idx[0] == 0 and idx[-1] == 100
    assert np.array_equal(idx, np.linspace(0, 100, 96).astype(int))
    short = sample_frame_indices(40)
    assert short[-1] == 39 and len(np.unique(short)) == 40  # short instances repeat frames
    with pytest.raises(ValueError, match="0 frames"):
        sample_frame_indices(0)


def test_labels_for_three_and_four_transitions():
    labels = np.array([1] * 10 + [15] * 20 + [32] * 10 + [15] * 20 + [36] * 36)
    assert transition_labels(labels).tolist() == [
        10,
        60,
    ]  # [t[1], t[-1]] over first appearances (0, 10, 30, 60)
    assert transition_labels(labels, 3).tolist() == [10, 30, 60]
    assert all_transitions(labels).tolist() == [10, 30, 40, 60]  # every label change
    with pytest.raises(ValueError, match="need at least 4 transitions"):
        transition_labels(labels, 4)


def test_two_steps_only_are_rejected():
    with pytest.raises(ValueError, match="need at least 2 transitions"):
        transition_labels(np.array([1] * 50 + [36] * 46))
