"""Bad input to `train` and `evaluate` (issue 14): options range-checked before loading, NaN/inf in
a store refused naming the store, video and dataset, a diverging loss named by epoch and step,
checkpoints checked against their store, resume refusing (or truthfully applying) changed
hyper-parameters, oracle transitions refused for F+R, and one-line errors with exit status 2."""

import json
import os
import pickle
import shutil

import h5py
import numpy as np
import pytest
import torch

from fdperf.evaluate import __main__ as evaluate_cli
from fdperf.evaluate import evaluate
from fdperf.features.videoset import NonFiniteFeatures, store_identity
from fdperf.options import ConfigError
from fdperf.synthetic.features import make_synthetic_features
from fdperf.train import TrainConfig, TrainingDiverged, train
from fdperf.train import __main__ as train_cli
from fdperf.tsa import build_model
from fdperf.tsa.checkpoint import StoreMismatch, model_checkpoint, read_checkpoint, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"device": "cpu", "progress": False, "log": lambda line: None}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("input")
    store, ann = make_synthetic_features(root / "data", n_train=16, n_test=8, seed=3)
    torch.manual_seed(0)
    fr = save_checkpoint(
        root / "fr.pt", model_checkpoint(build_model("F+R"), epoch=0, store_identity=store_identity(store))
    )
    return root, store, ann, fr


