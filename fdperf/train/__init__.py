"""Training of TSA and its baselines on a feature store, everything resident on the device.

One step: gather the batch's queries and their exemplars (rows drawn on the device for the whole
epoch), encode both videos of every pair in one PSNet call, decode both directions in one decoder
call, reference loss, Adam step. No host synchronisation inside a step; losses and predictions
are collected on the device and read once per epoch. On CUDA the step is captured in a CUDA graph
(static shapes; the ground-truth/predicted transition schedule is a device flag), with a clear
fallback to eager execution when capture fails.

`train` runs named stages: prepare the data, build the model, resume, build the steps, then per
epoch run it and evaluate/checkpoint, and finally summarise. Options live in `TrainConfig`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import metrics as M
from ..data import ExemplarSampler, voting_exemplars
from ..device import resolve_device
from ..errors import UserError
from ..evaluate import score_metrics, vote
from ..features.videoset import (
    VideoSet,
    as_annotations,
    dive_vocabulary,
    load_store,
    open_store,
    store_identity,
    video_set,
)
from ..tsa import build_model
from ..tsa.checkpoint import (
    CheckpointError,
    StoreMismatch,
    check_store,
    identity_differences,
    model_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from ..version import __version__
from .config import RESUME_GUARDED, ConfigError, TrainConfig
from .step import TrainStep

__all__ = ["train", "TrainConfig", "TrainResult", "ConfigError", "TrainingDiverged"]


class TrainingDiverged(UserError, FloatingPointError):
    """The training loss became NaN or inf; the message names the epoch and the step."""


@dataclass
class TrainResult:
    out_dir: Path
    best_checkpoint: Path | None  # highest test rho over the evaluated epochs (as the reference)
    last_checkpoint: Path  # weights after the last epoch
    summary_path: Path  # train_summary.json
    best: dict  # metrics of the best epoch (selected on test rho!)
    last: dict  # metrics of the last epoch: the honest held-out figure
    history: list = field(default_factory=list, repr=False)
    step_mode: str = "eager"  # "cuda-graph" or "eager"


@dataclass
class TrainData:
    """Everything training reads from the store and the annotations, on the device."""

    vocab: list  # dive numbers seen in training
    views: int  # augmented views of the training store (1: none)
    train_set: VideoSet
    test_set: VideoSet
    exemplar_set: VideoSet  # training videos as voters (in the evaluation view)
    vote_rows: torch.Tensor
    vote_valid: torch.Tensor
    sampler: ExemplarSampler
    eval_store_check: dict | None = None  # an allowed identity difference of --eval-store


@dataclass
class RunState:
    """What an epoch updates and a checkpoint saves (and `--resume` restores)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    gen: torch.Generator  # batches, exemplars and views of every epoch
    settings: dict  # recorded in checkpoints and train_summary.json
    store_identity: dict  # of the training store, recorded in checkpoints
    out: Path
    start_epoch: int = 0
    history: list = field(default_factory=list)
    best: dict | None = None

    @property
    def last_path(self) -> Path:
        return self.out / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out / "best.pt"


