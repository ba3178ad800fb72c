"""Bad input to the extractor (issue 14): never a crash, never a silent change, never a lost store.

Tiny frame folders (36x64 JPEGs), one snippet, random-init I3D, as in test_extract.py.
"""

import io
import json
import os
import socket
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest
from conftest import TINY_CPU_EXTRACT
from PIL import Image
from test_extract import REPO, _frame_tree

from fdperf.extract import ExtractOptions, Inputs, InputWarning, extract_features
from fdperf.extract.__main__ import main
from fdperf.features import FeatureStore, FeatureStoreWriter
from fdperf.features.store import StoreError, StoreLock, StoreLockedError, join_shards
from fdperf.video import SourceError
from fdperf.video.jpeg_check import JpegCheckError, jpeg_size, read_checked_frames

THREADS = 2


def _jpeg(h=36, w=64, seed=0) -> bytes:
    buf = io.BytesIO()
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(img).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _argv(root, out, *extra):
    return [
        "--frames-root",
        str(root),
        "--out",
        str(out),
        *TINY_CPU_EXTRACT,
        "--torch-threads",
        str(THREADS),
        *extra,
    ]


def _errors(path):
    with h5py.File(path, "r") as f:
        return {k.decode(): r.decode() for k, r in f["errors"][...]}, f["done"][...].tolist()


@pytest.fixture
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---- 1. frames that are not JPEG files never reach DALI ----------------------------------------


