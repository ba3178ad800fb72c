"""Checkpoints: the reference `last.pth` format round-trips into fdperf's model (module.
prefixes, numpy scalars, I3D weights exposed); corrupt, truncated or unsafe files fail clearly."""

import io
import pickle
import zipfile

import numpy as np
import pytest
import torch

from fdperf.errors import UserError
from fdperf.tsa import TSA, build_model
from fdperf.tsa.checkpoint import (
    CheckpointError,
    export_reference_checkpoint,
    import_reference_checkpoint,
    load_model,
    model_checkpoint,
    read_checkpoint,
    save_checkpoint,
)


def _model(layout="reference"):
    torch.manual_seed(0)
    return TSA(layout=layout).eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 9, 1024, generator=g), torch.randn(2, 9, 1024, 4, 4, generator=g)


def _deltas(model):
    feats, maps = _inputs()
    with torch.no_grad():
        cache = model.encode(feats, maps)
        return model.step_deltas(cache, cache, torch.arange(2), torch.tensor([1, 0]))


def test_reference_checkpoint_round_trip(tmp_path):
    model = _model()
    i3d = {
        "conv3d_1a_7x7.conv3d.weight": torch.randn(64, 3, 7, 7, 7),
        "mixed_4f.branch_1.1.batch3d.running_var": torch.rand(160),
    }
    path = export_reference_checkpoint(model, tmp_path / "last.pth", i3d_state=i3d, epoch=199, rho_best=0.92)
    raw = torch.load(path, weights_only=True)
    assert all(k.startswith("module.") for k in raw["psnet_model"])
    assert "module.backbone.conv3d_1a_7x7.conv3d.weight" in raw["base_model"]
    back, i3d_back, meta = import_reference_checkpoint(path)
    assert meta["epoch"] == 199 and meta["rho_best"] == pytest.approx(0.92)
    assert set(i3d_back) == set(i3d) and all(torch.equal(i3d[k], i3d_back[k]) for k in i3d)
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    assert torch.equal(_deltas(model), _deltas(back.eval()))


def test_reference_file_as_the_published_code_writes_it(tmp_path):
    """Plain state dicts with module. prefixes, numpy float64 metrics, an optimizer state."""
    model = _model()
    pre = lambda sd: {"module." + k: v for k, v in sd.items()}  # noqa: E731
    obj = {
        "base_model": {},
        "psnet_model": pre(model.psnet.state_dict()),
        "decoder": pre(model.decoder.state_dict()),
        "regressor_delta": pre(model.regressor.state_dict()),
        "optimizer": torch.optim.Adam(model.parameters()).state_dict(),
        "epoch": 10,
        "epoch_best_aqa": 7,
        "rho_best": np.float64(0.91),
        "L2_min": np.float64(40.2),
        "RL2_min": np.float64(0.35),
    }
    torch.save(obj, tmp_path / "last.pth")
    loaded, ckpt = load_model(tmp_path / "last.pth")
    assert ckpt["format"] == "reference" and loaded.layout == "reference"
    assert torch.equal(_deltas(model), _deltas(loaded))
    spatial, _ = load_model(tmp_path / "last.pth", layout="spatial")
    assert spatial.layout == "spatial"


def test_reference_file_pickled_under_numpy_1(tmp_path):
    """The published checkpoints were pickled with numpy 1, whose scalars live in numpy.core."""
    model = _model()
    obj = {
        "psnet_model": model.psnet.state_dict(),
        "decoder": model.decoder.state_dict(),
        "regressor_delta": model.regressor.state_dict(),
        "rho_best": np.float64(0.9),
    }
    buf = io.BytesIO()
    torch.save(obj, buf)
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zin,
        zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout,
    ):
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(info.filename, data)
    (tmp_path / "last.pth").write_bytes(out.getvalue())
    back, i3d, meta = import_reference_checkpoint(tmp_path / "last.pth")
    assert meta["rho_best"] == pytest.approx(0.9) and i3d is None
    assert torch.equal(_deltas(model), _deltas(back.eval()))


def test_fdperf_checkpoint_rebuilds_every_method(tmp_path):
    for method in ("TSA", "TSA-oracle", "F+R", "F+R*", "F+S+R", "F+R#"):
        model = build_model(method, **({"num_dive_numbers": 4} if method == "F+R#" else {}))
        path = save_checkpoint(tmp_path / f"{method}.pt", model_checkpoint(model, epoch=3))
        loaded, ckpt = load_model(path)
        assert loaded.method == method and ckpt["epoch"] == 3
        for k, v in model.state_dict().items():
            assert torch.equal(v, loaded.state_dict()[k])
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_truncated_and_unsafe_files_fail_clearly(tmp_path):
    good = save_checkpoint(tmp_path / "good.pt", model_checkpoint(_model(), epoch=0))
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(tmp_path / "trunc.pt")
    (tmp_path / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="trunc.pt|noise.pt"):
        load_model(tmp_path / "noise.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(UserError):  # the commands turn it into one line and exit status 2
        load_model(tmp_path / "missing.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled code ran",))

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(tmp_path / "evil.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="unknown checkpoint layout"):
        load_model(tmp_path / "other.pt")
    bad = model_checkpoint(_model(), epoch=0)
    bad["model"] = {k: v for k, v in bad["model"].items() if not k.startswith("regressor")}
    torch.save(bad, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path / "partial.pt")
    with open(tmp_path / "list.pt", "wb") as f:
        pickle.dump([1, 2], f, protocol=2)
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "list.pt")