@dataclass
class Steps:
    """The full-batch step, the step of the last partial batch (or None) and their slices."""

    step: TrainStep
    tail: TrainStep | None
    batch: int
    n_train: int
    mode: str = "eager"

    def batches(self):
        """(step, slice of the epoch's permutation) for every step of an epoch."""
        full, rest = divmod(self.n_train, self.batch)
        for b in range(full):
            yield self.step, slice(b * self.batch, (b + 1) * self.batch)
        if rest:
            yield self.tail, slice(full * self.batch, None)

    @property
    def count(self) -> int:
        return -(-self.n_train // self.batch)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _log_line(epoch, max_epoch, rec):
    parts = [
        f"epoch {epoch + 1}/{max_epoch}",
        f"loss {rec['loss']:.4f}",
        f"train rho {rec['train_rho']:.4f}",
        f"{rec['seconds']:.2f}s",
        "gt transitions" if rec["gt_transitions"] else "predicted transitions",
    ]
    if "test" in rec:
        t = rec["test"]
        parts.append(
            f"| test rho {t['rho']:.4f} R-l2 {t['rl2']:.4f}"
            + (f" AIoU {t['aiou50']:.2f}/{t['aiou75']:.2f}" if "aiou50" in t else "")
        )
    return "  ".join(parts)


# ---- stages -----------------------------------------------------------------------------------


def build(cfg: TrainConfig, num_dive_numbers: int, snippets: int, device) -> torch.nn.Module:
    """The model of `cfg.method`, built once from the seed (in_channels = the store's snippets)."""
    if cfg.method.startswith("F+R"):
        config = {"num_dive_numbers": num_dive_numbers} if cfg.method == "F+R#" else {}
    else:
        config = {
            "in_channels": snippets,
            "fix_size": cfg.fix_size,
            "num_transitions": cfg.num_transitions,
            "decode": cfg.decode,
        }
        if cfg.method != "F+S+R":
            config["layout"] = cfg.layout
    torch.manual_seed(cfg.seed)
    return build_model(cfg.method, **config).to(device)


def prepare_data(
    store, ann, vocab: list, cfg: TrainConfig, maps: bool, identity: dict, device, log
) -> TrainData:
    """Loads the store (checked finite), the splits' video sets and the test-time voters.

    A multi-view store (augmented training views from `fdperf.extract --views K`) trains on a
    random view per video and pair; evaluation reads `eval_store` (the test transform), or view
    0 when there is none.
    """
    store, feats, fmaps = load_store(store, device, maps=maps, view=cfg.view, all_views=True)
    eval_check = None
    views = feats.shape[1] if feats.dim() == 4 else 1
    train_set = video_set(store, feats, fmaps, ann, ann.train_keys, vocab, device)
    if cfg.eval_store is not None:
        estore = open_store(cfg.eval_store)
        if estore.num_snippets != store.num_snippets:
            raise ConfigError(
                f"--eval-store {cfg.eval_store} has {estore.num_snippets} snippets per "
                f"video, the training store {store.num_snippets}"
            )
        diffs = identity_differences(identity, store_identity(estore), ("training store", "eval store"))
        if diffs and not cfg.allow_store_mismatch:
            raise StoreMismatch(
                f"--eval-store {cfg.eval_store} differs from the training store "
                f"{store.path} ({'; '.join(diffs)}); pass --allow-store-mismatch "
                "to evaluate on it anyway"
            )
        if diffs:
            log(
                f"warning: --eval-store {cfg.eval_store} differs from the training store: "
                f"{'; '.join(diffs)} (allowed by --allow-store-mismatch)"
            )
            eval_check = {"status": "mismatch-allowed", "differences": diffs}
        estore, efeats, efmaps = load_store(estore, device, maps=maps)
    else:
        if views > 1:
            log(
                f"{store.path} has {views} augmented views and no eval_store was given: "
                "evaluating on its view 0"
            )
        estore, efeats = store, feats[:, 0] if views > 1 else feats
        efmaps = None if fmaps is None else (fmaps[:, 0] if views > 1 else fmaps)
    test_set = video_set(estore, efeats, efmaps, ann, ann.test_keys, vocab, device)
    exemplar_set = (
        train_set
        if (cfg.eval_store is None and views == 1)
        else video_set(estore, efeats, efmaps, ann, ann.train_keys, vocab, device)
    )
    if len(train_set) < 2:
        raise ConfigError(
            f"training needs at least two training videos; {store.path} holds "
            f"{len(train_set)} of the training split"
        )
    policy = cfg.exemplar_policy
    rows, valid = voting_exemplars(
        ann, ann.test_keys, ann.train_keys, m=cfg.voter_number, policy=policy, seed=cfg.seed
    )
    sampler = ExemplarSampler(ann, ann.train_keys, policy=policy, device=device)
    return TrainData(vocab, views, train_set, test_set, exemplar_set, rows, valid, sampler, eval_check)


def start_run(model, cfg: TrainConfig, store_path, store, out: Path, device) -> RunState:
    """A fresh run's optimizer, generator and recorded settings (`store`: the opened header)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    capturable = cfg.cuda_graph and device.type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.base_lr, weight_decay=0, capturable=capturable)
    settings = dict(
        cfg.settings(),
        amp=cfg.amp,
        store=str(store_path),
        view=cfg.view,
        decode=cfg.decode,
        eval_store=None if cfg.eval_store is None else str(cfg.eval_store),
        fdperf_version=__version__,
        views=store.views if cfg.view is None else 1,
    )  # a pinned view: one view
    return RunState(model, optimizer, gen, settings, store_identity(store), out)


def resume(state: RunState, store_path, cfg: TrainConfig, device, log) -> None:
    """Continues from out/last.pt: same model, same kind of store, same hyper-parameters
    (unless allowed; changed ones are then applied, the learning rate to the optimizer too,
    and recorded in settings["config_changes"]). Runs before the store is loaded."""
    path = state.last_path
    if not path.is_file():
        raise FileNotFoundError(
            f"--resume: no checkpoint {path} to resume from; start without "
            "--resume or give the out folder of an earlier run"
        )
    ck = read_checkpoint(path, map_location=device)
    model = state.model
    if ck.get("method") != cfg.method or ck.get("config") != model.config():
        raise CheckpointError(
            f"{path} was trained as {ck.get('method')} {ck.get('config')}, "
            f"not {cfg.method} {model.config()}; use another out_dir"
        )
    state.settings["store_check"] = check_store(
        ck,
        state.store_identity,
        checkpoint_path=path,
        store_path=store_path,
        allow=cfg.allow_store_mismatch,
        log=log,
    )
    start = ck["epoch"] + 1
    changes = _changed_settings(ck.get("settings") or {}, state.settings, path, cfg)
    model.load_state_dict(ck["model"])
    state.optimizer.load_state_dict(ck["optimizer"])
    for group in state.optimizer.param_groups:  # the saved state carries the old rate
        group["lr"] = cfg.base_lr
    state.gen.set_state(ck["rng"]["sampler"].cpu())
    torch.set_rng_state(ck["rng"]["torch"].cpu())
    state.start_epoch, state.history, state.best = start, list(ck.get("history", [])), ck.get("best")
    earlier = list((ck.get("settings") or {}).get("config_changes", []))
    if changes:
        earlier.append({"epoch": start, **changes})
        log(
            f"resuming with changed settings from epoch {start + 1}: "
            + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())
        )
    if earlier:
        state.settings["config_changes"] = earlier
    log(f"resumed from {path} at epoch {start}/{cfg.max_epoch}")


def _changed_settings(saved: dict, now: dict, path, cfg: TrainConfig) -> dict:
    """{key: [saved, now]} of the guarded settings; refused unless cfg.allow_config_change.
    (Recorded with "epoch": the first, 0-based, epoch trained with the new values.)"""
    changes = {k: [saved[k], now[k]] for k in RESUME_GUARDED if k in saved and saved[k] != now[k]}
    if changes and not cfg.allow_config_change:
        text = "; ".join(f"--{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in changes.items())
        raise ConfigError(
            f"{path} was trained with other settings ({text}); rerun with the "
            "checkpoint's values, or pass --allow-config-change to apply the new ones"
        )
    return changes


def build_steps(state: RunState, data: TrainData, cfg: TrainConfig, device, log) -> Steps:
    """The step for full batches and the one for the last partial batch; captured in a CUDA
    graph when asked and possible (eager otherwise, said loudly)."""
    n_train = len(data.train_set)
    batch = min(cfg.bs_train, n_train)
    rest = n_train % batch
    step = TrainStep(state.model, state.optimizer, data.train_set, batch, device, cfg.amp)
    tail = TrainStep(state.model, state.optimizer, data.train_set, rest, device, cfg.amp) if rest else None
    steps = Steps(step, tail, batch, n_train)
    if cfg.cuda_graph and device.type == "cuda":
        try:
            step.capture()
            steps.mode = "cuda-graph"
        except Exception as e:  # capture needs static, sync-free work; fall back loudly
            step.graph = None
            log(f"CUDA graph capture failed, training eagerly instead ({type(e).__name__}: {e})")
    state.model.train()
    return steps


def run_epoch(epoch: int, state: RunState, steps: Steps, data: TrainData, cfg: TrainConfig, device) -> dict:
    """One pass over the training videos; the epoch's record (loss, train rho, seconds)."""
    t0 = time.perf_counter()
    # TSA-oracle trains exactly as TSA; only its evaluation uses ground-truth transitions
    use_gt = epoch / cfg.max_epoch <= cfg.prob_tas_threshold
    for s in (steps.step, steps.tail):
        if s is not None:
            s.use_gt.fill_(use_gt)
    n_train = steps.n_train
    perm = torch.randperm(n_train, generator=state.gen, device=device)
    ex = data.sampler.sample(perm, state.gen)
    if data.views > 1:  # a view for every query and every exemplar of the epoch
        draw = torch.randint(data.views, (2, n_train), generator=state.gen, device=device)
    losses = torch.zeros(steps.count, device=device)
    preds = torch.zeros(n_train, device=device)
    for b, (step, sl) in enumerate(steps.batches()):
        step.rows.copy_(perm[sl])
        step.ex_rows.copy_(ex[sl])
        if data.views > 1:
            step.views.copy_(draw[:, sl].reshape(-1))
        loss, pred = step()
        losses[b] = loss
        preds[sl] = pred
    loss = float(losses.mean())  # the epoch's one host synchronisation
    if not math.isfinite(loss):
        first = int(torch.nonzero(~torch.isfinite(losses)).flatten()[0])
        _diverged(epoch, first + 1, steps.count, f"the loss became {float(losses[first])}", state, cfg)
    # the last update can break the weights after the last loss was computed: check them
    # before they are evaluated or saved
    if not bool(torch.stack([torch.isfinite(p).all() for p in state.model.parameters()]).all()):
        _diverged(epoch, steps.count, steps.count, "the weights became non-finite", state, cfg)
    true = data.train_set.scores[perm]
    rec = {
        "epoch": epoch,
        "loss": loss,
        "gt_transitions": use_gt,
        "train_rho": M.spearman(preds.cpu(), true.cpu()),
    }
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    rec["seconds"] = time.perf_counter() - t0
    return rec


def _diverged(epoch: int, step: int, count: int, what: str, state: RunState, cfg: TrainConfig):
    where = f"training diverged at epoch {epoch + 1}/{cfg.max_epoch}, step {step}/{count}: {what}"
    fix = "lower --base_lr and start again"
    if state.history:  # last.pt holds the last finite epoch
        fix += (
            f", or --resume from {state.last_path} (epoch {state.history[-1]['epoch'] + 1}) "
            "with a lower --base_lr and --allow-config-change"
        )
    raise TrainingDiverged(f"{where} (--base_lr {cfg.base_lr}, --bs_train {cfg.bs_train}); {fix}")


def evaluate_and_checkpoint(
    epoch: int, rec: dict, state: RunState, data: TrainData, cfg: TrainConfig, steps: Steps, log_file
) -> None:
    """Votes on the test split when due (best.pt on a new best test rho), logs the epoch and
    writes last.pt with everything a resume needs."""
    model = state.model
    common = dict(epoch=epoch, settings=state.settings, dive_numbers=data.vocab)
    if (epoch + 1) % cfg.eval_every == 0 or epoch == cfg.max_epoch - 1:
        votes = vote(
            model,
            data.test_set,
            data.exemplar_set,
            data.vote_rows,
            data.vote_valid,
            transitions="oracle" if cfg.method == "TSA-oracle" else "predicted",
            amp=cfg.amp,
        )
        if not bool(torch.isfinite(votes.scores).all()):  # finite but exploded weights
            _diverged(epoch, steps.count, steps.count, "the test votes became non-finite", state, cfg)
        rec["test"] = score_metrics(votes.scores, data.test_set.scores, votes.bounds, data.test_set.bounds)
        model.train()
        if state.best is None or rec["test"]["rho"] > state.best["rho"]:
            state.best = {"epoch": epoch, **rec["test"]}
            save_checkpoint(
                state.best_path,
                model_checkpoint(model, **common, metrics=rec["test"], store_identity=state.store_identity),
            )
    state.history.append(rec)
    log_file.write(json.dumps(rec) + "\n")
    log_file.flush()
    save_checkpoint(
        state.last_path,
        model_checkpoint(
            model,
            **common,
            metrics=rec.get("test"),
            optimizer=state.optimizer.state_dict(),
            history=state.history,
            best=state.best,
            rng={"sampler": state.gen.get_state(), "torch": torch.get_rng_state()},
            store_identity=state.store_identity,
        ),
    )


def summarise(state: RunState, steps: Steps) -> TrainResult:
    """train_summary.json (best AND last epoch, labelled) and the TrainResult."""
    history, best = state.history, state.best
    last = {"epoch": history[-1]["epoch"], **history[-1].get("test", {})} if history else {}
    summary = {
        "settings": state.settings,
        "step_mode": steps.mode,
        "best_epoch_selected_on_test_rho": best,
        "last_epoch": last,
        "store_identity": state.store_identity,
        "note": "best_* is chosen on the test split (as the reference does), so it is "
        "optimistic; last_epoch is the held-out figure",
    }
    summary_path = state.out / "train_summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return TrainResult(
        state.out,
        state.best_path if best is not None else None,
        state.last_path,
        summary_path,
        best or {},
        last,
        history,
        steps.mode,
    )


