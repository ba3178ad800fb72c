"""End-to-end TSA training: I3D fine-tuned with the heads, fed by fdperf's video pipeline.

The paper's regime (the reference's optimiser groups, `fix_bn`, training transform per clip, the
transition schedule and losses of `fdperf.train`), with the work on the device:

- frames are decoded by the extractor's reader (DALI `mixed` with nvJPEG/NVDEC on a GPU, DALI CPU
  or PyAV on the CPU) one batch ahead of the step, and kept squashed as uint8 on the device
  (`clips.FrameCache`): after the first epoch nothing is decoded again;
- the flip and crop are tensor ops on the cached frames, bitwise equal to PIL + torchvision;
- I3D runs in bf16 autocast with channels_last_3d on CUDA (float32 on the CPU), optionally with
  activation checkpointing; the heads through `fdperf.ops` as in today's training;
- under torchrun each rank runs I3D on its share of the pairs, the features are gathered and every
  rank computes the head and loss of the whole batch (so PSNet's batch norm sees the global
  batch, as in one process); DistributedDataParallel averages the gradients; rank 0 writes files;
- evaluation every `eval_every` epochs: features of the fine-tuned I3D on the cached test-transform
  clips (as `fdperf.extract` computes them, maps rounded to float16 as a store keeps them), then
  today's voting; best-on-test and last-epoch figures are kept apart.

Checkpoints are fdperf's format (`last.pt`, `best.pt`: the head as `model`, I3D as `i3d`), so
`fdperf.evaluate` reads the head and `fdperf.extract --weights best.pt` the backbone;
`export_reference` writes the reference's `last.pth`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from .. import metrics as M
from ..backbone import load_i3d
from ..data import ExemplarSampler, sample_tensors, voting_exemplars
from ..device import resolve_device
from ..evaluate import score_metrics, vote
from ..extract import SAMPLING, ExtractOptions, Inputs, _settings
from ..features.videoset import VideoSet, as_annotations, dive_vocabulary
from ..options import ConfigError, finite, int_at_least, one_of
from ..tsa.checkpoint import (
    CheckpointError,
    export_reference_checkpoint,
    model_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from ..version import __version__
from . import RunState, TrainResult, _diverged, _log_line, build, ddp, summarise
from .clips import Draw, FrameCache
from .config import RESUME_GUARDED, TrainConfig
from .e2e_model import EndToEnd, optimizer_groups

GUARDED = RESUME_GUARDED + ("lr_factor", "num_snippets", "world_size", "checkpoint_activations")


@dataclass
class EndToEndConfig(TrainConfig):
    """TrainConfig plus the inputs and backbone of end-to-end training (defaults: FineDiving_TSA.yaml)."""

    inputs: Inputs | None = None  # frames or videos, as fdperf.extract reads them
    weights: str | None = None  # model_rgb.pth (or a checkpoint with I3D weights)
    random_init: bool = False  # random I3D on purpose (tests, smoke runs)
    lr_factor: float = 0.1  # I3D learning rate = base_lr * lr_factor
    num_snippets: int = 9  # fewer only for quick tests
    checkpoint_activations: bool = False  # recompute I3D blocks in backward (less memory)
    channels_last: bool | None = None  # channels_last_3d (default: on CUDA)
    eval_videos: int | None = None  # videos per I3D forward in evaluation (1 CPU, 16 GPU)
    reader: ExtractOptions | None = None  # reader settings (batch_videos, readers, threads)

    def validate(self) -> EndToEndConfig:
        super().validate()
        one_of("method", self.method, ("TSA", "TSA-oracle"))
        if self.inputs is None:
            raise ConfigError("end-to-end training needs its videos: give --frames-root or --videos-root")
        if self.weights is None and not self.random_init:
            raise ConfigError(
                "no I3D weights: pass --weights model_rgb.pth, or --random-init to "
                "train from random weights on purpose"
            )
        if not 0 < finite("lr_factor", self.lr_factor) <= 1e6:
            raise ConfigError(
                f"--lr_factor {self.lr_factor!r}: must lie in (0, 1e6] (the reference uses 0.1)"
            )
        int_at_least("num_snippets", self.num_snippets, 1)
        if self.num_snippets > 9:
            raise ConfigError(f"--num-snippets {self.num_snippets}: at most 9 fit the 96-frame clip")
        if self.eval_videos is not None:
            int_at_least("eval-videos", self.eval_videos, 1)
        if self.view is not None or self.eval_store is not None:
            raise ConfigError(
                "--view and --eval-store are options of feature-store training, not of --end-to-end"
            )
        return self


@dataclass
class Run:
    """Everything an end-to-end run holds besides the RunState."""

    cfg: EndToEndConfig
    device: torch.device
    ann: object
    vocab: list
    train_keys: list
    test_keys: list
    labels: dict  # per cache row (train then test): score, bounds, dive
    cache: FrameCache
    sampler: ExemplarSampler
    vote_rows: torch.Tensor
    vote_valid: torch.Tensor
    model: EndToEnd
    step_model: torch.nn.Module  # the DistributedDataParallel wrapper, or model
    sha: str
    rank: int = 0
    world: int = 1

    @property
    def n_train(self) -> int:
        return len(self.train_keys)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ---- stages -----------------------------------------------------------------------------------


def setup(cfg: EndToEndConfig, annotations, device) -> Run:
    """Annotations, labels, the frame cache, the model and (under torchrun) its DDP wrapper."""
    ann = as_annotations(annotations, cfg.num_transitions)
    train_keys, test_keys = list(ann.train_keys), list(ann.test_keys)
    if len(train_keys) < 2:
        raise ConfigError(f"training needs at least two training videos, the split holds {len(train_keys)}")
    vocab = dive_vocabulary(ann, train_keys)
    keys = train_keys + test_keys
    t = sample_tensors(ann, keys, device=device)
    dn = {d: i for i, d in enumerate(vocab)}
    dive = torch.tensor([dn.get(ann[k].dive_number, len(vocab)) for k in keys], device=device)
    labels = {"score": t["score"], "bounds": t["transitions"], "dive": dive, "difficulty": t["difficulty"]}
    reader = _settings(cfg.reader or ExtractOptions(device=str(device)), device)
    cache = FrameCache(keys, cfg.inputs, reader, device)
    rows, valid = voting_exemplars(
        ann, test_keys, train_keys, m=cfg.voter_number, policy=cfg.exemplar_policy, seed=cfg.seed
    )
    sampler = ExemplarSampler(ann, train_keys, policy=cfg.exemplar_policy, device="cpu")
    model, sha = build_model(cfg, len(vocab), device)
    step_model = model
    rank, world = ddp.world()
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        step_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return Run(
        cfg,
        device,
        ann,
        vocab,
        train_keys,
        test_keys,
        labels,
        cache,
        sampler,
        rows,
        valid,
        model,
        step_model,
        sha,
        rank,
        world,
    )


def build_model(cfg: EndToEndConfig, num_dive_numbers: int, device) -> tuple[EndToEnd, str]:
    """The head exactly as feature-store training builds it (same seed), and I3D from its weights."""
    head = build(cfg, num_dive_numbers, cfg.num_snippets, device)
    backbone, sha = load_i3d(cfg.weights, random_init=cfg.random_init, seed=cfg.seed)
    cuda = device.type == "cuda"
    model = EndToEnd(
        backbone.to(device),
        head,
        [10 * i for i in range(cfg.num_snippets)],
        amp=cfg.amp or cuda,
        checkpoint_activations=cfg.checkpoint_activations,
        channels_last=cuda if cfg.channels_last is None else cfg.channels_last,
    )
    return model.train(), sha


def start_run(run: Run, out: Path) -> RunState:
    cfg = run.cfg
    gen = torch.Generator()  # on the host: batches, exemplars and transform draws (every rank alike)
    gen.manual_seed(cfg.seed)
    optimizer = torch.optim.Adam(
        optimizer_groups(run.model, cfg.base_lr, cfg.lr_factor), lr=cfg.base_lr, weight_decay=0
    )
    settings = dict(
        cfg.settings(),
        end_to_end=True,
        lr_factor=cfg.lr_factor,
        amp=run.model.amp,
        num_snippets=cfg.num_snippets,
        weights_sha256=run.sha,
        checkpoint_activations=cfg.checkpoint_activations,
        channels_last=run.model.channels_last,
        world_size=run.world,
        view=None,
        sampling=SAMPLING,
        preprocess="reference (random flip + crop / centre crop)",
        fdperf_version=__version__,
    )
    return RunState(run.model, optimizer, gen, settings, {}, out)


def resume(state: RunState, run: Run, log) -> None:
    """Continues from out/last.pt: same model, same guarded settings (unless allowed)."""
    cfg, path = run.cfg, state.last_path
    if not path.is_file():
        raise FileNotFoundError(
            f"--resume: no checkpoint {path} to resume from; start without "
            "--resume or give the out folder of an earlier run"
        )
    ck = read_checkpoint(path, map_location=run.device)
    head = run.model.head
    if ck.get("method") != cfg.method or ck.get("config") != head.config() or "i3d" not in ck:
        raise CheckpointError(
            f"{path} was trained as {ck.get('method')} {ck.get('config')}"
            f"{'' if 'i3d' in ck else ' on a feature store'}, not end to end as "
            f"{cfg.method} {head.config()}; use another out folder"
        )
    saved = ck.get("settings") or {}
    changes = {
        k: [saved[k], state.settings[k]]
        for k in GUARDED
        if k in saved and k in state.settings and saved[k] != state.settings[k]
    }
    if changes and not cfg.allow_config_change:
        text = "; ".join(f"--{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in changes.items())
        raise ConfigError(
            f"{path} was trained with other settings ({text}); rerun with the "
            "checkpoint's values, or pass --allow-config-change to apply the new ones"
        )
    head.load_state_dict(ck["model"])
    run.model.backbone.load_state_dict(ck["i3d"])
    state.optimizer.load_state_dict(ck["optimizer"])
    for group in state.optimizer.param_groups:  # the saved state carries the old rates
        group["lr"] = cfg.base_lr * (cfg.lr_factor if group.get("name") == "i3d" else 1.0)
    state.gen.set_state(ck["rng"]["sampler"].cpu())
    torch.set_rng_state(ck["rng"]["torch"].cpu())
    state.start_epoch = ck["epoch"] + 1
    state.history, state.best = list(ck.get("history", [])), ck.get("best")
    if changes:
        state.settings["config_changes"] = list(saved.get("config_changes", [])) + [
            {"epoch": state.start_epoch, **changes}
        ]
    log(f"resumed from {path} at epoch {state.start_epoch}/{cfg.max_epoch}")


def train_step(run: Run, state: RunState, q_rows, e_rows, draw: Draw, use_gt: bool):
    """One optimiser step on the global batch of pairs (q_rows[i], e_rows[i]): (loss, query deltas)."""
    n = len(q_rows)
    own = torch.from_numpy(ddp.local_pairs(n))
    rows = torch.cat([q_rows[own], e_rows[own]])
    pick = torch.cat([own, own + n])
    clips = run.cache.train_clips(rows, Draw(draw.flip[pick], draw.top[pick]))
    idx = torch.cat([q_rows, e_rows]).to(run.device)
    lab = run.labels
    state.optimizer.zero_grad(set_to_none=True)
    loss, reported, deltas = run.step_model(
        clips,
        ddp.layout(n, run.world, run.device),
        lab["score"][idx],
        lab["bounds"][idx],
        lab["dive"][idx],
        use_gt,
    )
    loss.backward()
    state.optimizer.step()
    return reported, deltas + lab["score"][idx[n:]]


def run_epoch(epoch: int, run: Run, state: RunState) -> dict:
    """One pass over the training videos; decoding of the next batch overlaps the current step."""
    cfg, t0 = run.cfg, time.perf_counter()
    use_gt = epoch / cfg.max_epoch <= cfg.prob_tas_threshold
    n, batch = run.n_train, min(cfg.bs_train, run.n_train)
    perm = torch.randperm(n, generator=state.gen)
    ex = run.sampler.sample(perm, state.gen)
    draw = Draw.random(2 * n, state.gen)  # [the queries'; the exemplars'] transforms
    slices = [slice(s, min(s + batch, n)) for s in range(0, n, batch)]
    losses, preds = [], torch.zeros(n, device=run.device)
    decoded = run.cache.decoded
    pending = run.cache.request(torch.cat([perm[slices[0]], ex[slices[0]]]))
    for b, sl in enumerate(slices):
        run.cache.complete(pending)
        nxt = slices[b + 1] if b + 1 < len(slices) else None
        pending = None if nxt is None else run.cache.request(torch.cat([perm[nxt], ex[nxt]]))
        d = Draw(torch.cat([draw.flip[sl], draw.flip[n:][sl]]), torch.cat([draw.top[sl], draw.top[n:][sl]]))
        loss, pred = train_step(run, state, perm[sl], ex[sl], d, use_gt)
        losses.append(loss)
        preds[sl] = pred
    losses = torch.stack(losses)
    loss = float(losses.mean())  # the epoch's one host synchronisation
    if not math.isfinite(loss):
        first = int(torch.nonzero(~torch.isfinite(losses)).flatten()[0])
        _diverged(epoch, first + 1, len(slices), f"the loss became {float(losses[first])}", state, cfg)
    if not bool(torch.stack([torch.isfinite(p).all() for p in run.model.parameters()]).all()):
        _diverged(epoch, len(slices), len(slices), "the weights became non-finite", state, cfg)
    rec = {
        "epoch": epoch,
        "loss": loss,
        "gt_transitions": use_gt,
        "train_rho": M.spearman(preds.cpu(), run.labels["score"][:n][perm.to(run.device)].cpu()),
        "decoded_videos": run.cache.decoded - decoded,
    }
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    rec["seconds"] = time.perf_counter() - t0
    return rec


@torch.no_grad()
def eval_features(run: Run, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [N, S, 1024] and maps of the test-transform clips of cache `rows`, with the current
    I3D, as the extractor computes them (maps rounded to float16, as a store keeps them). Under
    torchrun each rank computes its share and the shares are gathered."""
    model = run.model
    chunk = run.cfg.eval_videos or (16 if run.device.type == "cuda" else 1)
    parts = np.array_split(np.asarray(rows, dtype=np.int64), run.world)
    m = max(len(p) for p in parts)
    own = parts[run.rank]
    own = np.concatenate([own, np.full(m - len(own), rows[0], dtype=np.int64)])
    feats, maps = [], []
    for i in range(0, m, chunk):
        f, mp = model.features(run.cache.test_clips(own[i : i + chunk]))
        feats.append(f)
        maps.append(mp.to(torch.float16).float())
    feats, maps = ddp.gather(torch.cat(feats)), ddp.gather(torch.cat(maps))
    keep = torch.cat([torch.arange(r * m, r * m + len(p)) for r, p in enumerate(parts)]).to(run.device)
    return feats.index_select(0, keep), maps.index_select(0, keep)


