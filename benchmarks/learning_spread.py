"""Spread of the learning test's figures over seeds, thread counts and CPU instruction sets.

CPU training is not bitwise the same on another processor (SIMD width, reduction order), so the
thresholds of tests/test_train_synthetic.py must hold with a margin measured here. Every cell
runs tests/learning.py's `run_learning` (the test's own training) in a fresh child process, one
at a time, because the ISA variables must be set before torch is imported:

    native    this machine's best paths
    noavx2    FDPERF_DISABLE_AVX2=1 (fdperf's own baseline-ISA kernels)
    avx2      ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
              (the paths an AVX2-only processor such as the issue's AMD EPYC takes)
    default   ATEN_CPU_CAPABILITY=default (ATen's baseline vectorised kernels)

"seed s" is the synthetic data set's seed AND the training seed (weights, batches, exemplars).

    python benchmarks/learning_spread.py --json benchmarks/learning_spread.json --out benchmarks/learning_spread.md
    python benchmarks/learning_spread.py --seeds 0 1 --threads 1 --isa native avx2 --out t.md
    python benchmarks/learning_spread.py --from-json benchmarks/learning_spread.json --out t.md

The table ends with min/max per quantity per (ISA, threads) and overall, and says whether
every cell passes tests/learning.py's `check_learning` (the test's assertions).
"""

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ISA = {
    "native": {},
    "noavx2": {"FDPERF_DISABLE_AVX2": "1"},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
}
QUANTITIES = [
    "rho_tsa",
    "rho_fr",
    "rho_oracle",
    "oracle_minus_tsa",
    "tsa_minus_fr",
    "aiou75_tsa",
    "rho_epoch8",
    "seconds",
]


