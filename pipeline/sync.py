"""Make Snakemake and DVC agree after a complete run with either: `python -m pipeline.sync`.

Each tool keeps its own record of what is up to date (Snakemake: .snakemake/ metadata and
file times; DVC: dvc.lock), and neither writes the other's. After `snakemake --cores all`
the Snakefile's last step already runs `dvc commit` (pipeline/workflow.py); after `dvc repro`
run this command: when `dvc status` has nothing to do, it runs `snakemake --touch --forceall`,
which records DVC's outputs in Snakemake's metadata (their params, code and checksums) without
running anything (without that record Snakemake cannot see a later params change; the
Snakefile then falls back on the fingerprints, see pipeline/workflow.py). It also works the
other way (`dvc commit` when only Snakemake is up to date). It refuses when neither tool has
finished: it never marks unfinished work as done.
"""

import argparse
import shutil
import subprocess

from .io import StageError, run_stage
from .params import load_yaml
from .workflow import commit_to_dvc, dvc_status, last_line, snakemake_done


def _snakemake():
    return [shutil.which("snakemake") or "snakemake", "--cores", "1"]


def dvc_up_to_date():
    """(whether `dvc status` has nothing to do, its mapping)."""
    status, error = dvc_status()
    if error:
        raise StageError(f"dvc status failed: {error}")
    return status == {}, status


def snakemake_up_to_date():
    done, error = snakemake_done(_snakemake())
    if error:
        raise StageError(f"snakemake -n failed: {error}")
    return done


def folders(params_file):
    """The experiment's data, runs and results folders (params `paths:`)."""
    paths = load_yaml(params_file).get("paths", {})
    return [paths.get(k, k) for k in ("data", "runs", "results")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    dvc_done, status = dvc_up_to_date()
    if dvc_done:  # record every output in Snakemake's metadata, even where its file times agree
        touch = subprocess.run([*_snakemake(), "--touch", "--forceall", "--quiet", "--no-hooks"],
                               capture_output=True, text=True)
        if touch.returncode != 0 or not snakemake_up_to_date():
            raise StageError(f"snakemake --touch did not bring Snakemake up to date: {last_line(touch)}")
        print("Snakemake now records DVC's outputs: snakemake -n and dvc status both have nothing to do")
    elif snakemake_up_to_date():
        error = commit_to_dvc(folders(args.params), status)
        if error or not dvc_up_to_date()[0]:
            raise StageError(f"dvc.lock not updated: {error or 'dvc status still lists changes'}")
        print("dvc.lock now records Snakemake's outputs: snakemake -n and dvc status both have nothing to do")
    else:
        raise StageError("neither tool has finished (snakemake -n and dvc status both list work): run "
                         "`snakemake --cores all` or `dvc repro` first")


if __name__ == "__main__":
    run_stage(main)
