"""fdperf's TSA forward pass against an independent plain-PyTorch implementation in the
reference's style (tests/reference_tsa.py: per-sample loops, boundaries read on the host,
F.interpolate per segment, one decoder call per step, PSNet rerun per pair), with the same
weights, for both layouts."""

import copy

import pytest
import torch
from reference_tsa import FIX, ReferenceTSA

from fdperf.evaluate import vote
from fdperf.features.videoset import VideoSet
from fdperf.tsa import TSA, build_model, pair_loss

HW = 4

pytestmark = pytest.mark.usefixtures("one_thread")


def ref_vote(model, feats, maps, y, queries, exemplar_lists):
    """network_forward_test per query: (scores [Q], the queries' transitions [Q, 2])."""
    ref = ReferenceTSA(model)
    scores, trans = [], []
    for qi, exs in zip(queries, exemplar_lists):
        score, t = ref.vote_one(
            feats[qi : qi + 1], maps[qi : qi + 1], [(feats[e : e + 1], maps[e : e + 1], y[e]) for e in exs]
        )
        scores.append(score)
        trans.append(t)
    return torch.stack(scores), torch.stack(trans)


# ---- tests -----------------------------------------------------------------------------------
def _data(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, 9, 1024, generator=g)
    maps = torch.randn(n, 9, 1024, HW, HW, generator=g)
    y = torch.rand(n, generator=g) * 100
    gt = torch.stack([torch.randint(5, 45, (n,), generator=g), torch.randint(50, 90, (n,), generator=g)], 1)
    return feats, maps, y, gt


def _trained_like(layout, seed=0):
    torch.manual_seed(seed)
    model = TSA(layout=layout)
    with torch.no_grad():  # move BN statistics off their defaults so eval mode is exercised
        for name, b in model.psnet.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.1)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("layout", ["reference", "spatial"])
def test_voting_matches_reference_style(layout):
    model = _trained_like(layout).eval()
    feats, maps, y, gt = _data(7)
    queries, exemplars = [0, 1, 2], [[3, 4, 5], [6, 3], [4]]
    ref_scores, ref_trans = ref_vote(model, feats, maps, y, queries, exemplars)

    vs = VideoSet([("e", i) for i in range(7)], feats, maps, y, gt, torch.zeros(7, dtype=torch.long), y)
    rows = torch.tensor([[3, 4, 5], [6, 3, 0], [4, 0, 0]])
    valid = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    qset = VideoSet(vs.keys[:3], feats[:3], maps[:3], y[:3], gt[:3], vs.dive_ids[:3], y[:3])
    votes = vote(model, qset, vs, rows, valid)
    assert torch.equal(votes.bounds, ref_trans)
    assert (votes.scores - ref_scores).abs().max().item() < 1e-4
    # the per-step deltas average to the pair delta
    assert torch.allclose(votes.step_deltas.mean(-1), votes.deltas)


@pytest.mark.parametrize("layout,use_gt", [("reference", True), ("reference", False), ("spatial", False)])
def test_training_forward_and_gradients_match_reference_style(layout, use_gt):
    model = _trained_like(layout, seed=1).train()
    feats, maps, y, gt = _data(6, seed=2)
    n = 3
    # fdperf: one encode of [queries; exemplars], both directions in one decoder call
    cache = model.encode(feats, maps, None, gt, use_gt=torch.tensor(use_gt))
    q_index = torch.arange(2 * n)
    e_index = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    deltas = model.step_deltas(cache, cache, q_index, e_index).mean(1)
    loss = pair_loss(model, cache, deltas, y[:n], y[n:], gt)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()

    def reference(m, dtype):
        f, mp, yy = feats.to(dtype), maps.to(dtype), y.to(dtype)
        ref_loss, ref_delta, _, pred = ReferenceTSA(m).train_loss(
            f[:n], mp[:n], f[n:], mp[n:], yy[:n], yy[n:], gt[:n], gt[n:], use_gt
        )
        ref_loss.backward()
        return ref_delta, pred, ref_loss, {k: p.grad.double() for k, p in m.named_parameters()}

    model64 = copy.deepcopy(model).double()
    ref_delta, pred, ref_loss, ref_grads = reference(model, torch.float32)
    _, _, _, grads64 = reference(model64, torch.float64)
    if not use_gt:
        assert torch.equal(cache["bounds"], pred)
    assert (deltas - ref_delta).abs().max().item() < 1e-4
    assert abs(loss.item() - ref_loss.item()) <= 1e-5 * max(1.0, ref_loss.item())
    # PSNet's batch-norm backward is ill-conditioned (float32 gradients of the input convolutions
    # are ~1% off float64, whoever computes them): judge our float32 gradients against the
    # float64 reference, allowing twice the reference's own float32 error (flash-attention style).
    for k in grads:
        ours = (grads[k].double() - grads64[k]).abs().max().item()
        theirs = (ref_grads[k] - grads64[k]).abs().max().item()
        scale = grads64[k].abs().max().item()
        assert ours <= 2 * theirs + 1e-5 * max(scale, 1.0), (k, ours, theirs, scale)


def test_layouts_differ_and_bad_inputs_are_named():
    feats, maps, y, gt = _data(2)
    ref, spa = _trained_like("reference").eval(), _trained_like("spatial").eval()
    a = ref.map_units(maps)
    b = spa.map_units(maps)
    assert a.shape == b.shape == (2, 64, 96, HW, HW)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="layout"):
        TSA(layout="columns")
    with pytest.raises(ValueError, match="1024"):
        ref.psnet(torch.randn(2, 9, 512))
    with pytest.raises(ValueError, match="gt_bounds"):
        ref.encode(feats, maps, None, None, use_gt=True)
    with pytest.raises(ValueError, match="unknown method"):
        build_model("TSA++")


def test_more_transitions():
    torch.manual_seed(0)
    model = TSA(num_transitions=3).eval()
    feats, maps, _, _ = _data(2)
    cache = model.encode(feats, maps)
    assert cache["probs"].shape == (2, 96, 3)
    assert cache["tokens"].shape == (2, 4, FIX, 64) and cache["memory"].shape == (2, 4, FIX * 16, 64)
    b = cache["bounds"]
    assert bool((b[:, 1:] > b[:, :-1]).all()) and bool((b[:, 0] >= 1).all())
    assert model.step_deltas(cache, cache, torch.arange(2), torch.tensor([1, 0])).shape == (2, 4)


@pytest.mark.parametrize(
    "method,steps", [("F+R", 1), ("F+R*", 1), ("F+R#", 1), ("F+S+R", 3), ("TSA-oracle", 3)]
)
def test_baselines_score_pairs(method, steps):
    torch.manual_seed(0)
    model = build_model(method, **({"num_dive_numbers": 3} if method == "F+R#" else {}))
    feats, maps, y, gt = _data(4)
    cache = model.encode(feats, maps, torch.tensor([0, 1, 2, 3]), gt, use_gt=True)
    sd = model.step_deltas(cache, cache, torch.arange(4), torch.tensor([2, 3, 0, 1]))
    assert sd.shape == (4, steps)
    loss = pair_loss(model, cache, sd.mean(1), y[:2], y[2:], gt)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert model.symmetric == (method != "F+R*")
