"""python -m fdperf.demo (`make demo`): the whole pipeline on synthetic dives, end to end.

    generate dives -> extract I3D features -> train TSA and F+R -> vote -> metrics -> report

Everything lands in one output folder:
    data/                 the synthetic set (frames/, Annotations/, synth.json)
    features.h5           the I3D feature store
    tsa/ fr/              training runs (checkpoints, train_log.jsonl) and eval/ (metrics, predictions)
    transition_probs.npz  PSNet's transition probabilities of the test videos (TSA, last epoch)
    report/               index.html, summary.png, videos/*.png
    demo_summary.json     metrics of both methods, settings and seconds per stage

Rerunning with the same settings reuses the set and the feature store.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

RHO_TARGET = 0.7  # the demo's own learnability check on the synthetic test split
# The demo trains from scratch, so it need not replay the reference's feature-map reshape, which
# mixes channels and spatial positions: PSNet's batch norms then gather running statistics from
# two very different inputs (pooled features, mixed map rows), and in eval mode every delta came
# out shifted (about -23 points on the synthetic set, on training videos too; rho 0.74 vs 0.95 in
# training mode). "spatial" gives PSNet one 1024-d feature vector per position, like the pooled
# features, and the shift goes away.
TSA_LAYOUT = "spatial"
METHODS = (("TSA", "tsa"), ("F+R", "fr"))


def _say(msg: str) -> None:
    print(msg, flush=True)


def _stage(name: str, timings: dict):
    class _Timer:
        def __enter__(self):
            _say(f"\n== {name}")
            self.t0 = time.perf_counter()

        def __exit__(self, *exc):
            timings[name] = time.perf_counter() - self.t0
            if exc[0] is None:
                _say(f"   {name}: {timings[name]:.1f} s")

    return _Timer()


def prepare_dataset(data_dir: str, videos: int, seed: int, progress: bool) -> tuple[bool, object]:
    """The synthetic set in `data_dir`: reused when its manifest matches, else (re)generated.
    Returns (generated_now, annotations folder)."""
    from ..synthetic import generate_dataset, read_manifest
    from ..synthetic.generate import manifest_for

    wanted = manifest_for(videos, seed, 0.25)
    if read_manifest(data_dir) == wanted:
        _say(f"   reusing the synthetic set in {data_dir}")
        return False, os.path.join(data_dir, "Annotations")
    ds = generate_dataset(data_dir, videos, seed, overwrite=True, progress=progress)
    _say(f"   {videos} dives ({len(ds.train_keys)} train, {len(ds.test_keys)} test) in {data_dir}")
    return True, ds.annotations_dir


def random_i3d_weights(path: str, seed: int = 0) -> str:
    """Writes a randomly initialised I3D in the model_rgb.pth layout, with He (Kaiming) normal
    convolution weights, and returns its path.

    Why not PyTorch's default initialisation: its convolutions shrink the signal by about 3x per
    layer, so after I3D's 20-odd layers the features are ~1e-6 (the float16 feature maps then sit
    in the subnormal range) and the TSA head's batch norms mostly see their epsilon. He init keeps
    the activations of a random ReLU network at unit scale, so a random I3D still passes on how
    large, where and how fast things move in the frames, which is what the synthetic dives vary.
    """
    from ..backbone.weights import random_i3d

    model = random_i3d(seed)
    tmp = path + ".tmp"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return path


def transition_probabilities(checkpoint, store_path, keys, device) -> dict:
    """PSNet's per-frame transition probabilities [96, L] of `keys`, from a TSA checkpoint."""
    from ..data import key_to_str
    from ..features import FeatureStore
    from ..tsa.checkpoint import load_model

    model, _ = load_model(checkpoint, map_location="cpu")
    model.to(device).eval()
    store = FeatureStore(store_path)
    feats, _ = store.load(device=device, maps=False)
    rows = torch.as_tensor([store.index_of(k) for k in keys], device=device)
    with torch.no_grad():
        _, probs = model.psnet(feats.index_select(0, rows))
    probs = probs.float().cpu().numpy()
    return {key_to_str(k): probs[i] for i, k in enumerate(keys)}


def metrics_table(results: dict) -> str:
    head = f"{'method':<26} {'rho':>7} {'R-l2':>7} {'AIoU@0.5':>9} {'AIoU@0.75':>10}"
    lines = [head, "-" * len(head)]
    for name, m in results.items():
        a50 = f"{m['aiou50']:.2f}" if m.get("aiou50") is not None else "-"
        a75 = f"{m['aiou75']:.2f}" if m.get("aiou75") is not None else "-"
        lines.append(f"{name:<26} {m['rho']:>7.4f} {m['rl2']:>7.4f} {a50:>9} {a75:>10}")
    return "\n".join(lines)


