"""Strict loading of I3D weights: `model_rgb.pth` or the I3D part of a reference TSA checkpoint."""

from __future__ import annotations

import hashlib
import os

import torch

from ..data.safe_pickle import numpy_scalar_globals
from ..errors import UserError
from .i3d import I3D

RANDOM_INIT = "random-init"


class WeightsError(ValueError, UserError):
    """A weights file that does not fit the I3D layout; the message lists what is wrong."""


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _i3d_state(obj, path: str) -> dict:
    """The I3D tensors of a loaded file: a plain state dict, `base_model` of a reference TSA
    checkpoint or `i3d` of an fdperf end-to-end checkpoint."""
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(obj).__name__}")
    prefixes = ("module.",)
    if "base_model" in obj and isinstance(obj["base_model"], dict):
        # the reference's base_model wraps I3D as `backbone` (keys `module.backbone.*`)
        obj, prefixes = obj["base_model"], ("module.", "backbone.")
    elif "i3d" in obj and isinstance(obj["i3d"], dict):  # an fdperf end-to-end checkpoint
        obj = obj["i3d"]
    elif "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    state = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not torch.is_tensor(v):
            raise WeightsError(f"{path}: entry {k!r} is not a named tensor; not an I3D state dict")
        for p in prefixes:
            k = k[len(p) :] if k.startswith(p) else k
        state[k] = v
    return state


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def load_state_strict(model: I3D, state: dict, source: str) -> None:
    """Loads `state` into `model`; any missing, unexpected or mis-shaped key is an error.

    `num_batches_tracked` buffers may be absent (files saved by old PyTorch versions lack them;
    they do not affect inference).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_listing(mismatched)}")
    if problems:
        raise WeightsError(f"{source} does not match the I3D model_rgb.pth layout; " + "; ".join(problems))
    full = {k: state.get(k, own[k]) for k in own}
    model.load_state_dict(full, strict=True)


def random_i3d(seed: int = 0) -> I3D:
    """A randomly initialised I3D with He (Kaiming) normal convolution weights, seeded.

    PyTorch's default initialisation shrinks the signal about 3x per layer, so after I3D's
    20-odd layers the features would be ~1e-6 (float16 feature maps in the subnormal range);
    He init keeps a random ReLU network's activations at unit scale.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = I3D()
        for m in model.modules():
            if isinstance(m, torch.nn.Conv3d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    return model


def load_i3d(
    weights: str | os.PathLike | None = None, *, random_init: bool = False, seed: int = 0
) -> tuple[I3D, str]:
    """An eval-mode I3D and the sha256 of its weights file (or "random-init").

    Without `weights` this refuses unless `random_init` is set: the reference quietly trains
    from random weights when its weights file is missing, fdperf never does.
    """
    if weights is None:
        if not random_init:
            raise WeightsError(
                "no I3D weights given: pass the model_rgb.pth file (or a TSA "
                "checkpoint), or ask for random weights explicitly (random_init)"
            )
        return random_i3d(seed).eval(), RANDOM_INIT
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise WeightsError(f"I3D weights file not found: {path}")
    try:
        # a reference last.pth also holds numpy float64 scalars (rho_best, ...): admit exactly those
        with torch.serialization.safe_globals(numpy_scalar_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, truncated, or holds non-tensor objects
        raise WeightsError(f"{path}: cannot be read as a tensor-only torch file ({e})") from e
    model = I3D()
    load_state_strict(model, _i3d_state(obj, path), path)
    return model.eval(), file_sha256(path)
