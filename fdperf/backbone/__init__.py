"""The I3D backbone in the model_rgb.pth layout, strict weight loading and inference fusion."""

from .i3d import FEATURE_DIM, I3D, FusedI3D, fuse_for_inference, same_padding
from .weights import RANDOM_INIT, WeightsError, file_sha256, load_i3d, load_state_strict

__all__ = [
    "FEATURE_DIM",
    "I3D",
    "FusedI3D",
    "fuse_for_inference",
    "same_padding",
    "RANDOM_INIT",
    "WeightsError",
    "file_sha256",
    "load_i3d",
    "load_state_strict",
]
