"""Builds fdperf's native extension fdperf._C (the package metadata is in pyproject.toml).

C++ sources (csrc/*.cpp, csrc/ops/*.cpp, csrc/ops/cpu/*.cpp) are always compiled. CUDA sources
(csrc/ops/cuda/*.cu) are added when torch is a CUDA build and a CUDA toolkit is found, or when
FORCE_CUDA=1 (TORCH_CUDA_ARCH_LIST then picks the targets), so a CUDA build works on a machine
without a GPU. Build in place with: pip install --no-build-isolation -e .

Objects go to build/ext (kept between builds), so ninja recompiles only what changed, whichever
pip command starts the build. The torch version is recorded in fdperf/_build_info.py, which the
loader checks before it imports the extension.
"""

import glob
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern):
    return sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, pattern)))


BUILD_TEMP = os.path.join(HERE, "build", "ext")


def _write_build_info(with_cuda):
    import torch

    text = (
        '"""Written by setup.py: what fdperf._C was built against."""\n'
        f"TORCH_VERSION = {torch.__version__!r}\n"
        f"TORCH_CUDA = {torch.version.cuda!r}\n"
        f"WITH_CUDA = {bool(with_cuda)!r}\n"
    )
    path = os.path.join(HERE, "fdperf", "_build_info.py")
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)


def _extension():
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    force = os.environ.get("FORCE_CUDA", "0") == "1"
    with_cuda = force or (torch.version.cuda is not None and CUDA_HOME is not None)
    if with_cuda and (torch.version.cuda is None or CUDA_HOME is None):
        raise RuntimeError(
            "FORCE_CUDA=1 needs a CUDA build of torch and a CUDA toolkit (set CUDA_HOME); "
            f"found torch {torch.__version__} (cuda={torch.version.cuda}), CUDA_HOME={CUDA_HOME}"
        )
    _write_build_info(with_cuda)
    sources = _sources("csrc/*.cpp") + _sources("csrc/ops/*.cpp") + _sources("csrc/ops/cpu/*.cpp")
    # -fopenmp: at::parallel_for expands an OpenMP pragma in our own translation units.
    # -g0: no debug info (Python's own flags add -g), which roughly halves compile time here.
    cxx = ["-O3", "-g0", "-std=c++17", "-fopenmp"]
    if with_cuda:
        return CUDAExtension(
            "fdperf._C",
            sources + _sources("csrc/ops/cuda/*.cu"),
            define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++17", "-lineinfo"]},
            extra_link_args=["-fopenmp"],
        )
    return CppExtension("fdperf._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=["-fopenmp"])


def _cmdclass():
    from torch.utils.cpp_extension import BuildExtension

    class PersistentBuild(BuildExtension):
        # pip's editable and wheel builds pass a fresh temporary folder: keep ours instead.
        def finalize_options(self):
            super().finalize_options()
            self.build_temp = BUILD_TEMP

    return {"build_ext": PersistentBuild.with_options(use_ninja=True)}


setup(
    packages=find_packages(include=["fdperf", "fdperf.*"]),
    ext_modules=[_extension()],
    cmdclass=_cmdclass(),
)
