"""The CUDA kernels of fdperf.ops compile with nvcc (device code for sm_90), even on a machine
without a GPU. Skipped when nvcc is not installed. Takes about a minute and a half on 2 cores.

torch's CPU wheels ship the c10/cuda and ATen/cuda headers but not the generated
c10/cuda/impl/cuda_cmake_macros.h, hence -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE when it is missing.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from torch.utils.cpp_extension import include_paths

ROOT = Path(__file__).resolve().parents[1]
NVCC = shutil.which("nvcc") or next(
    (p for p in ("/usr/local/bin/nvcc", "/usr/local/cuda/bin/nvcc") if os.path.exists(p)), None
)
# Every CUDA kernel; they include only c10/cuda headers, so no CUDA libraries' headers
# (cuBLAS, cuSPARSE) are needed to compile them.
SOURCES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc/ops/cuda").glob("*.cu"))


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("source", SOURCES)
def test_cuda_kernel_compiles(source, tmp_path):
    includes = include_paths()
    flags = [
        "-DWITH_CUDA",
        "--expt-relaxed-constexpr",
        "-std=c++17",
        "-Xcompiler",
        "-fPIC",
        "-gencode",
        "arch=compute_90,code=sm_90",
    ]
    if not any((Path(p) / "c10/cuda/impl/cuda_cmake_macros.h").exists() for p in includes):
        flags.append("-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE")
    obj = tmp_path / (Path(source).stem + ".o")
    cmd = (
        [NVCC, "-c", str(ROOT / source), "-o", str(obj), f"-I{ROOT / 'csrc'}"]
        + [f"-I{p}" for p in includes]
        + flags
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert obj.stat().st_size > 0