@dataclass
class DemoSettings:
    """What one demo run works with; `timings` collects the seconds of each stage."""

    out: str
    videos: int
    epochs: int
    device: torch.device
    weights: str | None
    seed: int
    progress: bool
    report_videos: int | None = None
    timings: dict = field(default_factory=dict)

    @property
    def data_dir(self) -> str:
        return os.path.join(self.out, "data")

    @property
    def store(self) -> str:
        return os.path.join(self.out, "features.h5")


def check_options(videos: int, epochs: int | None, weights: str | None, dev: torch.device) -> int:
    """Refuses unusable options before any work; returns the epoch count (default per device)."""
    if epochs is None:
        epochs = 200 if dev.type == "cuda" else 40
    if videos < 8:
        raise ValueError("--videos: the demo needs at least 8 dives (train and test splits)")
    if epochs < 1:
        raise ValueError("--epochs must be >= 1")
    if weights is not None and not os.path.isfile(weights):
        raise FileNotFoundError(f"--weights: no such file: {weights}")
    return epochs


def i3d_weights(demo: DemoSettings) -> str:
    """The I3D weights to extract with: the given file, else a He-initialised random I3D kept in
    the output folder (the store's identity includes the weights' sha256, so a rerun must find
    the same file)."""
    if demo.weights is not None:
        _say(f"   I3D weights: {demo.weights}")
        return demo.weights
    path = os.path.join(demo.out, f"i3d_random_init_seed{demo.seed}.pth")
    if not os.path.isfile(path):
        random_i3d_weights(path, demo.seed)
    _say(
        "   I3D: RANDOMLY INITIALISED (He-normal, seed %d; no --weights given, and Kinetics "
        "weights cannot be downloaded here). Pass --weights model_rgb.pth for pretrained "
        "features." % demo.seed
    )
    return path


