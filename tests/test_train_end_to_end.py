"""End-to-end training (I3D fine-tuned with the TSA head), on the CPU at small sizes: one step
equals a reference-style step, the device augmentation equals PIL's, evaluation features equal the
extractor's, resume equals an uninterrupted run, and the reference last.pth export loads back."""

import copy
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import write_annotation_set
from PIL import Image
from reference_tsa import ReferenceTSA

from fdperf.backbone import load_i3d
from fdperf.backbone.weights import random_i3d
from fdperf.extract import ExtractOptions, Inputs, extract_features
from fdperf.features import FeatureStore
from fdperf.options import ConfigError
from fdperf.train import __main__ as train_cli
from fdperf.train.clips import CENTRE_TOP, Draw, FrameCache, mirror_symmetric
from fdperf.train.e2e_model import EndToEnd, optimizer_groups
from fdperf.train.end_to_end import export_reference, train_end_to_end
from fdperf.tsa import TSA
from fdperf.tsa.checkpoint import import_reference_checkpoint, read_checkpoint
from fdperf.video import MEAN, STD

pytestmark = pytest.mark.usefixtures("one_thread")

KEYS = [("01", 1), ("01", 2), ("01", 3), ("01", 4)]  # two training, two test videos
FRAME_HW = (36, 64)  # 64 wide: a column table that is NOT mirror-symmetric


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    samples = {k: ("107b", 50.0 + 7 * i, 3.0, [9 + i, 12, 11 - i], [1, 20, 36]) for i, k in enumerate(KEYS)}
    ann = write_annotation_set(str(root / "Annotations"), samples, KEYS[:2], KEYS[2:])
    for ev, ix in KEYS:
        d = root / "frames" / ev / str(ix)
        d.mkdir(parents=True)
        rng = np.random.default_rng(ix)
        for f in range(24):
            Image.fromarray(rng.integers(0, 255, FRAME_HW + (3,), dtype=np.uint8)).save(d / f"{f:05d}.jpg")
    return ann, str(root / "frames")


def _kw(frames, **extra):
    kw = dict(
        inputs=Inputs(frames_root=frames),
        random_init=True,
        num_snippets=1,
        bs_train=1,
        voter_number=1,
        device="cpu",
        progress=False,
        seed=4,
        reader=ExtractOptions(device="cpu", batch_videos=2, progress=False),
    )
    kw.update(extra)
    return kw


# ---- (a) one step against a reference-style step ----------------------------------------------


def _ref_step(model: EndToEnd, clips, y, gt):
    """The published helper's order: I3D on video 1 and on video 2, PSNet on features and maps,
    per-sample F.interpolate segments, the decoder per step, the reference loss."""
    model.backbone.train()
    for m in model.backbone.modules():  # fix_bn
        if isinstance(m, torch.nn.BatchNorm3d):
            m.eval()
    model.head.train()
    f1, m1 = model.backbone(clips[:1, :, :16])
    f2, m2 = model.backbone(clips[1:, :, :16])
    f1, f2, m1, m2 = f1[:, None], f2[:, None], m1[:, None], m2[:, None]
    delta, probs, _ = ReferenceTSA(model.head).pair_deltas(f1, m1, f2, m2, gt[:1], gt[1:], training=True)
    target = torch.zeros_like(probs).scatter_(1, gt.unsqueeze(1), 1.0)
    loss = (
        F.mse_loss(delta[:1], y[:1] - y[1:])
        + F.mse_loss(delta[1:], y[1:] - y[:1])
        + F.binary_cross_entropy(probs, target)
    )
    loss.backward()
    return loss


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def test_step_equals_reference_style_step():
    """Loss and every gradient within float32 tolerance of the reference-style step. I3D's
    float32 backward through ~20 layers is itself only good to ~0.5% (against float64) in its
    first layers, whatever the batching, so the yardstick is the reference-style step in float64:
    fdperf's float32 gradients must be as close to it as the reference-style float32 ones."""
    torch.manual_seed(0)
    model = EndToEnd(random_i3d(1), TSA(in_channels=1), [0]).train()
    ref, ref64 = copy.deepcopy(model), copy.deepcopy(model).double()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items() if "running" in k}
    clips = torch.randn(2, 3, 16, 112, 112)
    y = torch.tensor([61.5, 48.0])
    gt = torch.tensor([[30, 70], [20, 60]])
    loss, reported, deltas = model(clips, torch.arange(2), y, gt, torch.zeros(2, dtype=torch.long), True)
    loss.backward()
    ref_loss = _ref_step(ref, clips, y, gt)
    loss64 = _ref_step(ref64, clips.double(), y.double(), gt)
    assert torch.allclose(loss, ref_loss, rtol=1e-5), (loss, ref_loss)
    assert abs(loss.item() - loss64.item()) <= 1e-5 * loss64.item()
    ours, theirs = dict(model.named_parameters()), dict(ref.named_parameters())
    checked = 0
    for name, p in ref64.named_parameters():
        if not p.requires_grad:  # the Kinetics logits: not trained, as in the reference
            assert "conv3d_0c_1x1" in name and ours[name].grad is None
            continue
        err = _rel(ours[name].grad.double(), p.grad)
        ref_err = _rel(theirs[name].grad.double(), p.grad)
        assert err <= 3 * ref_err + 1e-5, (name, err, ref_err)
        checked += 1
    assert checked == sum(p.requires_grad for p in model.parameters()) > 250
    bn = model.backbone.conv3d_1a_7x7.batch3d
    assert bn.weight.grad.abs().sum() > 0 and bn.bias.grad.abs().sum() > 0  # affine trained
    for k, v in model.backbone.state_dict().items():  # statistics fixed
        if "running" in k:
            assert torch.equal(v, before[k]), k


