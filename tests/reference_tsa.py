"""TSA in the style of the published helper code, on the weights of an fdperf `TSA`: the
independent implementation that tests/test_tsa_model.py checks fdperf against and that
benchmarks/bench_tsa.py times fdperf against (benchmarks/conftest.py puts tests/ on sys.path).

The style is the reference's, cost included: per-sample Python loops, transitions read back to
the host one `.item()` at a time, `F.interpolate` per segment, the transition head run on the
feature maps too, one decoder call per step and direction, and at test time PSNet rerun on both
videos of every (query, exemplar) pair. Everything is written with torch.nn.functional from the
model's parameters and buffers (none of fdperf's modules run), so gradients reach the model's own
parameters and batch-norm statistics update as the reference's modules update theirs.
Two transitions (three steps), as in the reference.
"""

import torch
import torch.nn.functional as F

FIX = 5  # tokens per step (the reference's fix_size)
STEPS = 3


def params(module) -> dict:
    """Parameters and buffers of `module` by state-dict name (the tensors themselves)."""
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def psnet(x, p, training):
    """PSNet: U-Net-style 1-D encoder [B, 9, 1024] -> units [B, 64, 96] and transition
    probabilities [B, 96, 2]."""

    def double_conv(x, pre):
        for i in (0, 3):
            x = F.conv1d(x, p[f"{pre}.conv.{i}.weight"], p[f"{pre}.conv.{i}.bias"], padding=1)
            bn = f"{pre}.conv.{i + 1}"
            x = F.batch_norm(
                x,
                p[f"{bn}.running_mean"],
                p[f"{bn}.running_var"],
                p[f"{bn}.weight"],
                p[f"{bn}.bias"],
                training=training,
            )
            x = F.relu(x)
        return x

    x = double_conv(x, "inc.conv")
    for d in range(1, 5):
        x = double_conv(F.max_pool1d(x, 2), f"down{d}.mpconv.1")
    h = F.relu(F.linear(x, p["tas.layer1.weight"], p["tas.layer1.bias"]))
    h = F.relu(F.linear(h, p["tas.layer2.weight"], p["tas.layer2.bias"]))
    return x, torch.sigmoid(F.linear(h, p["tas.layer3.weight"], p["tas.layer3.bias"]))


def decoder(q, v, p, layers=3, heads=8):
    """The cross-attention decoder: queries q [B, N, C] attend to memory v [B, NK, C]."""
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


def regressor(x, p):
    x = F.relu(F.linear(x, p["layer1.weight"], p["layer1.bias"]))
    x = F.relu(F.linear(x, p["layer2.weight"], p["layer2.bias"]))
    return F.linear(x, p["layer3.weight"], p["layer3.bias"])


def seg_pool_1d(x, st, ed, n):
    return torch.cat(
        [
            F.interpolate(x[:, :, a:b], size=n, mode="linear", align_corners=True)
            for a, b in ((0, st), (st, ed), (ed, x.shape[2]))
        ],
        2,
    )


def seg_pool_3d(x, st, ed, n):
    H, W = x.shape[-2:]
    return torch.cat(
        [
            F.interpolate(x[:, :, a:b], size=[n, H, W], mode="trilinear", align_corners=True)
            for a, b in ((0, st), (st, ed), (ed, x.shape[2]))
        ],
        2,
    )


