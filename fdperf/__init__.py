"""fdperf: fast procedure-aware action quality assessment (FineDiving / TSA).

Importing fdperf loads the native operators (torch.ops.fdperf.*); it fails with build
instructions when the extension has not been compiled.
"""
from . import _native
from .version import __version__

_C = _native.load()

__all__ = ["__version__"]