def test_optimizer_groups_follow_the_reference():
    model = EndToEnd(random_i3d(0), TSA(in_channels=1), [0])
    groups = optimizer_groups(model, 1e-3, 0.1)
    assert [g["name"] for g in groups] == ["i3d", "psnet", "decoder", "regressor"]
    assert groups[0]["lr"] == pytest.approx(1e-4) and all(g["lr"] == 1e-3 for g in groups[1:])
    i3d = {id(p) for p in groups[0]["params"]}
    assert id(model.backbone.conv3d_0c_1x1.conv3d.weight) not in i3d
    assert len(i3d) == sum(1 for n, p in model.backbone.named_parameters() if "conv3d_0c" not in n)


# ---- (b) the device augmentation against PIL -----------------------------------------------------


def _pil_reference(frames: np.ndarray, flip: bool, top: int) -> torch.Tensor:
    """RandomHorizontalFlip, Resize((200, 112), NEAREST), crop at (top, 0), ToTensor, Normalize."""
    out = []
    for f in frames:
        img = Image.fromarray(f)
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        img = img.resize((112, 200), Image.NEAREST).crop((0, top, 112, top + 112))
        out.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float().div(255))
    x = torch.stack(out, 1)  # [3, T, 112, 112]
    mean = torch.tensor(MEAN).view(3, 1, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1, 1)
    return x.sub(mean).div(std)


@pytest.mark.parametrize("width", [64, 455])
def test_device_augmentation_equals_pil(width):
    assert mirror_symmetric(width) == (width == 455)
    rng = np.random.default_rng(width)
    frames = rng.integers(0, 256, (3, 61, width, 3), dtype=np.uint8)
    cache = FrameCache([("a", 1)], None, None, torch.device("cpu"))  # no reader: frames are put
    cache.put(0, torch.from_numpy(frames))
    for flip, top in [(False, 0), (True, 0), (True, 88), (False, 37), (True, 51)]:
        got = cache.train_clips(torch.tensor([0]), Draw(torch.tensor([flip]), torch.tensor([top])))[0]
        assert torch.equal(got, _pil_reference(frames, flip, top)), (flip, top)
    assert torch.equal(cache.test_clips([0])[0], _pil_reference(frames, False, CENTRE_TOP))


# ---- evaluation features = the extractor's ------------------------------------------------------


def test_evaluation_features_equal_the_extractor(tmp_path, dataset):
    ann, frames = dataset
    store = tmp_path / "feats.h5"
    with pytest.warns(UserWarning):
        extract_features(
            store,
            KEYS[:2],
            Inputs(frames_root=frames),
            random_init=True,
            options=ExtractOptions(
                device="cpu", num_snippets=1, fuse=False, channels_last=False, progress=False, seed=4
            ),
        )
    feats, maps = FeatureStore(str(store)).load()
    from fdperf.train.end_to_end import EndToEndConfig, eval_features, setup

    run = setup(EndToEndConfig(**_kw(frames)).validate(), ann, torch.device("cpu"))
    try:
        run.cache.ensure([0, 1])
        run.model.eval()
        f, m = eval_features(run, [0, 1])
    finally:
        run.cache.close()
    assert torch.equal(f, feats) and torch.equal(m, maps)


# ---- (c) resume, export, CLI -----------------------------------------------------------------


class Interrupt(Exception):
    pass


