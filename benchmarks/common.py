"""Shared helpers for the benchmark scripts: timing, machine description, JSON output."""

import json
import os
import platform
import re
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine():
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def alternate(fns, repeats, warmup=1):
    """Median seconds of each of several functions ({name: fn}), timed in alternation after
    `warmup` calls each, so that drifts of the machine (clock, caches, other load) fall on
    all of them alike rather than on whichever ran last."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def write(name, record):
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "machine": machine(), **record}
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


def import_diffusers():
    """diffusers imports torchvision; install the project's op shim first (pipeline/metrics/torchvision_ops.py)."""
    from pipeline.metrics.torchvision_ops import install_torchvision_op_shim

    install_torchvision_op_shim()
    import diffusers

    return diffusers


def train_log(path):
    """(training-loop seconds, peak resident MB) from a train stage's log, where the stage
    writes them (never into its outputs, which must not change with the machine's speed)."""
    text = Path(path).read_text()
    seconds = re.search(r": \d+ steps in ([0-9.]+) s$", text, re.M)
    peak = re.search(r"peak memory ([0-9]+) MB$", text, re.M)
    return (float(seconds.group(1)) if seconds else float("nan"), float(peak.group(1)) if peak else float("nan"))
