"""`python -m fdperf.extract`: I3D features of FineDiving videos into an HDF5 feature store.

Command line only; the work is `fdperf.extraction.extract_features`.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from .. import cli
from ..errors import UserError
from . import (
    PRECISIONS,
    ExtractOptions,
    Inputs,
    InputWarning,
    distributed_env,
    extract_features,
    extract_sharded,
)

PROG = "python -m fdperf.extract"

EPILOG = """\
examples:
  python -m fdperf.extract --annotations Annotations --frames-root frames \\
      --weights model_rgb.pth --out feats.h5
  python -m fdperf.extract --annotations A --frames-root F --out feats.h5 --random-init --device cpu
  python -m fdperf.extract --annotations A --videos-root videos --video-layout untrimmed --out feats.h5 ...
  torchrun --nproc-per-node=8 -m fdperf.extract --annotations A --frames-root F --weights W --out feats.h5

Rerunning the same command after an interruption resumes it: finished videos are skipped.
Exit status: 0 when the store is complete, 1 when some videos failed (listed in the store's
`errors` dataset and in the summary), 2 for a usage or input error (one line naming the option,
file or key; --debug shows the traceback), a store in use by another run included.
"""


def _add_inputs(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("inputs (one of --frames-root, --videos-root, --video-list)")
    src.add_argument(
        "--annotations",
        metavar="DIR",
        help="FineDiving Annotations/ folder: the keys to extract (and, for untrimmed "
        "videos, the coarse start/end frames). Without it the keys come from "
        "--keys-file, the video list or the folders under --frames-root",
    )
    src.add_argument(
        "--frames-root",
        metavar="DIR",
        help="frame folders <DIR>/<event>/<index>/<frame>.jpg (the released dataset)",
    )
    src.add_argument(
        "--videos-root",
        metavar="DIR",
        help="video files: <DIR>/<event>/<index><EXT> (trimmed) or <DIR>/<event><EXT> (untrimmed)",
    )
    src.add_argument(
        "--video-layout",
        choices=("trimmed", "untrimmed"),
        default="trimmed",
        help="trimmed: one file per instance; untrimmed: one competition video per event, "
        "cut by the coarse annotation's start_frame/end_frame (default: trimmed)",
    )
    src.add_argument(
        "--video-ext", default=".mp4", metavar="EXT", help="video file extension (default: .mp4)"
    )
    src.add_argument(
        "--video-list", metavar="FILE", help="lines 'event/index<TAB>path[<TAB>start_frame<TAB>end_frame]'"
    )
    src.add_argument(
        "--split",
        choices=("all", "train", "test"),
        default="all",
        help="which annotation split to extract (default: all)",
    )
    src.add_argument("--keys-file", metavar="FILE", help="only these keys, one 'event/index' per line")
    src.add_argument("--limit", type=int, metavar="N", help="only the first N keys (after the other filters)")


def _add_output(p: argparse.ArgumentParser) -> None:
    out = p.add_argument_group("output")
    out.add_argument(
        "--out", required=True, metavar="FILE.h5", help="feature store to create, or to resume when it exists"
    )
    out.add_argument(
        "--overwrite", action="store_true", help="start over even if FILE.h5 exists (default: resume it)"
    )


def _add_backbone(p: argparse.ArgumentParser) -> None:
    model = p.add_argument_group("backbone")
    model.add_argument(
        "--weights",
        metavar="PTH",
        help="I3D weights: model_rgb.pth, or a reference TSA checkpoint (its I3D part); loaded strictly",
    )
    model.add_argument(
        "--random-init",
        action="store_true",
        help="allow random I3D weights when --weights is not given (warned, and "
        "recorded as weights_sha256='random-init')",
    )
    model.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),
        help="I3D arithmetic (default: bf16 on a GPU, fp32 on the CPU)",
    )
    model.add_argument(
        "--no-fuse",
        action="store_true",
        help="run I3D as written instead of with batch norm folded and 1x1 convolutions merged",
    )
    model.add_argument(
        "--channels-last",
        choices=("auto", "on", "off"),
        default="auto",
        help="channels_last_3d memory format for I3D (auto: on; faster on GPUs and on AVX2 CPUs)",
    )


def _add_processing(p: argparse.ArgumentParser) -> None:
    proc = p.add_argument_group("processing")
    proc.add_argument(
        "--device",
        default="auto",
        help="auto, cpu, cuda or cuda:N (default: auto; torchrun ranks use cuda:LOCAL_RANK)",
    )
    proc.add_argument(
        "--preprocess",
        choices=("reference", "aspect"),
        default="reference",
        help="reference: the published squash to 112x200 + centre crop; aspect: short "
        "side to 112, centre crop (default: reference)",
    )
    proc.add_argument(
        "--views",
        type=int,
        default=1,
        metavar="K",
        help="K > 1: K augmented training views per video (random flip and crop "
        "offsets, seeded per video), stored on a views axis (default: 1)",
    )
    proc.add_argument(
        "--seed", type=int, default=0, help="seed of the views and of --random-init (default: 0)"
    )
    proc.add_argument(
        "--batch-videos", type=int, metavar="N", help="videos per decode batch (default: 4 CPU, 32 GPU)"
    )
    proc.add_argument(
        "--i3d-videos",
        type=int,
        metavar="N",
        help="videos per I3D forward (default: 1 on the CPU, which keeps results "
        "independent of batching; 16 on a GPU)",
    )
    proc.add_argument(
        "--readers",
        type=int,
        metavar="N",
        help="parallel DALI pipelines; each keeps one hardware decoder busy (default: 1 CPU, 4 GPU)",
    )
    proc.add_argument("--dali-threads", type=int, metavar="N", help="CPU threads per DALI pipeline")
    proc.add_argument("--torch-threads", type=int, metavar="N", help="torch intra-op threads on the CPU")
    proc.add_argument(
        "--io-threads", type=int, default=8, metavar="N", help="file-reading threads (default: 8)"
    )
    proc.add_argument(
        "--num-snippets",
        type=int,
        default=9,
        metavar="S",
        help="snippets per video, starting at 0, 10, ...; the reference uses 9, fewer "
        "only make quick tests cheaper (default: 9)",
    )
    proc.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser(PROG, __doc__.splitlines()[0].split(": ", 1)[1], EPILOG)
    _add_inputs(p)
    _add_output(p)
    _add_backbone(p)
    _add_processing(p)
    return p


# option -> smallest value; checked before anything is loaded.
MINIMUM = {
    "seed": 0,
    "views": 1,
    "num_snippets": 1,
    "limit": 1,
    "batch_videos": 1,
    "i3d_videos": 1,
    "readers": 1,
    "dali_threads": 1,
    "torch_threads": 1,
    "io_threads": 1,
}


def _check_options(args) -> None:
    """Range checks and the output path, before any annotation, weights or frame is read."""
    for name, low in MINIMUM.items():
        value = getattr(args, name)
        if value is not None and value < low:
            raise UserError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    if args.num_snippets > 9:
        raise UserError(
            f"--num-snippets must be at most 9 (the 96-frame clip holds 9 snippets), got {args.num_snippets}"
        )
    if args.weights is None and not args.random_init:
        raise UserError(
            "no I3D weights: pass --weights model_rgb.pth (or a TSA checkpoint), or "
            "--random-init to extract with random weights on purpose"
        )
    given = [a for a in ("frames_root", "videos_root", "video_list") if getattr(args, a)]
    if len(given) != 1:
        raise UserError("give exactly one of --frames-root, --videos-root, --video-list")
    _check_out(args.out)


def _check_out(out: str) -> None:
    if os.path.isdir(out):
        raise UserError(
            f"--out {out} is a directory; give the store a file name, e.g. {os.path.join(out, 'feats.h5')}"
        )
    folder = os.path.dirname(os.path.abspath(out))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"--out {out}: {folder} is a file, not a folder; choose another --out")
    if not os.path.isdir(folder):
        raise UserError(f"--out {out}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: the folder {folder} is not writable; choose another --out")


def _keys(args) -> tuple[list, Inputs]:
    from ..data import load_annotations, load_pickle
    from ..video import discover_frame_keys, read_keys_file, read_video_list

    ann = load_annotations(args.annotations) if args.annotations else None
    video_list = read_video_list(args.video_list) if args.video_list else None
    bounds = None
    if args.videos_root and args.video_layout == "untrimmed":
        if ann is None:
            raise UserError("--video-layout untrimmed needs --annotations (the coarse start/end frames)")
        coarse = load_pickle(os.path.join(args.annotations, "FineDiving_coarse_annotation.pkl"))
        bounds = {
            (str(k[0]), int(k[1])): (int(v["start_frame"]), int(v["end_frame"])) for k, v in coarse.items()
        }
    if ann is not None:
        keys = {"all": ann.keys(), "train": ann.train_keys, "test": ann.test_keys}[args.split]
    elif args.keys_file:
        keys = read_keys_file(args.keys_file)
    elif video_list is not None:
        keys = list(video_list)
    elif args.frames_root:
        keys = discover_frame_keys(args.frames_root)
    else:
        raise UserError("--videos-root needs --annotations or --keys-file to know the keys")
    keys = sorted({(str(k[0]), int(k[1])) for k in keys})
    if args.keys_file and ann is not None:
        wanted = read_keys_file(args.keys_file)
        unknown = [k for k in wanted if k not in set(keys)]
        if unknown:
            raise UserError(
                f"--keys-file {args.keys_file}: {len(unknown)} key(s) not in the "
                f"annotations ({args.split} split), e.g. {unknown[0][0]}/{unknown[0][1]}"
            )
        keys = sorted(set(wanted))
    if args.limit is not None:
        keys = keys[: args.limit]
    if not keys:
        raise UserError("no keys to extract (check --annotations, --split, --keys-file or the inputs)")
    inputs = Inputs(
        frames_root=args.frames_root,
        videos_root=args.videos_root,
        video_ext=args.video_ext,
        untrimmed_bounds=bounds,
        video_list=video_list,
    )
    return keys, inputs


def _summary(result, complete: bool, out: str) -> str:
    lines = [
        f"{out}: {result.extracted} video(s) extracted, {result.skipped} already done, "
        f"{len(result.errors)} error(s) in {result.seconds:.1f} s "
        f"({result.videos_per_s:.2f} videos/s); store {'complete' if complete else 'INCOMPLETE'}"
    ]
    for key, reason in result.errors[:20]:
        lines.append(f"  error {key[0]}/{key[1]}: {reason}")
    if len(result.errors) > 20:
        lines.append(f"  ... {len(result.errors) - 20} more in the store's 'errors' dataset")
    return "\n".join(lines)


def main(argv=None) -> int:
    return cli.run(build_parser(), _main, argv)


def _main(args) -> int:
    _check_options(args)
    keys, inputs = _keys(args)
    options = ExtractOptions(
        device=args.device,
        precision=args.precision,
        preprocess=args.preprocess,
        views=args.views,
        seed=args.seed,
        batch_videos=args.batch_videos,
        i3d_videos=args.i3d_videos,
        readers=args.readers,
        dali_threads=args.dali_threads,
        torch_threads=args.torch_threads,
        io_threads=args.io_threads,
        num_snippets=args.num_snippets,
        channels_last={"auto": None, "on": True, "off": False}[args.channels_last],
        fuse=not args.no_fuse,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    common = {"weights": args.weights, "random_init": args.random_init, "options": options}
    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning)  # each video's warning, also on a rerun
        warnings.showwarning = _one_line_warning
        return _run(args, keys, inputs, common)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """fdperf's own warnings as `prog: warning: ...`; others as Python prints them."""
    if not issubclass(category, UserWarning) or not _is_fdperf(filename):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
        return
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=file or sys.stderr)


def _is_fdperf(filename: str) -> bool:
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.abspath(filename).startswith(package + os.sep)


def _run(args, keys, inputs, common) -> int:
    rank, world, local_rank = distributed_env()
    if world == 1:
        result = extract_features(args.out, keys, inputs, **common)
        complete = result.complete
    else:
        import datetime

        import torch.distributed as dist

        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=12))
        try:
            result, complete = extract_sharded(
                args.out,
                keys,
                inputs,
                rank=rank,
                world=world,
                local_rank=local_rank,
                barrier=dist.barrier,
                **common,
            )
            flags = [None] * world
            dist.all_gather_object(flags, bool(result.complete))
        finally:
            dist.destroy_process_group()
        if rank != 0:
            print(_summary(result, result.complete, f"shard {rank}/{world}"), file=sys.stderr)
            return 0 if result.complete else 1
        complete = complete and all(flags)
    print(_summary(result, complete, args.out), file=sys.stderr)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
