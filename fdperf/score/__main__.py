"""`fdperf score` / `python -m fdperf.score`: the score, steps and votes of new dives.

The work is `fdperf.score.score_dives`; this prints the table and writes the JSON and PNGs.
"""

from __future__ import annotations

import json
import os
import sys

from .. import cli
from ..tsa import LAYOUTS
from ..tsa.decode import DECODERS

EPILOG = """\
examples:
  fdperf score dive.mp4 --dive-number 5253B --checkpoint best.pt --weights model_rgb.pth \\
      --store features.h5 --annotations Annotations --out scored/
  fdperf score broadcast.mp4 --start 1200 --end 1318 --dive-number 107B ...   (untrimmed video)
  fdperf score dives/ --dive-number 405B ...         (every video in the folder, one batch)
  fdperf score frames/0001/ --dive-number 405B ...   (a folder of JPEG frames is one dive)

The dives are extracted exactly as the exemplar store was (its preprocess, snippets, precision
and backbone settings are read from the store; the I3D weights must be the store's). Every dive
of a call is voted on by the same exemplars of its dive number (as fdperf.evaluate picks them).
Exit status: 0 all dives scored, 1 some failed (recorded in the JSON), 2 an input, option or
file error (one line naming it).
"""


def build_parser():
    p = cli.parser(
        "fdperf score",
        "Score new dives (video files or frame folders) with a trained "
        "checkpoint by voting over exemplars of their dive number.",
        EPILOG,
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video file (any container PyAV or DALI reads), folder of JPEG frames, or "
        "folder of videos (each one dive)",
    )
    p.add_argument(
        "--dive-number", required=True, help="the dives' dive number, e.g. 5253B: picks the exemplars"
    )
    p.add_argument("--checkpoint", required=True, help="fdperf checkpoint (.pt) or reference last.pth")
    p.add_argument("--store", required=True, help="exemplar feature store (.h5, python -m fdperf.extract)")
    p.add_argument("--annotations", required=True, help="FineDiving Annotations folder of the store")
    p.add_argument("--weights", help="I3D weights the store was extracted with (model_rgb.pth)")
    p.add_argument(
        "--random-init",
        action="store_true",
        help="random I3D (only for a store extracted with --random-init: tests, demos)",
    )
    p.add_argument("--start", type=int, help="first frame of the dive in an untrimmed video")
    p.add_argument("--end", type=int, help="last frame of the dive in an untrimmed video (inclusive)")
    p.add_argument("--out", help="folder for scores.json and one PNG per dive")
    p.add_argument("--voter-number", type=int, default=10, help="exemplars voting (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the exemplar choice (default 0)")
    p.add_argument(
        "--decode", choices=DECODERS, default=None, help="transition decoding (default: the checkpoint's)"
    )
    p.add_argument("--layout", choices=LAYOUTS, default=None, help="override the checkpoint's layout")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default=None,
        help="I3D precision (default: the store's when on the same kind of device)",
    )
    p.add_argument("--view", type=int, default=None, help="view of a multi-view store (default 0)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def table(run) -> str:
    """The terminal table: one line per dive, then the votes when there is one dive."""
    lines = [
        f"dive number {run.dive_number} (DD {run.difficulty:g}), "
        f"{len(run.dives[0].exemplars) if run.dives and run.dives[0].exemplars else 0} exemplars, "
        f"{run.settings['method']}, decode {run.settings['decode']}"
    ]
    width = max(12, *(len(d.input.name) for d in run.dives))
    steps = max((len(d.steps) for d in run.dives), default=0)
    lines.append(
        f"{'dive':<{width}}  {'score':>8}  {'transitions (frame)':<20}"
        + "".join(f"  {'step ' + str(s + 1):>8}" for s in range(steps))
    )
    for d in run.dives:
        if d.error is not None:
            lines.append(f"{d.input.name:<{width}}  {'FAILED':>8}  {d.error}")
            continue
        t = ", ".join(str(f) for f in d.transition_frames) or "-"
        lines.append(
            f"{d.input.name:<{width}}  {d.score:8.2f}  {t:<20}"
            + "".join(f"  {s['relative_score']:+8.2f}" for s in d.steps)
        )
    ok = [d for d in run.dives if d.error is None]
    if len(ok) == 1:
        lines.append("\nexemplar votes (exemplar score + relative score = vote):")
        for e in ok[0].exemplars:
            lines.append(f"  {e['key']:<32} {e['score']:8.2f} {e['delta']:+8.2f} = {e['vote']:8.2f}")
    return "\n".join(lines)


def write_outputs(run, out_dir: str) -> list[str]:
    """scores.json and one PNG per scored dive (the report's per-video figure)."""
    from ..report import VideoRow, render_video, video_filename

    os.makedirs(out_dir, exist_ok=True)
    used, written = set(), []
    records = []
    for d in run.dives:
        rec = d.to_json()
        if d.error is None:
            name = video_filename(d.input.name)
            stem, n = name[:-4], 2
            while name in used:  # two inputs of the same name in one batch
                name, n = f"{stem}_{n}.png", n + 1
            used.add(name)
            row = VideoRow(
                d.input.name,
                None,
                d.score,
                run.dive_number,
                run.difficulty,
                pred_t=d.transitions,
                exemplar_keys=[e["key"] for e in d.exemplars],
                exemplar_scores=[e["score"] for e in d.exemplars],
                deltas=[e["delta"] for e in d.exemplars],
                step_deltas=[[e["step_deltas"][s] for e in d.exemplars] for s in range(len(d.steps))]
                if d.transitions
                else [],
                probs=d.probs,
            )
            frames = os.path.dirname(os.path.normpath(d.input.path)) if d.input.kind == "frames" else None
            rec["png"] = render_video(row, os.path.join(out_dir, name), frames, run.settings["method"])
            written.append(rec["png"])
        records.append(rec)
    path = os.path.join(out_dir, "scores.json")
    with open(path, "w") as f:
        json.dump({"settings": run.settings, "seconds": run.seconds, "dives": records}, f, indent=2)
        f.write("\n")
    return [path] + written


def check_options(args) -> None:
    """Range checks before anything is loaded."""
    from ..options import int_at_least

    int_at_least("voter-number", args.voter_number, 1)
    int_at_least("seed", args.seed, 0)
    for name in ("start", "end", "view"):
        if getattr(args, name) is not None:
            int_at_least(name, getattr(args, name), 0)
    if args.threads is not None:
        int_at_least("threads", args.threads, 1)


def body(args) -> int:
    from . import collect_inputs, score_dives

    check_options(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    inputs = collect_inputs(args.inputs, args.start, args.end)
    run = score_dives(
        inputs,
        checkpoint=args.checkpoint,
        store=args.store,
        annotations=args.annotations,
        dive_number=args.dive_number,
        weights=args.weights,
        random_init=args.random_init,
        voter_number=args.voter_number,
        seed=args.seed,
        decode=args.decode,
        layout=args.layout,
        device=args.device,
        precision=args.precision,
        view=args.view,
        progress=not args.no_progress,
    )
    print(table(run))
    if args.out:
        paths = write_outputs(run, args.out)
        print(f"\nwrote {paths[0]} and {len(paths) - 1} PNG(s) in {args.out}")
    for d in run.failed:
        print(f"fdperf score: {d.input.path}: {d.error}", file=sys.stderr)
    return 1 if run.failed else 0


def main(argv=None) -> int:
    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