def evaluate(run: Run) -> tuple[dict, torch.Tensor]:
    """Votes of the test videos with the fine-tuned I3D's features: (metrics, scores)."""
    n, lab = run.n_train, run.labels
    used = torch.unique(run.vote_rows[run.vote_valid]).tolist()
    test_rows = list(range(n, n + len(run.test_keys)))
    rows = test_rows + used
    run.cache.ensure(rows)
    was = run.model.training
    run.model.eval()
    feats, maps = eval_features(run, rows)
    run.model.train(was)

    def videoset(keys, sel, cache_rows):
        r = torch.as_tensor(cache_rows, device=run.device)
        return VideoSet(
            keys,
            feats[sel],
            maps[sel],
            lab["score"][r],
            lab["bounds"][r],
            lab["dive"][r],
            lab["difficulty"][r],
        )

    nt = len(test_rows)
    queries = videoset(run.test_keys, slice(0, nt), test_rows)
    exemplars = videoset([run.train_keys[r] for r in used], slice(nt, None), used)
    lookup = torch.zeros(n, dtype=torch.long)
    lookup[torch.as_tensor(used)] = torch.arange(len(used))
    votes = vote(
        run.model.head,
        queries,
        exemplars,
        lookup[run.vote_rows],
        run.vote_valid,
        transitions="oracle" if run.cfg.method == "TSA-oracle" else "predicted",
        amp=run.model.amp,
    )
    return score_metrics(votes.scores, queries.scores, votes.bounds, queries.bounds), votes.scores


