"""fdperf's TSA forward pass against an independent plain-PyTorch implementation in the
reference's style (per-sample loops, boundaries read on the host, F.interpolate per segment,
one decoder call per step, PSNet rerun per pair), with the same weights, for both layouts."""
import copy

import pytest
import torch
import torch.nn.functional as F

from fdperf.tsa import TSA, build_model, pair_loss
from fdperf.evaluate import vote
from fdperf.features.videoset import VideoSet

FIX, HW = 5, 4

pytestmark = pytest.mark.usefixtures("one_thread")




# ---- reference-style implementation (functional, from state dicts) ----------------------------
def ref_psnet(x, p, training):
    def double_conv(x, pre):
        for i in (0, 3):
            x = F.conv1d(x, p[f"{pre}.conv.{i}.weight"], p[f"{pre}.conv.{i}.bias"], padding=1)
            bn = f"{pre}.conv.{i + 1}"
            x = F.batch_norm(x, p[f"{bn}.running_mean"].clone(), p[f"{bn}.running_var"].clone(),
                             p[f"{bn}.weight"], p[f"{bn}.bias"], training=training)
            x = F.relu(x)
        return x
    x = double_conv(x, "inc.conv")
    for d in range(1, 5):
        x = double_conv(F.max_pool1d(x, 2), f"down{d}.mpconv.1")
    h = F.relu(F.linear(x, p["tas.layer1.weight"], p["tas.layer1.bias"]))
    h = F.relu(F.linear(h, p["tas.layer2.weight"], p["tas.layer2.bias"]))
    return x, torch.sigmoid(F.linear(h, p["tas.layer3.weight"], p["tas.layer3.bias"]))