def _copy_store(store, dest, attrs=None, nan_row=None, dataset="features"):
    """A copy of `store` with changed attributes or one row set to NaN."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copy(store, dest)
    with h5py.File(dest, "r+") as f:
        f.attrs.update(attrs or {})
        if nan_row is not None:
            row = f[dataset][nan_row]
            row[0] = np.nan
            f[dataset][nan_row] = row
    return str(dest)


def _one_line_error(capsys, rc, *needles):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


# ---- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option,value",
    [
        ("base_lr", float("inf")),
        ("base_lr", float("nan")),
        ("base_lr", 0.0),
        ("base_lr", -1e-3),
        ("base_lr", 1e38),
        ("seed", -1),
        ("max_epoch", 0),
        ("bs_train", 0),
        ("voter_number", 0),
        ("fix_size", 0),
        ("eval_every", 0),
        ("step_num", 1),
        ("prob_tas_threshold", 1.5),
        ("prob_tas_threshold", -0.1),
        ("policy", "height"),
        ("method", "TSB"),
        ("layout", "diagonal"),
        ("view", -1),
        ("max_epoch", 2.5),
    ],
)
def test_train_config_checks_every_range(option, value):
    with pytest.raises(ConfigError, match=f"--{option}"):
        TrainConfig(**{option: value}).validate()
    assert TrainConfig(base_lr=0.5, seed=0, prob_tas_threshold=1.0).validate().base_lr == 0.5


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--seed", "-1"),
        ("--base_lr", "inf"),
        ("--base_lr", "0"),
        ("--bs_train", "0"),
        ("--prob_tas_threshold", "2"),
    ],
)
def test_train_cli_rejects_bad_values_before_loading(tmp_path, capsys, flag, value):
    # neither the store nor the annotations exist: the option must be refused first
    rc = train_cli.main(
        [
            str(tmp_path / "none.h5"),
            str(tmp_path / "out"),
            "--annotations",
            str(tmp_path / "none"),
            flag,
            value,
            "--device",
            "cpu",
        ]
    )
    err = _one_line_error(capsys, rc, flag, value)
    assert "none.h5" not in err and not (tmp_path / "out").exists()


def test_evaluate_cli_rejects_bad_values_before_loading(tmp_path, capsys):
    for flag, value in (("--voter_number", "0"), ("--seed", "-2"), ("--batch-pairs", "0")):
        rc = evaluate_cli.main(
            [
                str(tmp_path / "none.pt"),
                str(tmp_path / "none.h5"),
                str(tmp_path / "out"),
                "--annotations",
                str(tmp_path),
                flag,
                value,
            ]
        )
        err = _one_line_error(capsys, rc, flag)
        assert "none.pt" not in err


def test_train_accepts_a_config_object_equal_to_keywords(tmp_path, data):
    _, store, ann, _ = data
    kw = {"method": "F+R", "max_epoch": 1, "bs_train": 4, "voter_number": 3, "seed": 2}
    a = train(store, ann, tmp_path / "kw", **kw, **QUIET)
    b = train(
        store,
        ann,
        tmp_path / "cfg",
        config=TrainConfig(**kw, device="cpu", progress=False),
        log=lambda line: None,
    )
    wa, wb = read_checkpoint(a.last_checkpoint)["model"], read_checkpoint(b.last_checkpoint)["model"]
    assert all(torch.equal(v, wb[k]) for k, v in wa.items())
    with pytest.raises(ConfigError, match="--seed"):
        train(store, ann, tmp_path / "bad", config=TrainConfig(**kw), seed=-1)


def test_model_is_built_once_for_a_store_of_other_snippets(tmp_path, data, monkeypatch):
    _, store, ann, _ = data
    seven = str(tmp_path / "seven.h5")
    with h5py.File(store, "r") as src, h5py.File(seven, "w") as dst:
        for name in ("keys", "done"):
            dst.create_dataset(name, data=src[name][...], dtype=src[name].dtype)
        dst.create_dataset("features", data=src["features"][:, :7])
        dst.create_dataset("feature_maps", data=src["feature_maps"][:, :7])
        dst.attrs.update(dict(src.attrs), num_snippets=7)
    import fdperf.train as training

    calls = []
    real = training.build_model
    monkeypatch.setattr(training, "build_model", lambda *a, **k: calls.append(k) or real(*a, **k))
    res = train(seven, ann, tmp_path / "out", method="TSA", max_epoch=1, bs_train=4, voter_number=2, **QUIET)
    assert len(calls) == 1 and calls[0]["in_channels"] == 7
    assert read_checkpoint(res.last_checkpoint)["config"]["in_channels"] == 7


# ---- non-finite values ----------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["features", "feature_maps"])
def test_nan_in_the_store_is_refused_by_train_and_evaluate(tmp_path, data, dataset, capsys):
    root, store, ann, fr = data
    bad = _copy_store(store, tmp_path / "nan.h5", nan_row=3, dataset=dataset)  # a training video
    with pytest.raises(NonFiniteFeatures, match=f"nan.h5: dataset '{dataset}'.*synthetic/3"):
        train(bad, ann, tmp_path / "t", method="TSA", max_epoch=1, bs_train=4, voter_number=2, **QUIET)
    tsa = save_checkpoint(tmp_path / "tsa.pt", model_checkpoint(build_model("TSA"), epoch=0))
    with pytest.raises(NonFiniteFeatures, match="synthetic/3"):
        evaluate(tsa, bad, ann, tmp_path / "e", voter_number=4, device="cpu", log=lambda line: None)
    if dataset == "features":  # F+R reads only the features; the voting command says it in one line
        rc = evaluate_cli.main(
            [
                str(fr),
                bad,
                str(tmp_path / "cli"),
                "--annotations",
                ann.folder,
                "--voter_number",
                "4",
                "--device",
                "cpu",
            ]
        )
        _one_line_error(capsys, rc, "nan.h5", "synthetic/3", "'features'")
        assert not (tmp_path / "cli" / "metrics.json").exists()


def test_a_diverging_loss_is_named_by_epoch_and_step(tmp_path, data):
    _, store, ann, _ = data
    with pytest.raises(TrainingDiverged, match=r"epoch 1/2, step \d/4: the loss became nan"):
        train(
            store,
            ann,
            tmp_path / "d",
            method="TSA",
            max_epoch=2,
            bs_train=4,
            voter_number=2,
            base_lr=1e8,
            **QUIET,
        )
    assert not (tmp_path / "d" / "last.pt").exists()  # no checkpoint of diverged weights
    # one step per epoch: the exploded weights show first in the test votes
    with pytest.raises(TrainingDiverged, match="epoch 1/2, step 1/1: the test votes became non-finite"):
        train(
            store,
            ann,
            tmp_path / "v",
            method="F+R",
            max_epoch=2,
            bs_train=16,
            voter_number=2,
            base_lr=1e20,
            **QUIET,
        )
    assert not (tmp_path / "v" / "last.pt").exists() and not (tmp_path / "v" / "best.pt").exists()


def test_non_finite_weights_do_not_give_a_silent_vote(tmp_path, data):
    _, store, ann, _ = data
    model = build_model("F+R")
    with torch.no_grad():
        model.mlp[-1].bias.fill_(float("nan"))
    ck = save_checkpoint(tmp_path / "nan.pt", model_checkpoint(model, epoch=0))
    with pytest.raises(ValueError, match="nan.pt: voting gave a non-finite score"):
        evaluate(ck, store, ann, tmp_path / "e", voter_number=2, device="cpu", log=lambda line: None)
    assert not (tmp_path / "e" / "metrics.json").exists()


# ---- provenance ------------------------------------------------------------------------------------


def test_evaluate_refuses_a_store_of_another_i3d(tmp_path, data, capsys):
    root, store, ann, fr = data
    other = _copy_store(store, tmp_path / "other.h5", attrs={"weights_sha256": "0badc0ffee"})
    with pytest.raises(StoreMismatch, match="weights_sha256: checkpoint 'random-init', store '0badc0ffee'"):
        evaluate(fr, other, ann, tmp_path / "e", voter_number=2, device="cpu")
    args = [
        str(fr),
        other,
        str(tmp_path / "cli"),
        "--annotations",
        ann.folder,
        "--voter_number",
        "2",
        "--device",
        "cpu",
    ]
    _one_line_error(capsys, evaluate_cli.main(args), "--allow-store-mismatch", "0badc0ffee", "random-init")
    assert evaluate_cli.main(args + ["--allow-store-mismatch"]) == 0
    check = json.loads((tmp_path / "cli" / "metrics.json").read_text())["store_check"]
    assert check["status"] == "mismatch-allowed" and "0badc0ffee" in check["differences"][0]
    assert "warning" in capsys.readouterr().err
    same = evaluate(fr, store, ann, tmp_path / "same", voter_number=2, device="cpu")
    assert same.metrics["store_check"] == {"status": "match"}
    old = save_checkpoint(tmp_path / "old.pt", model_checkpoint(build_model("F+R"), epoch=0))
    lines = []
    unrecorded = evaluate(old, other, ann, tmp_path / "old", voter_number=2, device="cpu", log=lines.append)
    assert unrecorded.metrics["store_check"] == {"status": "unrecorded"}
    assert any("does not record" in line for line in lines)


def test_resume_checks_store_and_settings_and_applies_allowed_changes(tmp_path, data):
    _, store, ann, _ = data
    kw = {
        "method": "F+R",
        "max_epoch": 2,
        "bs_train": 4,
        "voter_number": 2,
        "device": "cpu",
        "progress": False,
    }

    def stop_after_first_epoch(line):
        if line.startswith("epoch 1/2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(store, ann, tmp_path / "run", log=stop_after_first_epoch, **kw)
    ck = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["store_identity"] == store_identity(store)
    other = _copy_store(store, tmp_path / "other.h5", attrs={"preprocess": "aspect"})
    with pytest.raises(StoreMismatch, match="preprocess: checkpoint None, store 'aspect'"):
        train(other, ann, tmp_path / "run", resume=True, log=lambda line: None, **kw)
    with pytest.raises(ConfigError, match="--base_lr: checkpoint 0.001, now 0.5.*--allow-config-change"):
        train(store, ann, tmp_path / "run", resume=True, base_lr=0.5, log=lambda line: None, **kw)
    assert read_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 0  # refused: untouched
    lines = []
    train(
        other,
        ann,
        tmp_path / "run",
        resume=True,
        base_lr=0.5,
        allow_config_change=True,
        allow_store_mismatch=True,
        log=lines.append,
        **kw,
    )
    last = read_checkpoint(tmp_path / "run" / "last.pt")
    assert last["epoch"] == 1
    assert [g["lr"] for g in last["optimizer"]["param_groups"]] == [0.5]  # applied to Adam
    settings = json.loads((tmp_path / "run" / "train_summary.json").read_text())["settings"]
    assert settings["base_lr"] == 0.5 and settings["config_changes"] == [
        {"epoch": 1, "base_lr": [0.001, 0.5]}
    ]
    assert settings["store_check"]["status"] == "mismatch-allowed"
    assert any("base_lr 0.001 -> 0.5" in line for line in lines)
    assert any("warning" in line and "aspect" in line for line in lines)


# ---- transitions and one-line errors --------------------------------------------------------------


def test_oracle_transitions_are_refused_for_methods_without_them(tmp_path, data, capsys):
    _, store, ann, fr = data
    with pytest.raises(ConfigError, match="--transitions oracle.*F\\+R"):
        evaluate(fr, store, ann, tmp_path / "e", transitions="oracle", device="cpu")
    rc = evaluate_cli.main(
        [
            str(fr),
            store,
            str(tmp_path / "cli"),
            "--annotations",
            ann.folder,
            "--transitions",
            "oracle",
            "--device",
            "cpu",
        ]
    )
    _one_line_error(capsys, rc, "--transitions oracle", "F+R")
    assert not (tmp_path / "cli" / "metrics.json").exists()


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo exploited",))


def _bad_annotations(tmp_path, ann, name, obj):
    folder = tmp_path / name
    shutil.copytree(ann.folder, folder)
    with open(folder / "train_split.pkl", "wb") as f:
        pickle.dump(obj, f, protocol=3)
    return str(folder)


def test_train_and_evaluate_errors_are_one_line_with_exit_status_2(tmp_path, data, capsys):
    root, store, ann, fr = data
    out = str(tmp_path / "out")
    small, _ = make_synthetic_features(tmp_path / "small", n_train=4, n_test=2, seed=1)
    unsafe = _bad_annotations(tmp_path, ann, "unsafe", [_Exploit()])
    bad_split = _bad_annotations(tmp_path, ann, "split", [("synthetic", 999)])
    cases = [  # (arguments after STORE OUT for train, words the message must hold)
        (["--annotations", unsafe], ["train_split.pkl", "refusing"]),
        (["--annotations", bad_split], ["train_split.pkl", "999"]),
        (["--annotations", ann.folder, "--device", "tpu"], ["--device"]),
        (["--annotations", ann.folder, "--config", str(tmp_path / "none.yaml")], ["none.yaml"]),
        (["--annotations", str(tmp_path / "nowhere")], ["nowhere"]),
    ]
    for extra, words in cases:
        rc = train_cli.main([store, out, "--max_epoch", "1", "--no-progress", *extra])
        _one_line_error(capsys, rc, *words)
    rc = train_cli.main([str(tmp_path / "none.h5"), out, "--annotations", ann.folder, "--device", "cpu"])
    _one_line_error(capsys, rc, "none.h5")
    rc = train_cli.main([small, out, "--annotations", ann.folder, "--device", "cpu", "--no-progress"])
    _one_line_error(capsys, rc, "not in feature store")
    ev = [str(fr), store, out, "--device", "cpu", "--voter_number", "2"]
    for extra, words in [
        (["--annotations", unsafe], ["refusing"]),
        (["--annotations", ann.folder, "--config", str(tmp_path / "x.yaml")], ["x.yaml"]),
    ]:
        _one_line_error(capsys, evaluate_cli.main(ev + extra), *words)
    _one_line_error(
        capsys,
        evaluate_cli.main([str(tmp_path / "none.pt")] + ev[1:] + ["--annotations", ann.folder]),
        "none.pt",
    )
    _one_line_error(
        capsys,
        evaluate_cli.main([str(fr), small, out, "--annotations", ann.folder, "--device", "cpu"]),
        "not in feature store",
    )
    with pytest.raises(ConfigError):  # --debug shows the error itself
        evaluate_cli.main(ev + ["--annotations", ann.folder, "--seed", "-1", "--debug"])
    with pytest.raises(SystemExit) as exit_:  # argparse: a bad choice is a usage error too
        evaluate_cli.main(ev + ["--split", "validation"])
    assert exit_.value.code == 2 and "Traceback" not in capsys.readouterr().err


def test_eval_store_of_another_i3d_is_refused_or_recorded(tmp_path, data):
    _, store, ann, _ = data
    other = _copy_store(store, tmp_path / "other.h5", attrs={"weights_sha256": "0badc0ffee"})
    kw = {
        "method": "F+R",
        "max_epoch": 1,
        "bs_train": 4,
        "voter_number": 2,
        "device": "cpu",
        "progress": False,
        "eval_store": other,
        "log": lambda line: None,
    }
    with pytest.raises(StoreMismatch, match="--eval-store .*0badc0ffee"):
        train(store, ann, tmp_path / "refused", **kw)
    res = train(store, ann, tmp_path / "allowed", allow_store_mismatch=True, **kw)
    check = json.loads(res.summary_path.read_text())["settings"]["eval_store_check"]
    assert check["status"] == "mismatch-allowed" and "0badc0ffee" in check["differences"][0]
