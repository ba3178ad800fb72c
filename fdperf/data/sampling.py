"""The reference's frame sampling and transition labels (docs/design.md §2)."""

import numpy as np

NUM_FRAMES = 96


def sample_frame_indices(num_frames: int, n: int = NUM_FRAMES) -> np.ndarray:
    """`n` indices over `num_frames` sorted frames: np.linspace(0, num_frames-1, n).astype(int).

    Instances shorter than `n` frames repeat frames, as the reference does.
    """
    if num_frames < 1:
        raise ValueError(f"cannot sample {n} frames from an instance with {num_frames} frames")
    return np.linspace(0, num_frames - 1, n).astype(int)


def step_starts(labels: np.ndarray) -> np.ndarray:
    """Index of the first frame of each sub-action type, types in order of first appearance."""
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)
    return np.sort(first).astype(np.int64)


def all_transitions(labels: np.ndarray) -> np.ndarray:
    """Every transition: each index where the sub-action label changes.

    Differs from the step starts of `step_starts` when a type recurs (a somersault, a twist,
    the same somersault again: 219 FineDiving dives), which the training labels ignore.
    """
    labels = np.asarray(labels)
    return (np.flatnonzero(labels[1:] != labels[:-1]) + 1).astype(np.int64)


def transition_labels(labels: np.ndarray, num_transitions: int = 2) -> np.ndarray:
    """The transition labels the model trains on.

    With two transitions (the paper's L = 2): [t[1], t[-1]], the start of the second step and
    the start of the last one, whatever the number of steps. For L > 2: the first L-1 step
    starts after the first step, then the start of the last step.
    """
    if num_transitions < 1:
        raise ValueError(f"num_transitions must be >= 1, got {num_transitions}")
    t = step_starts(labels)
    if len(t) - 1 < num_transitions:
        raise ValueError(f"need at least {num_transitions} transitions, the labels have {len(t) - 1}")
    return np.concatenate([t[1:num_transitions], t[-1:]]).astype(np.int64)