def test_resume_equals_uninterrupted_and_export(tmp_path, dataset):
    ann, frames = dataset
    kw = _kw(frames, max_epoch=2, eval_every=2, prob_tas_threshold=0.5)
    full = train_end_to_end(ann, tmp_path / "full", log=lambda line: None, **kw)

    def crash_after_first_epoch(line):
        if line.startswith("epoch 1/2"):
            raise Interrupt

    with pytest.raises(Interrupt):
        train_end_to_end(ann, tmp_path / "cut", log=crash_after_first_epoch, **kw)
    lines = []
    resumed = train_end_to_end(ann, tmp_path / "cut", resume=True, log=lines.append, **kw)
    assert any("resumed" in line for line in lines)
    a, b = read_checkpoint(full.last_checkpoint), read_checkpoint(resumed.last_checkpoint)
    assert a["epoch"] == b["epoch"] == 1
    for part in ("model", "i3d"):
        for k, v in a[part].items():
            assert torch.equal(v, b[part][k]), (part, k)
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]
    assert full.last == resumed.last and "rho" in full.last
    assert [h["decoded_videos"] for h in full.history] == [2, 0]  # epoch 2 decodes nothing
    with pytest.raises(ConfigError, match="--lr_factor: checkpoint 0.1, now 0.2"):
        train_end_to_end(
            ann, tmp_path / "cut", resume=True, log=lambda line: None, **dict(kw, lr_factor=0.2, max_epoch=3)
        )
    # the I3D weights moved, and the exported reference checkpoint holds them
    start, _ = load_i3d(None, random_init=True, seed=4)
    assert not torch.equal(start.mixed_5c.branch_0.conv3d.weight, a["i3d"]["mixed_5c.branch_0.conv3d.weight"])
    pth = export_reference(full.last_checkpoint, tmp_path / "last.pth")
    head, i3d_state, _ = import_reference_checkpoint(pth)
    loaded, _ = load_i3d(pth)  # what `fdperf.extract --weights last.pth` loads
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, a["i3d"][k]) and torch.equal(i3d_state[k], a["i3d"][k]), k
    for k, v in head.state_dict().items():
        assert torch.equal(v, a["model"][k]), k
    loaded, _ = load_i3d(full.last_checkpoint)  # an fdperf end-to-end checkpoint directly
    assert torch.equal(loaded.conv3d_1a_7x7.conv3d.weight, a["i3d"]["conv3d_1a_7x7.conv3d.weight"])


