"""One TSA training step over static device buffers, so that CUDA can capture it in a graph."""

from __future__ import annotations

import copy

import torch

from ..tsa import PairModel, pair_loss


class TrainStep:
    """One training step over static device buffers (so that it can be graph-captured)."""

    def __init__(self, model: PairModel, optimizer, data, batch: int, device, amp: bool):
        self.model, self.optimizer, self.data, self.amp = model, optimizer, data, amp
        self.device = device
        self.rows = torch.zeros(batch, dtype=torch.long, device=device)
        self.ex_rows = torch.zeros(batch, dtype=torch.long, device=device)
        self.use_gt = torch.ones((), dtype=torch.bool, device=device)
        self.views = torch.zeros(2 * batch, dtype=torch.long, device=device)  # [queries; exemplars]
        n = batch
        self.q_index = torch.arange(2 * n, device=device)
        self.e_index = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(device)
        self.graph = None
        self.loss = self.pred = None

    def forward_backward(self):
        d, n = self.data, self.rows.numel()
        idx = torch.cat([self.rows, self.ex_rows])
        if d.features.dim() == 4:  # multi-view store: each video in its drawn view
            feats = d.features[idx, self.views]
            maps = d.maps[idx, self.views] if self.model.needs_maps else None
        else:
            feats = d.features.index_select(0, idx)
            maps = d.maps.index_select(0, idx) if self.model.needs_maps else None
        y, gt = d.scores.index_select(0, idx), d.bounds.index_select(0, idx)
        # no autocast weight cache: cached casts would outlive a CUDA graph capture
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False):
            cache = self.model.encode(feats, maps, d.dive_ids.index_select(0, idx), gt, use_gt=self.use_gt)
            deltas = self.model.step_deltas(cache, cache, self.q_index, self.e_index).float().mean(1)
        finite = None
        if "probs" in cache:
            # Diverged weights give NaN probabilities, which BCE refuses with an unrelated error
            # (a device assert on CUDA). Zeroing NaNs keeps finite values (and gradients) bitwise;
            # the reported loss turns NaN instead, for the epoch's check to name the step.
            finite = torch.isfinite(cache["probs"]).all()
            cache = {**cache, "probs": torch.nan_to_num(cache["probs"], nan=0.0)}
        loss = pair_loss(self.model, cache, deltas, y[:n], y[n:], gt if self.model.segments else None)
        loss.backward()
        self.optimizer.step()
        reported = loss.detach()
        if finite is not None:
            reported = torch.where(finite, reported, torch.full_like(reported, float("nan")))
        return reported, deltas[:n].detach() + y[n:]

    def eager(self):
        self.optimizer.zero_grad(set_to_none=True)  # backward then writes grads instead of adding
        self.loss, self.pred = self.forward_backward()
        return self.loss, self.pred

    def capture(self, warmup: int = 3):
        """Captures the step in a CUDA graph; the warm-up updates are undone afterwards."""
        model, opt = self.model, self.optimizer
        saved_model = copy.deepcopy(model.state_dict())
        saved_opt = {
            id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
            for p, s in opt.state.items()
        }
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                self.eager()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # grads set to None: the captured backward then *writes* them (from the graph's pool)
        # instead of accumulating, so a replay needs no zero_grad
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            self.loss, self.pred = self.forward_backward()
        # undo the warm-up updates in place (the graph holds these very tensors); state that
        # the warm-up created is zeroed, which is what a fresh Adam state amounts to
        with torch.no_grad():
            model.load_state_dict(saved_model)
            for p, s in opt.state.items():
                before = saved_opt.get(id(p))
                for k, v in s.items():
                    if before is None:
                        if torch.is_tensor(v):
                            v.zero_()
                    elif torch.is_tensor(v):
                        v.copy_(before[k])
                    else:
                        s[k] = before[k]
        self.graph = graph

    def __call__(self):
        if self.graph is None:
            return self.eager()
        self.graph.replay()
        return self.loss, self.pred
