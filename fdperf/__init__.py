"""fdperf: fast procedure-aware action quality assessment (FineDiving / TSA).

The main entry points are importable from here; each is loaded on first use, so `import fdperf`
needs neither torch nor the native extension. The operators (`fdperf.ops`, torch.ops.fdperf.*)
load the extension fdperf._C on first use and fail with build instructions when it is missing.
"""

import importlib

from .version import __version__

# public name -> module that defines it (imported lazily)
_EXPORTS = {
    "load_annotations": "fdperf.data",
    "ExemplarSampler": "fdperf.data",
    "voting_exemplars": "fdperf.data",
    "segment_resample": "fdperf.ops",
    "step_attention": "fdperf.ops",
    "window_argmax": "fdperf.ops",
    "FeatureStore": "fdperf.features",
    "extract_features": "fdperf.extract",
    "train_model": "fdperf.train",
    "evaluate_model": "fdperf.evaluate",
    "generate_dataset": "fdperf.synthetic",
    "write_report": "fdperf.report",
    "run_demo": "fdperf.demo",
    "spearman": "fdperf.metrics",
    "relative_l2": "fdperf.metrics",
    "aiou": "fdperf.metrics",
}

__all__ = ["__version__", *_EXPORTS]


# fdperf.train and fdperf.evaluate are the stages' packages: their functions go by other names here.
_ALIASES = {"train_model": "train", "evaluate_model": "evaluate"}


def __getattr__(name):
    if name == "_C":  # the extension, for code that reached it as fdperf._C
        from . import _native

        return _native.load()
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), _ALIASES.get(name, name))
    raise AttributeError(f"module 'fdperf' has no attribute {name!r}")