def extract_stage(demo: DemoSettings, keys: list, generated: bool) -> None:
    """I3D features of every dive into the store; reuses a store of the same settings and
    redoes one of other settings (weights, seed, set)."""
    from ..extract import ExtractOptions, Inputs, InputWarning, extract_features

    i3d = i3d_weights(demo)
    opts = ExtractOptions(
        device=str(demo.device), seed=demo.seed, overwrite=generated, progress=demo.progress
    )
    inputs = Inputs(frames_root=os.path.join(demo.data_dir, "frames"))
    # Synthetic dives are 70-140 frames long: the short-folder warnings are expected here. They
    # stay in the store's warnings dataset; the demo prints their count instead of each one.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        try:
            res = extract_features(demo.store, keys, inputs, weights=i3d, options=opts)
        except RuntimeError as e:
            if "remove it or pass overwrite" not in str(e):
                raise
            _say(f"   the existing store cannot be reused ({e}); extracting again")
            opts.overwrite = True
            res = extract_features(demo.store, keys, inputs, weights=i3d, options=opts)
    for w in caught:
        if not issubclass(w.category, InputWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    noted = sum(issubclass(w.category, InputWarning) for w in caught)
    if noted:
        _say(f"   {noted} input warning(s), e.g. short frame folders (kept in the store's warnings dataset)")
    if res.errors or not res.complete:
        raise RuntimeError(f"feature extraction failed for {len(res.errors)} videos, e.g. {res.errors[:1]}")
    _say(f"   {res.extracted} videos extracted, {res.skipped} reused -> {demo.store}")


def train_and_vote(demo: DemoSettings, ann, method: str, sub: str) -> tuple:
    """Trains `method` from scratch in <out>/<sub> and votes with its last checkpoint on the test
    split; returns (training result, evaluation result)."""
    from ..evaluate import evaluate
    from ..train import train

    run_dir = os.path.join(demo.out, sub)
    if os.path.isdir(run_dir):  # a previous demo's run: its log would mix into the curves
        shutil.rmtree(run_dir)
    epochs = demo.epochs
    with _stage(f"train {method}", demo.timings):
        tr = train(
            demo.store,
            ann,
            run_dir,
            method=method,
            max_epoch=epochs,
            seed=demo.seed,
            device=demo.device,
            layout=TSA_LAYOUT,
            eval_every=max(1, epochs // 10),
            progress=demo.progress,
            log=lambda s: None,
        )
    with _stage(f"vote {method}", demo.timings):
        ev = evaluate(tr.last_checkpoint, demo.store, ann, os.path.join(run_dir, "eval"), device=demo.device)
    return tr, ev


def exemplars_only(predictions_path) -> dict:
    """What the exemplars alone give (delta = 0: mean score of the same dive numbers' exemplars):
    the share of rho that comes from difficulty, which the models do not have to learn."""
    from ..report import VideoRow, read_predictions, split_metrics

    rows = read_predictions(str(predictions_path))
    return split_metrics([VideoRow(r.key, r.true_score, float(np.mean(r.exemplar_scores))) for r in rows])


def report_stage(demo: DemoSettings, ann, runs: dict):
    """PSNet's transition probabilities of the test videos (transition_probs.npz) and the
    visual report of both methods."""
    from ..report import write_report

    probs = transition_probabilities(runs["TSA"][0].last_checkpoint, demo.store, ann.test_keys, demo.device)
    np.savez(os.path.join(demo.out, "transition_probs.npz"), **probs)
    return write_report(
        str(runs["TSA"][1].predictions_path),
        os.path.join(demo.out, "report"),
        method="TSA",
        compare={"F+R": str(runs["F+R"][1].predictions_path)},
        train_logs={m: str(runs[m][0].out_dir / "train_log.jsonl") for m, _ in METHODS},
        probabilities=probs,
        frames_dir=os.path.join(demo.data_dir, "frames"),
        max_videos=demo.report_videos,
        title=f"fdperf demo: {demo.videos} synthetic dives, seed {demo.seed}, {demo.epochs} epochs"
        + ("" if demo.weights else ", random-init I3D"),
        progress=demo.progress,
    )


def summarise(demo: DemoSettings, ann, results: dict, baseline: dict, report_index: str) -> dict:
    """demo_summary.json: settings, both methods' test metrics, the exemplars-only baseline and
    the seconds per stage; returns what it wrote."""
    keep = ("rho", "rl2", "l2", "aiou50", "aiou75", "num_videos")
    summary = {
        "videos": demo.videos,
        "epochs": demo.epochs,
        "seed": demo.seed,
        "device": str(demo.device),
        "i3d": demo.weights or "random-init (He normal, seed %d)" % demo.seed,
        "num_test": len(ann.test_keys),
        "num_train": len(ann.train_keys),
        "metrics": {m: {k: results[m].get(k) for k in keep} for m in results},
        "exemplars_only": baseline,
        "rho_target": RHO_TARGET,
        "tsa_reaches_target": bool(results["TSA"]["rho"] >= RHO_TARGET),
        "seconds": demo.timings,
        "report": report_index,
        "out": os.path.abspath(demo.out),
    }
    with open(os.path.join(demo.out, "demo_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def print_results(demo: DemoSettings, summary: dict, results: dict, baseline: dict) -> None:
    _say(
        f"\nTest split: {summary['num_test']} videos (last-epoch checkpoints, {demo.epochs} epochs, "
        f"10 exemplars of the same dive number)\n"
    )
    _say(metrics_table({**results, "exemplars only (delta 0)": baseline}))
    verdict = "reached" if summary["tsa_reaches_target"] else "NOT reached"
    _say(f"\nlearnability check: TSA rho {results['TSA']['rho']:.3f} (target >= {RHO_TARGET}: {verdict})")
    _say("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in demo.timings.items()))
    _say(f"\nreport: {summary['report']}\noutput folder: {summary['out']}")


def run_demo(
    out: str = "runs/demo",
    videos: int = 120,
    epochs: int | None = None,
    device: str = "auto",
    weights: str | None = None,
    seed: int = 0,
    progress: bool = True,
    report_videos: int | None = None,
) -> dict:
    """Runs every stage; returns the summary written to demo_summary.json."""
    from ..data import load_annotations
    from ..device import resolve_device

    dev = resolve_device(device)
    epochs = check_options(videos, epochs, weights, dev)
    demo = DemoSettings(out, videos, epochs, dev, weights, seed, progress, report_videos)
    os.makedirs(out, exist_ok=True)
    t_all = time.perf_counter()
    _say(f"fdperf demo: {videos} synthetic dives, {epochs} epochs, device {dev}, output {out}")
    with _stage("generate", demo.timings):
        generated, ann_dir = prepare_dataset(demo.data_dir, videos, seed, progress)
    ann = load_annotations(ann_dir)
    with _stage("extract", demo.timings):
        extract_stage(demo, ann.keys(), generated)
    runs = {method: train_and_vote(demo, ann, method, sub) for method, sub in METHODS}
    results = {method: ev.metrics for method, (_, ev) in runs.items()}
    baseline = exemplars_only(runs["TSA"][1].predictions_path)
    with _stage("report", demo.timings):
        rep = report_stage(demo, ann, runs)
    demo.timings["total"] = time.perf_counter() - t_all
    summary = summarise(demo, ann, results, baseline, rep.index)
    print_results(demo, summary, results, baseline)
    return summary
