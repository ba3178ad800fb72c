"""I3D: the model_rgb.pth layout, TF-SAME padding, strict loading, inference fusion."""

import argparse

import pytest
import torch

from fdperf.backbone import RANDOM_INIT, WeightsError, file_sha256, fuse_for_inference, load_i3d, same_padding

# The documented layout: unit names and Mixed branch structure of model_rgb.pth.
UNITS = ["conv3d_1a_7x7", "conv3d_2b_1x1", "conv3d_2c_3x3"]
MIXED = [
    "mixed_3b",
    "mixed_3c",
    "mixed_4b",
    "mixed_4c",
    "mixed_4d",
    "mixed_4e",
    "mixed_4f",
    "mixed_5b",
    "mixed_5c",
]
BRANCH_UNITS = ["branch_0", "branch_1.0", "branch_1.1", "branch_2.0", "branch_2.1", "branch_3.1"]
BN = ["weight", "bias", "running_mean", "running_var"]


def _documented_keys():
    units = UNITS + [f"{m}.{b}" for m in MIXED for b in BRANCH_UNITS]
    keys = {f"{u}.conv3d.weight" for u in units} | {f"{u}.batch3d.{p}" for u in units for p in BN}
    return keys | {"conv3d_0c_1x1.conv3d.weight", "conv3d_0c_1x1.conv3d.bias"}


@pytest.fixture(scope="module")
def model():
    m, sha = load_i3d(random_init=True, seed=3)
    # Non-trivial batch-norm statistics, so that folding them is actually exercised.
    g = torch.Generator().manual_seed(0)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm3d):
            mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) * 0.2 - 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            mod.bias.data.copy_(torch.rand(mod.num_features, generator=g) * 0.2 - 0.1)
    assert sha == RANDOM_INIT
    return m


def test_state_dict_layout(model):
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert set(state) == _documented_keys()
    assert state["conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert state["mixed_4f.branch_1.1.batch3d.running_var"].shape == (320,)
    assert state["mixed_5c.branch_2.1.conv3d.weight"].shape == (128, 48, 3, 3, 3)
    assert state["mixed_5c.branch_3.1.conv3d.weight"].shape == (128, 832, 1, 1, 1)
    assert state["conv3d_0c_1x1.conv3d.weight"].shape == (400, 1024, 1, 1, 1)


def test_tf_same_padding():
    # F.pad order (W, H, T), the odd zero at the end of each axis.
    assert same_padding((7, 7, 7), (2, 2, 2)) == (2, 3, 2, 3, 2, 3)
    assert same_padding((1, 3, 3), (1, 2, 2)) == (0, 1, 0, 1, 0, 0)
    assert same_padding((3, 3, 3), (1, 1, 1)) == (1, 1, 1, 1, 1, 1)
    assert same_padding((2, 2, 2), (2, 2, 2)) == (0, 0, 0, 0, 0, 0)


def test_asymmetric_padding_matches_explicit_pad(model):
    # The stem pads 2 before and 3 after on every axis, then convolves without padding.
    x = torch.randn(1, 3, 8, 20, 20)
    unit = model.conv3d_1a_7x7
    expect = torch.nn.functional.conv3d(
        torch.nn.functional.pad(x, (2, 3, 2, 3, 2, 3)), unit.conv3d.weight, stride=2
    )
    with torch.no_grad():
        got = unit.conv3d(torch.nn.functional.pad(x, unit.pre_pad))
    torch.testing.assert_close(got, expect)
    assert got.shape[2:] == (4, 10, 10)


def test_shapes_and_fusion(model):
    x = torch.randn(1, 3, 16, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        m5c = model.mixed_5c_output(x)
        feat, fmap = model(x)
        ffeat, ffmap = fuse_for_inference(model)(x)
    assert m5c.shape == (1, 1024, 2, 4, 4)
    assert feat.shape == (1, 1024) and fmap.shape == (1, 1024, 4, 4)
    torch.testing.assert_close(fmap, m5c.mean(2))
    torch.testing.assert_close(feat, torch.nn.functional.avg_pool3d(m5c, (2, 4, 4)).flatten(1))
    # fusion reorders float32 sums: judge the error against the activations' scale
    scale = fmap.abs().max().item()
    assert scale > 0.05  # He-initialised: the comparison is not between vanishing numbers
    torch.testing.assert_close(ffeat, feat, rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(ffmap, fmap, rtol=1e-4, atol=1e-5 * scale)


def test_strict_loading(model, tmp_path):
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    good = tmp_path / "model_rgb.pth"
    torch.save(state, good)
    loaded, sha = load_i3d(good)
    assert sha == file_sha256(good) and len(sha) == 64
    for k, v in loaded.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, state[k]), k

    # The I3D part of a reference TSA checkpoint (DataParallel-prefixed).
    tsa = tmp_path / "tsa.pth"
    torch.save(
        {
            "base_model": {f"module.{k}": v for k, v in state.items()},
            "psnet_model": {"x.weight": torch.zeros(1)},
            "epoch": torch.tensor(3),
        },
        tsa,
    )
    from_tsa, _ = load_i3d(tsa)
    assert torch.equal(from_tsa.mixed_5c.branch_0.conv3d.weight, state["mixed_5c.branch_0.conv3d.weight"])

    broken = dict(state)
    del broken["mixed_4f.branch_1.1.batch3d.running_var"]
    broken["mixed_9z.conv3d.weight"] = torch.zeros(1)
    broken["conv3d_0c_1x1.conv3d.bias"] = torch.zeros(101)
    torch.save(broken, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as err:
        load_i3d(tmp_path / "bad.pth")
    msg = str(err.value)
    assert "missing keys: mixed_4f.branch_1.1.batch3d.running_var" in msg
    assert "unexpected keys: mixed_9z.conv3d.weight" in msg
    assert "conv3d_0c_1x1.conv3d.bias (file (101,), model (400,))" in msg


def test_refusals(tmp_path):
    with pytest.raises(WeightsError, match="no I3D weights given"):
        load_i3d(None)
    with pytest.raises(WeightsError, match="not found"):
        load_i3d(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot be read"):
        load_i3d(tmp_path / "junk.pth")

    # An arbitrary (non-tensor) object: weights_only loading must refuse to build it.
    torch.save({"x": argparse.Namespace(a=1)}, tmp_path / "obj.pth")
    with pytest.raises(WeightsError, match="cannot be read"):
        load_i3d(tmp_path / "obj.pth")


def test_random_init_is_seeded():
    a, _ = load_i3d(random_init=True, seed=5)
    b, _ = load_i3d(random_init=True, seed=5)
    assert torch.equal(a.mixed_3b.branch_1[1].conv3d.weight, b.mixed_3b.branch_1[1].conv3d.weight)
    assert not a.training


def test_random_init_keeps_features_at_unit_scale():
    # He init: a random I3D's features must not vanish (PyTorch's default init gives ~1e-6,
    # which float16 feature maps would store as subnormals or zeros).
    m, _ = load_i3d(random_init=True, seed=0)
    x = torch.randn(1, 3, 16, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feat, fmap = m(x)
    assert feat.shape == (1, 1024) and fmap.shape == (1, 1024, 4, 4)
    assert 0.05 < fmap.abs().mean().item() < 50
    assert (fmap.half() != 0).float().mean().item() > 0.3