def ref_decoder(q, v, p, layers=3, heads=8):
    for i in range(layers):
        b = lambda n: (p[f"model.{i}.{n}.weight"], p.get(f"model.{i}.{n}.bias"))  # noqa: E731
        qn = F.layer_norm(q, (q.shape[-1],), *b("norm_q"))
        vn = F.layer_norm(v, (v.shape[-1],), *b("norm_v"))
        B, N, C = qn.shape
        NK = vn.shape[1]
        Q = F.linear(qn, b("attn.q_map")[0]).view(B, N, heads, C // heads).permute(0, 2, 1, 3)
        K = F.linear(vn, b("attn.k_map")[0]).view(B, NK, heads, C // heads).permute(0, 2, 1, 3)
        V = F.linear(vn, b("attn.v_map")[0]).view(B, NK, heads, C // heads).permute(0, 2, 1, 3)
        attn = ((Q @ K.transpose(-2, -1)) * (C // heads) ** -0.5).softmax(-1)
        x = F.linear((attn @ V).transpose(1, 2).reshape(B, N, C), *b("attn.proj"))
        q = q + x
        h = F.layer_norm(q, (C,), *b("norm2"))
        q = q + F.linear(F.gelu(F.linear(h, *b("mlp.fc1"))), *b("mlp.fc2"))
    return q


def ref_regressor(x, p):
    x = F.relu(F.linear(x, p["layer1.weight"], p["layer1.bias"]))
    x = F.relu(F.linear(x, p["layer2.weight"], p["layer2.bias"]))
    return F.linear(x, p["layer3.weight"], p["layer3.bias"])


def seg_pool_1d(x, st, ed, n):
    return torch.cat([F.interpolate(x[:, :, a:b], size=n, mode="linear", align_corners=True)
                      for a, b in ((0, st), (st, ed), (ed, x.shape[2]))], 2)


def seg_pool_3d(x, st, ed, n):
    H, W = x.shape[-2:]
    return torch.cat([F.interpolate(x[:, :, a:b], size=[n, H, W], mode="trilinear", align_corners=True)
                      for a, b in ((0, st), (st, ed), (ed, x.shape[2]))], 2)


def params(module):
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def ref_pair_forward(model, f1, m1, f2, m2, gt1, gt2, use_gt, training):
    """The reference helper's forward for a batch of pairs (video 1 query, video 2 exemplar)."""
    ps, dec, reg = params(model.psnet), params(model.decoder), params(model.regressor)
    N, T, C, H, W = m1.shape
    if model.layout == "reference":
        maps = torch.cat([m1.reshape(-1, T, C), m2.reshape(-1, T, C)])
    else:
        maps = torch.cat([m.permute(0, 3, 4, 1, 2).reshape(-1, T, C) for m in (m1, m2)])
    u, probs = ref_psnet(torch.cat([f1, f2]), ps, training)
    umap, _ = ref_psnet(maps, ps, training)
    if model.layout == "reference":
        umap = umap.reshape(2 * N, 96, 64, H, W)
    else:
        umap = umap.reshape(2 * N, H, W, 96, 64).permute(0, 3, 4, 1, 2)
    pred = torch.zeros(2 * N, 2, dtype=torch.long)
    for bs in range(2 * N):
        for i in range(2):
            pred[bs, i] = probs[bs, i * 48:(i + 1) * 48, i].argmax(0).item() + i * 48
    pred[pred == 0] = 1
    bounds = torch.cat([gt1, gt2]) if use_gt else pred
    u = u.transpose(1, 2)
    umap = umap.transpose(1, 2)

    def segs(b):
        st, ed = int(bounds[b, 0].item()), int(bounds[b, 1].item())
        return seg_pool_1d(u[b:b + 1], st, ed, FIX).transpose(1, 2)

    def segs_map(b):
        st, ed = int(bounds[b, 0].item()), int(bounds[b, 1].item())
        s = seg_pool_3d(umap[b:b + 1], st, ed, FIX)
        s = s.reshape(1, s.shape[1], s.shape[2], -1).transpose(2, 3)
        return torch.cat([s[:, :, :, i] for i in range(s.shape[-1])], 2).transpose(1, 2)

    q1 = torch.cat([segs(b) for b in range(N)])
    q2 = torch.cat([segs(N + b) for b in range(N)])
    v1 = torch.cat([segs_map(b) for b in range(N)])
    v2 = torch.cat([segs_map(N + b) for b in range(N)])
    per = FIX * H * W
    d12 = torch.cat([ref_decoder(q1[:, i * FIX:(i + 1) * FIX], v2[:, i * per:(i + 1) * per], dec)
                     for i in range(3)], 1)
    d21 = torch.cat([ref_decoder(q2[:, i * FIX:(i + 1) * FIX], v1[:, i * per:(i + 1) * per], dec)
                     for i in range(3)], 1)
    delta = ref_regressor(torch.cat([d12, d21]), reg).mean(1).squeeze(-1)
    return delta, probs, pred


def ref_vote(model, feats, maps, y, queries, exemplar_lists):
    """network_forward_test: per query, per exemplar, PSNet rerun on the pair."""
    scores, trans = [], []
    for qi, exs in zip(queries, exemplar_lists):
        total = 0.0
        for e in exs:
            delta, _, pred = ref_pair_forward(model, feats[qi:qi + 1], maps[qi:qi + 1], feats[e:e + 1],
                                              maps[e:e + 1], None, None, False, False)
            total = total + delta[0] + y[e]
        scores.append(total / len(exs))
        trans.append(pred[0])
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
        ref_delta, probs, pred = ref_pair_forward(m, f[:n], mp[:n], f[n:], mp[n:],
                                                  gt[:n], gt[n:], use_gt, True)
        target = torch.zeros_like(probs)
        for b in range(2 * n):
            target[b, gt[b, 0], 0] = 1
            target[b, gt[b, -1], -1] = 1
        ref_loss = (F.mse_loss(ref_delta[:n], yy[:n] - yy[n:]) + F.mse_loss(ref_delta[n:], yy[n:] - yy[:n])
                    + F.binary_cross_entropy(probs, target))
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


@pytest.mark.parametrize("method,steps", [("F+R", 1), ("F+R*", 1), ("F+R#", 1), ("F+S+R", 3),
                                          ("TSA-oracle", 3)])
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