# ---- the run ----------------------------------------------------------------------------------


def _progress(iterator, cfg: TrainConfig, start: int):
    if not cfg.progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(
        iterator,
        desc=f"train {cfg.method}",
        unit="epoch",
        initial=start,
        total=cfg.max_epoch,
        file=sys.stderr,
    )


def train(
    store_path, annotations, out_dir, *, config: TrainConfig | None = None, log=None, **options
) -> TrainResult:
    """Trains `method` on the training split of `annotations` using a feature store's features.

    Options: a `TrainConfig` as `config`, or its fields as keywords (`method`, `max_epoch`,
    `bs_train`, `base_lr`, ...; keywords given with `config` replace its values). All are
    checked before anything is loaded.

    Writes into `out_dir`: `last.pt` (every epoch, atomic, with optimizer and RNG state: what
    `resume=True` continues from), `best.pt` (highest test rho so far, as the reference selects;
    a best-of-epochs figure, not a held-out one), `train_log.jsonl` (one record per epoch) and
    `train_summary.json` (best AND last-epoch metrics, labelled). Checkpoints record the store's
    identity (`fdperf.features.videoset.store_identity`); a resume refuses another kind of store
    or changed hyper-parameters unless `allow_store_mismatch` / `allow_config_change`.

    A store with K > 1 views (`fdperf.extract --views K`, the reference's random flip and crop)
    trains on a random view per video per epoch; give `eval_store` (a store of the test
    transform) for evaluation, otherwise view 0 is used. `view` pins one training view.
    `decode` ("window" or "ordered", fdperf.tsa.decode) reads the predicted transitions of TSA
    and F+S+R; it is stored in the checkpoint's config, which evaluation uses by default.
    """
    try:
        cfg = dataclasses.replace(config, **options) if config is not None else TrainConfig(**options)
    except TypeError as e:  # an unknown keyword
        raise ConfigError(f"train(): {e}") from None
    cfg.validate()
    log = log or _stderr
    device = resolve_device(cfg.device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ann = as_annotations(annotations, cfg.num_transitions)
    vocab = dive_vocabulary(ann, ann.train_keys)
    store = open_store(store_path)  # the header: snippets, views and identity, no tensors yet
    model = build(cfg, len(vocab), store.num_snippets, device)
    state = start_run(model, cfg, store_path, store, out, device)
    if cfg.resume:  # all checks of the checkpoint before the store is loaded
        resume(state, store.path, cfg, device, log)
    data = prepare_data(store, ann, vocab, cfg, model.needs_maps, state.store_identity, device, log)
    if data.eval_store_check is not None:
        state.settings["eval_store_check"] = data.eval_store_check
    steps = build_steps(state, data, cfg, device, log)
    epochs = range(state.start_epoch, cfg.max_epoch)
    bar = _progress(epochs, cfg, state.start_epoch)
    try:
        with open(out / "train_log.jsonl", "a") as log_file:
            for epoch in bar if bar is not None else epochs:
                rec = run_epoch(epoch, state, steps, data, cfg, device)
                evaluate_and_checkpoint(epoch, rec, state, data, cfg, steps, log_file)
                if bar is not None:
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", rho=f"{rec['train_rho']:.3f}")
                    bar.write(_log_line(epoch, cfg.max_epoch, rec), file=sys.stderr)
                else:
                    log(_log_line(epoch, cfg.max_epoch, rec))
    finally:
        if bar is not None:
            bar.close()
    return summarise(state, steps)
