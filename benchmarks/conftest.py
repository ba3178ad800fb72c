"""Benchmark session set-up: the thread count and a record of what the numbers were measured on.

FDPERF_BENCH_THREADS=n runs every implementation with n intra-op threads (torch.set_num_threads);
on a shared, oversubscribed machine 1 thread gives the steadiest comparison, because OpenMP's
spinning barrier stalls whenever a peer thread is descheduled.
"""

import os
import platform
import sys

import torch

# The reference-style TSA (tests/reference_tsa.py) is shared with the tests.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))


def pytest_configure(config):
    threads = os.environ.get("FDPERF_BENCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cpu_model"] = platform.processor() or platform.machine()
    if torch.cuda.is_available():
        machine_info["cuda_device"] = torch.cuda.get_device_name()
