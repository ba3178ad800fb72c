"""Checkpoints: fdperf's own format and the reference implementation's `last.pth`.

Everything is read with `torch.load(weights_only=True)` (tensors, dicts, lists and plain
numbers only), so a checkpoint cannot run code. Writes are atomic: a temporary file in the same
folder, flushed and fsynced, then renamed over the target, so an interrupted save never leaves
a half-written checkpoint under the final name.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..data.safe_pickle import numpy_scalar_globals
from ..errors import UserError
from . import build_model
from .model import TSA, PairModel

FORMAT = "fdperf-tsa"
FORMAT_VERSION = 1
REFERENCE_PARTS = ("psnet_model", "decoder", "regressor_delta")


class CheckpointError(ValueError, UserError):
    """A checkpoint file is missing, corrupt, truncated or of an unknown layout."""


class StoreMismatch(CheckpointError):
    """A checkpoint meets a feature store of another identity (other I3D, preprocessing...)."""


def read_checkpoint(path, map_location="cpu") -> dict:
    """torch.load(weights_only=True) with errors that say what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(numpy_scalar_globals()):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused or unreadable checkpoint content ({e}); fdperf "
            "loads checkpoints with weights_only=True"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint (corrupt or truncated file?): {e}"
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    return obj


def save_checkpoint(path, obj: dict) -> Path:
    """Atomic torch.save: temporary file in the target folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def model_checkpoint(model: PairModel, **extra) -> dict:
    """The fdperf checkpoint dict of `model` (extra keys: optimizer, epoch, rng, settings...)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": model.method,
        "config": model.config(),
        "model": model.state_dict(),
        **extra,
    }


def identity_differences(a: dict, b: dict, names=("checkpoint", "store")) -> list:
    """'key: <names[0]> A, <names[1]> B' for every store-identity entry that differs."""
    return [
        f"{k}: {names[0]} {a.get(k)!r}, {names[1]} {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def check_store(
    checkpoint: dict, identity: dict, *, checkpoint_path, store_path, allow: bool = False, log=None
) -> dict:
    """Compares the store identity a checkpoint recorded (`store_identity`, see
    `fdperf.features.videoset.store_identity`) with a store's; returns the record for
    metrics.json / train_summary.json.

    A difference raises StoreMismatch naming both values, unless `allow`; a checkpoint without
    the record (older fdperf, reference last.pth) cannot be checked: a warning through `log`.
    """
    log = log or (lambda line: None)
    recorded = checkpoint.get("store_identity")
    if not isinstance(recorded, dict):
        log(
            f"warning: {checkpoint_path} does not record the identity of its feature store "
            f"(older checkpoint or reference last.pth): cannot check that {store_path} matches it"
        )
        return {"status": "unrecorded"}
    diffs = identity_differences(recorded, identity)
    if not diffs:
        return {"status": "match"}
    if not allow:
        raise StoreMismatch(
            f"{store_path} differs from the store {checkpoint_path} was trained on "
            f"({'; '.join(diffs)}); use a store extracted like the training store, "
            "or pass --allow-store-mismatch to proceed anyway"
        )
    log(
        f"warning: {store_path} differs from the store {checkpoint_path} was trained on "
        f"({'; '.join(diffs)}); proceeding because of --allow-store-mismatch"
    )
    return {"status": "mismatch-allowed", "differences": diffs}


def _strip(state: dict, prefixes=("module.",)) -> dict:
    out = {}
    for k, v in state.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def is_reference(obj: dict) -> bool:
    return all(part in obj for part in REFERENCE_PARTS)


def _load_state(module, state: dict, where: str):
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{where}: weights do not fit the model: {e}") from e


def reference_to_model(obj: dict, layout: str = "reference", where: str = "checkpoint") -> TSA:
    """A TSA model from a reference checkpoint dict (keys possibly prefixed `module.`)."""
    psnet = _strip(obj["psnet_model"])
    if "tas.layer3.weight" not in psnet or "inc.conv.conv.0.weight" not in psnet:
        raise CheckpointError(
            f"{where}: psnet_model lacks the PSNet weights (inc.conv.conv.0.weight, tas.layer3.weight)"
        )
    in_channels = psnet["inc.conv.conv.0.weight"].shape[1]
    num_transitions = psnet["tas.layer3.weight"].shape[0]
    decoder = _strip(obj["decoder"])
    layers = len({k.split(".")[1] for k in decoder if k.startswith("model.")})
    model = TSA(in_channels=in_channels, num_transitions=num_transitions, layout=layout, layers=layers)
    _load_state(model.psnet, psnet, f"{where} psnet_model")
    _load_state(model.decoder, decoder, f"{where} decoder")
    _load_state(model.regressor, _strip(obj["regressor_delta"]), f"{where} regressor_delta")
    return model