def child(seed: int, threads: int, sensitivity: bool = False) -> None:
    """Runs one cell in this (fresh) process and prints its figures as one JSON line."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import torch

    torch.set_num_threads(threads)
    from learning import check_learning, run_learning

    from fdperf.tsa.checkpoint import read_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        m = run_learning(Path(tmp), seed=seed, threads=threads)
        state = read_checkpoint(Path(tmp) / "tsa" / "last.pt")["model"]
        h = hashlib.sha256()
        for k in sorted(state):
            h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
        if sensitivity:
            m["wrong_transitions"] = wrong_transitions(Path(tmp), seed)
    m["weights_sha"] = h.hexdigest()[:10]
    m["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    try:
        check_learning(m)
        m["check"] = "pass"
    except AssertionError as e:
        m["check"] = f"FAIL: {str(e)[:200]}"
    print("RESULT " + json.dumps(m), flush=True)


def wrong_transitions(workdir: Path, seed: int) -> dict:
    """How much the TSA-oracle figure drops when the oracle is fed wrong "ground truth": the
    size of the bug the oracle assertion is there to catch, next to its margin."""
    import torch

    from fdperf.data import load_annotations, voting_exemplars
    from fdperf.evaluate import score_metrics, vote
    from fdperf.features.videoset import as_annotations, dive_vocabulary, load_store, video_set
    from fdperf.tsa.checkpoint import load_model

    model, ckpt = load_model(workdir / "tsa" / "last.pt", map_location="cpu")
    ann = as_annotations(load_annotations(str(workdir / "data" / "Annotations")), 2)
    vocab = ckpt.get("dive_numbers") or dive_vocabulary(ann, ann.train_keys)
    store, feats, fmaps = load_store(workdir / "data" / "features.h5", torch.device("cpu"))
    q = video_set(store, feats, fmaps, ann, ann.test_keys, vocab, torch.device("cpu"))
    e = video_set(store, feats, fmaps, ann, ann.train_keys, vocab, torch.device("cpu"))
    rows, valid = voting_exemplars(ann, ann.test_keys, ann.train_keys, m=5, policy="dive_number", seed=seed)

    def rho(qb, eb):
        qq = type(q)(**{**q.__dict__, "bounds": qb})
        ee = type(e)(**{**e.__dict__, "bounds": eb})
        return score_metrics(vote(model, qq, ee, rows, valid, transitions="oracle").scores, q.scores)["rho"]

    shift = lambda b, d: (b + d).clamp(1, 95)  # noqa: E731
    return {
        "true": rho(q.bounds, e.bounds),
        "later_by_10": rho(shift(q.bounds, 10), shift(e.bounds, 10)),
        "earlier_by_10": rho(shift(q.bounds, -10), shift(e.bounds, -10)),
        "other_videos": rho(q.bounds.roll(1, 0), e.bounds.roll(1, 0)),
        # a unit bug: snippet indices (0-8) read as frame indices (0-95)
        "snippet_units": rho((q.bounds // 10).clamp(min=1), (e.bounds // 10).clamp(min=1)),
    }


def run_cell(seed: int, threads: int, isa: str, sensitivity: bool = False) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("FDPERF_DISABLE_AVX2", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
    }
    env.update(ISA[isa])
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, __file__, "--child", str(seed), str(threads)]
        + (["--sensitivity"] if sensitivity else []),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"cell seed={seed} threads={threads} isa={isa} failed:\n{p.stderr[-3000:]}")
    m = json.loads(lines[-1][len("RESULT ") :])
    m.update(isa=isa, process_seconds=wall)
    return m


def derived(m: dict) -> dict:
    ev = dict((e, r) for e, r in m["evaluated"])
    return {
        **m,
        "oracle_minus_tsa": m["rho_oracle"] - m["rho_tsa"],
        "tsa_minus_fr": m["rho_tsa"] - m["rho_fr"],
        "rho_epoch8": ev.get(7, float("nan")),
    }


def render(rows: list, note: str = "") -> str:
    rows = [derived(m) for m in rows]
    out = ["# Learning-test spread (tests/learning.py run_learning)", ""]
    if note:
        out += [note, ""]
    out += [
        "| seed | threads | ISA | rho TSA | rho F+R | rho oracle | oracle - TSA | TSA - F+R "
        "| AIoU@0.75 TSA | rho TSA ep 8 | best ep | weights | s | check |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for m in rows:
        out.append(
            f"| {m['seed']} | {m['threads']} | {m['isa']} | {m['rho_tsa']:.4f} | "
            f"{m['rho_fr']:.4f} | {m['rho_oracle']:.4f} | {m['oracle_minus_tsa']:+.4f} | "
            f"{m['tsa_minus_fr']:.4f} | {m['aiou75_tsa']:.1f} | {m['rho_epoch8']:.4f} | "
            f"{m['best']['epoch'] + 1} | {m['weights_sha']} | {m['seconds']:.0f} | {m['check']} |"
        )
    out += [
        "",
        "## Min / max per setting",
        "",
        "| ISA | threads | runs | " + " | ".join(QUANTITIES) + " |",
        "|---|---:|---:|" + "---:|" * len(QUANTITIES),
    ]
    groups = {}
    for m in rows:
        groups.setdefault((m["isa"], m["threads"]), []).append(m)
    groups[("all", "all")] = rows
    for (isa, threads), ms in groups.items():
        cells = []
        for q in QUANTITIES:
            vals = [m[q] for m in ms]
            fmt = "{:.0f}" if q == "seconds" else ("{:.1f}" if q.startswith("aiou") else "{:+.4f}")
            cells.append(f"{fmt.format(min(vals))} .. {fmt.format(max(vals))}")
        out.append(f"| {isa} | {threads} | {len(ms)} | " + " | ".join(cells) + " |")
    wrong = [m for m in rows if "wrong_transitions" in m]
    if wrong:
        out += [
            "",
            "## TSA-oracle fed wrong transitions (how far wrong transitions move the oracle's rho)",
            "",
            "| seed | threads | ISA | true | later by 10 frames | earlier by 10 frames "
            "| another video's | snippet units | rho TSA (predicted) |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for m in wrong:
            w = m["wrong_transitions"]
            units = f"{w['snippet_units']:.4f}" if "snippet_units" in w else "-"
            out.append(
                f"| {m['seed']} | {m['threads']} | {m['isa']} | {w['true']:.4f} | "
                f"{w['later_by_10']:.4f} | {w['earlier_by_10']:.4f} | {w['other_videos']:.4f} | "
                f"{units} | {m['rho_tsa']:.4f} |"
            )
    fails = [m for m in rows if m["check"] != "pass"]
    out += [
        "",
        f"check_learning: {len(rows) - len(fails)}/{len(rows)} cells pass"
        + (
            ""
            if not fails
            else "; failing: "
            + ", ".join(f"seed {m['seed']} threads {m['threads']} {m['isa']}" for m in fails)
        ),
        "",
    ]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--isa", nargs="+", default=list(ISA), choices=list(ISA))
    ap.add_argument("--out", help="markdown table to write (also printed)")
    ap.add_argument(
        "--json", help="raw figures (JSON lines, appended as cells finish; cells already in it are not rerun)"
    )
    ap.add_argument("--from-json", help="only render the table from a --json file")
    ap.add_argument(
        "--sensitivity",
        action="store_true",
        help="also vote the oracle with wrong transitions (shifted by a snippet, "
        "another video's) and print how far rho falls",
    )
    ap.add_argument("--child", nargs=2, type=int, metavar=("SEED", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child, sensitivity=args.sensitivity)
        return 0
    rows = []
    src = args.from_json or args.json
    if src and os.path.isfile(src):
        with open(src) as f:
            rows = [json.loads(ln) for ln in f if ln.strip()]
    if not args.from_json:
        done = {(m["seed"], m["threads"], m["isa"]) for m in rows}
        for threads in args.threads:
            for isa in args.isa:
                for seed in args.seeds:
                    if (seed, threads, isa) in done:
                        continue
                    m = run_cell(seed, threads, isa, args.sensitivity)
                    print(
                        f"seed {seed} threads {threads} {isa:8s} TSA {m['rho_tsa']:.4f} "
                        f"F+R {m['rho_fr']:.4f} oracle {m['rho_oracle']:.4f} "
                        f"{m['seconds']:.0f} s {m['check']}",
                        file=sys.stderr,
                        flush=True,
                    )
                    rows.append(m)
                    if args.json:
                        with open(args.json, "a") as f:
                            f.write(json.dumps(m) + "\n")
    recheck(rows)
    order = {k: i for i, k in enumerate(ISA)}
    rows.sort(key=lambda m: (m["threads"], order[m["isa"]], m["seed"]))
    note = (
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        f"(`lscpu` model: {_cpu_model()}); python {platform.python_version()}."
    )
    text = render(rows, note)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


def recheck(rows: list) -> None:
    """Judges every cell with the current check_learning (margins may have moved since)."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from learning import check_learning

    for m in rows:
        try:
            check_learning(m)
            m["check"] = "pass"
        except AssertionError as e:
            m["check"] = f"FAIL: {str(e)[:200]}"


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
