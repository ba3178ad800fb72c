"""python -m fdperf.extract end to end on generated frame trees (random-init I3D, 1 snippet).

I3D dominates the cost (~0.5 s per 16x112x112 snippet here), so every run uses one snippet per
video and a handful of videos; a module-scoped uninterrupted run is the reference that the
resumed and sharded runs must reproduce.
"""

import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch
from conftest import TINY_CPU_EXTRACT, write_annotation_set
from PIL import Image

from fdperf.extract import ExtractOptions, Inputs, extract_features
from fdperf.extract.__main__ import build_parser, main
from fdperf.features import FeatureStore

KEYS = [("01", 1), ("01", 2), ("02", 7), ("02", 8)]
FRAMES = {("01", 1): 100, ("01", 2): 50, ("02", 7): 120, ("02", 8): 97}  # ("01", 2): shorter than 96
THREADS = 2
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _frame_tree(root, frames=FRAMES, first=1):
    for (ev, ix), n in frames.items():
        rng = np.random.default_rng([int(ev), ix])  # a video's pixels depend on its key only
        d = os.path.join(root, ev, str(ix))
        os.makedirs(d, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 255, (36, 64, 3), dtype=np.uint8)
            Image.fromarray(img).save(os.path.join(d, f"{first + i:05d}.jpg"), quality=85)
    return str(root)


def _options(**kw):
    base = dict(device="cpu", num_snippets=1, progress=False, torch_threads=THREADS, batch_videos=2)
    base.update(kw)
    return ExtractOptions(**base)


def _datasets(path):
    with h5py.File(path, "r") as f:
        return {name: f[name][...] for name in ("keys", "features", "feature_maps", "done")}, dict(f.attrs)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return _frame_tree(tmp_path_factory.mktemp("frames"))


