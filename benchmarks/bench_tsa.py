"""TSA head on cached features: fdperf vs a reference-style implementation, in the same run.

The reference style follows the published helper code: per-sample Python loops, boundaries read
back to the host (`.item()`), `F.interpolate` per segment, one decoder call per step and
direction, the transition head also run on the feature maps, and at test time PSNet rerun on
both videos of every (query, exemplar) pair. Both sides use the same weights and inputs (random
features in the store's shapes: [9, 1024] features, [9, 1024, 4, 4] maps).

    pytest benchmarks/bench_tsa.py --benchmark-only
    FDPERF_BENCH_QUERIES=749 FDPERF_BENCH_EPOCH_PAIRS=2251 pytest benchmarks/bench_tsa.py --benchmark-only

Groups: `tsa-train-step` (8 pairs, forward + backward + Adam), `tsa-epoch` (EPOCH_PAIRS pairs;
on the GPU fdperf replays a CUDA graph) and `tsa-voting` (QUERIES test videos x 10 exemplars of
the same dive number, exemplars drawn from the real FineDiving split when it is available). The
CPU defaults are scaled down so the reference side finishes in seconds; on a GPU the defaults are
the full sizes (2251 training pairs, 749 x 10 pairs).
"""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fdperf.tsa import TSA
from fdperf.train.step import TrainStep
from fdperf.evaluate import vote
from fdperf.features.videoset import VideoSet

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
GPU = DEVICE.type == "cuda"
QUERIES = int(os.environ.get("FDPERF_BENCH_QUERIES", "749" if GPU else "24"))
EPOCH_PAIRS = int(os.environ.get("FDPERF_BENCH_EPOCH_PAIRS", "2251" if GPU else "32"))
ROUNDS = int(os.environ.get("FDPERF_BENCH_ROUNDS", "5" if GPU else "3"))
BATCH, FIX, M = 8, 5, 10
if int(os.environ.get("FDPERF_BENCH_THREADS", "0")) > 0:
    torch.set_num_threads(int(os.environ["FDPERF_BENCH_THREADS"]))
ANNOTATIONS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "finediving", "Annotations")


def sync():
    if GPU:
        torch.cuda.synchronize()


