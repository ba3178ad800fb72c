"""FineDiving data layer: safe annotation loading, records, splits, sampling and exemplars."""

from .annotations import (
    AnnotationError,
    Annotations,
    Sample,
    key_from_str,
    key_to_str,
    load_annotations,
    sample_tensors,
)
from .exemplars import POLICIES, ExemplarSampler, policy_from_flags, voting_exemplars
from .safe_pickle import UnsafePickleError, load_pickle
from .sampling import NUM_FRAMES, all_transitions, sample_frame_indices, step_starts, transition_labels
from .writer import AnnotationRecord, write_annotations

__all__ = [
    "policy_from_flags",
    "AnnotationError",
    "Annotations",
    "Sample",
    "UnsafePickleError",
    "NUM_FRAMES",
    "all_transitions",
    "key_from_str",
    "key_to_str",
    "load_annotations",
    "load_pickle",
    "sample_frame_indices",
    "sample_tensors",
    "POLICIES",
    "ExemplarSampler",
    "voting_exemplars",
    "step_starts",
    "transition_labels",
    "AnnotationRecord",
    "write_annotations",
]
