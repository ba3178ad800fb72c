"""Loads the compiled extension fdperf._C, which registers the torch.ops.fdperf operators."""
import importlib

_BUILD_HINT = (
    "fdperf's native extension (fdperf._C) is not built. Build it in place from the repository "
    "root with `make build` (or `pip install --no-build-isolation -e .` inside an environment "
    "that has torch installed); `make test` and `make demo` do this for you.")


def load():
    import torch  # noqa: F401  (the extension links against libtorch: load it first)
    try:
        return importlib.import_module("fdperf._C")
    except ImportError as e:
        raise ImportError(f"{_BUILD_HINT} (import error: {e})") from e
