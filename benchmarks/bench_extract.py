"""End-to-end feature extraction: fdperf vs a reference-style loader, measured in the same run.

Both sides do the same work on the same FineDiving-like JPEG folders (96 sampled frames of
455x256 per video, 9 snippets of 16x112x112): decode, preprocess, I3D fp32 (random weights),
write features and maps to HDF5. The reference side loads as the published data loader does:
PIL per frame, NEAREST squash, centre crop, ToTensor/Normalize per frame, the unfused I3D.

    pytest benchmarks/bench_extract.py --benchmark-only
    FDPERF_BENCH_VIDEOS=4 pytest benchmarks/bench_extract.py --benchmark-only

Groups: `extract-e2e` (videos/s = videos / median) and `extract-stages` (decode + preprocess
alone, for the share of the end-to-end time).
"""

import glob
import os
import warnings

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from fdperf.backbone import load_i3d
from fdperf.extract import ExtractOptions, Inputs, _Preparer, _settings, extract_features
from fdperf.video import MEAN, STD

NUM_VIDEOS = int(os.environ.get("FDPERF_BENCH_VIDEOS", "2"))
ROUNDS = int(os.environ.get("FDPERF_BENCH_ROUNDS", "3"))
THREADS = torch.get_num_threads()
STARTS = [0, 10, 20, 30, 40, 50, 60, 70, 80]
KEYS = [("01", i + 1) for i in range(NUM_VIDEOS)]


@pytest.fixture(scope="module")
def frames_root(tmp_path_factory):
    """Textured 455x256 JPEG frames (quality 90), 110 per video, numbered like the dataset."""
    root = tmp_path_factory.mktemp("frames")
    g = np.random.default_rng(0)
    base = np.linspace(0, 180, 455)[None, :, None] + np.linspace(0, 60, 256)[:, None, None]
    for ev, ix in KEYS:
        d = root / ev / str(ix)
        d.mkdir(parents=True)
        for i in range(110):
            img = (base + g.integers(0, 40, (256, 455, 3)) + i).clip(0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i:05d}.jpg", quality=90)
    return str(root)


# ---- the reference-style loader ---------------------------------------------------------------

_MEAN = torch.tensor(MEAN).view(3, 1, 1)
_STD = torch.tensor(STD).view(3, 1, 1)


def reference_load_video(folder: str) -> torch.Tensor:
    """As the published FineDiving loader: PIL per frame, then the test transform per frame."""
    images = sorted(glob.glob(os.path.join(folder, "*.jpg")))
    start = int(os.path.basename(images[0])[:-4])
    end = int(os.path.basename(images[-1])[:-4])
    idx = np.linspace(start, end, 96).astype(int) - start
    frames = []
    for i in idx:
        img = Image.open(images[i]).convert("RGB").resize((112, 200), Image.NEAREST)
        img = img.crop((0, 44, 112, 156))
        x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255)
        frames.append((x - _MEAN) / _STD)
    return torch.stack(frames, dim=1)  # [3, 96, 112, 112]


def reference_extract(root: str, out: str, model) -> None:
    n = len(KEYS)
    with h5py.File(out, "w") as f:
        feats = f.create_dataset("features", (n, 9, 1024), np.float32)
        maps = f.create_dataset("feature_maps", (n, 9, 1024, 4, 4), np.float16)
        for row, (ev, ix) in enumerate(KEYS):
            video = reference_load_video(os.path.join(root, ev, str(ix)))
            with torch.no_grad():
                pack = torch.stack([video[:, s : s + 16] for s in STARTS])  # [9, 3, 16, 112, 112]
                feat, fmap = model(pack)
            feats[row] = feat.numpy()
            maps[row] = fmap.numpy().astype(np.float16)


# ---- benchmarks -------------------------------------------------------------------------------


def _fdperf_options(**kw):
    return ExtractOptions(device="cpu", progress=False, overwrite=True, torch_threads=THREADS, **kw)


@pytest.mark.benchmark(group="extract-e2e")
def test_e2e_reference_loader(benchmark, frames_root, tmp_path):
    model, _ = load_i3d(random_init=True)
    benchmark.extra_info.update(videos=NUM_VIDEOS, threads=THREADS)
    benchmark.pedantic(
        reference_extract,
        args=(frames_root, str(tmp_path / "ref.h5"), model),
        rounds=ROUNDS,
        iterations=1,
        warmup_rounds=1,
    )


@pytest.mark.benchmark(group="extract-e2e")
def test_e2e_fdperf(benchmark, frames_root, tmp_path):
    warnings.simplefilter("ignore", UserWarning)  # random-init warning
    out = str(tmp_path / "f.h5")
    benchmark.extra_info.update(videos=NUM_VIDEOS, threads=THREADS)
    benchmark.pedantic(
        extract_features,
        args=(out, KEYS, Inputs(frames_root=frames_root)),
        kwargs=dict(random_init=True, options=_fdperf_options()),
        rounds=ROUNDS,
        iterations=1,
        warmup_rounds=1,
    )