def evaluate_and_checkpoint(epoch: int, rec: dict, run: Run, state: RunState, log_file) -> None:
    """Evaluates when due (every rank: they share the features), rank 0 writes best.pt on a new
    best test rho, the log line and last.pt."""
    cfg = run.cfg
    if (epoch + 1) % cfg.eval_every == 0 or epoch == cfg.max_epoch - 1:
        t0 = time.perf_counter()
        rec["test"], scores = evaluate(run)
        if not bool(torch.isfinite(scores).all()):
            _diverged(epoch, 1, 1, "the test votes became non-finite", state, cfg)
        rec["eval_seconds"] = time.perf_counter() - t0
        if state.best is None or rec["test"]["rho"] > state.best["rho"]:
            state.best = {"epoch": epoch, **rec["test"]}
            if run.rank == 0:
                save_checkpoint(state.best_path, _checkpoint(run, state, epoch, rec, full=False))
    state.history.append(rec)
    if run.rank == 0:
        log_file.write(json.dumps(rec) + "\n")
        log_file.flush()
        save_checkpoint(state.last_path, _checkpoint(run, state, epoch, rec, full=True))


def _checkpoint(run: Run, state: RunState, epoch: int, rec: dict, full: bool) -> dict:
    extra = dict(
        epoch=epoch,
        settings=state.settings,
        dive_numbers=run.vocab,
        metrics=rec.get("test"),
        i3d=run.model.backbone.state_dict(),
        end_to_end=True,
    )
    if full:
        extra.update(
            optimizer=state.optimizer.state_dict(),
            history=state.history,
            best=state.best,
            rng={"sampler": state.gen.get_state(), "torch": torch.get_rng_state()},
        )
    return model_checkpoint(run.model.head, **extra)


