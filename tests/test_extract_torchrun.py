"""torchrun with 2 CPU processes: shards + a rank-0 master file joined with HDF5 virtual datasets."""

import os
import subprocess
import sys

import h5py
import pytest
import torch
from conftest import TINY_CPU_EXTRACT
from test_extract import REPO, _frame_tree

from fdperf.extract import ExtractOptions, Inputs, extract_features, shard_path
from fdperf.features import FeatureStore

FRAMES = {("01", 1): 100, ("01", 2): 50, ("02", 7): 120}  # 3 keys: shards of 2 and 1 rows


def test_torchrun_two_processes(tmp_path):
    root = _frame_tree(tmp_path / "frames", FRAMES)
    out = str(tmp_path / "feats.h5")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "fdperf.extract",
        "--frames-root",
        root,
        "--out",
        out,
        *TINY_CPU_EXTRACT,
        "--torch-threads",
        "1",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    shards = [shard_path(out, r, 2) for r in range(2)]
    assert all(os.path.isfile(p) for p in shards)
    with h5py.File(out, "r") as f:
        assert f["features"].is_virtual and f["feature_maps"].is_virtual and f["done"].is_virtual
        assert bool(f.attrs["complete"])
        assert [s.decode() if isinstance(s, bytes) else s for s in f.attrs["shards"]] == [
            os.path.basename(p) for p in shards
        ]
    with h5py.File(shards[1], "r") as f:
        assert [k.decode() for k in f["keys"][...]] == ["02/7"]

    # Readers see one store, equal to a single-process run with the same thread count.
    store = FeatureStore(out)
    assert store.keys == sorted(FRAMES)
    feats, maps = store.load()
    threads = torch.get_num_threads()
    try:
        single = str(tmp_path / "single.h5")
        with pytest.warns(UserWarning):
            extract_features(
                single,
                sorted(FRAMES),
                Inputs(frames_root=root),
                random_init=True,
                options=ExtractOptions(device="cpu", num_snippets=1, progress=False, torch_threads=1),
            )
    finally:
        torch.set_num_threads(threads)
    ref_feats, ref_maps = FeatureStore(single).load()
    assert torch.equal(feats, ref_feats) and torch.equal(maps, ref_maps)
    assert not torch.equal(feats[0], feats[2])

    os.rename(shards[1], shards[1] + ".moved")
    with pytest.raises(FileNotFoundError, match="shard files that are missing"):
        FeatureStore(out)
