"""python -m fdperf.report: draws the visual report of a voting run (PNGs + a static index.html).

python -m fdperf.report --predictions runs/tsa/eval/predictions.csv --out runs/report
"""

import argparse
import sys

from .. import cli
from ..errors import UserError
from . import ReportError, write_report

PROG = "python -m fdperf.report"


def _named(values, option):
    out = {}
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep or not name or not path:
            raise ReportError(f"{option} takes NAME=PATH, got {v!r}")
        out[name] = path
    return out


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        PROG,
        "Render one PNG per test video (timeline with true/predicted transitions and "
        "PSNet's transition probabilities, per-step relative scores against each exemplar, "
        "the exemplars' votes against the true score), a summary PNG (predicted vs true "
        "scores, training curves) and an index.html linking them. Headless (matplotlib Agg).",
    )
    p.add_argument("--predictions", required=True, help="predictions CSV written by fdperf.evaluate")
    p.add_argument("--out", required=True, help="output folder (index.html, summary.png, videos/*.png)")
    p.add_argument("--method", default="TSA", help="name of the method behind --predictions (default TSA)")
    p.add_argument(
        "--compare",
        action="append",
        metavar="NAME=CSV",
        help="another method's predictions CSV, shown in the summary and metrics table "
        "(repeatable), e.g. F+R=runs/fr/eval/predictions.csv",
    )
    p.add_argument(
        "--train-log",
        action="append",
        metavar="NAME=JSONL",
        help="a train_log.jsonl of fdperf.train for the training curves (repeatable)",
    )
    p.add_argument(
        "--probabilities",
        metavar="NPZ",
        help=".npz with PSNet's transition probabilities, one [96, L] array per key "
        "'event/index' (fdperf.demo writes transition_probs.npz)",
    )
    p.add_argument(
        "--frames",
        metavar="DIR",
        help="frames root (<DIR>/<event>/<index>/*.jpg): adds a strip of frames to each video",
    )
    p.add_argument(
        "--max-videos", type=int, default=None, help="draw only the first N test videos (default: all)"
    )
    p.add_argument("--title", default="fdperf report", help="page title")
    return p


def main(argv=None) -> int:
    return cli.run(build_parser(), _main, argv)


def _main(args) -> int:
    if args.max_videos is not None and args.max_videos < 1:
        raise UserError(f"--max-videos must be >= 1, got {args.max_videos}")
    rep = write_report(
        args.predictions,
        args.out,
        method=args.method,
        compare=_named(args.compare, "--compare"),
        train_logs=_named(args.train_log, "--train-log"),
        probabilities=args.probabilities,
        frames_dir=args.frames,
        max_videos=args.max_videos,
        title=args.title,
        progress=True,
    )
    print(f"report: {rep.index} ({len(rep.videos)} videos)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
