"""Window vs ordered transition decoding on a synthetic feature set with late dives.

    python benchmarks/decode_compare.py [--late-share 0.3] [--epochs 16] [--seeds 0 1 2]

For each seed: a synthetic feature set (fdperf.synthetic.features, 64 train / 48 test videos)
where about `late_share` of the videos have transitions outside the reference's two windows,
TSA trained once with each decoding, and each trained model evaluated with both decodings (so
the same weights are compared too). Prints a markdown table: rho, AIoU@0.5/0.75 on all test
videos and on the late ones only, means over the seeds. CPU, about 1 minute per seed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fdperf import metrics as M
from fdperf.data import load_annotations
from fdperf.evaluate import evaluate
from fdperf.synthetic.features import make_synthetic_features
from fdperf.train import train
from fdperf.tsa.decode import DECODERS, representable


def one_seed(root: Path, seed: int, args) -> dict:
    store, _ = make_synthetic_features(
        root / "data", n_train=args.train, n_test=args.test, seed=seed, late_share=args.late_share
    )
    ann = load_annotations(root / "data" / "Annotations")
    truth = np.stack([ann[k].transitions for k in ann.test_keys])
    late = ~representable(truth, "window").numpy()
    out = {}
    for trained in DECODERS:
        res = train(
            store,
            ann,
            root / trained,
            max_epoch=args.epochs,
            bs_train=4,
            voter_number=5,
            eval_every=args.epochs,
            seed=seed,
            device="cpu",
            progress=False,
            log=lambda s: None,
            decode=trained,
        )
        for decoded in DECODERS:
            ev = evaluate(
                res.last_checkpoint,
                store,
                ann,
                root / f"{trained}-{decoded}",
                voter_number=5,
                device="cpu",
                decode=decoded,
                seed=seed,
            )
            pred = ev.votes.bounds.cpu().numpy()
            m = ev.metrics
            out[(trained, decoded)] = [
                m["rho"],
                m["aiou50"],
                m["aiou75"],
                M.aiou(pred[late], truth[late], 0.5),
                M.aiou(pred[late], truth[late], 0.75),
            ]
    return out, int(late.sum())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--late-share", type=float, default=0.3)
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--train", type=int, default=64)
    p.add_argument("--test", type=int, default=48)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    runs, lates = [], []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            r, n_late = one_seed(Path(tmp), seed, args)
        runs.append(r)
        lates.append(n_late)
        print(
            f"seed {seed}: {n_late} of {args.test} test videos outside the windows "
            f"({time.perf_counter() - t0:.0f} s)",
            file=sys.stderr,
        )
    print(
        f"Synthetic feature set, late_share {args.late_share}: {args.train} train / {args.test} "
        f"test videos ({np.mean(lates):.1f} test videos outside the windows on average), TSA "
        f"{args.epochs} epochs, 5 exemplars, mean over seeds {args.seeds}; AIoU in %.\n"
    )
    print("| trained with | decoded with | rho | AIoU@0.5 | AIoU@0.75 | AIoU@0.5 late | AIoU@0.75 late |")
    print("|---|---|---|---|---|---|---|")
    for key in runs[0]:
        mean = np.mean([r[key] for r in runs], axis=0)
        print(f"| {key[0]} | {key[1]} | {mean[0]:.3f} | " + " | ".join(f"{v:.1f}" for v in mean[1:]) + " |")
    print(f"\n{time.perf_counter() - t0:.0f} s on the CPU ({args.threads} thread(s))", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
