"""Synthetic dives in the FineDiving layout: procedural frames and annotations (no downloads)."""

from .dives import CATALOGUE, SUB_ACTION_TYPES, DiveKind, dive_score, judge_awards
from .generate import (
    SyntheticDataset,
    SyntheticDive,
    dive_records,
    generate_dataset,
    read_manifest,
    sample_dives,
    split_dives,
    write_annotations,
    write_frames,
)
from .render import DivePlan, DiveRenderer

__all__ = [
    "CATALOGUE",
    "SUB_ACTION_TYPES",
    "DiveKind",
    "DivePlan",
    "DiveRenderer",
    "SyntheticDataset",
    "SyntheticDive",
    "dive_records",
    "dive_score",
    "generate_dataset",
    "judge_awards",
    "read_manifest",
    "sample_dives",
    "split_dives",
    "write_annotations",
    "write_frames",
]
