"""Native code loads lazily: `import fdperf` and the pure-Python stages work without fdperf._C,
the operators load it on first use, and a missing or mismatched build fails with instructions."""

import os
import shutil
import subprocess
import sys

import pytest

import fdperf
from fdperf import _native


def test_operators_load_the_extension():
    import torch

    import fdperf.ops  # noqa: F401

    assert hasattr(fdperf._C, "built_with_cuda")
    assert hasattr(torch.ops.fdperf, "window_argmax")


def _copy_without_extension(tmp_path, build_info=None):
    src = os.path.dirname(fdperf.__file__)
    dst = tmp_path / "fdperf"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("_C*.so", "__pycache__", "_build_info.py"))
    if build_info is not None:
        (dst / "_build_info.py").write_text(build_info)
    return tmp_path


def _run(root, code):
    # Drop the editable-install finder so that the copy is what `import fdperf` finds.
    pre = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
        f"sys.path.insert(0, {str(root)!r}); "
    )
    return subprocess.run(
        [sys.executable, "-c", pre + code],
        env=dict(os.environ, PYTHONPATH=str(root)),
        capture_output=True,
        text=True,
        cwd=str(root),
    )


def test_pure_python_parts_import_without_the_extension(tmp_path):
    root = _copy_without_extension(tmp_path)
    out = _run(
        root,
        "import fdperf, fdperf.data, fdperf.metrics, fdperf.synthetic, fdperf.report, "
        "fdperf.cli, fdperf.__main__ as m; assert 'fdperf._C' not in sys.modules; "
        "print(fdperf.__file__); m.main(['--help'])",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(str(root)) and "commands:" in out.stdout


def test_missing_extension_gives_build_instructions(tmp_path):
    out = _run(_copy_without_extension(tmp_path), "import fdperf.ops")
    assert out.returncode != 0
    assert "fdperf's native extension (fdperf._C) is not built" in out.stderr
    assert "make build" in out.stderr


def test_extension_of_another_torch_is_refused_with_both_versions(tmp_path):
    import torch

    root = _copy_without_extension(tmp_path, build_info="TORCH_VERSION = '1.0.0+old'\n")
    out = _run(root, "import fdperf.ops")
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert "built against torch 1.0.0+old" in last and f"torch {torch.__version__} is installed" in last
    assert "pip install --no-build-isolation --no-deps -e ." in last


def test_build_records_the_running_torch():
    import torch

    assert _native.built_torch_version() == torch.__version__
    _native.check_torch_version(torch.__version__, torch.__version__)
    with pytest.raises(ImportError, match="rebuild"):
        _native.check_torch_version("2.0.0", torch.__version__)


def test_public_api_names_resolve():
    names = [n for n in fdperf.__all__ if n != "__version__"]
    assert "load_annotations" in names and "run_demo" in names
    for name in names:
        assert callable(getattr(fdperf, name)), name
    assert fdperf.load_annotations is __import__("fdperf.data", fromlist=["x"]).load_annotations


def test_openmp_waits_briefly_unless_the_user_chose(tmp_path):
    # A spinning OpenMP wait made CPU training 5x slower on a shared 2-core machine.
    code = "import os, fdperf; print(os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "10000", out.stderr
    mine = subprocess.run(
        [sys.executable, "-c", code], env=dict(env, OMP_WAIT_POLICY="ACTIVE"), capture_output=True, text=True
    )
    assert mine.stdout.strip() == "None", mine.stderr
