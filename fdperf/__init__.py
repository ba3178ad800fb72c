"""fdperf: fast procedure-aware action quality assessment (FineDiving / TSA).

Importing fdperf loads the native operators (torch.ops.fdperf.*); it fails with build
instructions when the extension has not been compiled. The main entry points are importable
from here; each is loaded on first use so that `import fdperf` stays light.
"""
import importlib

from . import _native
from .version import __version__

_C = _native.load()

# public name -> module that defines it (imported lazily)
_EXPORTS = {
    "load_annotations": "fdperf.data",
    "ExemplarSampler": "fdperf.data",
    "voting_exemplars": "fdperf.data",
    "segment_resample": "fdperf.ops",
    "step_attention": "fdperf.ops",
    "window_argmax": "fdperf.ops",
    "FeatureStore": "fdperf.features",
    "extract_features": "fdperf.extraction",
    "train_model": "fdperf.training",
    "evaluate_model": "fdperf.vote",
    "generate_dataset": "fdperf.synthetic",
    "write_report": "fdperf.reporting",
    "run_demo": "fdperf.demo",
    "spearman": "fdperf.metrics",
    "relative_l2": "fdperf.metrics",
    "aiou": "fdperf.metrics",
}

__all__ = ["__version__", *_EXPORTS]


# fdperf.train and fdperf.evaluate are the CLI modules: their functions go by other names here.
_ALIASES = {"train_model": "train", "evaluate_model": "evaluate"}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), _ALIASES.get(name, name))
    raise AttributeError(f"module 'fdperf' has no attribute {name!r}")
