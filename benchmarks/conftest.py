"""Benchmark session set-up: record what the numbers were measured on."""
import platform

import torch


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cpu_model"] = platform.processor() or platform.machine()
    if torch.cuda.is_available():
        machine_info["cuda_device"] = torch.cuda.get_device_name()
