"""fdperf installs as a standard package: `pip install --no-build-isolation .` and a wheel from
`python -m build --wheel --no-isolation`, each into a fresh venv that sees this environment's
torch and build tools (setuptools, wheel, ninja); then the console script and the operators work
from outside the repository."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _fresh_venv(path: Path) -> Path:
    # --without-pip: no bundled (old) setuptools shadowing this environment's build tools; pip
    # itself comes from this environment too and installs into the new venv.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    py = path / "bin" / "python"
    purelib = _site_packages(py)
    # A plain path line (not processed as a site dir): torch and the other dependencies of this
    # environment become importable, but not its editable fdperf.
    outer = sysconfig.get_paths()["purelib"]
    Path(purelib, "outer_env.pth").write_text(outer + "\n")
    return py


def _check_installed(py: Path, cwd: Path):
    bin_dir = py.parent
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    where = subprocess.run(
        [str(py), "-c", "import fdperf; print(fdperf.__file__)"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.returncode == 0, where.stderr
    assert str(REPO) not in where.stdout and "site-packages" in where.stdout
    helped = subprocess.run(
        [str(bin_dir / "fdperf"), "--help"], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert helped.returncode == 0 and "extract" in helped.stdout and "env" in helped.stdout
    info = subprocess.run(
        [str(bin_dir / "fdperf"), "env", "--json"], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert info.returncode == 0, info.stderr
    assert '"op step_attention": "CPU' in info.stdout
    ops = subprocess.run(
        [str(py), "-c", "import torch, fdperf.ops as o; print(o.window_argmax(torch.rand(2, 96, 2)).shape)"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    assert ops.returncode == 0 and "torch.Size([2, 2])" in ops.stdout, ops.stderr


def _site_packages(py: Path) -> str:
    return subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_pip_install_no_build_isolation(tmp_path):
    # pip runs the build with this interpreter (same compiler commands as `make build`, so the
    # kept objects in build/ext serve and nothing recompiles) and installs into the fresh venv.
    py = _fresh_venv(tmp_path / "venv")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-build-isolation",
            "--no-deps",
            "--no-index",
            "--target",
            _site_packages(py),
            str(REPO),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # --target puts the console script under <site-packages>/bin: move it where a venv has it
    script = Path(_site_packages(py), "bin", "fdperf")
    text = script.read_text().splitlines()
    (py.parent / "fdperf").write_text("\n".join([f"#!{py}", *text[1:]]) + "\n")
    (py.parent / "fdperf").chmod(0o755)
    _check_installed(py, tmp_path)


def test_wheel_builds_and_installs(tmp_path):
    pytest.importorskip("build", reason="the `build` package (requirements.txt) is needed")
    dist = tmp_path / "dist"
    out = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    wheels = list(dist.glob("fdperf-*.whl"))
    assert len(wheels) == 1
    py = _fresh_venv(tmp_path / "venv")
    out = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheels[0])],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    _check_installed(py, tmp_path)
