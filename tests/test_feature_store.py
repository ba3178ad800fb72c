"""The HDF5 feature store: layout, resume, refusal of unfinished files, loading."""

import h5py
import numpy as np
import pytest
import torch

from fdperf.features import FeatureStore, FeatureStoreWriter

KEYS = [("01_ev", 1), ("01_ev", 2), ("02_ev", 10)]
ATTRS = dict(
    backbone="i3d",
    weights_sha256="random-init",
    preprocess="reference",
    sampling="linspace96",
    precision="fp32",
    fdperf_version="test",
)


def _rows(n, views=1, snippets=3, seed=0):
    g = np.random.default_rng(seed)
    lead = (n, views, snippets) if views > 1 else (n, snippets)
    return (
        g.standard_normal(lead + (1024,)).astype(np.float32),
        g.standard_normal(lead + (1024, 4, 4)).astype(np.float16),
    )


def test_layout_is_plain_h5py_readable(tmp_path):
    path = tmp_path / "f.h5"
    feats, maps = _rows(3)
    with FeatureStoreWriter(path, KEYS, attrs=ATTRS, num_snippets=3) as w:
        w.write([2, 0], feats[[2, 0]], maps[[2, 0]])
        w.write([1], feats[[1]], maps[[1]])
        assert w.finish()
    with h5py.File(path, "r") as f:
        assert [k.decode() for k in f["keys"][...]] == ["01_ev/1", "01_ev/2", "02_ev/10"]
        assert f["features"].shape == (3, 3, 1024) and f["features"].dtype == np.float32
        assert f["feature_maps"].shape == (3, 3, 1024, 4, 4) and f["feature_maps"].dtype == np.float16
        assert f["features"].chunks == (1, 3, 1024)
        assert f["done"][...].all() and bool(f.attrs["complete"])
        assert f.attrs["weights_sha256"] == "random-init" and f.attrs["views"] == 1
        np.testing.assert_array_equal(f["features"][...], feats)


def test_reader_loads_everything(tmp_path):
    path = tmp_path / "f.h5"
    feats, maps = _rows(3)
    with FeatureStoreWriter(path, KEYS, attrs=ATTRS, num_snippets=3) as w:
        w.write([0, 1, 2], feats, maps)
        w.finish()
    store = FeatureStore(path)
    assert store.keys == KEYS and len(store) == 3
    assert store.index_of(("02_ev", 10)) == 2 and store.index_of("01_ev/2") == 1
    with pytest.raises(KeyError, match="03_x/1"):
        store.index_of(("03_x", 1))
    f, m = store.load(block_rows=2)
    assert f.dtype == torch.float32 and m.dtype == torch.float32
    torch.testing.assert_close(f, torch.from_numpy(feats), rtol=0, atol=0)
    torch.testing.assert_close(m, torch.from_numpy(maps).float(), rtol=0, atol=0)
    f2, m2 = store.load(maps=False)
    assert m2 is None and torch.equal(f2, f)
    assert store.attrs["backbone"] == "i3d"


def test_views_axis(tmp_path):
    path = tmp_path / "v.h5"
    feats, maps = _rows(3, views=2)
    with FeatureStoreWriter(path, KEYS, attrs=ATTRS, num_snippets=3, views=2) as w:
        w.write([0, 1, 2], feats, maps)
        w.finish()
    store = FeatureStore(path)
    assert store.views == 2 and store.num_snippets == 3
    f, m = store.load()
    assert f.shape == (3, 2, 3, 1024) and m.shape == (3, 2, 3, 1024, 4, 4)
    f1, m1 = store.load(view=1)
    assert torch.equal(f1, torch.from_numpy(feats[:, 1]))
    assert torch.equal(m1, torch.from_numpy(maps[:, 1]).float())
    with pytest.raises(ValueError, match="view 2 out of range"):
        store.load(view=2)


def test_unfinished_store_is_refused_and_resumes(tmp_path):
    path = tmp_path / "f.h5"
    feats, maps = _rows(3)
    w = FeatureStoreWriter(path, KEYS, attrs=ATTRS, num_snippets=3)
    w.write([1], feats[[1]], maps[[1]])
    w.close()  # as if the run died here
    with pytest.raises(ValueError, match="2 of 3 rows are not done"):
        FeatureStore(path)
    partial = FeatureStore(path, allow_partial=True)
    assert partial.keys == [KEYS[1]]
    assert torch.equal(partial.load(maps=False)[0], torch.from_numpy(feats[[1]]))

    w = FeatureStoreWriter(path, KEYS, attrs=ATTRS, num_snippets=3)
    assert w.resumed and list(w.pending) == [0, 2]
    w.write(w.pending, feats[[0, 2]], maps[[0, 2]])
    assert w.finish()
    w.close()
    torch.testing.assert_close(FeatureStore(path).load()[0], torch.from_numpy(feats), rtol=0, atol=0)


def test_errors_keep_store_incomplete(tmp_path):
    path = tmp_path / "f.h5"
    feats, maps = _rows(3)
    with FeatureStoreWriter(path, KEYS, attrs=ATTRS, num_snippets=3) as w:
        w.write([0, 2], feats[[0, 2]], maps[[0, 2]])
        assert not w.finish([(KEYS[1], "corrupt JPEG frame 00012.jpg")])
    with pytest.raises(ValueError, match="01_ev/2: corrupt JPEG"):
        FeatureStore(path)
    store = FeatureStore(path, allow_partial=True)
    assert store.keys == [KEYS[0], KEYS[2]]
    assert store.errors == [("01_ev/2", "corrupt JPEG frame 00012.jpg")]


def test_resume_refuses_other_settings(tmp_path):
    path = tmp_path / "f.h5"
    FeatureStoreWriter(path, KEYS, attrs=ATTRS, num_snippets=3).close()
    with pytest.raises(RuntimeError, match="preprocess: file has 'reference', this run 'aspect'"):
        FeatureStoreWriter(path, KEYS, attrs=dict(ATTRS, preprocess="aspect"), num_snippets=3)
    with pytest.raises(RuntimeError, match="another key list"):
        FeatureStoreWriter(path, KEYS[:2], attrs=ATTRS, num_snippets=3)
    w = FeatureStoreWriter(path, KEYS[:2], attrs=ATTRS, num_snippets=3, overwrite=True)
    assert not w.resumed and len(w.pending) == 2
    w.close()


def test_store_written_by_plain_h5py(tmp_path):
    # Other tools (and other helpers' tests) write the layout directly.
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["keys"] = np.array(["a/1", "b/2"], dtype=h5py.string_dtype())
        f["features"] = np.ones((2, 9, 1024), np.float32)
        f["feature_maps"] = np.ones((2, 9, 1024, 4, 4), np.float16)
        f["done"] = np.array([True, True])
    store = FeatureStore(path)
    assert store.keys == [("a", 1), ("b", 2)] and store.num_snippets == 9
    f, m = store.load()
    assert f.shape == (2, 9, 1024) and m.shape == (2, 9, 1024, 4, 4)


def test_wrong_row_shape_is_an_error(tmp_path):
    with FeatureStoreWriter(tmp_path / "f.h5", KEYS, attrs=ATTRS, num_snippets=3) as w:
        feats, maps = _rows(1, snippets=2)
        with pytest.raises(ValueError, match="features shape"):
            w.write([0], feats, maps)