def test_jpeg_check_reasons():
    good = _jpeg(36, 64)
    assert jpeg_size(good) == (36, 64)
    assert jpeg_size(np.frombuffer(good, np.uint8)) == (36, 64)
    assert jpeg_size(good + b"\0" * 100) == (36, 64)  # padding after EOI is accepted
    cases = {
        b"": "empty file",
        os.urandom(3000): "no SOI marker",
        good[: len(good) // 2]: "truncated",
        b"\xff\xd8" + b"\0" * 50 + b"\xff\xd9": "corrupt JPEG header",
    }
    sos = good.find(b"\xff\xc0")
    cases[good[:sos] + good[sos + 19 :]] = "no frame header"  # SOF0 segment removed
    zero = bytearray(good)
    zero[sos + 5 : sos + 9] = b"\0\0\0\0"
    cases[bytes(zero)] = "empty image"
    for data, reason in cases.items():
        with pytest.raises(JpegCheckError, match=reason):
            jpeg_size(data)


def test_mixed_frame_sizes_name_the_file(tmp_path):
    a, b = tmp_path / "00001.jpg", tmp_path / "00002.jpg"
    a.write_bytes(_jpeg(36, 64))
    b.write_bytes(_jpeg(72, 128))
    assert len(read_checked_frames([str(a), str(a)])) == 2
    with pytest.raises(SourceError, match=r"mixed sizes: .*00002.jpg is 128x72, .*00001.jpg is 64x36"):
        read_checked_frames([str(a), str(b)])


def test_zero_byte_and_random_frames_are_recorded_not_fatal(tmp_path):
    # Both used to kill the process with SIGSEGV inside DALI's decoder: run the CLI in a child.
    root = _frame_tree(tmp_path / "frames", {("01", 1): 20, ("01", 2): 20, ("01", 3): 20, ("01", 4): 20})
    open(os.path.join(root, "01", "2", "00010.jpg"), "wb").close()
    with open(os.path.join(root, "01", "3", "00005.jpg"), "wb") as f:
        f.write(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    big = os.path.join(root, "01", "4", "00007.jpg")
    with open(big, "wb") as f:
        f.write(_jpeg(72, 128))
    out = tmp_path / "f.h5"
    proc = subprocess.run(
        [sys.executable, "-m", "fdperf.extract", *_argv(root, out, "--dali-threads", "1")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors, done = _errors(out)
    assert done == [True, False, False, False]
    assert "00010.jpg" in errors["01/2"] and "empty file (0 bytes)" in errors["01/2"]
    assert "00005.jpg" in errors["01/3"] and "not a JPEG file" in errors["01/3"]
    assert "00007.jpg" in errors["01/4"] and "mixed sizes" in errors["01/4"]


def test_empty_and_garbage_video_files_are_recorded(tmp_path, capsys):
    (tmp_path / "empty.webm").write_bytes(b"")
    (tmp_path / "junk.webm").write_bytes(os.urandom(4000))
    listing = tmp_path / "videos.tsv"
    listing.write_text("01/1\tempty.webm\n01/2\tjunk.webm\n")
    out = tmp_path / "v.h5"
    rc = main(
        [
            "--video-list",
            str(listing),
            "--out",
            str(out),
            *TINY_CPU_EXTRACT,
        ]
    )
    assert rc == 1
    errors, done = _errors(out)
    assert done == [False, False]
    assert "empty.webm: empty file (0 bytes)" in errors["01/1"]
    assert "junk.webm: cannot open video" in errors["01/2"]


# ---- 2. non-finite I3D output is never marked done ----------------------------------------------


def test_non_finite_rows_are_errors_not_done(tmp_path, monkeypatch, quiet):
    import fdperf.extract as ex

    root = _frame_tree(tmp_path / "frames", {("01", 1): 20, ("01", 2): 20})
    real = ex.Backbone.__call__

    def poisoned(self, clips):  # a NaN in the first video's features, an inf in the second's maps
        feats, maps = real(self, clips)
        feats[0, 0, 3] = np.nan
        if len(maps) > 1:
            maps[1, 0, 5, 1, 1] = np.inf
        return feats, maps

    monkeypatch.setattr(ex.Backbone, "__call__", poisoned)
    out = str(tmp_path / "nan.h5")
    res = extract_features(
        out,
        [("01", 1), ("01", 2)],
        Inputs(frames_root=root),
        random_init=True,
        options=ExtractOptions(
            device="cpu", num_snippets=1, progress=False, torch_threads=THREADS, batch_videos=2, i3d_videos=2
        ),
    )
    assert not res.complete and res.extracted == 0
    errors, done = _errors(out)
    assert done == [False, False]
    assert "not finite (features: 1 NaN, 0 inf)" in errors["01/1"]
    assert "feature_maps: 0 NaN, 1 inf" in errors["01/2"]


# ---- 3. one writer per store -------------------------------------------------------------------


def _holder(path):
    """A second process that holds `path`'s lock until its stdin closes."""
    code = (
        "import sys; from fdperf.features.store import StoreLock\n"
        f"lock = StoreLock({str(path)!r}).acquire(); print('locked', flush=True); sys.stdin.read()\n"
        "lock.release()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_store_in_use_is_refused_with_overwrite_too(tmp_path, capsys, quiet):
    root = _frame_tree(tmp_path / "frames", {("01", 1): 3})
    out = tmp_path / "same.h5"
    with FeatureStoreWriter(out, [("01", 1)], attrs={}, num_snippets=1) as w:  # a store in use
        w.finish()
    before = out.read_bytes()
    holder = _holder(out)
    try:
        for extra in (["--overwrite"], []):
            assert main(_argv(root, out, *extra)) == 2
            err = capsys.readouterr().err
            assert len(err.strip().splitlines()) == 1
            assert (
                f"same.h5 is in use by another fdperf run (PID {holder.pid} on host "
                f"{socket.gethostname()}" in err
            )
            assert "pass --overwrite" not in err and "Traceback" not in err
        assert out.read_bytes() == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert not os.path.exists(str(out) + ".lock")  # released by the holder
    with StoreLock(out):  # and free again
        pass


def test_stale_lock_is_taken_over_with_a_warning(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "s.h5"
    lock = tmp_path / "s.h5.lock"
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "then"}))
    with pytest.warns(UserWarning, match=f"taking over the lock .*PID {dead.pid}"):
        with StoreLock(out):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
    # Another host's lock file is not taken over: its run may be alive.
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "then"}))
    with pytest.raises(StoreLockedError, match=r"PID 1 on host elsewhere.*remove .*s.h5.lock"):
        StoreLock(out).acquire()
    # The same process's second writer is refused as well (flock is per open file).
    lock.unlink()
    with StoreLock(out), pytest.raises(StoreLockedError, match=f"PID {os.getpid()}"):
        StoreLock(out).acquire()


# ---- 4. exit status and one-line errors -------------------------------------------------------


