"""fdperf: fast procedure-aware action quality assessment (FineDiving / TSA).

The main entry points are importable from here; each is loaded on first use, so `import fdperf`
needs neither torch nor the native extension. The operators (`fdperf.ops`, torch.ops.fdperf.*)
load the extension fdperf._C on first use and fail with build instructions when it is missing.
"""

import importlib
import os

from .version import __version__

# OpenMP threads that spin-wait for descheduled peers made a 2-thread CPU training epoch 5.4x
# slower next to two busy processes on 2 cores (29.7 s instead of 5.5 s); a short spin keeps
# it near proportional (10.4 s) at little cost on a quiet machine. Only before torch loads
# OpenMP, and never over the user's own OpenMP settings.
if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "10000"

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
