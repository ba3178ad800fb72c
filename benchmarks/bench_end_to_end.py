"""End-to-end training step (I3D + TSA head): fdperf vs a reference-style step, in the same run.

fdperf: frames cached squashed as uint8 on the device (the steady state after the first epoch),
flip/crop on the device, I3D in bf16 autocast with channels_last_3d on CUDA (float32 on the CPU),
the heads through fdperf.ops. Reference style: a DataLoader with 2 worker processes reading every
frame of both videos of each pair with PIL (flip, NEAREST squash, crop, ToTensor, Normalize per
frame), float32 I3D as written on video 1 and on video 2, the per-sample head of bench_tsa.py.
Same weights, same pairs; a round is STEPS steps (the loader's workers prefetch across them).

    pytest benchmarks/bench_end_to_end.py --benchmark-only
    FDPERF_BENCH_E2E_BATCH=8 FDPERF_BENCH_E2E_SNIPPETS=9 pytest benchmarks/bench_end_to_end.py --benchmark-only

CPU defaults are small (1 pair per step, 1 snippet, 2 steps a round); on a GPU the full sizes
(8 pairs, 9 snippets, 455x256 frames); peak GPU memory is recorded in extra_info.
"""

import os

import numpy as np
import pytest
import torch
from bench_tsa import DEVICE, GPU, Reference, sync
from PIL import Image

from fdperf.backbone.weights import random_i3d
from fdperf.train.clips import Draw, FrameCache
from fdperf.train.e2e_model import EndToEnd, optimizer_groups
from fdperf.tsa import TSA
from fdperf.video import MEAN, STD, to_snippets

BATCH = int(os.environ.get("FDPERF_BENCH_E2E_BATCH", "8" if GPU else "1"))
SNIPPETS = int(os.environ.get("FDPERF_BENCH_E2E_SNIPPETS", "9" if GPU else "1"))
STEPS = int(os.environ.get("FDPERF_BENCH_E2E_STEPS", "4" if GPU else "2"))
ROUNDS = int(os.environ.get("FDPERF_BENCH_ROUNDS", "5" if GPU else "3"))
H, W, T = 256, 455, 96
STARTS = [10 * i for i in range(SNIPPETS)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """2 * BATCH * STEPS frame folders of 96 JPEG frames at FineDiving's 455x256."""
    root = tmp_path_factory.mktemp("e2e-frames")
    n = 2 * BATCH * STEPS
    folders = []
    for v in range(n):
        rng = np.random.default_rng(v)
        base = rng.integers(0, 255, (H // 8, W // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        d = root / f"{v:03d}"
        d.mkdir()
        for f in range(T):
            frame = np.roll(base, f, axis=1)[:H, :W]
            Image.fromarray(np.ascontiguousarray(frame)).save(d / f"{f:05d}.jpg", quality=90)
        folders.append(str(d))
    return folders


def _labels(n):
    g = torch.Generator().manual_seed(1)
    y = torch.rand(n, generator=g) * 40 + 40
    gt = torch.stack([torch.randint(10, 45, (n,), generator=g), torch.randint(55, 90, (n,), generator=g)], 1)
    return y, gt


def _model():
    torch.manual_seed(0)
    return (
        EndToEnd(random_i3d(0), TSA(in_channels=SNIPPETS), STARTS, amp=GPU, channels_last=GPU)
        .to(DEVICE)
        .train()
    )


def _peak(benchmark):
    if GPU:
        benchmark.extra_info["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30


@pytest.mark.benchmark(group="e2e-train-steps")
def test_e2e_steps_fdperf(benchmark, videos):
    n = len(videos)
    cache = FrameCache([("v", i) for i in range(n)], None, None, DEVICE)
    for i, d in enumerate(videos):  # the steady state: every frame cached (epoch 2 onwards)
        files = sorted(os.listdir(d))
        cache.put(i, torch.from_numpy(np.stack([np.asarray(Image.open(os.path.join(d, f))) for f in files])))
    model = _model()
    opt = torch.optim.Adam(optimizer_groups(model, 1e-3, 0.1), weight_decay=0)
    y, gt = _labels(n)
    y, gt, dive = y.to(DEVICE), gt.to(DEVICE), torch.zeros(2 * BATCH, dtype=torch.long, device=DEVICE)
    gen = torch.Generator().manual_seed(0)
    layout = torch.arange(2 * BATCH, device=DEVICE)

    def run():
        for s in range(STEPS):
            rows = torch.arange(2 * BATCH * s, 2 * BATCH * (s + 1))
            clips = cache.train_clips(rows, Draw.random(2 * BATCH, gen))
            opt.zero_grad(set_to_none=True)
            loss, _, _ = model(clips, layout, y[rows.to(DEVICE)], gt[rows.to(DEVICE)], dive, True)
            loss.backward()
            opt.step()
        sync()

    if GPU:
        torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    benchmark.extra_info.update(steps_per_round=STEPS, pairs_per_step=BATCH, snippets=SNIPPETS)
    _peak(benchmark)


class PilPairs(torch.utils.data.Dataset):
    """The reference's loading: every frame through PIL, one random flip/crop per clip."""

    def __init__(self, videos):
        self.videos = videos
        self.mean, self.std = torch.tensor(MEAN).view(3, 1, 1, 1), torch.tensor(STD).view(3, 1, 1, 1)

    def __len__(self):
        return len(self.videos) // 2

    def _clip(self, folder, rng):
        flip, top = bool(rng.integers(2)), int(rng.integers(89))
        frames = []
        for f in sorted(os.listdir(folder)):
            img = Image.open(os.path.join(folder, f)).convert("RGB")
            if flip:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            img = img.resize((112, 200), Image.NEAREST).crop((0, top, 112, top + 112))
            frames.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255))
        return torch.stack(frames, 1).sub(self.mean).div(self.std)

    def __getitem__(self, i):
        rng = np.random.default_rng(i)
        return self._clip(self.videos[2 * i], rng), self._clip(self.videos[2 * i + 1], rng), i


@pytest.mark.benchmark(group="e2e-train-steps")
def test_e2e_steps_reference(benchmark, videos):
    model = _model()
    i3d = model.backbone.to(memory_format=torch.contiguous_format)
    ref = Reference(model.head)
    opt = torch.optim.Adam(
        [
            {"params": [p for p in i3d.parameters() if p.requires_grad], "lr": 1e-4},
            {"params": ref.parameters(), "lr": 1e-3},
        ],
        weight_decay=0,
    )
    y, gt = _labels(len(videos))
    loader = torch.utils.data.DataLoader(
        PilPairs(videos), batch_size=BATCH, num_workers=2, persistent_workers=True, shuffle=False
    )

    def features(clip):
        f, m = i3d(to_snippets(clip.to(DEVICE), STARTS))
        return f.reshape(clip.shape[0], SNIPPETS, -1), m.reshape((clip.shape[0], SNIPPETS) + m.shape[1:])

    def run():
        for v1, v2, idx in loader:
            f1, m1 = features(v1)
            f2, m2 = features(v2)
            a, b = (2 * idx).to(DEVICE), (2 * idx + 1).to(DEVICE)
            ref.train_step(
                opt, f1, m1, f2, m2, y.to(DEVICE)[a], y.to(DEVICE)[b], gt.to(DEVICE)[a], gt.to(DEVICE)[b]
            )
        sync()

    if GPU:
        torch.cuda.reset_peak_memory_stats()
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    benchmark.extra_info.update(steps_per_round=STEPS, pairs_per_step=BATCH, snippets=SNIPPETS)
    _peak(benchmark)
