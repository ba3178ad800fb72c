"""Training of TSA and its baselines on a feature store, everything resident on the device.

One step: gather the batch's queries and their exemplars (rows drawn on the device for the whole
epoch), encode both videos of every pair in one PSNet call, decode both directions in one decoder
call, reference loss, Adam step. No host synchronisation inside a step; losses and predictions
are collected on the device and read once per epoch. On CUDA the step is captured in a CUDA graph
(static shapes; the ground-truth/predicted transition schedule is a device flag), with a clear
fallback to eager execution when capture fails.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import metrics as M
from ..data import ExemplarSampler, policy_from_flags, voting_exemplars
from ..tsa import METHODS, build_model
from ..tsa.checkpoint import CheckpointError, model_checkpoint, read_checkpoint, save_checkpoint
from ..device import resolve_device
from ..evaluate import score_metrics, vote
from ..features.videoset import as_annotations, dive_vocabulary, load_store, video_set
from ..version import __version__
from .step import TrainStep


@dataclass
class TrainResult:
    out_dir: Path
    best_checkpoint: Path | None           # highest test rho over the evaluated epochs (as the reference)
    last_checkpoint: Path                  # weights after the last epoch
    summary_path: Path                     # train_summary.json
    best: dict                             # metrics of the best epoch (selected on test rho!)
    last: dict                             # metrics of the last epoch: the honest held-out figure
    history: list = field(default_factory=list, repr=False)
    step_mode: str = "eager"               # "cuda-graph" or "eager"


def _log_line(epoch, max_epoch, rec):
    parts = [f"epoch {epoch + 1}/{max_epoch}", f"loss {rec['loss']:.4f}", f"train rho {rec['train_rho']:.4f}",
             f"{rec['seconds']:.2f}s", "gt transitions" if rec["gt_transitions"] else "predicted transitions"]
    if "test" in rec:
        t = rec["test"]
        parts.append(f"| test rho {t['rho']:.4f} R-l2 {t['rl2']:.4f}"
                     + (f" AIoU {t['aiou50']:.2f}/{t['aiou75']:.2f}" if "aiou50" in t else ""))
    return "  ".join(parts)


def train(store_path, annotations, out_dir, *, method: str = "TSA", max_epoch: int = 200,
          bs_train: int = 8, base_lr: float = 1e-3, seed: int = 0, prob_tas_threshold: float = 0.25,
          fix_size: int = 5, step_num: int = 3, voter_number: int = 10,
          action_number_choosing: bool = True, random_choosing: bool = False,
          policy: str | None = None, layout: str = "reference", eval_every: int = 1,
          device=None, amp: bool = False, cuda_graph: bool = True, resume: bool = False,
          view: int | None = None, eval_store=None, progress: bool = True,
          log=None, decode: str = "window") -> TrainResult:
    """Trains `method` on the training split of `annotations` using a feature store's features.

    Writes into `out_dir`: `last.pt` (every epoch, atomic, with optimizer and RNG state: what
    `resume=True` continues from), `best.pt` (highest test rho so far, as the reference selects;
    a best-of-epochs figure, not a held-out one), `train_log.jsonl` (one record per epoch) and
    `train_summary.json` (best AND last-epoch metrics, labelled).

    A store with K > 1 views (`fdperf.extract --views K`, the reference's random flip and crop)
    trains on a random view per video per epoch; give `eval_store` (a store of the test
    transform) for evaluation, otherwise view 0 is used. `view` pins one training view.
    `decode` ("window" or "ordered", fdperf.tsa.decode) reads the predicted transitions of TSA
    and F+S+R; it is stored in the checkpoint's config, which evaluation uses by default.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    for name, v in (("max_epoch", max_epoch), ("bs_train", bs_train), ("fix_size", fix_size),
                    ("voter_number", voter_number), ("eval_every", eval_every)):
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if step_num < 2:
        raise ValueError(f"step_num must be >= 2 (steps = transitions + 1), got {step_num}")
    if not base_lr > 0:
        raise ValueError(f"base_lr must be > 0, got {base_lr}")
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    device = resolve_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    num_transitions = step_num - 1
    policy = policy or policy_from_flags(action_number_choosing, random_choosing)
    ann = as_annotations(annotations, num_transitions)
    vocab = dive_vocabulary(ann, ann.train_keys)

    config = {"fix_size": fix_size, "num_transitions": num_transitions, "layout": layout,
              "decode": decode}
    if method.startswith("F+R"):
        config = {"num_dive_numbers": len(vocab)} if method == "F+R#" else {}
    elif method == "F+S+R":
        config = {"fix_size": fix_size, "num_transitions": num_transitions, "decode": decode}
    settings = dict(method=method, max_epoch=max_epoch, bs_train=bs_train, base_lr=base_lr, seed=seed,
                    prob_tas_threshold=prob_tas_threshold, fix_size=fix_size, step_num=step_num,
                    voter_number=voter_number, policy=policy, layout=layout, eval_every=eval_every,
                    amp=amp, store=str(store_path), view=view, decode=decode,
                    eval_store=None if eval_store is None else str(eval_store),
                    fdperf_version=__version__)

    torch.manual_seed(seed)
    model = build_model(method, **config)
    # a multi-view store (augmented training views from `fdperf.extract --views K`) trains on a
    # random view per video and pair; evaluation reads `eval_store` (the test transform), or
    # view 0 when there is none
    store, feats, fmaps = load_store(store_path, device, maps=model.needs_maps, view=view,
                                     all_views=True)
    views = feats.shape[1] if feats.dim() == 4 else 1
    settings["views"] = views
    snippets = feats.shape[-2]
    if hasattr(model, "in_channels") and snippets != model.in_channels:
        config["in_channels"] = snippets
        torch.manual_seed(seed)
        model = build_model(method, **config)
    model.to(device)
    train_set = video_set(store, feats, fmaps, ann, ann.train_keys, vocab, device)
    if eval_store is not None:
        estore, efeats, efmaps = load_store(eval_store, device, maps=model.needs_maps)
        if efeats.shape[-2] != snippets:
            raise ValueError(f"eval_store {eval_store} has {efeats.shape[-2]} snippets per video, "
                             f"the training store {snippets}")
    else:
        if views > 1:
            log(f"{store_path} has {views} augmented views and no eval_store was given: "
                "evaluating on its view 0")
        estore, efeats = store, feats[:, 0] if views > 1 else feats
        efmaps = None if fmaps is None else (fmaps[:, 0] if views > 1 else fmaps)
    test_set = video_set(estore, efeats, efmaps, ann, ann.test_keys, vocab, device)
    exemplar_set = train_set if (eval_store is None and views == 1) else \
        video_set(estore, efeats, efmaps, ann, ann.train_keys, vocab, device)
    del feats, fmaps, efeats, efmaps
    if len(train_set) < 2:
        raise ValueError("training needs at least two training videos")
    vote_rows, vote_valid = voting_exemplars(ann, ann.test_keys, ann.train_keys, m=voter_number,
                                             policy=policy, seed=seed)
    sampler = ExemplarSampler(ann, ann.train_keys, policy=policy, device=device)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)

    use_graph = cuda_graph and device.type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=base_lr, weight_decay=0,
                                 capturable=use_graph)
    start_epoch, history, best = 0, [], None
    last_path, best_path = out / "last.pt", out / "best.pt"
    if resume:
        if not last_path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint {last_path} to resume from")
        ck = read_checkpoint(last_path, map_location=device)
        if ck.get("method") != method or ck.get("config") != model.config():
            raise CheckpointError(f"{last_path} was trained as {ck.get('method')} {ck.get('config')}, "
                                  f"not {method} {model.config()}; use another out_dir")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        gen.set_state(ck["rng"]["sampler"].cpu())
        torch.set_rng_state(ck["rng"]["torch"].cpu())
        start_epoch, history, best = ck["epoch"] + 1, list(ck.get("history", [])), ck.get("best")
        log(f"resumed from {last_path} at epoch {start_epoch}/{max_epoch}")

    n_train, batch = len(train_set), min(bs_train, len(train_set))
    full_batches, rest = divmod(n_train, batch)
    step = TrainStep(model, optimizer, train_set, batch, device, amp)
    tail = TrainStep(model, optimizer, train_set, rest, device, amp) if rest else None
    step_mode = "eager"
    if use_graph:
        try:
            step.capture()
            step_mode = "cuda-graph"
        except Exception as e:  # capture needs static, sync-free work; fall back loudly
            step.graph = None
            log(f"CUDA graph capture failed, training eagerly instead ({type(e).__name__}: {e})")
    model.train()

    iterator = range(start_epoch, max_epoch)
    bar = None
    if progress:
        try:
            from tqdm import tqdm
            bar = tqdm(iterator, desc=f"train {method}", unit="epoch", initial=start_epoch,
                       total=max_epoch, file=sys.stderr)
            iterator = bar
        except ImportError:
            pass
    log_file = open(out / "train_log.jsonl", "a")
    try:
        for epoch in iterator:
            t0 = time.perf_counter()
            # TSA-oracle trains exactly as TSA; only its evaluation uses ground-truth transitions
            use_gt = epoch / max_epoch <= prob_tas_threshold
            for s in (step, tail):
                if s is not None:
                    s.use_gt.fill_(use_gt)
            perm = torch.randperm(n_train, generator=gen, device=device)
            ex = sampler.sample(perm, gen)
            if views > 1:  # a view for every query and every exemplar of the epoch
                draw = torch.randint(views, (2, n_train), generator=gen, device=device)
            losses = torch.zeros(full_batches + (1 if rest else 0), device=device)
            preds = torch.zeros(n_train, device=device)
            for b in range(full_batches):
                sl = slice(b * batch, (b + 1) * batch)
                step.rows.copy_(perm[sl])
                step.ex_rows.copy_(ex[sl])
                if views > 1:
                    step.views.copy_(draw[:, sl].reshape(-1))
                loss, pred = step()
                losses[b] = loss
                preds[sl] = pred
            if rest:
                tail.rows.copy_(perm[full_batches * batch:])
                tail.ex_rows.copy_(ex[full_batches * batch:])
                if views > 1:
                    tail.views.copy_(draw[:, full_batches * batch:].reshape(-1))
                loss, pred = tail()
                losses[-1] = loss
                preds[full_batches * batch:] = pred
            true = train_set.scores[perm]
            rec = {"epoch": epoch, "loss": float(losses.mean()), "gt_transitions": use_gt,
                   "train_rho": M.spearman(preds.cpu(), true.cpu())}
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            rec["seconds"] = time.perf_counter() - t0
            if not math.isfinite(rec["loss"]):
                raise FloatingPointError(f"training diverged at epoch {epoch + 1}: loss {rec['loss']}")
            is_last = epoch == max_epoch - 1
            if (epoch + 1) % eval_every == 0 or is_last:
                votes = vote(model, test_set, exemplar_set, vote_rows, vote_valid,
                             transitions="oracle" if method == "TSA-oracle" else "predicted", amp=amp)
                rec["test"] = score_metrics(votes.scores, test_set.scores, votes.bounds, test_set.bounds)
                model.train()
                if best is None or rec["test"]["rho"] > best["rho"]:
                    best = {"epoch": epoch, **rec["test"]}
                    save_checkpoint(best_path, model_checkpoint(
                        model, epoch=epoch, settings=settings, dive_numbers=vocab, metrics=rec["test"]))
            history.append(rec)
            log_file.write(json.dumps(rec) + "\n")
            log_file.flush()
            save_checkpoint(last_path, model_checkpoint(
                model, epoch=epoch, settings=settings, dive_numbers=vocab, metrics=rec.get("test"),
                optimizer=optimizer.state_dict(), history=history, best=best,
                rng={"sampler": gen.get_state(), "torch": torch.get_rng_state()}))
            if bar is not None:
                bar.set_postfix(loss=f"{rec['loss']:.3f}", rho=f"{rec['train_rho']:.3f}")
                bar.write(_log_line(epoch, max_epoch, rec), file=sys.stderr)
            else:
                log(_log_line(epoch, max_epoch, rec))
    finally:
        log_file.close()
        if bar is not None:
            bar.close()

    last = {"epoch": history[-1]["epoch"], **history[-1].get("test", {})} if history else {}
    summary = {"settings": settings, "step_mode": step_mode,
               "best_epoch_selected_on_test_rho": best, "last_epoch": last,
               "note": "best_* is chosen on the test split (as the reference does), so it is "
                       "optimistic; last_epoch is the held-out figure"}
    summary_path = out / "train_summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return TrainResult(out, best_path if best is not None else None, last_path, summary_path,
                       best or {}, last, history, step_mode)
