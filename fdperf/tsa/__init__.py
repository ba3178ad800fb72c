"""TSA (procedure-aware cross-attention) and its ablation baselines on cached I3D features."""

from __future__ import annotations

from .baselines import FeatureRegression, SegmentRegression
from .decoder import Decoder
from .model import LAYOUTS, TSA, PairModel, choose_bounds, pair_loss
from .psnet import PSNet
from .regressor import Regressor

METHODS = ("TSA", "TSA-oracle", "F+R", "F+R*", "F+R#", "F+S+R")


def build_model(method: str = "TSA", **config) -> PairModel:
    """A fresh model for `method` (one of METHODS); `config` as returned by `model.config()`.

    For F+R# pass `num_dive_numbers`; TSA takes `in_channels`, `num_transitions`, `fix_size`,
    `layout`, ...
    """
    if method in ("TSA", "TSA-oracle"):
        config = dict(config)
        config["oracle"] = config.get("oracle", method == "TSA-oracle")
        model = TSA(**config)
        if method == "TSA-oracle":
            model.method = "TSA-oracle"
        return model
    if method == "F+R":
        return FeatureRegression(**{"symmetric": True, **config})
    if method == "F+R*":
        return FeatureRegression(**{**config, "symmetric": False})
    if method == "F+R#":
        if not config.get("num_dive_numbers"):
            raise ValueError("F+R# needs num_dive_numbers >= 1")
        return FeatureRegression(**config)
    if method == "F+S+R":
        return SegmentRegression(**config)
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


__all__ = [
    "METHODS",
    "build_model",
    "TSA",
    "PairModel",
    "FeatureRegression",
    "SegmentRegression",
    "PSNet",
    "Decoder",
    "Regressor",
    "LAYOUTS",
    "choose_bounds",
    "pair_loss",
]
