"""Shared helpers for the benchmark scripts: timing, machine description, JSON output."""

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine():
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def median_seconds(fn, repeats=5, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write(name, record):
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "machine": machine(), **record}
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


def import_diffusers():
    """diffusers imports torchvision; install the project's op shim first (pipeline/fidelity.py)."""
    from pipeline.fidelity import install_torchvision_op_shim

    install_torchvision_op_shim()
    import diffusers

    return diffusers
