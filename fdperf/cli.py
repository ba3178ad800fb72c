"""What every fdperf command shares: parser set-up, the reference YAML options, the error style.

Exit status of every command: 0 done, 1 some inputs failed (and were recorded), 2 usage or input
error (one line on stderr naming the file, key or option; `--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from typing import Callable

from .data.exemplars import policy_from_flags  # noqa: F401  (re-exported for the commands)
from .errors import UserError, one_line

# Errors a user's input can cause: they end a command with one line and exit status 2
# (UnpicklingError: an annotation pickle refused by the restricted unpickler, named in the message).
USER_ERRORS = (UserError, OSError, ValueError, KeyError, pickle.UnpicklingError)

# ---- the reference configuration (shared by the train and evaluate commands) ----
# reference config key -> (type, default, help)
CONFIG_OPTIONS = {
    "bs_train": (int, 8, "pairs per training batch"),
    "max_epoch": (int, 200, "training epochs"),
    "base_lr": (float, 1e-3, "Adam learning rate of the head (no weight decay)"),
    "voter_number": (int, 10, "exemplars per test video when evaluating (M)"),
    "prob_tas_threshold": (
        float,
        0.25,
        "ground-truth transitions while epoch/max_epoch <= this, predicted ones afterwards",
    ),
    "fix_size": (int, 5, "points each step is resampled to"),
    "step_num": (int, 3, "procedure steps (transitions + 1)"),
    "action_number_choosing": (
        "bool",
        True,
        "exemplars of the same dive number (w/ DN); false: any training video",
    ),
    "random_choosing": (
        "bool",
        False,
        "accepted for reference configs (the reference reads it "
        "but chooses randomly whenever action_number_choosing is false)",
    ),
    "seed": (int, 0, "seed of model initialisation, batches and exemplar choice"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse with a usage error on one line (exit status 2), like every other fdperf error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# Set by the `fdperf` console script: the name its messages go by ("fdperf extract", ...).
COMMAND_NAME: str | None = None


def parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with fdperf's common `--debug` flag."""
    prog = COMMAND_NAME or prog
    p = OneLineParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p


def run(p: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int], argv=None) -> int:
    """Parses `argv`, runs `body(args)` and maps user errors to one line and exit status 2."""
    args = p.parse_args(argv)
    try:
        return body(args)
    except USER_ERRORS as e:
        if getattr(args, "debug", False):
            raise
        print(f"{p.prog}: error: {one_line(e)}", file=sys.stderr)
        return 2


def str2bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_config_options(p: argparse.ArgumentParser, keys) -> None:
    for key in keys:
        typ, default, text = CONFIG_OPTIONS[key]
        names = [f"--{key}"] + ([f"--{key.replace('_', '-')}"] if "_" in key else [])
        p.add_argument(
            *names,
            dest=key,
            default=None,
            type=str2bool if typ == "bool" else typ,
            metavar="BOOL" if typ == "bool" else None,
            help=f"{text} (default {default})",
        )


def read_config(path) -> dict:
    """The reference YAML (plain keys and values) as a dict."""
    import yaml

    try:
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"--config {path}: cannot read it: {one_line(e)}") from e
    if not isinstance(cfg, dict):
        raise UserError(f"--config {path}: expected a mapping of keys to values")
    return cfg


def merged(args, keys) -> dict:
    """Command line > --config file > defaults, for the reference keys."""
    cfg = read_config(args.config) if getattr(args, "config", None) else {}
    out = {}
    for key in keys:
        typ, default, _ = CONFIG_OPTIONS[key]
        value = getattr(args, key)
        if value is None and key in cfg:
            try:
                value = str2bool(cfg[key]) if typ == "bool" else typ(cfg[key])
            except (ValueError, argparse.ArgumentTypeError) as e:
                raise UserError(f"--config {args.config}: bad value for {key}: {e}") from e
        out[key] = default if value is None else value
    return out


def annotations_from(args, cfg_path) -> str:
    """--annotations, or the folder of the config's label_path."""
    if args.annotations:
        return args.annotations
    if cfg_path:
        label = read_config(cfg_path).get("label_path")
        if label:
            folder = os.path.dirname(os.path.join(os.path.dirname(os.path.abspath(cfg_path)), label))
            if os.path.isdir(folder):
                return folder
    raise UserError(
        "give the FineDiving annotations folder with --annotations (or a --config "
        "whose label_path points into it)"
    )
