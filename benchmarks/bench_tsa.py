"""TSA head on cached features: fdperf vs a reference-style implementation, in the same run.

The reference side is tests/reference_tsa.py (the implementation tests/test_tsa_model.py checks
fdperf against), in the published helper code's style: per-sample Python loops, boundaries read
back to the host (`.item()`), `F.interpolate` per segment, one decoder call per step and
direction, the transition head also run on the feature maps, and at test time PSNet rerun on
both videos of every (query, exemplar) pair. Both sides use the same weights and inputs (random
features in the store's shapes: [9, 1024] features, [9, 1024, 4, 4] maps).

    pytest benchmarks/bench_tsa.py --benchmark-only
    FDPERF_BENCH_QUERIES=749 FDPERF_BENCH_EPOCH_PAIRS=2251 pytest benchmarks/bench_tsa.py --benchmark-only

Groups: `tsa-train-step` (8 pairs, forward + backward + Adam), `tsa-epoch` (EPOCH_PAIRS pairs;
on the GPU fdperf replays a CUDA graph) and `tsa-voting` (QUERIES test videos x 10 exemplars of
the same dive number, exemplars drawn from the real FineDiving split when FDPERF_ANNOTATIONS
names its Annotations/ folder, else from groups of the same shape). The CPU defaults are scaled
down so the reference side finishes in seconds; on a GPU the defaults are the full sizes (2251
training pairs, 749 x 10 pairs).
"""

import os

import numpy as np
import pytest
import torch
from reference_tsa import ReferenceTSA  # tests/reference_tsa.py (conftest.py adds tests/)

from fdperf.evaluate import vote
from fdperf.features.videoset import VideoSet
from fdperf.train.step import TrainStep
from fdperf.tsa import TSA

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
GPU = DEVICE.type == "cuda"
QUERIES = int(os.environ.get("FDPERF_BENCH_QUERIES", "749" if GPU else "24"))
EPOCH_PAIRS = int(os.environ.get("FDPERF_BENCH_EPOCH_PAIRS", "2251" if GPU else "32"))
ROUNDS = int(os.environ.get("FDPERF_BENCH_ROUNDS", "5" if GPU else "3"))
BATCH, M = 8, 10
if int(os.environ.get("FDPERF_BENCH_THREADS", "0")) > 0:
    torch.set_num_threads(int(os.environ["FDPERF_BENCH_THREADS"]))
# The real FineDiving split, when FDPERF_ANNOTATIONS names its Annotations/ folder.
ANNOTATIONS = os.environ.get("FDPERF_ANNOTATIONS", "")


def sync():
    if GPU:
        torch.cuda.synchronize()


# ---- fixtures ----------------------------------------------------------------------------------
def _model():
    torch.manual_seed(0)
    return TSA().to(DEVICE)


def _videos(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, 9, 1024, generator=g)
    maps = torch.randn(n, 9, 1024, 4, 4, generator=g)
    y = torch.rand(n, generator=g) * 100
    gt = torch.stack([torch.randint(5, 45, (n,), generator=g), torch.randint(50, 90, (n,), generator=g)], 1)
    return VideoSet(
        [("v", i) for i in range(n)],
        feats.to(DEVICE),
        maps.to(DEVICE),
        y.to(DEVICE),
        gt.to(DEVICE),
        torch.zeros(n, dtype=torch.long, device=DEVICE),
        y.to(DEVICE),
    )


def _voting_plan():
    """(query rows, exemplar rows [Nq, M], valid) in the structure of the real split: each test
    video votes with up to 10 training videos of its dive number (the first QUERIES test videos
    in dive-number order, so that groups are complete as in the full pass)."""
    if ANNOTATIONS and os.path.isfile(os.path.join(ANNOTATIONS, "train_split.pkl")):
        from fdperf.data import load_annotations, voting_exemplars

        ann = load_annotations(ANNOTATIONS)
        test = sorted(ann.test_keys, key=lambda k: (ann[k].dive_number, k))[:QUERIES]
        rows, valid = voting_exemplars(ann, test, ann.train_keys, m=M, seed=0)
        return rows, valid, len(ann.train_keys), "FineDiving split"
    g = np.random.default_rng(0)  # fallback: 50 dive numbers of 45 training videos each
    rows = torch.as_tensor(np.stack([(i % 50) * 45 + g.permutation(45)[:M] for i in range(QUERIES)]))
    return rows, torch.ones_like(rows, dtype=torch.bool), 2250, "synthetic groups"


@pytest.fixture(scope="module")
def pairs():
    return _videos(2 * BATCH)


# ---- training step -----------------------------------------------------------------------------
@pytest.mark.benchmark(group="tsa-train-step")
def test_train_step_fdperf(benchmark, pairs):
    model = _model().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=GPU)
    step = TrainStep(model, opt, pairs, BATCH, DEVICE, amp=False)
    step.rows.copy_(torch.arange(BATCH))
    step.ex_rows.copy_(torch.arange(BATCH, 2 * BATCH))
    step.use_gt.fill_(False)
    if GPU:
        step.capture()
    benchmark.extra_info.update(
        device=str(DEVICE), threads=torch.get_num_threads(), cuda_graph=step.graph is not None
    )

    def run():
        step()
        sync()

    benchmark.pedantic(run, rounds=ROUNDS * 2, iterations=1, warmup_rounds=2)