def test_load_i3d_reads_a_reference_last_pth(tmp_path):
    """`fdperf extract --weights last.pth`: base_model keys are `module.backbone.*` (the reference's
    wrapper), and the reference stores numpy scalars next to them (rho_best)."""
    from fdperf.tsa.checkpoint import export_reference_checkpoint

    state = random_i3d(3).state_dict()
    path = export_reference_checkpoint(TSA(in_channels=1), tmp_path / "last.pth", i3d_state=state)
    obj = torch.load(path, weights_only=True)
    assert all(k.startswith("module.backbone.") for k in obj["base_model"])
    obj["rho_best"] = np.float64(0.91)
    torch.save(obj, path)
    loaded, _ = load_i3d(path)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_cli_refuses_missing_weights_and_inputs(tmp_path, dataset, capsys):
    ann, frames = dataset
    assert (
        train_cli.main(["--end-to-end", str(tmp_path / "o"), "--annotations", ann, "--frames-root", frames])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--weights" in err[0]
    assert train_cli.main(["--end-to-end", str(tmp_path / "o"), "--annotations", ann, "--random-init"]) == 2
    assert "--frames-root" in capsys.readouterr().err
    assert (
        train_cli.main(
            [
                "--end-to-end",
                str(tmp_path / "o"),
                "--annotations",
                ann,
                "--frames-root",
                frames,
                "--random-init",
                "--lr_factor",
                "-1",
            ]
        )
        == 2
    )
    assert "--lr_factor" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")


# ---- (d) torchrun: two CPU processes against one ----------------------------------------------


def test_torchrun_two_processes_equal_one(tmp_path, dataset):
    """Each rank runs I3D on its pair of the global batch of two; the gathered features give
    every rank the one-process head and loss, and DDP's averaged I3D gradient is the
    one-process gradient. Same weights up to float32 summation order (documented tolerance:
    1e-5 relative per tensor after one Adam step)."""
    import subprocess
    import sys

    from test_extract import REPO

    ann, frames = dataset
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "fdperf.train",
        "--end-to-end",
        str(out),
        "--annotations",
        ann,
        "--frames-root",
        frames,
        "--random-init",
        "--num-snippets",
        "1",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--max_epoch",
        "1",
        "--bs_train",
        "2",
        "--voter_number",
        "1",
        "--seed",
        "4",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = train_end_to_end(
        ann, tmp_path / "one", log=lambda line: None, **_kw(frames, max_epoch=1, bs_train=2)
    )
    a, b = read_checkpoint(one.last_checkpoint), read_checkpoint(out / "last.pt")
    assert b["settings"]["world_size"] == 2 and a["settings"]["world_size"] == 1
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 1  # rank 0 writes alone
    for part in ("model", "i3d"):
        for k, v in a[part].items():
            if v.is_floating_point():
                assert _rel(b[part][k].double(), v.double()) <= 1e-5, (part, k)
    start = load_i3d(None, random_init=True, seed=4)[0].state_dict()
    trained = [k for k in start if "running" not in k and "num_batches" not in k and "conv3d_0c" not in k]
    assert len(trained) == 171 and all(not torch.equal(start[k], b["i3d"][k]) for k in trained)
    assert b["history"][0]["loss"] == pytest.approx(a["history"][0]["loss"], rel=1e-5)
    assert b["history"][0]["test"]["rho"] == pytest.approx(a["history"][0]["test"]["rho"], abs=1e-6)


def test_checkpoint_activations_give_the_same_gradients():
    torch.manual_seed(0)
    plain = EndToEnd(random_i3d(2), TSA(in_channels=1), [0]).train()
    ckpt = copy.deepcopy(plain)
    ckpt.checkpoint_activations = True
    clips = torch.randn(2, 3, 16, 112, 112)
    args = (
        torch.arange(2),
        torch.tensor([55.0, 60.0]),
        torch.tensor([[30, 70], [20, 60]]),
        torch.zeros(2, dtype=torch.long),
        True,
    )
    plain(clips, *args)[0].backward()
    ckpt(clips, *args)[0].backward()
    theirs = dict(ckpt.named_parameters())
    for name, p in plain.named_parameters():
        if p.grad is not None:
            assert torch.allclose(theirs[name].grad, p.grad, rtol=1e-5, atol=1e-7), name


CUDA = torch.cuda.is_available()


@pytest.mark.skipif(
    not CUDA,
    reason="needs a CUDA device: bf16 autocast, channels_last_3d, DALI "
    "mixed (nvJPEG) decoding and frames resident on the GPU",
)
def test_cuda_paths(tmp_path, dataset):
    from fdperf.train.end_to_end import EndToEndConfig, setup

    ann, frames = dataset
    kw = _kw(
        frames,
        device="cuda",
        bs_train=2,
        max_epoch=2,
        reader=ExtractOptions(device="cuda", batch_videos=2, progress=False),
    )
    gpu = setup(EndToEndConfig(**kw).validate(), ann, torch.device("cuda"))
    cpu = setup(EndToEndConfig(**_kw(frames)).validate(), ann, torch.device("cpu"))
    try:
        assert gpu.model.amp and gpu.model.channels_last
        assert gpu.model.backbone.conv3d_1a_7x7.conv3d.weight.is_contiguous(
            memory_format=torch.channels_last_3d
        )
        gpu.cache.ensure(range(4))
        cpu.cache.ensure(range(4))
        assert gpu.cache.frames.is_cuda and gpu.cache.frames.dtype == torch.uint8
        # nvJPEG and libjpeg may round a few pixels differently
        diff = (gpu.cache.frames.cpu().int() - cpu.cache.frames.int()).abs().float()
        assert diff.mean() < 1.0, diff.mean()
        clips = gpu.cache.test_clips([0, 1])
        y = torch.tensor([55.0, 60.0], device="cuda")
        gt = torch.tensor([[30, 70], [20, 60]], device="cuda")
        args = (torch.arange(2, device="cuda"), y, gt, torch.zeros(2, dtype=torch.long, device="cuda"), True)
        loss_bf16 = gpu.model(clips, *args)[1]
        gpu.model.amp = False
        loss_fp32 = gpu.model(clips, *args)[1]
        assert abs(loss_bf16.item() - loss_fp32.item()) <= 0.05 * loss_fp32.item()
    finally:
        gpu.cache.close()
        cpu.cache.close()
    result = train_end_to_end(ann, tmp_path / "gpu", log=lambda line: None, **kw)
    assert [h["decoded_videos"] for h in result.history] == [2, 0]
    assert all(np.isfinite(h["loss"]) for h in result.history) and "rho" in result.last