def test_usage_and_input_errors_are_one_line_exit_2(tmp_path, capsys):
    root = _frame_tree(tmp_path / "frames", {("01", 1): 3})
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # a truncated store
    cases = [
        (_argv(root, tmp_path / "adir"), "--out {t}/adir is a directory"),
        (_argv(root, tmp_path / "nope" / "f.h5"), "the folder {t}/nope does not exist"),
        (_argv(root, tmp_path / "afile" / "f.h5"), "{t}/afile is a file, not a folder"),
        (_argv(root, tmp_path / "x.h5", "--seed", "-1"), "--seed must be >= 0, got -1"),
        (_argv(root, tmp_path / "x.h5", "--views", "0"), "--views must be >= 1"),
        (_argv(root, tmp_path / "x.h5", "--batch-videos", "0"), "--batch-videos must be >= 1"),
        (_argv(root, tmp_path / "x.h5", "--num-snippets", "10"), "--num-snippets must be at most 9"),
        (_argv(root, tmp_path / "x.h5", "--limit", "0"), "--limit must be >= 1"),
        # Checked before the annotations are read: the seed is named, not the folder.
        (
            _argv(root, tmp_path / "x.h5", "--annotations", str(tmp_path / "missing"), "--seed", "-2"),
            "--seed must be >= 0",
        ),
        (
            _argv(root, tmp_path / "x.h5", "--annotations", str(tmp_path / "missing")),
            "annotations folder not found: {t}/missing",
        ),
        (
            _argv(root, tmp_path / "x.h5", "--annotations", str(tmp_path / "adir")),
            "missing annotation file: {t}/adir/",
        ),
        (_argv(root, tmp_path / "bad.h5"), "{t}/bad.h5 cannot be opened as an HDF5 file"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2, argv
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ": warning: " not in ln]
        assert len(lines) == 1 and lines[0].startswith("python -m fdperf.extract: error: "), lines
        assert expected.format(t=tmp_path) in lines[0], lines
    assert not os.path.exists(tmp_path / "x.h5") and not os.path.exists(tmp_path / "bad.h5.lock")
    with pytest.raises(StoreError, match=r"bad.h5 cannot be opened as an HDF5 file .* truncated or corrupt"):
        FeatureStore(tmp_path / "bad.h5")  # what train and evaluate read through
    with pytest.raises(ValueError, match="annotations folder not found"):  # --debug: the traceback
        main(["--debug", *_argv(root, tmp_path / "x.h5", "--annotations", str(tmp_path / "missing"))])


def test_no_traceback_from_the_command_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fdperf.extract",
            "--annotations",
            str(tmp_path),
            "--frames-root",
            str(tmp_path),
            "--out",
            str(tmp_path / "f.h5"),
            "--random-init",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"python -m fdperf.extract: error: missing annotation file: "
        f"{tmp_path}/fine-grained_annotation_aqa.pkl"
    ]


# ---- 5. what the extractor accepts is said and recorded -----------------------------------------


def test_short_folders_and_skipped_files_warn_and_are_recorded(tmp_path, capsys):
    import shutil

    root = _frame_tree(tmp_path / "frames", {("01", 1): 100, ("01", 2): 5})
    shutil.copytree(os.path.join(root, "01", "1"), os.path.join(root, "01", "3"))  # 01/3: plain copy
    Image.fromarray(np.zeros((36, 64, 3), np.uint8)).save(os.path.join(root, "01", "1", "00050.png"))
    out = str(tmp_path / "w.h5")
    assert main(_argv(root, out)) == 0
    lines = [
        ln
        for ln in capsys.readouterr().err.splitlines()
        if ": warning: " in ln and "randomly initialised" not in ln
    ]
    assert lines == [  # once per video, one line each
        f"python -m fdperf.extract: warning: 01/1: {root}/01/1: skipped 1 file(s) that are not "
        ".jpg/.jpeg frames (00050.png); convert them to JPEG if they are frames",
        f"python -m fdperf.extract: warning: 01/2: {root}/01/2 has only 5 frame(s), fewer than "
        "the 96 sampled: frames are repeated",
    ]
    store = FeatureStore(out)
    notes = dict(store.warnings)
    assert "fewer than the 96 sampled: frames are repeated" in notes[("01", 2)]
    assert "00050.png" in notes[("01", 1)] and ("01", 3) not in notes
    # The warning is recorded; the features are those of the same folder without the extra file.
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["features"][0], f["features"][2])
        assert f["warnings"][2] == b""


def test_warnings_of_the_library_are_input_warnings(tmp_path):
    root = _frame_tree(tmp_path / "frames", {("01", 1): 4})
    with pytest.warns(InputWarning, match="01/1: .* has only 4 frame"):
        extract_features(
            str(tmp_path / "l.h5"),
            [("01", 1)],
            Inputs(frames_root=root),
            random_init=True,
            options=ExtractOptions(device="cpu", num_snippets=1, progress=False, torch_threads=THREADS),
        )