@pytest.mark.benchmark(group="tsa-train-step")
def test_train_step_reference(benchmark, pairs):
    model = _model().train()
    ref = ReferenceTSA(model)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    p, n = pairs, BATCH
    benchmark.extra_info.update(device=str(DEVICE), threads=torch.get_num_threads())

    def run():
        ref.train_step(
            opt,
            p.features[:n],
            p.maps[:n],
            p.features[n:],
            p.maps[n:],
            p.scores[:n],
            p.scores[n:],
            p.bounds[:n],
            p.bounds[n:],
        )
        sync()

    benchmark.pedantic(run, rounds=ROUNDS * 2, iterations=1, warmup_rounds=2)


# ---- epoch -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def epoch_videos():
    return _videos(EPOCH_PAIRS, seed=1)


@pytest.mark.benchmark(group="tsa-epoch")
def test_epoch_fdperf(benchmark, epoch_videos):
    model = _model().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=GPU)
    step = TrainStep(model, opt, epoch_videos, BATCH, DEVICE, amp=False)
    step.use_gt.fill_(False)
    if GPU:
        step.capture()
    g = torch.Generator(device=DEVICE).manual_seed(0)
    benchmark.extra_info.update(device=str(DEVICE), pairs=EPOCH_PAIRS, cuda_graph=step.graph is not None)

    def run():
        perm = torch.randperm(EPOCH_PAIRS, generator=g, device=DEVICE)
        ex = torch.roll(perm, 1)
        for b in range(EPOCH_PAIRS // BATCH):
            step.rows.copy_(perm[b * BATCH : (b + 1) * BATCH])
            step.ex_rows.copy_(ex[b * BATCH : (b + 1) * BATCH])
            step()
        sync()

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="tsa-epoch")
def test_epoch_reference(benchmark, epoch_videos):
    model = _model().train()
    ref = ReferenceTSA(model)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    v = epoch_videos
    benchmark.extra_info.update(device=str(DEVICE), pairs=EPOCH_PAIRS)

    def run():
        perm = torch.randperm(EPOCH_PAIRS).to(DEVICE)
        ex = torch.roll(perm, 1)
        for b in range(EPOCH_PAIRS // BATCH):
            q, e = perm[b * BATCH : (b + 1) * BATCH], ex[b * BATCH : (b + 1) * BATCH]
            ref.train_step(
                opt,
                v.features[q],
                v.maps[q],
                v.features[e],
                v.maps[e],
                v.scores[q],
                v.scores[e],
                v.bounds[q],
                v.bounds[e],
            )
        sync()

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=0)


# ---- voting ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def voting():
    rows, valid, n_train, source = _voting_plan()
    return _videos(rows.shape[0], seed=2), _videos(n_train, seed=3) if GPU else None, rows, valid, source


def _exemplar_set(voting_fx):
    """On the CPU only the exemplars that vote are materialised (the full store would not fit the
    reference side's time budget anyway); rows are remapped, not the work."""
    queries, exemplars, rows, valid, source = voting_fx
    if exemplars is not None:
        return queries, exemplars, rows, valid
    used, inv = torch.unique(rows[valid], return_inverse=True)
    remap = torch.zeros_like(rows)
    remap[valid] = inv
    return queries, _videos(used.numel(), seed=3), remap, valid


@pytest.mark.benchmark(group="tsa-voting")
def test_voting_fdperf(benchmark, voting):
    model = _model().eval()
    queries, exemplars, rows, valid = _exemplar_set(voting)
    benchmark.extra_info.update(
        device=str(DEVICE), queries=len(queries), pairs=int(valid.sum()), plan=voting[4]
    )

    def run():
        vote(model, queries, exemplars, rows, valid)
        sync()

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="tsa-voting")
def test_voting_reference(benchmark, voting):
    model = _model().eval()
    ref = ReferenceTSA(model)
    queries, exemplars, rows, valid = _exemplar_set(voting)
    benchmark.extra_info.update(
        device=str(DEVICE), queries=len(queries), pairs=int(valid.sum()), plan=voting[4]
    )

    def run():
        for i in range(len(queries)):
            exs = [
                (exemplars.features[j : j + 1], exemplars.maps[j : j + 1], exemplars.scores[j])
                for j in rows[i][valid[i]].tolist()
            ]
            ref.vote_one(queries.features[i : i + 1], queries.maps[i : i + 1], exs)
        sync()

    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)


def test_reference_style_agrees_with_fdperf(voting):
    """Guard: the two sides of the voting benchmark compute the same scores."""
    model = _model().eval()
    ref = ReferenceTSA(model)
    queries, exemplars, rows, valid = _exemplar_set(voting)
    q = 2
    votes = vote(
        model,
        VideoSet(
            queries.keys[:q],
            queries.features[:q],
            queries.maps[:q],
            queries.scores[:q],
            queries.bounds[:q],
            queries.dive_ids[:q],
            queries.difficulty[:q],
        ),
        exemplars,
        rows[:q],
        valid[:q],
    )
    for i in range(q):
        exs = [
            (exemplars.features[j : j + 1], exemplars.maps[j : j + 1], exemplars.scores[j])
            for j in rows[i][valid[i]].tolist()
        ]
        score, _ = ref.vote_one(queries.features[i : i + 1], queries.maps[i : i + 1], exs)
        assert abs(float(score) - float(votes.scores[i])) < 1e-3
