"""Wall time of `dvc repro` against `snakemake --cores all` on the same DAG from empty outputs,
in a scratch copy of the project (git + DVC initialised there). DVC runs one stage at a time,
each stage with every core; Snakemake runs one single-threaded training per core. Goal:
dvc / snakemake <= 1.5. `--cells N` keeps the first N cells of params.yaml and `--nfe K` the
first K budgets of the sampler study, to measure the ratio on a slice of the default grid
(the full grid takes about 20 minutes under Snakemake and 35 under DVC on 2 cores).

What bounds the ratio is printed beside it: the training loops' seconds under each tool (from
the train stage's summaries), i.e. how much one job gains from a second thread compared with
the two concurrent single-thread jobs Snakemake runs."""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import train_log, write

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PROJECT = ("Snakefile", "dvc.yaml", ".dvcignore", "pipeline", "diffusion", "report", "configs")
OUTPUTS = ("data", "runs", "results", "logs", ".snakemake")


def sh(cmd, cwd):
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(cwd), "PYTHONPATH": str(cwd)}
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return time.perf_counter() - start


def scratch_project(dest, cells, nfe):
    for name in PROJECT:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    if cells:
        raw["cells"] = dict(list(raw["cells"].items())[:cells])
        raw["sampler_study"]["cells"] = [c for c in raw["sampler_study"]["cells"] if c in raw["cells"]]
    if nfe:
        raw["sampler_study"]["nfe"] = raw["sampler_study"]["nfe"][:nfe]
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "-c", "user.email=b@example.invalid", "-c", "user.name=b", "add", "-A"],
                ["git", "-c", "user.email=b@example.invalid", "-c", "user.name=b", "commit", "-qm", "bench"],
                [str(BIN / "dvc"), "init", "-q"], [str(BIN / "dvc"), "config", "core.analytics", "false"]):
        sh(cmd, dest)
    return raw


def train_loops(project):
    """Mean training-loop seconds over the cells, from the train stage's logs (logs/train/*.log)."""
    seconds = [train_log(p)[0] for p in sorted((project / "logs" / "train").glob("*.log"))]
    return {"mean_seconds": statistics.mean(seconds), "cells": len(seconds)}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=0, help="first N cells only (0: all)")
    parser.add_argument("--nfe", type=int, default=0, help="first K sampler-study budgets only (0: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        raw = scratch_project(project, args.cells, args.nfe)
        snakemake = sh([str(BIN / "snakemake"), "--cores", "all"], project)
        train_snakemake = train_loops(project)
        for name in OUTPUTS:
            shutil.rmtree(project / name, ignore_errors=True)
        dvc = sh([str(BIN / "dvc"), "repro"], project)
        train_dvc = train_loops(project)
    write("dvc_vs_snakemake", {
        "config": vars(args), "cells": len(raw["cells"]),
        "study_points": len(raw["sampler_study"]["cells"]) * len(raw["sampler_study"]["samplers"])
        * len(raw["sampler_study"]["nfe"]),
        "seconds_snakemake": snakemake, "seconds_dvc": dvc, "ratio": dvc / snakemake,
        "train_loop_snakemake": train_snakemake, "train_loop_dvc": train_dvc,
        "note": "every stage runs with the same pinned threads under both tools (pipeline/dag.py, so "
                "that both make the same bytes); Snakemake runs jobs side by side on the cores, DVC "
                "one at a time"})


if __name__ == "__main__":
    main()
