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

import numpy as np
import torch

RHO_TARGET = 0.7   # the demo's own learnability check on the synthetic test split
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


def run_demo(out: str = "runs/demo", videos: int = 120, epochs: int | None = None,
             device: str = "auto", weights: str | None = None, seed: int = 0,
             progress: bool = True, report_videos: int | None = None) -> dict:
    """Runs every stage; returns the summary written to demo_summary.json."""
    from ..data import load_annotations
    from ..extract import ExtractOptions, Inputs, extract_features
    from ..report import VideoRow, read_predictions, split_metrics, write_report
    from ..train import train
    from ..evaluate import evaluate

    from ..device import resolve_device
    dev = resolve_device(device)
    if epochs is None:
        epochs = 200 if dev.type == "cuda" else 40
    if videos < 8:
        raise ValueError("--videos: the demo needs at least 8 dives (train and test splits)")
    if epochs < 1:
        raise ValueError("--epochs must be >= 1")
    if weights is not None and not os.path.isfile(weights):
        raise FileNotFoundError(f"--weights: no such file: {weights}")
    os.makedirs(out, exist_ok=True)
    timings: dict = {}
    t_all = time.perf_counter()
    _say(f"fdperf demo: {videos} synthetic dives, {epochs} epochs, device {dev}, output {out}")

    with _stage("generate", timings):
        data_dir = os.path.join(out, "data")
        generated, ann_dir = prepare_dataset(data_dir, videos, seed, progress)
    ann = load_annotations(ann_dir)

    store = os.path.join(out, "features.h5")
    with _stage("extract", timings):
        i3d = weights
        if weights is None:
            i3d = os.path.join(out, f"i3d_random_init_seed{seed}.pth")
            if not os.path.isfile(i3d):  # kept: the store's identity includes the weights' sha256
                random_i3d_weights(i3d, seed)
            _say("   I3D: RANDOMLY INITIALISED (He-normal, seed %d; no --weights given, and Kinetics "
                 "weights cannot be downloaded here). Pass --weights model_rgb.pth for pretrained "
                 "features." % seed)
        else:
            _say(f"   I3D weights: {weights}")
        opts = ExtractOptions(device=str(dev), seed=seed, overwrite=generated, progress=progress)
        inputs = Inputs(frames_root=os.path.join(data_dir, "frames"))
        try:
            res = extract_features(store, ann.keys(), inputs, weights=i3d, options=opts)
        except RuntimeError as e:  # a store from other settings (weights, seed, set): redo it
            if "remove it or pass overwrite" not in str(e):
                raise
            _say(f"   the existing store cannot be reused ({e}); extracting again")
            opts.overwrite = True
            res = extract_features(store, ann.keys(), inputs, weights=i3d, options=opts)
        if res.errors or not res.complete:
            raise RuntimeError(f"feature extraction failed for {len(res.errors)} videos, e.g. {res.errors[:1]}")
        _say(f"   {res.extracted} videos extracted, {res.skipped} reused -> {store}")

    results, runs = {}, {}
    for method, sub in METHODS:
        run_dir = os.path.join(out, sub)
        if os.path.isdir(run_dir):  # a previous demo's run: its log would mix into the curves
            shutil.rmtree(run_dir)
        with _stage(f"train {method}", timings):
            tr = train(store, ann, run_dir, method=method, max_epoch=epochs, seed=seed, device=dev,
                       layout=TSA_LAYOUT, eval_every=max(1, epochs // 10), progress=progress,
                       log=lambda s: None)
        with _stage(f"vote {method}", timings):
            ev = evaluate(tr.last_checkpoint, store, ann, os.path.join(run_dir, "eval"), device=dev)
        results[method] = ev.metrics
        runs[method] = (tr, ev)

    # What the exemplars alone give (delta = 0: mean score of the same dive numbers' exemplars):
    # the share of rho that comes from difficulty, which the models do not have to learn.
    rows = read_predictions(str(runs["TSA"][1].predictions_path))
    baseline = split_metrics([VideoRow(r.key, r.true_score, float(np.mean(r.exemplar_scores)))
                              for r in rows])

    probs_path = os.path.join(out, "transition_probs.npz")
    with _stage("report", timings):
        probs = transition_probabilities(runs["TSA"][0].last_checkpoint, store, ann.test_keys, dev)
        np.savez(probs_path, **probs)
        rep = write_report(str(runs["TSA"][1].predictions_path), os.path.join(out, "report"), method="TSA",
                           compare={"F+R": str(runs["F+R"][1].predictions_path)},
                           train_logs={m: str(runs[m][0].out_dir / "train_log.jsonl") for m, _ in METHODS},
                           probabilities=probs, frames_dir=os.path.join(data_dir, "frames"),
                           max_videos=report_videos,
                           title=f"fdperf demo: {videos} synthetic dives, seed {seed}, {epochs} epochs"
                                 + ("" if weights else ", random-init I3D"),
                           progress=progress)
    timings["total"] = time.perf_counter() - t_all

    keep = ("rho", "rl2", "l2", "aiou50", "aiou75", "num_videos")
    summary = {
        "videos": videos, "epochs": epochs, "seed": seed, "device": str(dev),
        "i3d": weights or "random-init (He normal, seed %d)" % seed,
        "num_test": len(ann.test_keys), "num_train": len(ann.train_keys),
        "metrics": {m: {k: results[m].get(k) for k in keep} for m in results},
        "exemplars_only": baseline,
        "rho_target": RHO_TARGET, "tsa_reaches_target": bool(results["TSA"]["rho"] >= RHO_TARGET),
        "seconds": timings, "report": rep.index, "out": os.path.abspath(out),
    }
    with open(os.path.join(out, "demo_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)

    _say(f"\nTest split: {len(ann.test_keys)} videos (last-epoch checkpoints, {epochs} epochs, "
         f"10 exemplars of the same dive number)\n")
    _say(metrics_table({**results, "exemplars only (delta 0)": baseline}))
    verdict = "reached" if summary["tsa_reaches_target"] else "NOT reached"
    _say(f"\nlearnability check: TSA rho {results['TSA']['rho']:.3f} (target >= {RHO_TARGET}: {verdict})")
    _say("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    _say(f"\nreport: {rep.index}\noutput folder: {os.path.abspath(out)}")
    return summary