# ---- reference-style implementation ----------------------------------------------------------
class RefCrossAttention(nn.Module):
    def __init__(self, dim=64, heads=8):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q_map = nn.Linear(dim, dim, bias=False)
        self.k_map = nn.Linear(dim, dim, bias=False)
        self.v_map = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, q, v):
        B, N, C = q.shape
        NK = v.shape[1]
        q = self.q_map(q).view(B, N, self.heads, C // self.heads).permute(0, 2, 1, 3)
        k = self.k_map(v).view(B, NK, self.heads, C // self.heads).permute(0, 2, 1, 3)
        v = self.v_map(v).view(B, NK, self.heads, C // self.heads).permute(0, 2, 1, 3)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class RefBlock(nn.Module):
    def __init__(self, dim=64, heads=8):
        super().__init__()
        self.norm_q, self.norm_v, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = RefCrossAttention(dim, heads)
        self.mlp = nn.Sequential()
        self.mlp.fc1, self.mlp.act, self.mlp.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)

    def forward(self, q, v):
        q = q + self.attn(self.norm_q(q), self.norm_v(v))
        return q + self.mlp(self.norm2(q))


class RefDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.ModuleList(RefBlock() for _ in range(3))

    def forward(self, q, v):
        for blk in self.model:
            q = blk(q, v)
        return q


def seg_pool_1d(x, st, ed, n):
    return torch.cat([F.interpolate(x[:, :, a:b], size=n, mode="linear", align_corners=True)
                      for a, b in ((0, st), (st, ed), (ed, x.shape[2]))], 2)


def seg_pool_3d(x, st, ed, n):
    H, W = x.shape[-2:]
    return torch.cat([F.interpolate(x[:, :, a:b], size=[n, H, W], mode="trilinear", align_corners=True)
                      for a, b in ((0, st), (st, ed), (ed, x.shape[2]))], 2)


class Reference:
    """The published helper's forward, on fdperf's PSNet/regressor modules and the decoder above."""

    def __init__(self, model: TSA):
        self.psnet, self.regressor = model.psnet, model.regressor
        self.decoder = RefDecoder().to(DEVICE)
        self.decoder.load_state_dict(model.decoder.state_dict())

    def parameters(self):
        return [*self.psnet.parameters(), *self.decoder.parameters(), *self.regressor.parameters()]

    def pair_forward(self, f1, m1, f2, m2, gt1=None, gt2=None):
        N, T, C, H, W = m1.shape
        u, probs = self.psnet(torch.cat([f1, f2]))
        umap, _ = self.psnet(torch.cat([m1.reshape(-1, T, C), m2.reshape(-1, T, C)]))  # head on maps too
        umap = umap.reshape(2 * N, 96, 64, H, W)
        trans = torch.zeros(2 * N, 2)
        for bs in range(2 * N):
            for i in range(2):
                trans[bs, i] = probs[bs, i * 48:(i + 1) * 48, i].argmax(0).cpu().item() + i * 48
        bounds = torch.cat([gt1, gt2]).cpu() if gt1 is not None else trans
        u, umap = u.transpose(1, 2), umap.transpose(1, 2)

        def cut(b):
            st, ed = int(bounds[b, 0].item()), int(bounds[b, 1].item())
            return max(st, 1), max(ed, 1)

        def segs(b):
            return seg_pool_1d(u[b:b + 1], *cut(b), FIX).transpose(1, 2)

        def segs_map(b):
            s = seg_pool_3d(umap[b:b + 1], *cut(b), FIX)
            s = s.reshape(1, s.shape[1], s.shape[2], -1).transpose(2, 3)
            return torch.cat([s[:, :, :, i] for i in range(s.shape[-1])], 2).transpose(1, 2)
        return probs, segs, segs_map, N, H * W

    def decode(self, q, v, per):
        return torch.cat([self.decoder(q[:, i * FIX:(i + 1) * FIX], v[:, i * FIX * per:(i + 1) * FIX * per])
                          for i in range(3)], 1)

    def train_step(self, opt, f1, m1, f2, m2, y1, y2, gt1, gt2):
        opt.zero_grad()
        probs, segs, segs_map, N, per = self.pair_forward(f1, m1, f2, m2, gt1, gt2)
        gt = torch.cat([gt1, gt2])
        pad = torch.zeros(probs.size())
        for bs in range(probs.shape[0]):
            pad[bs, int(gt[bs, 0]), 0] = 1
            pad[bs, int(gt[bs, -1]), -1] = 1
        loss_tas = F.binary_cross_entropy(probs, pad.to(DEVICE))
        q1 = torch.cat([segs(b) for b in range(N)])
        q2 = torch.cat([segs(N + b) for b in range(N)])
        v1 = torch.cat([segs_map(b) for b in range(N)])
        v2 = torch.cat([segs_map(N + b) for b in range(N)])
        delta = self.regressor(torch.cat([self.decode(q1, v2, per), self.decode(q2, v1, per)])).mean(1)
        y1, y2 = y1.view(-1, 1), y2.view(-1, 1)  # the reference feeds [N, 1] scores
        loss = F.mse_loss(delta[:N], y1 - y2) + F.mse_loss(delta[N:], y2 - y1) + loss_tas
        loss.backward()
        opt.step()
        return loss

    @torch.no_grad()
    def vote_one(self, fq, mq, exemplars):
        score = 0.0
        for fe, me, ye in exemplars:
            _, segs, segs_map, _, per = self.pair_forward(fq, mq, fe, me)
            delta = self.regressor(self.decode(segs(0), segs_map(1), per)).mean(1)
            score = score + delta + ye
        return score / len(exemplars)


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
    return VideoSet([("v", i) for i in range(n)], feats.to(DEVICE), maps.to(DEVICE), y.to(DEVICE),
                    gt.to(DEVICE), torch.zeros(n, dtype=torch.long, device=DEVICE), y.to(DEVICE))


def _voting_plan():
    """(query rows, exemplar rows [Nq, M], valid) in the structure of the real split: each test
    video votes with up to 10 training videos of its dive number (the first QUERIES test videos
    in dive-number order, so that groups are complete as in the full pass)."""
    if os.path.isfile(os.path.join(ANNOTATIONS, "train_split.pkl")):
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
    benchmark.extra_info.update(device=str(DEVICE), threads=torch.get_num_threads(),
                                cuda_graph=step.graph is not None)

    def run():
        step()
        sync()
    benchmark.pedantic(run, rounds=ROUNDS * 2, iterations=1, warmup_rounds=2)


@pytest.mark.benchmark(group="tsa-train-step")
def test_train_step_reference(benchmark, pairs):
    model = _model().train()
    ref = Reference(model)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    p, n = pairs, BATCH
    benchmark.extra_info.update(device=str(DEVICE), threads=torch.get_num_threads())

    def run():
        ref.train_step(opt, p.features[:n], p.maps[:n], p.features[n:], p.maps[n:],
                       p.scores[:n], p.scores[n:], p.bounds[:n], p.bounds[n:])
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
            step.rows.copy_(perm[b * BATCH:(b + 1) * BATCH])
            step.ex_rows.copy_(ex[b * BATCH:(b + 1) * BATCH])
            step()
        sync()
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="tsa-epoch")
def test_epoch_reference(benchmark, epoch_videos):
    model = _model().train()
    ref = Reference(model)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    v = epoch_videos
    benchmark.extra_info.update(device=str(DEVICE), pairs=EPOCH_PAIRS)

    def run():
        perm = torch.randperm(EPOCH_PAIRS).to(DEVICE)
        ex = torch.roll(perm, 1)
        for b in range(EPOCH_PAIRS // BATCH):
            q, e = perm[b * BATCH:(b + 1) * BATCH], ex[b * BATCH:(b + 1) * BATCH]
            ref.train_step(opt, v.features[q], v.maps[q], v.features[e], v.maps[e], v.scores[q],
                           v.scores[e], v.bounds[q], v.bounds[e])
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
    benchmark.extra_info.update(device=str(DEVICE), queries=len(queries), pairs=int(valid.sum()),
                                plan=voting[4])

    def run():
        vote(model, queries, exemplars, rows, valid)
        sync()
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.benchmark(group="tsa-voting")
def test_voting_reference(benchmark, voting):
    model = _model().eval()
    ref = Reference(model)
    queries, exemplars, rows, valid = _exemplar_set(voting)
    benchmark.extra_info.update(device=str(DEVICE), queries=len(queries), pairs=int(valid.sum()),
                                plan=voting[4])

    def run():
        for i in range(len(queries)):
            exs = [(exemplars.features[j:j + 1], exemplars.maps[j:j + 1], exemplars.scores[j])
                   for j in rows[i][valid[i]].tolist()]
            ref.vote_one(queries.features[i:i + 1], queries.maps[i:i + 1], exs)
        sync()
    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)


def test_reference_style_agrees_with_fdperf(voting):
    """Guard: the two sides of the voting benchmark compute the same scores."""
    model = _model().eval()
    ref = Reference(model)
    queries, exemplars, rows, valid = _exemplar_set(voting)
    q = 2
    votes = vote(model, VideoSet(queries.keys[:q], queries.features[:q], queries.maps[:q],
                                 queries.scores[:q], queries.bounds[:q], queries.dive_ids[:q],
                                 queries.difficulty[:q]), exemplars, rows[:q], valid[:q])
    for i in range(q):
        exs = [(exemplars.features[j:j + 1], exemplars.maps[j:j + 1], exemplars.scores[j])
               for j in rows[i][valid[i]].tolist()]
        assert abs(float(ref.vote_one(queries.features[i:i + 1], queries.maps[i:i + 1], exs))
                   - float(votes.scores[i])) < 1e-3