@pytest.mark.benchmark(group="extract-stages")
def test_stage_reference_decode_preprocess(benchmark, frames_root):
    def load_all():
        for ev, ix in KEYS:
            reference_load_video(os.path.join(frames_root, ev, str(ix)))

    benchmark.pedantic(load_all, rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="extract-stages")
def test_stage_fdperf_decode_preprocess(benchmark, frames_root):
    opts = _settings(_fdperf_options(), torch.device("cpu"))
    prep = _Preparer(Inputs(frames_root=frames_root), KEYS, opts, torch.device("cpu"))
    batches = [
        list(range(i, min(i + opts.batch_videos, len(KEYS)))) for i in range(0, len(KEYS), opts.batch_videos)
    ]

    def prepare_all():
        for rows in batches:
            got = prep.submit(rows)()
            assert len(got.rows) == len(rows)

    try:
        benchmark.pedantic(prepare_all, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    finally:
        prep.close()


@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
@pytest.mark.benchmark(group="extract-stages")
def test_stage_i3d(benchmark, fused):
    """I3D alone on one video's 9 snippets: as written (the reference) and as fdperf runs it
    (batch norm folded, 1x1 convolutions merged, channels_last_3d)."""
    from fdperf.backbone import fuse_for_inference

    model = load_i3d(random_init=True)[0]
    x = torch.randn(9, 3, 16, 112, 112)
    if fused:
        model = fuse_for_inference(model).to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)

    def run():
        with torch.inference_mode():
            model(x)

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)


# ---- GPU (run where a GPU is present; figures go to benchmarks/RESULTS.md with the card) -------

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
GPU_VIDEOS = int(os.environ.get("FDPERF_BENCH_GPU_VIDEOS", "256"))


@pytest.fixture(scope="module")
def gpu_frames_root(frames_root, tmp_path_factory):
    """GPU_VIDEOS keys whose folders link to the generated 455x256 folders (decode work is real)."""
    root = tmp_path_factory.mktemp("gpu_frames")
    for i in range(GPU_VIDEOS):
        ev, ix = KEYS[i % len(KEYS)]
        (root / "01").mkdir(exist_ok=True)
        os.symlink(os.path.join(frames_root, ev, str(ix)), root / "01" / str(i + 1))
    return str(root)


@needs_gpu
@pytest.mark.benchmark(group="extract-gpu")
def test_gpu_e2e_jpeg_folders(benchmark, gpu_frames_root, tmp_path):
    """Goal: >= 200 videos/s (96 frames of 455x256 per video) on an H100/H200."""
    warnings.simplefilter("ignore", UserWarning)
    keys = [("01", i + 1) for i in range(GPU_VIDEOS)]
    opts = ExtractOptions(device="cuda", progress=False, overwrite=True)
    res = {}

    def run():
        res["r"] = extract_features(
            str(tmp_path / "g.h5"), keys, Inputs(frames_root=gpu_frames_root), random_init=True, options=opts
        )

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(
        videos=GPU_VIDEOS,
        device=torch.cuda.get_device_name(),
        videos_per_s=GPU_VIDEOS / benchmark.stats.stats.median,
    )
    assert res["r"].complete


@needs_gpu
@pytest.mark.parametrize("readers", [1, 4])
@pytest.mark.benchmark(group="extract-gpu-video")
def test_gpu_h264_720p_parallel_readers(benchmark, tmp_path, readers):
    """Goal: >= 4,000 frames/s of 720p H.264 with parallel readers (one NVDEC session each)."""
    import av

    from fdperf.video import DaliVideoDecoder, ParallelDecoder

    path = str(tmp_path / "720p.mp4")
    n = 240
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 1280, 720, "yuv420p"
        g = np.random.default_rng(0)
        base = g.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
        for i in range(n):
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.roll(base, 4 * i, axis=1), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    data = np.fromfile(path, dtype=np.uint8)
    idx = np.arange(n, dtype=np.int32)
    pool = ParallelDecoder(lambda: DaliVideoDecoder("cuda", max_videos=1), readers)
    clips = 4 * readers

    def run():
        futures = [pool.submit([(data, idx)]) for _ in range(clips)]
        for f in futures:
            f.result()
        torch.cuda.synchronize()

    try:
        benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    finally:
        pool.close()
    benchmark.extra_info.update(
        readers=readers,
        device=torch.cuda.get_device_name(),
        frames_per_s=clips * n / benchmark.stats.stats.median,
    )
