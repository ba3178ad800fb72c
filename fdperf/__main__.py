"""`fdperf COMMAND ...` (the console script) and `python -m fdperf COMMAND ...`.

Each command is also `python -m fdperf.<module>`; `fdperf env` reports what is available.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module whose main(argv) runs it, one line of help)
COMMANDS = {
    "synth": ("fdperf.synthetic.__main__", "render a synthetic dive set in the FineDiving layout"),
    "extract": ("fdperf.extract.__main__", "decode videos, run I3D, write an HDF5 feature store"),
    "train": ("fdperf.train.__main__", "train TSA or a baseline on a feature store"),
    "evaluate": ("fdperf.evaluate.__main__", "vote with exemplars: metrics JSON, predictions CSV"),
    "score": ("fdperf.score.__main__", "score new dives: score, steps and exemplar votes per video"),
    "report": ("fdperf.report.__main__", "per-video PNGs, summary and index.html of a run"),
    "demo": ("fdperf.demo.__main__", "the whole pipeline on synthetic dives"),
    "env": ("fdperf.env", "what is available: torch, CUDA, operators, DALI, PyAV, GPUs"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: fdperf COMMAND [options]   (fdperf COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from .version import __version__

        print(f"fdperf {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"fdperf: error: unknown command {name!r}\n{usage()}", file=sys.stderr)
        return 2
    from . import cli

    cli.COMMAND_NAME = f"fdperf {name}"  # messages and --help name the command as it was typed
    try:
        return importlib.import_module(COMMANDS[name][0]).main(argv[1:])
    finally:
        cli.COMMAND_NAME = None


if __name__ == "__main__":
    sys.exit(main())
