"""benchmarks/gpu_check.sh's machinery, cheaply: step selection, the summary text and JSON
(written when a step fails, times out or runs out of budget), DALI from wheel parts, and the
goals table read from benchmark JSON files. The full `--cpu-dry-run` takes minutes; it is run
by hand (see the script's header), not here.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = [
    "env",
    "dali",
    "build",
    "test_ops",
    "test_tsa",
    "test_extract",
    "memcheck",
    "racecheck",
    "bench_ops",
    "bench_tsa",
    "bench_extract",
    "bench_tsa_reference",
    "goals",
]

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and coreutils timeout"
)


def run(*args, python=sys.executable, env=None, timeout=120):
    full_env = dict(os.environ, PYTHON=str(python), **(env or {}))
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full_env, timeout=timeout
    )


def summary(out):
    with open(out / "summary.json") as f:
        data = json.load(f)
    return data, {s["name"]: s for s in data["steps"]}


def test_list_names_every_step_in_order():
    proc = run("--list")
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == STEPS


def test_unknown_step_or_argument_is_refused(tmp_path):
    assert run("--steps", "env,nope", "--out", str(tmp_path)).returncode == 2
    assert run("--frobnicate").returncode == 2


def test_selected_steps_run_and_the_rest_are_listed_as_skipped(tmp_path):
    proc = run("--cpu-dry-run", "--no-build", "--steps", "env,build", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data, steps = summary(tmp_path)
    assert data["mode"] == "cpu-dry-run" and data["finished"] is True and data["ok"] is True
    assert [s["name"] for s in data["steps"]] == STEPS
    for name in ("env", "build"):
        assert steps[name]["status"] == "ok" and steps[name]["rc"] == 0
        assert isinstance(steps[name]["seconds"], int) and steps[name]["log"] == f"{name}.log"
    assert "torch" in (tmp_path / "env.log").read_text()
    assert "built_with_cuda" in (tmp_path / "build.log").read_text()
    assert "--no-build" in steps["build"]["note"]
    for name in set(STEPS) - {"env", "build"}:
        assert steps[name]["status"] == "skipped" and steps[name]["rc"] is None
        assert "not selected" in steps[name]["note"]
    text = (tmp_path / "summary.txt").read_text()
    assert "overall: ok" in text and "env.log" in text


def fake_python(tmp_path, body):
    path = tmp_path / "fake-python"
    path.write_text("#!/usr/bin/env bash\n" + body + "\n")
    path.chmod(0o755)
    return path


def test_failing_step_is_recorded_and_fails_the_run(tmp_path):
    out = tmp_path / "out"
    proc = run("--steps", "env", "--out", str(out), python=fake_python(tmp_path, "exit 3"))
    assert proc.returncode == 1
    data, steps = summary(out)
    assert data["ok"] is False and data["finished"] is True
    assert steps["env"]["status"] == "failed" and steps["env"]["rc"] == 3
    assert "overall: FAILED" in (out / "summary.txt").read_text()


def test_step_past_its_limit_is_killed_and_recorded_as_timeout(tmp_path):
    out = tmp_path / "out"
    proc = run(
        "--steps",
        "env",
        "--out",
        str(out),
        python=fake_python(tmp_path, "sleep 60"),
        env={"GPU_CHECK_TIMEOUT_ENV": "1"},
        timeout=30,
    )
    assert proc.returncode == 1
    data, steps = summary(out)
    assert steps["env"]["status"] == "timeout" and steps["env"]["rc"] == 124
    assert "killed after 1s" in steps["env"]["note"] and steps["env"]["seconds"] <= 5
    assert data["ok"] is False


def test_steps_left_without_budget_fail_the_run(tmp_path):
    proc = run("--steps", "env,goals", "--budget", "0", "--out", str(tmp_path))
    assert proc.returncode == 1
    data, steps = summary(tmp_path)
    assert steps["env"]["status"] == "no_time" and steps["goals"]["status"] == "no_time"
    assert data["ok"] is False


def make_wheel(folder, version):
    """A pure-Python wheel holding nvidia/dali/__init__.py (a stand-in for DALI's wheels)."""
    name = f"fake_dali-{version}-py3-none-any.whl"
    info = f"fake_dali-{version}.dist-info"
    files = {
        "nvidia/__init__.py": "",  # as the real nvidia-* wheels (a regular package)
        "nvidia/dali/__init__.py": f"__version__ = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: fake-dali\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{p},,\n" for p in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(folder / name, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return name


@pytest.mark.parametrize("pip", [True, False], ids=["pip", "no-pip"])
def test_dali_installed_from_wheel_parts(tmp_path, pip):
    # Parts as a DALI wheel download is packed for a machine without internet: a tar, split.
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "0.0.7")
    parts = tmp_path / "dali" / "parts"
    parts.mkdir(parents=True)
    tar = subprocess.run(["tar", "cf", "-", "-C", str(wheels), "."], capture_output=True, check=True)
    subprocess.run(["split", "-b", "300", "-", str(parts / "p_")], input=tar.stdout, check=True)
    assert len(list(parts.glob("p_*"))) > 1
    out = tmp_path / "out"
    python = (
        sys.executable
        if pip
        else fake_python(tmp_path, f'[ "$1 $2" = "-m pip" ] && exit 1\nexec {sys.executable} "$@"')
    )
    proc = run(
        "--steps",
        "dali",
        "--dali-parts",
        str(tmp_path / "dali"),
        "--out",
        str(out),
        python=python,
        env={"TMPDIR": str(tmp_path)},
    )
    assert proc.returncode == 0, (out / "dali.log").read_text()
    _, steps = summary(out)
    assert steps["dali"]["status"] == "ok"
    log = (out / "dali.log").read_text()
    assert "dali 0.0.7" in log
    assert ("no pip" in log) != pip


def bench_json(path, machine, benches):
    path.write_text(
        json.dumps(
            {
                "machine_info": machine,
                "benchmarks": [
                    {"name": name, "params": params, "stats": {"median": median}, "extra_info": extra}
                    for name, params, median, extra in benches
                ],
            }
        )
    )


def test_goals_table_is_read_from_the_benchmark_json(tmp_path):
    machine = {"cuda_device": "NVIDIA H200", "torch": "2.11.0"}
    fb = "test_step_attention_forward_backward"
    bench_json(
        tmp_path / "bench_ops.json",
        machine,
        [
            ("test_step_attention_forward[voting-fused]", {"shape": "voting", "impl": "fused"}, 0.0005, {}),
            ("test_segment_resample_forward_backward[fused]", {"impl": "fused"}, 0.002, {}),
            ("test_segment_resample_forward_backward[batched_torch]", {"impl": "batched_torch"}, 0.006, {}),
            (f"{fb}[training-fused]", {"shape": "training", "impl": "fused"}, 0.001, {}),
            (f"{fb}[training-eager_gathered]", {"shape": "training", "impl": "eager_gathered"}, 0.004, {}),
            (f"{fb}[training-sdpa_gathered]", {"shape": "training", "impl": "sdpa_gathered"}, 0.002, {}),
        ],
    )
    bench_json(
        tmp_path / "bench_tsa.json",
        machine,
        [
            ("test_train_step_fdperf", None, 0.003, {}),
            ("test_epoch_fdperf", None, 0.5, {}),
            ("test_voting_fdperf", None, 0.04, {}),
        ],
    )
    bench_json(
        tmp_path / "bench_extract.json",
        machine,
        [
            ("test_gpu_e2e_jpeg_folders", None, 1.0, {"videos_per_s": 256.0}),
            ("test_gpu_h264_720p_parallel_readers[1]", {"readers": 1}, 1.0, {"frames_per_s": 1500.0}),
            ("test_gpu_h264_720p_parallel_readers[4]", {"readers": 4}, 1.0, {"frames_per_s": 5200.0}),
        ],
    )
    proc = run("--steps", "goals", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    goals = json.loads((tmp_path / "goals.json").read_text())
    assert goals["card"] == "NVIDIA H200" and goals["mode"] == "gpu"
    got = {g["goal"].split(",")[0]: (round(g["measured"], 6), g["met"]) for g in goals["goals"]}
    assert got == {
        "voting attention": (0.5, True),
        "segment_resample fwd+bwd": (3.0, True),
        "step_attention fwd+bwd": (2.0, False),  # best stock (sdpa) 2 ms / fused 1 ms
        "TSA training step (8 pairs)": (3.0, False),
        "TSA epoch (2": (0.5, True),
        "voting 749 x 10": (40.0, True),
        "extraction": (256.0, True),
        "720p H.264 through parallel NVDEC readers": (5200.0, True),
    }
    table = (tmp_path / "goals.md").read_text()
    assert "| TSA training step (8 pairs) | <= 2 ms | 3 ms | no | NVIDIA H200 |" in table
    assert "goals.md" not in (tmp_path / "summary.txt").read_text()  # the table itself is there
    assert "| voting 749 x 10 |" in (tmp_path / "summary.txt").read_text()