# ---- 6. the shard master goes through the store module ------------------------------------------


def test_join_shards_keeps_rows_errors_and_warnings(tmp_path):
    keys = [("01", 1), ("01", 2), ("01", 3)]
    blocks = [np.array([0, 1]), np.array([2])]
    paths = [str(tmp_path / f"s{i}.h5") for i in range(2)]
    rng = np.random.default_rng(0)
    for path, rows in zip(paths, blocks):
        with FeatureStoreWriter(
            path, [keys[r] for r in rows], attrs={"weights_sha256": "x"}, num_snippets=2
        ) as w:
            w.write(
                range(len(rows)),
                rng.random((len(rows), 2, 1024), dtype=np.float32),
                np.zeros((len(rows), 2, 1024, 4, 4), np.float16),
                warnings={0: ["short folder"]} if rows[0] == 2 else None,
            )
            w.finish([("01/9", "made-up error")] if rows[0] == 2 else [])
    out = str(tmp_path / "m.h5")
    assert join_shards(out, keys, paths, blocks) is False  # a shard holds an error
    store = FeatureStore(out, allow_partial=True)
    assert store.keys == keys and store.warnings == [(("01", 3), "short folder")]
    assert store.errors == [("01/9", "made-up error")] and store.attrs["weights_sha256"] == "x"
    with h5py.File(out, "r") as f:
        assert f["warnings"].is_virtual and not f.attrs["complete"]
    assert not os.path.exists(out + ".lock")


def test_dali_failure_falls_back_to_pil_and_says_so(tmp_path, monkeypatch):
    import torch

    from fdperf.extract import _Preparer
    from fdperf.video import DecodeError, JpegDecoder

    root = _frame_tree(tmp_path / "frames", {("01", 1): 30})
    opts = ExtractOptions(device="cpu", num_snippets=1, batch_videos=1, readers=1, dali_threads=1)
    keys = [("01", 1)]

    def prepare():
        prep = _Preparer(Inputs(frames_root=root), keys, _cpu_settings(opts), torch.device("cpu"))
        try:
            return prep.submit([0])()
        finally:
            prep.close()

    normal = prepare()
    monkeypatch.setattr(JpegDecoder, "decode", lambda self, videos: [DecodeError("forced")] * len(videos))
    fallback = prepare()
    assert fallback.rows == [0] and not fallback.errors
    assert torch.equal(fallback.clips, normal.clips)  # PIL and DALI's CPU decoder agree bitwise
    assert "DALI could not decode" in fallback.notes[0][-1] and "decoded with PIL" in fallback.notes[0][-1]


def _cpu_settings(opts):
    import torch

    from fdperf.extract import _settings

    return _settings(opts, torch.device("cpu"))


# ---- the same error style for synthetic, report and demo -------------------------------------------


def test_synthetic_report_demo_errors_are_one_line_exit_2(tmp_path, capsys):
    from fdperf.demo.__main__ import main as demo_main
    from fdperf.report.__main__ import main as report_main
    from fdperf.synthetic.__main__ import main as synth_main

    cases = [
        (
            synth_main,
            ["--out", str(tmp_path / "s"), "--videos", "0"],
            "synthetic: error: --videos must be at least 1",
        ),
        (synth_main, ["--out", str(tmp_path / "s"), "--seed", "-1"], "synthetic: error: --seed must be >= 0"),
        (
            synth_main,
            ["--out", str(tmp_path / "s"), "--test-share", "1.5"],
            "synthetic: error: --test-share must be",
        ),
        (
            report_main,
            ["--predictions", str(tmp_path / "none.csv"), "--out", str(tmp_path / "r")],
            f"report: error: predictions file not found: {tmp_path}/none.csv",
        ),
        (
            report_main,
            ["--predictions", "p.csv", "--out", "r", "--max-videos", "0"],
            "report: error: --max-videos must be >= 1",
        ),
        (
            demo_main,
            ["--out", str(tmp_path / "d"), "--videos", "3"],
            "demo: error: --videos: the demo needs at least 8",
        ),
        (demo_main, ["--out", str(tmp_path / "d"), "--seed", "-3"], "demo: error: --seed must be >= 0"),
    ]
    for command, argv, expected in cases:
        assert command(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("python -m fdperf.") and expected in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        with pytest.raises(Exception):  # noqa: B017 (--debug re-raises whatever it was)
            command(["--debug", *argv])
    assert not os.path.exists(tmp_path / "s") and not os.path.exists(tmp_path / "r")