def reference_i3d_state(obj: dict) -> dict | None:
    """The I3D weights of a reference checkpoint in the `model_rgb.pth` layout (the reference's
    `base_model` with its `module.` and `backbone.` prefixes removed), or None."""
    base = obj.get("base_model")
    if base is None:
        return None
    return _strip(base, ("module.", "backbone."))


def import_reference_checkpoint(path, layout: str = "reference"):
    """Reads a reference `last.pth`; returns (TSA model, I3D state dict or None, meta dict)."""
    obj = read_checkpoint(path)
    if not is_reference(obj):
        raise CheckpointError(
            f"{path}: not a reference TSA checkpoint: needs keys {REFERENCE_PARTS}, found {sorted(obj)[:8]}"
        )
    model = reference_to_model(obj, layout, str(path))
    meta = {
        k: (float(v) if isinstance(v, (np.floating, float)) else v)
        for k, v in obj.items()
        if k in ("epoch", "epoch_best_aqa", "rho_best", "L2_min", "RL2_min")
    }
    return model, reference_i3d_state(obj), meta


def export_reference_checkpoint(
    model: TSA, path, i3d_state: dict | None = None, data_parallel: bool = True, **meta
) -> Path:
    """Writes `model` as a reference `last.pth` (keys prefixed `module.` like the reference's
    DataParallel modules), so the published code can load fdperf-trained weights."""
    if not isinstance(model, TSA):
        raise ValueError(f"only TSA models have a reference format, not {model.method}")
    pre = "module." if data_parallel else ""
    obj = {
        "psnet_model": {pre + k: v for k, v in model.psnet.state_dict().items()},
        "decoder": {pre + k: v for k, v in model.decoder.state_dict().items()},
        "regressor_delta": {pre + k: v for k, v in model.regressor.state_dict().items()},
        "base_model": {pre + "backbone." + k: v for k, v in (i3d_state or {}).items()},
        "epoch": int(meta.get("epoch", 0)),
        "epoch_best_aqa": int(meta.get("epoch_best_aqa", 0)),
        "rho_best": float(meta.get("rho_best", 0.0)),
        "L2_min": float(meta.get("L2_min", 1000.0)),
        "RL2_min": float(meta.get("RL2_min", 1000.0)),
    }
    return save_checkpoint(path, obj)


def load_model(path, layout: str | None = None, map_location="cpu"):
    """Any supported checkpoint -> (model in eval mode, checkpoint dict).

    fdperf checkpoints rebuild their method from the stored config; reference checkpoints give
    a TSA model (`layout` defaults to "reference", the layout they were trained with).
    """
    obj = read_checkpoint(path, map_location)
    if is_reference(obj):
        model = reference_to_model(obj, layout or "reference", str(path))
        obj = {"format": "reference", "method": "TSA", "config": model.config(), **obj}
    elif obj.get("format") == FORMAT:
        if obj.get("format_version", 0) > FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: checkpoint format {obj['format_version']} is newer than "
                f"this fdperf understands ({FORMAT_VERSION})"
            )
        for key in ("method", "config", "model"):
            if key not in obj:
                raise CheckpointError(f"{path}: fdperf checkpoint lacks {key!r}")
        config = dict(obj["config"])
        if layout is not None and "layout" in config:
            config["layout"] = layout
        try:
            model = build_model(obj["method"], **config)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot rebuild method {obj['method']!r}: {e}") from e
        _load_state(model, obj["model"], str(path))
    else:
        raise CheckpointError(
            f"{path}: unknown checkpoint layout (neither fdperf's nor the "
            f"reference's); top-level keys: {sorted(obj)[:8]}"
        )
    return model.eval(), obj