# ---- the run ----------------------------------------------------------------------------------


def _device(cfg: EndToEndConfig) -> torch.device:
    """The run's device; under torchrun cuda:LOCAL_RANK unless the CPU was asked for."""
    rank, world, local = ddp.env()
    if world > 1 and cfg.device in (None, "auto", "cuda") and torch.cuda.is_available():
        torch.cuda.set_device(local)
        return torch.device(f"cuda:{local}")
    return resolve_device(cfg.device)


def train_end_to_end(
    annotations, out_dir, *, config: EndToEndConfig | None = None, log=None, **options
) -> TrainResult:
    """Fine-tunes I3D with the TSA head on the videos of `config.inputs` (module docstring).

    Writes into `out_dir` what `fdperf.train.train` writes (last.pt, best.pt, train_log.jsonl,
    train_summary.json), the checkpoints with the I3D weights (`i3d`). Under torchrun only rank 0
    writes; every rank returns the result.
    """
    try:
        cfg = dataclasses.replace(config, **options) if config is not None else EndToEndConfig(**options)
    except TypeError as e:
        raise ConfigError(f"train_end_to_end(): {e}") from None
    cfg.validate()
    log = log or _stderr
    device = _device(cfg)
    own_group = ddp.start(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = setup(cfg, annotations, device)
    try:
        state = start_run(run, out)
        if run.rank != 0:  # only rank 0 speaks

            def log(line):
                return None

        if cfg.resume:
            resume(state, run, log)
        with open(out / "train_log.jsonl", "a") if run.rank == 0 else _NoFile() as log_file:
            for epoch in range(state.start_epoch, cfg.max_epoch):
                rec = run_epoch(epoch, run, state)
                evaluate_and_checkpoint(epoch, rec, run, state, log_file)
                log(_log_line(epoch, cfg.max_epoch, rec) + f"  ({rec['decoded_videos']} videos decoded)")
        if run.rank == 0:
            return summarise(state, SimpleNamespace(mode="eager"))
        return TrainResult(
            out,
            state.best_path,
            state.last_path,
            out / "train_summary.json",
            state.best or {},
            {},
            state.history,
        )
    finally:
        run.cache.close()
        if own_group:
            ddp.stop()


class _NoFile:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, text):
        pass

    def flush(self):
        pass


def export_reference(checkpoint, out) -> Path:
    """Writes an end-to-end checkpoint (last.pt / best.pt) as the reference's `last.pth`
    (`psnet_model`, `decoder`, `regressor_delta`, `base_model` with `module.backbone.` keys)."""
    from ..tsa.checkpoint import load_model

    head, ck = load_model(checkpoint)
    if "i3d" not in ck:
        raise CheckpointError(
            f"{checkpoint}: not an end-to-end checkpoint (no I3D weights); train with --end-to-end first"
        )
    best = ck.get("best") or {}
    return export_reference_checkpoint(
        head,
        out,
        i3d_state=ck["i3d"],
        epoch=ck.get("epoch", 0),
        epoch_best_aqa=best.get("epoch", 0),
        rho_best=best.get("rho", 0.0),
        RL2_min=best.get("rl2", 1000.0),
    )
