"""A restricted unpickler for the FineDiving annotation pickles.

The files only reference numpy's array and scalar reconstruction (under `numpy.core` in the
published files, `numpy._core` when re-saved with numpy 2). Anything else, `os.system` or a
class a crafted file names, is refused before it is looked up, so nothing can run.
"""

import io
import pickle

import numpy as np

_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
    # Pickles written by numpy 2 name dtype classes such as numpy.dtypes.Int64DType.
    **{
        ("numpy.dtypes", name): getattr(np.dtypes, name)
        for name in (
            "Int64DType",
            "Int32DType",
            "Float64DType",
            "Float32DType",
            "BoolDType",
            "UInt8DType",
            "Int16DType",
            "Int8DType",
            "UInt16DType",
            "UInt32DType",
            "UInt64DType",
            "StrDType",
        )
    },
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced a class or function outside the allowed numpy set."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source):
        super().__init__(file)
        self._source = source

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to load '{module}.{name}': annotation pickles may only "
                "reference numpy arrays, dtypes and scalars"
            ) from None


def load_pickle(path) -> object:
    """Loads a pickle file, admitting only the numpy classes the FineDiving files use."""
    with open(path, "rb") as f:
        data = f.read()
    return _RestrictedUnpickler(io.BytesIO(data), str(path)).load()


def numpy_scalar_globals():
    """torch.load safe globals for checkpoints holding numpy scalars (weights_only=True)."""
    # The reference stores rho_best & co. as numpy float64 scalars (from scipy); admit exactly
    # the classes needed to rebuild such scalars, under both numpy 1 and numpy 2 names.
    scalar = np._core.multiarray.scalar
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
        type(np.dtype(np.float64)),
        type(np.dtype(np.float32)),
        type(np.dtype(np.int64)),
    ]
