"""Provenance recorded in every metric file: the code (git commit, dirty tree), the cell's
resolved params, the seed and the package versions that made the number."""

import dataclasses
import importlib.metadata
import platform
import subprocess
from pathlib import Path


def _git(*args):
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _config_copy():
    """The config under configs/ that params.yaml is a byte-for-byte copy of, or None."""
    params = Path("params.yaml")
    text = params.read_bytes() if params.is_file() else None
    return next((str(c) for c in sorted(Path("configs").glob("*.yaml")) if c.read_bytes() == text), None)


# What makes a result: the library, the stages, the DAG and the params (and the configs that
# are copied over them). An edit elsewhere (README, tests, benchmarks) changes no number.
RESULT_INPUTS = ("diffusion", "pipeline", "report", "Snakefile", "dvc.yaml", "params.yaml", "configs",
                 "pyproject.toml")


def code_state():
    """{'commit', 'dirty', 'config'}: dirty means a tracked file that makes results
    (RESULT_INPUTS) differs from the commit; params.yaml does not count when it is a copy of a
    committed config, named in 'config': how every experiment other than the default is
    selected."""
    commit = _git("rev-parse", "HEAD")
    config = _config_copy()
    paths = [p for p in RESULT_INPUTS if not (config and p == "params.yaml")]
    status = _git("status", "--porcelain", "--untracked-files=no", "--", *paths)
    return {"commit": commit or "unknown", "dirty": None if status is None else bool(status), "config": config}


def versions():
    out = {"python": platform.python_version()}
    for package in ("torch", "torch-fidelity", "diffusion-ablations", "snakemake", "dvc"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    return out


def provenance(params, cell_id=None):
    record = {**code_state(), "versions": versions()}
    if cell_id is not None:
        record["cell_params"] = {
            **dataclasses.asdict(params.cells[cell_id]),
            "train": dataclasses.asdict(params.cell_train(cell_id)),
        }
        record["seeds"] = {"train": params.cell_train(cell_id).seed, "sample": params.cell_sample_seed(cell_id),
                           "metrics": params.metrics.seed}
    return record
