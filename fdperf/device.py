"""The one place that turns a device option into a torch.device."""

from __future__ import annotations

import torch

from .errors import UserError


def resolve_device(name=None) -> torch.device:
    """`auto`/None -> cuda when a GPU is there, else cpu; a named device must exist."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(name, torch.device):
        name = str(name)
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"--device {name!r}: not a device name; use cpu or cuda[:N]") from e
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r}: unsupported; use cpu or cuda[:N]")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available (use --device cpu)")
    return device
