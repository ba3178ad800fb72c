"""Latency of `fdperf score` for one dive on the CPU: real-size I3D (random init), 9 snippets, fp32.

    python benchmarks/score_latency.py [--repeats 3] [--threads 2] [--out-png]

Builds a small exemplar store (4 synthetic H.264 dives, one dive number) and a TSA checkpoint
(random weights: the cost does not depend on them), then times `fdperf score` on one dive
`--repeats` times: the whole command (model and store loading included) and its two stages
(extraction = decode + preprocess + I3D; voting = PSNet + decoder over the exemplars).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import av
import numpy as np
import torch

from fdperf.extract import ExtractOptions, Inputs, extract_features
from fdperf.score import collect_inputs, score_dives
from fdperf.score.__main__ import main as score_main
from fdperf.synthetic import DiveRenderer, sample_dives, split_dives, write_annotations
from fdperf.tsa import build_model
from fdperf.tsa.checkpoint import model_checkpoint, save_checkpoint


def write_h264(path, dive) -> str:
    frames = [f[:, :454] for f in DiveRenderer(dive.plan).frames()]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.height, s.width, s.pix_fmt = 256, 454, "yuv420p"
        for img in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return str(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-png", action="store_true", help="also write scores.json and the PNG")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)  # the random-init I3D warning
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dives = sample_dives(4, seed=0)
        train, test = split_dives(dives, seed=0)
        write_annotations(str(root / "A"), dives, train, test)
        videos = {d.key: write_h264(root / f"{d.key[1]}.mp4", d) for d in dives}
        extract_features(
            root / "s.h5",
            list(videos),
            Inputs(video_list={k: (v, None, None) for k, v in videos.items()}),
            random_init=True,
            options=ExtractOptions(device="cpu", progress=False),
        )
        torch.manual_seed(0)
        ckpt = save_checkpoint(root / "tsa.pt", model_checkpoint(build_model("TSA", layout="spatial")))
        query = videos[test[0]]
        common = dict(
            checkpoint=str(ckpt),
            store=str(root / "s.h5"),
            annotations=str(root / "A"),
            dive_number=dives[0].plan.kind.dive_number,
            random_init=True,
            device="cpu",
            progress=False,
        )
        cli = [
            query,
            "--dive-number",
            common["dive_number"],
            "--checkpoint",
            str(ckpt),
            "--store",
            common["store"],
            "--annotations",
            common["annotations"],
            "--random-init",
            "--device",
            "cpu",
            "--no-progress",
        ] + (["--out", str(root / "out")] if args.out_png else [])
        walls, stages = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            assert score_main(cli) == 0
            walls.append(time.perf_counter() - t0)
            stages.append(score_dives(collect_inputs([query]), **common).seconds)
    ext = statistics.median(s["extract"] for s in stages)
    vote = statistics.median(s["vote"] for s in stages)
    print(
        f"\none dive, CPU, {args.threads} threads, I3D fp32 (random init), 9 snippets, "
        f"{len(train)} exemplars: fdperf score {statistics.median(walls):.2f} s median of "
        f"{args.repeats} ({', '.join(f'{w:.2f}' for w in walls)}); extraction {ext:.2f} s, "
        f"voting {vote:.3f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
