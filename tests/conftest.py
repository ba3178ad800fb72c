"""Shared fixtures: the real FineDiving annotations and small annotation sets in the same schema."""

import os
import re

import numpy as np
import pytest
import torch

from fdperf.data.annotations import FILES
from fdperf.data.writer import AnnotationRecord, write_annotations, write_pickle

# The real FineDiving annotations come under their own release agreement, so they are not in the
# repository: tests that need them read the folder from this variable and skip without it.
ANNOTATIONS_ENV = "FDPERF_ANNOTATIONS"


def real_annotations_missing():
    """None when FDPERF_ANNOTATIONS names a folder with the six files, else why not."""
    folder = os.environ.get(ANNOTATIONS_ENV)
    if not folder:
        return f"{ANNOTATIONS_ENV} is not set (the FineDiving Annotations/ folder)"
    missing = [name for name in FILES.values() if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        return f"{ANNOTATIONS_ENV}={folder} lacks {', '.join(missing)}"
    return None


# Extraction options of the command-line tests: random I3D on the CPU, one snippet, no bar.
TINY_CPU_EXTRACT = ["--random-init", "--device", "cpu", "--num-snippets", "1", "--no-progress"]


@pytest.fixture(scope="session")
def real_annotations_dir():
    why = real_annotations_missing()
    if why:
        pytest.skip(f"real FineDiving annotations: {why}")
    return os.environ[ANNOTATIONS_ENV]


def write_annotation_set(folder, samples, train, test, overrides=None):
    """Writes the six FineDiving files for `samples`: {key: (dive_number, score, difficulty,
    step_lengths, step_types)}, through fdperf's annotation writer. `overrides` maps a file name
    to an object written instead (None: the file is left out), for the loader's error tests."""
    records = [
        AnnotationRecord(
            key=key,
            dive_number=dn,
            score=score,
            difficulty=dd,
            frame_labels=np.repeat(np.asarray(types, np.int64), lengths),
            sub_action_names={t: f"type{t}" for t in types},
            judge_scores=[7.0, 7.5, 8.0, 8.0, 8.5],
        )
        for key, (dn, score, dd, lengths, types) in samples.items()
    ]
    write_annotations(folder, records, train, test, {i: f"type{i}" for i in range(1, 43)})
    for name, obj in (overrides or {}).items():
        path = os.path.join(folder, name)
        if obj is None:
            os.remove(path)
        else:
            write_pickle(path, obj)
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


def undocumented_arguments(help_text: str) -> list:
    """The arguments of an argparse --help text that have no description. An entry is indented
    by two spaces; its description follows on the same line after two or more spaces, or on the
    next lines, indented deeper."""
    lines = help_text.splitlines()
    bare = []
    for i, line in enumerate(lines):
        m = re.match(r"^  (\S.*?)(?:\s{2,}\S.*)?$", line)
        if not m or re.search(r"\s{2,}\S", line.strip()):
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if not re.match(r"^   +\S", following):
            bare.append(m.group(1))
    return bare


@pytest.fixture
def one_thread():
    """Tiny convolutions run faster on one thread than on two contended ones (2-core CI)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
