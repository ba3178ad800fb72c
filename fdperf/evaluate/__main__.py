"""python -m fdperf.evaluate: multi-exemplar voting of a checkpoint on a feature store.

Writes OUT/metrics.json (rho, R-l2, L2, AIoU@0.5/0.75 and the settings) and OUT/predictions.csv
(one row per test video; columns `fdperf.evaluate.PREDICTION_COLUMNS`). The work is done by
`fdperf.evaluate.evaluate`. Exit status: 0 done, 2 for a usage or input error (one line on
stderr; --debug shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys

from .. import cli
from ..cli import add_config_options, annotations_from, merged, policy_from_flags
from ..tsa import LAYOUTS

OPTIONS = ("voter_number", "action_number_choosing", "random_choosing", "seed")


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "python -m fdperf.evaluate",
        "Score the test videos of a feature store with a trained checkpoint (fdperf's "
        "best.pt/last.pt or the reference's last.pth) by voting over exemplars.",
    )
    p.add_argument("checkpoint", help="fdperf checkpoint (.pt) or reference last.pth")
    p.add_argument("store", help="feature store (.h5) written by python -m fdperf.extract")
    p.add_argument("out", help="output folder for metrics.json and predictions.csv")
    p.add_argument("--annotations", help="FineDiving Annotations folder (the six .pkl files)")
    p.add_argument(
        "--config",
        help="reference YAML; its voter_number, seed and exemplar flags apply "
        "unless given on the command line",
    )
    add_config_options(p, OPTIONS)
    p.add_argument(
        "--policy",
        choices=("dive_number", "random", "difficulty"),
        help="exemplar policy; overrides action_number_choosing",
    )
    p.add_argument(
        "--transitions",
        choices=("predicted", "oracle"),
        default=None,
        help="predicted (default) or ground-truth transitions (default for TSA-oracle; "
        "refused for the F+R baselines, which have none)",
    )
    p.add_argument(
        "--layout",
        choices=LAYOUTS,
        default=None,
        help="override the checkpoint's feature-map layout (reference checkpoints: reference)",
    )
    p.add_argument(
        "--decode",
        choices=("window", "ordered"),
        default=None,
        help="transition decoding (default: the checkpoint's; window for reference checkpoints)",
    )
    p.add_argument("--split", choices=("test", "train"), default="test", help="videos to score")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument(
        "--batch-pairs", type=int, default=None, help="pairs decoded per launch (default: all at once)"
    )
    p.add_argument("--view", type=int, default=None, help="view of a multi-view store (default 0)")
    p.add_argument(
        "--allow-store-mismatch",
        action="store_true",
        help="proceed on a store whose identity (I3D weights_sha256, preprocess, "
        "snippets, shapes) differs from the checkpoint's training store; "
        "recorded in metrics.json (store_check)",
    )
    return p


def body(args) -> int:
    from . import check_options, evaluate

    opts = merged(args, OPTIONS)
    policy = args.policy or policy_from_flags(opts["action_number_choosing"], opts["random_choosing"])
    # every option checked before anything is loaded
    check_options(
        opts["voter_number"], policy, opts["seed"], args.transitions, args.split, args.batch_pairs, args.view
    )
    result = evaluate(
        args.checkpoint,
        args.store,
        annotations_from(args, args.config),
        args.out,
        voter_number=opts["voter_number"],
        policy=policy,
        seed=opts["seed"],
        transitions=args.transitions,
        device=args.device,
        layout=args.layout,
        view=args.view,
        batch_pairs=args.batch_pairs,
        amp=args.amp,
        split=args.split,
        allow_store_mismatch=args.allow_store_mismatch,
        decode=args.decode,
    )
    print(json.dumps(result.metrics, indent=2))
    return 0


def main(argv=None) -> int:
    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
