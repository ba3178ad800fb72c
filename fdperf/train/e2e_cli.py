"""`python -m fdperf.train --end-to-end`: fine-tune I3D with the TSA head on frames or videos.

Inputs are read exactly as `python -m fdperf.extract` reads them (the same options and layouts);
the reference keys come from the command line or `--config FineDiving_TSA.yaml` (with its
`lr_factor`). Exit status: 0 done, 2 for a usage or input error (one line; --debug: traceback).
"""

from __future__ import annotations

import argparse
import json

from .. import cli
from ..cli import CONFIG_OPTIONS, add_config_options, annotations_from, merged, read_config
from ..errors import UserError
from ..extract import ExtractOptions
from ..options import int_at_least
from ..tsa import LAYOUTS

PROG = "python -m fdperf.train --end-to-end"

EPILOG = """\
examples:
  python -m fdperf.train --end-to-end runs/e2e --config FineDiving_TSA.yaml \\
      --annotations Annotations --frames-root frames --weights model_rgb.pth
  torchrun --nproc-per-node=8 -m fdperf.train --end-to-end runs/e2e --config FineDiving_TSA.yaml \\
      --annotations Annotations --frames-root frames --weights model_rgb.pth
  python -m fdperf.train --end-to-end runs/e2e/last.pth --export-from runs/e2e/best.pt
"""


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(
        PROG,
        "Train I3D together with the TSA head (the paper's end-to-end regime) on "
        "frame folders or videos. Writes OUT/last.pt, best.pt, train_log.jsonl and "
        "train_summary.json; the checkpoints hold the I3D weights too.",
        EPILOG,
    )
    p.add_argument("out", help="output folder (with --export-from: the reference last.pth to write)")
    p.add_argument(
        "--export-from",
        metavar="CKPT",
        help="only write OUT as the reference's last.pth from this end-to-end checkpoint",
    )
    src = p.add_argument_group("inputs (as python -m fdperf.extract)")
    src.add_argument("--annotations", help="FineDiving Annotations folder")
    src.add_argument("--config", help="reference YAML (FineDiving_TSA.yaml); the command line overrides it")
    src.add_argument("--frames-root", metavar="DIR", help="frame folders <DIR>/<event>/<index>/*.jpg")
    src.add_argument("--videos-root", metavar="DIR", help="video files (see --video-layout)")
    src.add_argument("--video-layout", choices=("trimmed", "untrimmed"), default="trimmed")
    src.add_argument("--video-ext", default=".mp4", metavar="EXT")
    src.add_argument("--video-list", metavar="FILE", help="lines 'event/index<TAB>path[<TAB>start<TAB>end]'")
    model = p.add_argument_group("model and optimisation")
    model.add_argument(
        "--weights", metavar="PTH", help="I3D weights (model_rgb.pth); required unless --random-init"
    )
    model.add_argument("--random-init", action="store_true", help="start I3D from random weights on purpose")
    add_config_options(model, CONFIG_OPTIONS)
    model.add_argument(
        "--lr_factor",
        "--lr-factor",
        dest="lr_factor",
        type=float,
        default=None,
        help="I3D learning rate = base_lr * lr_factor (default: the YAML's, else 0.1)",
    )
    model.add_argument("--method", choices=("TSA", "TSA-oracle"), default="TSA")
    model.add_argument("--policy", choices=("dive_number", "random", "difficulty"))
    model.add_argument("--layout", choices=LAYOUTS, default="reference")
    model.add_argument(
        "--num-snippets", type=int, default=9, help="snippets per video (9; fewer for quick tests)"
    )
    model.add_argument(
        "--checkpoint-activations",
        action="store_true",
        help="recompute I3D blocks in the backward pass (less memory, ~30%% more compute)",
    )
    model.add_argument(
        "--channels-last",
        choices=("auto", "on", "off"),
        default="auto",
        help="channels_last_3d for I3D (auto: on CUDA)",
    )
    model.add_argument("--amp", action="store_true", help="bf16 autocast on the CPU too (always on CUDA)")
    run = p.add_argument_group("run")
    run.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs (and after the last)")
    run.add_argument("--eval-videos", type=int, help="videos per I3D forward in evaluation (1 CPU, 16 GPU)")
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:N (torchrun: cuda:LOCAL_RANK)")
    run.add_argument("--batch-videos", type=int, help="videos per decode batch (4 CPU, 32 GPU)")
    run.add_argument("--readers", type=int, help="parallel DALI pipelines (1 CPU, 4 GPU)")
    run.add_argument("--dali-threads", type=int, help="CPU threads per DALI pipeline")
    run.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    run.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: apply changed hyper-parameters instead of refusing them",
    )
    run.add_argument("--threads", type=int, help="CPU threads for torch")
    run.add_argument(
        "--no-progress", action="store_true", help="accepted for symmetry (one log line per epoch)"
    )
    return p


def _inputs(args):
    """The Inputs of fdperf.extract's command line (same checks and layouts)."""
    from ..extract.__main__ import _keys

    given = [a for a in ("frames_root", "videos_root", "video_list") if getattr(args, a)]
    if len(given) != 1:
        raise UserError("give exactly one of --frames-root, --videos-root, --video-list")
    ns = argparse.Namespace(**vars(args), split="all", keys_file=None, limit=None)
    return _keys(ns)[1]


def config_from(args):
    from .end_to_end import EndToEndConfig

    for name in ("num_snippets", "eval_videos", "batch_videos", "readers", "dali_threads", "threads"):
        if getattr(args, name) is not None:
            int_at_least(name.replace("_", "-"), getattr(args, name), 1)
    opts = merged(args, CONFIG_OPTIONS)
    lr_factor = args.lr_factor
    if lr_factor is None:
        lr_factor = float(read_config(args.config).get("lr_factor", 0.1)) if args.config else 0.1
    decode = ExtractOptions(
        device=args.device or "auto",
        batch_videos=args.batch_videos,
        readers=args.readers,
        dali_threads=args.dali_threads,
        progress=False,
    )
    return EndToEndConfig(
        method=args.method,
        policy=args.policy,
        layout=args.layout,
        eval_every=args.eval_every,
        device=args.device,
        amp=args.amp,
        resume=args.resume,
        progress=False,
        allow_config_change=args.allow_config_change,
        inputs=_inputs(args),
        weights=args.weights,
        random_init=args.random_init,
        lr_factor=lr_factor,
        num_snippets=args.num_snippets,
        checkpoint_activations=args.checkpoint_activations,
        channels_last={"auto": None, "on": True, "off": False}[args.channels_last],
        eval_videos=args.eval_videos,
        reader=decode,
        **opts,
    ).validate()


def body(args) -> int:
    from .end_to_end import export_reference, train_end_to_end

    if args.export_from:
        print(export_reference(args.export_from, args.out))
        return 0
    if args.weights is None and not args.random_init:  # before anything is read
        raise UserError(
            "no I3D weights: pass --weights model_rgb.pth, or --random-init to train "
            "from random weights on purpose"
        )
    annotations = annotations_from(args, args.config)
    if args.annotations is None:
        args.annotations = annotations
    config = config_from(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = train_end_to_end(annotations, args.out, config=config)
    print(
        json.dumps(
            {
                "best_checkpoint": str(result.best_checkpoint),
                "last_checkpoint": str(result.last_checkpoint),
                "best_epoch_selected_on_test_rho": result.best,
                "last_epoch": result.last,
            },
            indent=2,
        )
    )
    return 0


def main(argv=None) -> int:
    return cli.run(build_parser(), body, argv)