class ReferenceTSA:
    """The reference helper's forward passes on `model`'s weights (a fdperf `TSA`, either layout)."""

    def __init__(self, model):
        self.model = model
        self.ps, self.dec, self.reg = params(model.psnet), params(model.decoder), params(model.regressor)

    def parameters(self) -> list:
        m = self.model
        return [*m.psnet.parameters(), *m.decoder.parameters(), *m.regressor.parameters()]

    def _map_units(self, m1, m2, training):
        N, T, C, H, W = m1.shape
        if self.model.layout == "reference":  # the reference's reshape, channels and positions mixed
            umap, _ = psnet(torch.cat([m1.reshape(-1, T, C), m2.reshape(-1, T, C)]), self.ps, training)
            return umap.reshape(2 * N, 96, 64, H, W)
        maps = torch.cat([m.permute(0, 3, 4, 1, 2).reshape(-1, T, C) for m in (m1, m2)])
        umap, _ = psnet(maps, self.ps, training)
        return umap.reshape(2 * N, H, W, 96, 64).permute(0, 3, 4, 1, 2)

    def encode_pairs(self, f1, m1, f2, m2, gt1=None, gt2=None, training=False):
        """PSNet on [videos 1; videos 2]: (probs [2N, 96, 2], predicted transitions [2N, 2] on the
        host, tokens(b) -> [1, 3*FIX, 64], memory(b) -> [1, 3*FIX*H*W, 64]); the tokens are cut at
        the ground truth when gt1/gt2 are given, else at the prediction."""
        n2 = 2 * m1.shape[0]
        u, probs = psnet(torch.cat([f1, f2]), self.ps, training)
        umap = self._map_units(m1, m2, training)
        pred = torch.zeros(n2, 2, dtype=torch.long)
        for bs in range(n2):
            for i in range(2):
                pred[bs, i] = probs[bs, i * 48 : (i + 1) * 48, i].argmax(0).cpu().item() + i * 48
        pred.clamp_(min=1)  # the reference moves a boundary at frame 0 to frame 1
        bounds = torch.cat([gt1, gt2]) if gt1 is not None else pred
        u, umap = u.transpose(1, 2), umap.transpose(1, 2)

        def cut(b):
            st, ed = int(bounds[b, 0].item()), int(bounds[b, 1].item())
            return max(st, 1), max(ed, 1)

        def tokens(b):
            return seg_pool_1d(u[b : b + 1], *cut(b), FIX).transpose(1, 2)

        def memory(b):
            s = seg_pool_3d(umap[b : b + 1], *cut(b), FIX)
            s = s.reshape(1, s.shape[1], s.shape[2], -1).transpose(2, 3)
            return torch.cat([s[:, :, :, i] for i in range(s.shape[-1])], 2).transpose(1, 2)

        return probs, pred, tokens, memory

    def decode(self, q, v):
        """One decoder call per step: step i's tokens attend to step i's memory only."""
        per = v.shape[1] // STEPS
        return torch.cat(
            [
                decoder(q[:, i * FIX : (i + 1) * FIX], v[:, i * per : (i + 1) * per], self.dec)
                for i in range(STEPS)
            ],
            1,
        )

    def pair_deltas(self, f1, m1, f2, m2, gt1=None, gt2=None, training=False):
        """Both directions of N pairs: (deltas [2N] = [1 minus 2; 2 minus 1], probs, pred)."""
        probs, pred, tokens, memory = self.encode_pairs(f1, m1, f2, m2, gt1, gt2, training)
        N = f1.shape[0]
        q1 = torch.cat([tokens(b) for b in range(N)])
        q2 = torch.cat([tokens(N + b) for b in range(N)])
        v1 = torch.cat([memory(b) for b in range(N)])
        v2 = torch.cat([memory(N + b) for b in range(N)])
        d = torch.cat([self.decode(q1, v2), self.decode(q2, v1)])
        return regressor(d, self.reg).mean(1).squeeze(-1), probs, pred

    def train_loss(self, f1, m1, f2, m2, y1, y2, gt1, gt2, use_gt=True):
        """network_forward_train's loss: both directions' MSE plus the transitions' BCE.
        Returns (loss, deltas, probs, pred)."""
        n = f1.shape[0]
        deltas, probs, pred = self.pair_deltas(
            f1, m1, f2, m2, gt1 if use_gt else None, gt2 if use_gt else None, training=True
        )
        gt = torch.cat([gt1, gt2])
        target = torch.zeros(probs.size(), dtype=probs.dtype)
        for bs in range(probs.shape[0]):
            target[bs, int(gt[bs, 0]), 0] = 1
            target[bs, int(gt[bs, -1]), -1] = 1
        loss = (
            F.mse_loss(deltas[:n], y1 - y2)
            + F.mse_loss(deltas[n:], y2 - y1)
            + F.binary_cross_entropy(probs, target.to(probs.device))
        )
        return loss, deltas, probs, pred

    def train_step(self, opt, f1, m1, f2, m2, y1, y2, gt1, gt2):
        opt.zero_grad()
        loss = self.train_loss(f1, m1, f2, m2, y1, y2, gt1, gt2)[0]
        loss.backward()
        opt.step()
        return loss

    @torch.no_grad()
    def vote_one(self, fq, mq, exemplars):
        """network_forward_test for one query: PSNet rerun on every (query, exemplar) pair, the
        query's tokens decoded against the exemplar's memory. `exemplars` is a list of (features
        [1, 9, 1024], maps [1, 9, 1024, H, W], score). Returns (score, query transitions [2])."""
        score, pred = 0.0, None
        for fe, me, ye in exemplars:
            _, pred, tokens, memory = self.encode_pairs(fq, mq, fe, me)
            delta = regressor(self.decode(tokens(0), memory(1)), self.reg).mean(1)[0, 0]
            score = score + delta + ye
        return score / len(exemplars), pred[0]