@pytest.fixture(scope="module")
def reference_store(tree, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ref") / "ref.h5")
    with pytest.warns(UserWarning, match="random"):
        res = extract_features(path, KEYS, Inputs(frames_root=tree), random_init=True, options=_options())
    assert res.complete and res.extracted == 4 and not res.errors
    return path


def _annotations(folder):
    samples = {
        k: ("107b", 60.0 + i, 3.0, [n // 3, n // 3, n - 2 * (n // 3)], [1, 20, 36])
        for i, (k, n) in enumerate(FRAMES.items())
    }
    return write_annotation_set(folder, samples, KEYS[:3], KEYS[3:])


def test_cli_acceptance_layout(tree, tmp_path, reference_store, capsys):
    ann = _annotations(str(tmp_path / "Annotations"))
    out = str(tmp_path / "feats.h5")
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("02/7\n01/2\n")
    rc = main(
        [
            "--annotations",
            ann,
            "--frames-root",
            tree,
            "--out",
            out,
            "--random-init",
            "--device",
            "cpu",
            "--num-snippets",
            "1",
            "--keys-file",
            str(keys_file),
            "--no-progress",
            "--torch-threads",
            str(THREADS),
        ]
    )
    assert rc == 0
    assert "2 video(s) extracted" in capsys.readouterr().err
    with h5py.File(out, "r") as f:
        assert [k.decode() for k in f["keys"][...]] == ["01/2", "02/7"]
        assert f["features"].shape == (2, 1, 1024) and f["features"].dtype == np.float32
        assert f["feature_maps"].shape == (2, 1, 1024, 4, 4) and f["feature_maps"].dtype == np.float16
        assert f["done"][...].all() and bool(f.attrs["complete"])
        assert f.attrs["weights_sha256"] == "random-init" and f.attrs["preprocess"] == "reference"
        assert f.attrs["torch_version"] == str(torch.__version__) and f.attrs["dali_version"]
    # Same videos, same settings: the same rows as in the reference store (order by key).
    ref, _ = _datasets(reference_store)
    got, _ = _datasets(out)
    np.testing.assert_array_equal(got["features"], ref["features"][[1, 2]])
    assert np.abs(got["features"]).max() > 0


def test_help_documents_every_option(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = capsys.readouterr().out
    for action in parser._actions:
        for opt in action.option_strings:
            assert opt in text, opt
        assert action.help, action.option_strings


def test_refuses_without_weights(tree, tmp_path, capsys):
    assert main(["--frames-root", tree, "--out", str(tmp_path / "x.h5"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--random-init" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "x.h5")


def test_bad_inputs_are_recorded_and_rerun_completes(tmp_path, reference_store, capsys):
    root = _frame_tree(tmp_path / "frames", {k: FRAMES[k] for k in KEYS[:2]})
    os.makedirs(os.path.join(root, "02", "8"))  # a key with no frames
    # ("02", 7) has no folder at all; ("01", 2) gets a truncated JPEG among its sampled frames.
    bad = os.path.join(root, "01", "2", "00010.jpg")
    good_bytes = open(bad, "rb").read()
    open(bad, "wb").write(good_bytes[: len(good_bytes) // 2])
    out = str(tmp_path / "f.h5")
    argv = [
        "--frames-root",
        root,
        "--out",
        out,
        *TINY_CPU_EXTRACT,
        "--keys-file",
        str(tmp_path / "k.txt"),
        "--torch-threads",
        str(THREADS),
    ]
    (tmp_path / "k.txt").write_text("".join(f"{e}/{i}\n" for e, i in KEYS))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "1 video(s) extracted" in err and "3 error(s)" in err and "INCOMPLETE" in err
    with h5py.File(out, "r") as f:
        errors = {e.decode(): r.decode() for e, r in f["errors"][...]}
        assert f["done"][...].tolist() == [True, False, False, False]
        assert not f.attrs["complete"]
    assert "truncated" in errors["01/2"] and "00010.jpg" in errors["01/2"]
    assert "frame folder not found" in errors["02/7"]
    assert "no JPEG frames" in errors["02/8"]
    with pytest.raises(ValueError, match="3 error"):
        FeatureStore(out)

    # Fix the inputs and rerun the same command: only the failed videos are extracted.
    open(bad, "wb").write(good_bytes)
    _frame_tree(tmp_path / "frames", {k: FRAMES[k] for k in KEYS[2:]})
    os.rmdir(os.path.join(root, "02", "8")) if not os.listdir(os.path.join(root, "02", "8")) else None
    assert main(argv) == 0
    assert "3 video(s) extracted, 1 already done" in capsys.readouterr().err
    got, _ = _datasets(out)
    ref, _ = _datasets(reference_store)
    for name in ("features", "feature_maps", "done"):
        np.testing.assert_array_equal(got[name], ref[name])


def test_resume_after_kill9_is_bitwise_identical(tree, tmp_path, reference_store):
    out = str(tmp_path / "f.h5")
    script = textwrap.dedent(f"""
        import os, signal, warnings
        warnings.simplefilter("ignore")
        from fdperf.extract import ExtractOptions, Inputs, extract_features
        def die(n):  # kill -9 right after the first batch was written
            os.kill(os.getpid(), signal.SIGKILL)
        extract_features({out!r}, {KEYS!r}, Inputs(frames_root={tree!r}), random_init=True,
                         options=ExtractOptions(device="cpu", num_snippets=1, progress=False,
                                                torch_threads={THREADS}, batch_videos=2),
                         on_progress=die)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with pytest.raises(ValueError, match="2 of 4 rows are not done"):
        FeatureStore(out)
    with h5py.File(out, "r") as f:
        assert not f.attrs["complete"] and f["done"][...].tolist() == [True, True, False, False]

    with pytest.warns(UserWarning):
        res = extract_features(out, KEYS, Inputs(frames_root=tree), random_init=True, options=_options())
    assert res.complete and res.skipped == 2 and res.extracted == 2
    got, got_attrs = _datasets(out)
    ref, ref_attrs = _datasets(reference_store)
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    assert got["features"].tobytes() == ref["features"].tobytes()
    assert got["feature_maps"].tobytes() == ref["feature_maps"].tobytes()
    assert {k: str(v) for k, v in got_attrs.items()} == {k: str(v) for k, v in ref_attrs.items()}
    # Down to the file bytes: rows and metadata are where the uninterrupted run put them.
    assert open(out, "rb").read() == open(reference_store, "rb").read()


def test_resume_refuses_other_settings(tree, reference_store, tmp_path):
    import shutil

    out = str(tmp_path / "copy.h5")
    shutil.copy(reference_store, out)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="preprocess"):
        extract_features(
            out, KEYS, Inputs(frames_root=tree), random_init=True, options=_options(preprocess="aspect")
        )


def test_views_axis_and_reader(tree, tmp_path):
    out = str(tmp_path / "views.h5")
    with pytest.warns(UserWarning):
        res = extract_features(
            out, KEYS[:1], Inputs(frames_root=tree), random_init=True, options=_options(views=2)
        )
    assert res.complete
    store = FeatureStore(out)
    feats, maps = store.load()
    assert feats.shape == (1, 2, 1, 1024) and maps.shape == (1, 2, 1, 1024, 4, 4)
    assert not torch.equal(feats[:, 0], feats[:, 1])  # two different flip/crop draws


def test_video_inputs_h264_pyav_and_vp9_dali(tmp_path, capsys):
    from test_video_decode import _write_video

    # A video list mixing codecs: H.264 decodes through PyAV, VP9 through DALI's CPU decoder.
    h264 = _write_video(tmp_path / "a.mp4", "libx264", n=30)
    _write_video(tmp_path / "b.webm", "libvpx-vp9", n=30)
    listing = tmp_path / "videos.tsv"
    listing.write_text(f"01/1\t{h264}\n01/2\tb.webm\n01/3\tmissing.mp4\n")
    out = str(tmp_path / "v.h5")
    rc = main(
        [
            "--video-list",
            str(listing),
            "--out",
            out,
            *TINY_CPU_EXTRACT,
            "--torch-threads",
            str(THREADS),
        ]
    )
    assert rc == 1
    assert "video file not found" in capsys.readouterr().err
    store = FeatureStore(out, allow_partial=True)
    assert store.keys == [("01", 1), ("01", 2)]
    feats, _ = store.load()
    # Identical grey ramps in both files: close features, whichever decoder produced them.
    torch.testing.assert_close(feats[0], feats[1], rtol=0.05, atol=float(feats.abs().max()) * 0.05)


def test_untrimmed_videos_cut_by_coarse_annotation(tmp_path):
    from test_video_decode import _write_video

    ann = _annotations(str(tmp_path / "Annotations"))  # coarse: start 0, end = instance length
    os.makedirs(tmp_path / "videos")
    _write_video(tmp_path / "videos" / "01.mp4", "libx264", n=130)
    out = str(tmp_path / "u.h5")
    rc = main(
        [
            "--annotations",
            ann,
            "--videos-root",
            str(tmp_path / "videos"),
            "--video-layout",
            "untrimmed",
            "--split",
            "train",
            "--limit",
            "2",
            "--out",
            out,
            *TINY_CPU_EXTRACT,
        ]
    )
    assert rc == 0
    assert FeatureStore(out).keys == [("01", 1), ("01", 2)]


def test_wrong_weights_layout_is_a_clear_error(tree, tmp_path, capsys):
    bad = tmp_path / "resnet.pth"
    torch.save({"layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3)}, bad)
    out = tmp_path / "w.h5"
    rc = main(
        ["--frames-root", tree, "--out", str(out), "--weights", str(bad), "--device", "cpu", "--no-progress"]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "missing keys: conv3d_1a_7x7.conv3d.weight" in err
    assert "unexpected keys: layer1.0.conv1.weight" in err
    assert not out.exists()


def test_bf16_autocast_and_parallel_readers(tree, tmp_path, reference_store):
    # The GPU defaults' code paths on the CPU: bf16 autocast, two DALI pipelines, batches of one.
    out = str(tmp_path / "bf16.h5")
    with pytest.warns(UserWarning):
        res = extract_features(
            out,
            KEYS[:2],
            Inputs(frames_root=tree),
            random_init=True,
            options=_options(precision="bf16", readers=2, batch_videos=1),
        )
    assert res.complete
    got, attrs = _datasets(out)
    ref, _ = _datasets(reference_store)
    assert attrs["precision"] == "bf16"
    a, b = got["features"], ref["features"][:2]
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 0.05  # bf16 rounding, same features
    assert not np.array_equal(a, b)
