"""python -m fdperf.demo (`make demo`, `fdperf demo`): the whole pipeline on synthetic dives."""

from __future__ import annotations

import argparse
import sys

from .. import cli
from ..errors import UserError
from . import run_demo


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "python -m fdperf.demo",
        "Run fdperf end to end on a synthetic dive set: generate it, extract I3D features, train "
        "TSA and the F+R baseline, vote on the test split, print the metrics and write the visual "
        "report.",
    )
    p.add_argument("--videos", type=int, default=120, help="synthetic dives to generate (default 120)")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs of TSA and F+R (default: 40 on the CPU, 200 on a GPU)",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument(
        "--device", default="auto", help="auto (a GPU when there is one), cpu, cuda or cuda:N (default auto)"
    )
    p.add_argument(
        "--weights",
        default=None,
        help="I3D weights (model_rgb.pth or a TSA checkpoint); without it the demo uses a "
        "randomly initialised I3D and says so",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the synthetic set and of training (default 0)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    return cli.run(build_parser(), _main, argv)


def _main(args) -> int:
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    run_demo(
        args.out, args.videos, args.epochs, args.device, args.weights, args.seed, progress=not args.quiet
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
