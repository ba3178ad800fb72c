"""`import fdperf` loads the native operators, or fails with build instructions."""
import os
import shutil
import subprocess
import sys

import fdperf


def test_native_extension_is_loaded():
    assert hasattr(fdperf._C, "built_with_cuda")
    import torch
    assert hasattr(torch.ops.fdperf, "window_argmax")


def test_missing_extension_gives_build_instructions(tmp_path):
    # A copy of the package without the compiled _C module, imported ahead of the installed one.
    src = os.path.dirname(fdperf.__file__)
    dst = tmp_path / "fdperf"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("_C*.so", "__pycache__"))
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    # Drop the editable-install finder so that the copy is what `import fdperf` finds.
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
            "sys.path.insert(0, %r); import fdperf" % str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=str(tmp_path))
    assert out.returncode != 0
    assert "fdperf's native extension (fdperf._C) is not built" in out.stderr
    assert "make build" in out.stderr


def test_public_api_names_resolve():
    for name in fdperf._EXPORTS:
        assert callable(getattr(fdperf, name)), name
    assert fdperf.load_annotations is __import__("fdperf.data", fromlist=["x"]).load_annotations
