"""The restricted unpickler admits the numpy classes of the annotation files and nothing else."""

import os
import pickle

import numpy as np
import pytest

from fdperf import data


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_os_system_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": _Exploit(marker)}, protocol=3))
    with pytest.raises(data.UnsafePickleError, match=r"refusing to load '(posix|os)\.system'"):
        data.load_pickle(path)
    assert not marker.exists()


def test_other_classes_are_refused(tmp_path):
    path = tmp_path / "cls.pkl"
    path.write_bytes(pickle.dumps(_Exploit, protocol=3))
    with pytest.raises(data.UnsafePickleError, match="test_safe_pickle._Exploit"):
        data.load_pickle(path)


def test_annotation_loader_refuses_a_crafted_split(small_annotations, tmp_path):
    folder = small_annotations[0]
    marker = tmp_path / "pwned2"
    with open(os.path.join(folder, "train_split.pkl"), "wb") as f:
        pickle.dump([_Exploit(marker)], f, protocol=3)
    with pytest.raises(data.UnsafePickleError, match="train_split.pkl: refusing to load"):
        data.load_annotations(folder)
    assert not marker.exists()


@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_numpy_arrays_and_scalars_under_both_module_names(tmp_path, module):
    obj = {("ev", 1): [np.arange(5, dtype=np.int64), np.float64(2.5), np.int64(7)]}
    blob = pickle.dumps(obj, protocol=3)
    # numpy 2 writes numpy._core; the published files name numpy.core: exercise both spellings.
    other = b"numpy._core.multiarray" if module == "numpy.core.multiarray" else b"numpy.core.multiarray"
    here = b"numpy._core.multiarray" if b"numpy._core.multiarray" in blob else b"numpy.core.multiarray"
    blob = blob.replace(here, module.encode()) if here != module.encode() else blob
    assert module.encode() in blob and other not in blob
    path = tmp_path / "np.pkl"
    path.write_bytes(blob)
    out = data.load_pickle(path)
    assert np.array_equal(out[("ev", 1)][0], np.arange(5)) and out[("ev", 1)][1] == 2.5
