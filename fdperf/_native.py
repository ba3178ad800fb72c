"""Loads the compiled extension fdperf._C, which registers the torch.ops.fdperf operators.

The build records the torch it was compiled against (fdperf/_build_info.py, written by setup.py);
an extension built against another torch is refused with both versions and the rebuild command,
instead of failing later with an undefined symbol.
"""

import importlib

REBUILD = "pip install --no-build-isolation --no-deps -e ."
_BUILD_HINT = (
    "fdperf's native extension (fdperf._C) is not built. Build it in place from the repository "
    f"root with `make build` (or `{REBUILD}` inside an environment that has torch installed); "
    "`make test` and `make demo` do this for you."
)


def built_torch_version():
    """The torch version fdperf._C was built against, or None when unknown."""
    try:
        from . import _build_info
    except ImportError:
        return None
    return getattr(_build_info, "TORCH_VERSION", None)


def check_torch_version(built, running) -> None:
    if built is not None and built != running:
        raise ImportError(
            f"fdperf._C was built against torch {built} but torch {running} is installed; "
            f"rebuild the extension with `{REBUILD}` (or `make build`) in this environment"
        )


def load():
    import torch  # the extension links against libtorch: load it first

    check_torch_version(built_torch_version(), torch.__version__)
    try:
        return importlib.import_module("fdperf._C")
    except ImportError as e:
        raise ImportError(f"{_BUILD_HINT} (import error: {e})") from e
