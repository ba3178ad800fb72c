"""`fdperf env`: what this installation can use, like `python -m torch.utils.collect_env`.

Prints torch and CUDA versions, the built operators and the devices they have kernels for, the
CPU kernel path (AVX2+FMA or baseline), DALI and its GPU decoders, PyAV, nvcc and the GPUs.
"""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import subprocess
import sys

from .version import __version__

OPERATORS = ("window_argmax", "segment_resample", "step_attention")


def _module_version(name: str) -> str:
    try:
        mod = importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - any import failure is "not available" here
        return f"not available ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})"
    return getattr(mod, "__version__", "installed")


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu() -> dict:
    flags = _cpu_flags()
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    avx2 = {"avx2", "fma"} <= flags
    path = "AVX2+FMA" if avx2 and not os.environ.get("FDPERF_DISABLE_AVX2") else "baseline"
    if avx2 and os.environ.get("FDPERF_DISABLE_AVX2"):
        path += " (FDPERF_DISABLE_AVX2 is set)"
    return {"cpu": name, "cores": os.cpu_count(), "avx512f": "avx512f" in flags, "fdperf CPU kernels": path}


def _torch() -> dict:
    import torch

    out = {
        "OpenMP wait": f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')} "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}",
        "torch": torch.__version__,
        "torch CUDA": torch.version.cuda or "none (CPU build)",
        "torch threads": torch.get_num_threads(),
        "ATen CPU capability": torch.backends.cpu.get_cpu_capability(),
    }
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    out["GPUs"] = ", ".join(gpus) if gpus else "none"
    return out


def _operators() -> dict:
    from . import _native

    try:
        C = _native.load()
    except ImportError as e:
        return {"fdperf._C": f"NOT BUILT: {str(e).splitlines()[0]}"}
    import torch

    out = {
        "fdperf._C": f"built against torch {_native.built_torch_version() or '?'}, "
        f"CUDA kernels {'yes' if C.built_with_cuda() else 'no'}"
    }
    for op in OPERATORS:
        keys = ("CPU", "CUDA")
        have = [k for k in keys if torch._C._dispatch_has_kernel_for_dispatch_key(f"fdperf::{op}", k)]
        out[f"op {op}"] = ", ".join(have) or "no kernels"
    return out


def _dali() -> dict:
    try:
        import nvidia.dali as dali
    except Exception as e:  # noqa: BLE001
        return {"DALI": f"not available ({type(e).__name__}); pip install 'fdperf[dali]'"}
    out = {"DALI": dali.__version__}
    try:
        import torch

        gpu = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        gpu = False
    out["DALI GPU decoders"] = "nvJPEG (mixed), NVDEC" if gpu else "none without a GPU (CPU decoders only)"
    return out


def _nvcc() -> str:
    nvcc = shutil.which("nvcc") or (
        os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc") if os.environ.get("CUDA_HOME") else None
    )
    if not nvcc or not os.path.exists(nvcc):
        return "not found"
    try:
        text = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return f"{nvcc} (did not answer)"
    release = [ln for ln in text.splitlines() if "release" in ln]
    return f"{nvcc}: {release[-1].strip() if release else text.strip()[:60]}"


def collect() -> dict:
    """Everything `fdperf env` prints, as an ordered dict of name -> text."""
    info = {"fdperf": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    info.update(_cpu())
    info.update(_torch())
    info.update(_operators())
    info.update(_dali())
    info["PyAV"] = _module_version("av")
    info["h5py"] = _module_version("h5py")
    info["matplotlib (report)"] = _module_version("matplotlib")
    info["nvcc"] = _nvcc()
    return info


def main(argv=None) -> int:
    from .cli import parser

    p = parser("fdperf env", __doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print JSON instead of aligned text")
    args = p.parse_args(argv)
    info = collect()
    if args.json:
        import json

        print(json.dumps(info, indent=2, default=str))
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
