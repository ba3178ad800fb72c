"""python -m fdperf.train: train TSA (or a baseline) on a feature store.

Options are named after the reference configuration keys (bs_train, max_epoch, base_lr, ...);
`--config FineDiving_TSA.yaml` reads the reference YAML file itself, and options given on the
command line override it. The work is done by `fdperf.train.train` with a `TrainConfig`, whose
checks run before anything is loaded. Exit status: 0 done, 2 for a usage or input error (one line
on stderr; --debug shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import sys

from .. import cli
from ..cli import CONFIG_OPTIONS, add_config_options, annotations_from, merged
from ..options import int_at_least
from ..tsa import LAYOUTS, METHODS
from .config import TrainConfig


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "python -m fdperf.train",
        "Train TSA or one of the paper's baselines on a feature store (from "
        "python -m fdperf.extract). Writes last.pt (every epoch, resumable), best.pt "
        "(highest test rho, chosen like the reference: optimistic), train_log.jsonl "
        "and train_summary.json (best-epoch AND last-epoch metrics).",
    )
    p.add_argument("store", help="feature store (.h5) written by python -m fdperf.extract")
    p.add_argument("out", help="output folder for checkpoints and logs")
    p.add_argument("--annotations", help="FineDiving Annotations folder (the six .pkl files)")
    p.add_argument(
        "--config", help="reference YAML (e.g. FineDiving_TSA.yaml); command-line options override its values"
    )
    p.add_argument(
        "--method",
        choices=METHODS,
        default="TSA",
        help="TSA, TSA-oracle (ground-truth transitions at test time), F+R, F+R* "
        "(one direction), F+R# (dive-number embedding), F+S+R (no cross-attention)",
    )
    add_config_options(p, CONFIG_OPTIONS)
    p.add_argument(
        "--policy",
        choices=("dive_number", "random", "difficulty"),
        help="exemplar policy; overrides action_number_choosing",
    )
    p.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="reference",
        help="how feature maps enter PSNet: reference (plain reshape, as the published "
        "code) or spatial (positions moved to the batch axis)",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=1,
        help="evaluate on the test split every N epochs (and after the last)",
    )
    _add_run_options(p)
    return p


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Device, resume, views, checks and output options."""
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--no-cuda-graph", action="store_true", help="do not capture the step in a CUDA graph")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/last.pt (refuses another kind of store or changed "
        "hyper-parameters unless allowed below)",
    )
    p.add_argument(
        "--allow-store-mismatch",
        action="store_true",
        help="with --resume or --eval-store: proceed on a store whose identity (I3D "
        "weights_sha256, preprocess, snippets, shapes) differs from the "
        "training store's; recorded in train_summary.json",
    )
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: apply changed hyper-parameters (learning rate, batch, "
        "epochs, ...) instead of refusing them; recorded in the settings",
    )
    p.add_argument(
        "--view",
        type=int,
        default=None,
        help="train on this view of a multi-view store only (default: a random view per "
        "video and epoch, the reference's random flip/crop)",
    )
    p.add_argument(
        "--eval-store",
        default=None,
        help="feature store of the test transform for the evaluations (default: STORE, "
        "view 0 if it has several views)",
    )
    p.add_argument(
        "--decode",
        choices=("window", "ordered"),
        default="window",
        help="transition decoding of TSA/F+S+R: window (the reference: t1 in the first "
        "half, t2 in the second) or ordered (best t1 < t2 anywhere); stored in "
        "the checkpoint",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--end-to-end",
        action="store_true",
        help="train I3D with the head on frames or videos instead of on a store "
        "(its own options: python -m fdperf.train --end-to-end --help)",
    )


def config_from(args) -> TrainConfig:
    """The run's TrainConfig from the command line (and --config), checked."""
    opts = merged(args, CONFIG_OPTIONS)
    if args.threads is not None:
        int_at_least("threads", args.threads, 1)
    return TrainConfig(
        method=args.method,
        policy=args.policy,
        layout=args.layout,
        eval_every=args.eval_every,
        device=args.device,
        amp=args.amp,
        cuda_graph=not args.no_cuda_graph,
        resume=args.resume,
        view=args.view,
        eval_store=args.eval_store,
        progress=not args.no_progress,
        decode=args.decode,
        allow_store_mismatch=args.allow_store_mismatch,
        allow_config_change=args.allow_config_change,
        **opts,
    ).validate()


def body(args) -> int:
    config = config_from(args)  # every option checked before anything is loaded
    annotations = annotations_from(args, args.config)
    from . import train

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = train(args.store, annotations, args.out, config=config)
    print(
        json.dumps(
            {
                "best_checkpoint": str(result.best_checkpoint),
                "last_checkpoint": str(result.last_checkpoint),
                "best_epoch_selected_on_test_rho": result.best,
                "last_epoch": result.last,
                "step_mode": result.step_mode,
            },
            indent=2,
        )
    )
    return 0


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if "--end-to-end" in args:  # end-to-end training has its own inputs and options
        from .e2e_cli import main as end_to_end_main

        return end_to_end_main([a for a in args if a != "--end-to-end"])
    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
