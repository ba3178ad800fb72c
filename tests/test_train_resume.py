"""Training checkpoints: --resume on the CPU with a fixed seed ends bitwise where an
uninterrupted run ends; the CLI reads the reference YAML and documents every option."""

import json

import pytest
import torch
from conftest import undocumented_arguments

from fdperf.cli import CONFIG_OPTIONS
from fdperf.synthetic.features import make_synthetic_features
from fdperf.train import __main__ as train_cli
from fdperf.train import train
from fdperf.tsa.checkpoint import read_checkpoint

REFERENCE_YAML = """# basic
bs_train : 4
bs_test : 1
workers : 2
max_epoch : 2
pretrained_i3d_weight : 'models/model_rgb.pth'
data_root : '/opt/datasets/FINADiving_MTL_256s'
label_path : 'Annotations/fine-grained_annotation_aqa.pkl'
optimizer: 'Adam'
weight_decay : 0
base_lr : 0.001
lr_factor : 0.1
seed : 0
frame_length : 96
voter_number : 3
print_freq : 40
fix_size : 5
step_num : 3
prob_tas_threshold : 0.25
random_choosing : False
action_number_choosing: True
"""


@pytest.fixture
def tiny(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield make_synthetic_features(tmp_path / "data", n_train=16, n_test=8, seed=3)
    torch.set_num_threads(before)


class Interrupt(Exception):
    pass


def test_resume_equals_uninterrupted(tmp_path, tiny):
    store, ann = tiny
    kw = dict(
        method="TSA",
        max_epoch=3,
        bs_train=4,
        voter_number=3,
        seed=5,
        device="cpu",
        progress=False,
        prob_tas_threshold=0.34,
    )
    full = train(store, ann, tmp_path / "full", log=lambda line: None, **kw)

    def crash_after_first_epoch(line):
        if line.startswith("epoch 1/3"):
            raise Interrupt

    with pytest.raises(Interrupt):
        train(store, ann, tmp_path / "cut", log=crash_after_first_epoch, **kw)
    assert read_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 0
    lines = []
    resumed = train(store, ann, tmp_path / "cut", resume=True, log=lines.append, **kw)
    assert any("resumed" in line for line in lines)

    a, b = read_checkpoint(full.last_checkpoint), read_checkpoint(resumed.last_checkpoint)
    assert a["epoch"] == b["epoch"] == 2
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for pid, state in a["optimizer"]["state"].items():
        for k, v in state.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["optimizer"]["state"][pid][k]))
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]
    assert full.last == resumed.last
    # no temporary files are left next to the checkpoints
    assert not list((tmp_path / "cut").glob("*.tmp"))


def test_resume_refuses_another_method(tmp_path, tiny):
    store, ann = tiny
    train(
        store,
        ann,
        tmp_path / "run",
        method="F+R",
        max_epoch=1,
        bs_train=4,
        voter_number=3,
        device="cpu",
        progress=False,
        log=lambda line: None,
    )
    with pytest.raises(ValueError, match="F\\+R"):
        train(
            store,
            ann,
            tmp_path / "run",
            method="TSA",
            max_epoch=2,
            resume=True,
            device="cpu",
            progress=False,
            log=lambda line: None,
        )
    with pytest.raises(FileNotFoundError, match="resume"):
        train(store, ann, tmp_path / "none", method="TSA", resume=True, device="cpu", progress=False)


def test_cli_reads_the_reference_yaml_and_overrides_it(tmp_path, tiny, capsys):
    store, ann = tiny
    cfg = tmp_path / "FineDiving_TSA.yaml"
    cfg.write_text(REFERENCE_YAML)
    rc = train_cli.main(
        [
            str(store),
            str(tmp_path / "out"),
            "--annotations",
            ann.folder,
            "--config",
            str(cfg),
            "--max_epoch",
            "1",
            "--method",
            "F+S+R",
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    settings = summary["settings"]
    assert settings["max_epoch"] == 1 and settings["bs_train"] == 4 and settings["voter_number"] == 3
    assert settings["method"] == "F+S+R" and settings["policy"] == "dive_number"
    assert out["last_epoch"]["epoch"] == 0 and "rho" in out["last_epoch"]
    assert "best_epoch_selected_on_test_rho" in summary and "last_epoch" in summary


def test_cli_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        train_cli.main(["--help"])
    text = capsys.readouterr().out
    for key in CONFIG_OPTIONS:
        assert f"--{key}" in text
    for opt in (
        "--config",
        "--method",
        "--annotations",
        "--resume",
        "--amp",
        "--layout",
        "--eval-every",
        "--device",
        "--no-cuda-graph",
        "--policy",
    ):
        assert opt in text
    assert undocumented_arguments(text) == []
    assert "store" in text and "out" in text  # the positionals are listed (and described)


def test_undocumented_arguments_are_found():
    import argparse

    p = argparse.ArgumentParser(prog="x")
    p.add_argument("folder")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--long-option-name-over-the-column", metavar="VALUE", help="described below")
    p.add_argument("--size", type=int, help="described beside")
    assert undocumented_arguments(p.format_help()) == ["folder", "--quiet"]


def test_bf16_autocast_trains(tmp_path, tiny):
    store, ann = tiny
    res = train(
        store,
        ann,
        tmp_path / "amp",
        method="TSA",
        max_epoch=1,
        bs_train=4,
        voter_number=3,
        device="cpu",
        amp=True,
        progress=False,
        log=lambda line: None,
    )
    assert res.history[0]["loss"] > 0 and res.step_mode == "eager"
    assert -1.0 <= res.last["rho"] <= 1.0


def test_multi_view_store_trains_on_drawn_views_and_evaluates_on_eval_store(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        aug, ann = make_synthetic_features(tmp_path / "aug", n_train=16, n_test=8, seed=3, views=3)
        plain, _ = make_synthetic_features(tmp_path / "plain", n_train=16, n_test=8, seed=3)
        kw = dict(
            method="TSA",
            max_epoch=1,
            bs_train=4,
            voter_number=3,
            device="cpu",
            progress=False,
            log=lambda line: None,
        )
        with_eval = train(aug, ann, tmp_path / "a", eval_store=plain, **kw)
        assert with_eval.history[0]["loss"] > 0
        summary = json.loads(with_eval.summary_path.read_text())["settings"]
        assert summary["views"] == 3 and summary["eval_store"] == str(plain)
        lines = []
        train(aug, ann, tmp_path / "b", **{**kw, "log": lines.append})
        assert any("view 0" in line for line in lines)
        pinned = train(aug, ann, tmp_path / "c", view=2, **kw)
        assert json.loads(pinned.summary_path.read_text())["settings"]["views"] == 1
    finally:
        torch.set_num_threads(before)
