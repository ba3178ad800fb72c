"""python -m fdperf.synthetic: writes a synthetic dive set in the FineDiving layout.

python -m fdperf.synthetic --out data/synth --videos 120 --seed 0
"""

import argparse
import sys
import time

from .. import cli
from ..errors import UserError
from . import generate_dataset


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "python -m fdperf.synthetic",
        "Render procedural dives (pool, springboard, diver) as 455x256 JPEG frame folders with the "
        "six FineDiving annotation files: <out>/frames/<event>/<index>/%%05d.jpg, "
        "<out>/Annotations/*.pkl, <out>/synth.json.",
    )
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--videos", type=int, default=120, help="number of dives to render (default 120)")
    p.add_argument(
        "--seed", type=int, default=0, help="random seed; a seed always gives the same set (default 0)"
    )
    p.add_argument(
        "--test-share",
        type=float,
        default=0.25,
        help="share of each dive number put in the test split (default 0.25)",
    )
    p.add_argument(
        "--late-share",
        type=float,
        default=0.0,
        help="share of dives whose flight starts late or ends early, transitions the "
        "reference's window decoding cannot place (default 0)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="rendering processes (default: up to 2, the CPU count permitting)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace frames/, Annotations/ and synth.json if the folder already has them",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    return cli.run(build_parser(), _main, argv)


def _main(args) -> int:
    # Range checks before anything is rendered.
    if args.videos < 1:
        raise UserError(f"--videos must be at least 1, got {args.videos}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if not 0 <= args.late_share <= 1:
        raise UserError(f"--late-share must be between 0 and 1, got {args.late_share}")
    if not 0 < args.test_share < 1:
        raise UserError(f"--test-share must be between 0 and 1 (exclusive), got {args.test_share}")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    start = time.perf_counter()
    ds = generate_dataset(
        args.out,
        args.videos,
        args.seed,
        test_share=args.test_share,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.quiet,
        late_share=args.late_share,
    )
    print(
        f"{args.videos} dives ({len(ds.train_keys)} train, {len(ds.test_keys)} test) in "
        f"{time.perf_counter() - start:.1f} s\n  frames:      {ds.frames_dir}\n"
        f"  annotations: {ds.annotations_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
