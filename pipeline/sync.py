"""Make Snakemake and DVC agree after a complete run with either: `python -m pipeline.sync`.

Each tool keeps its own record of what is up to date (Snakemake: .snakemake/ metadata and
file times; DVC: dvc.lock), and neither writes the other's. After `snakemake --cores all`
the Snakefile's last step already runs `dvc commit` (pipeline/workflow.py); after `dvc repro`
run this command: when `dvc status` has nothing to do, it runs `snakemake --touch --forceall`,
which records DVC's outputs in Snakemake's metadata (their params, code and checksums) without
running anything (without that record Snakemake cannot see a later params change; the
Snakefile then falls back on the fingerprints, see pipeline/workflow.py). It also works the
other way (`dvc commit` when only Snakemake is up to date; a dvc.lock left half-written by an
interrupted `dvc repro` is then moved to dvc.lock.damaged). It refuses when neither tool has
finished: it never marks unfinished work as done. `--experiment NAME` does the same for
configs/NAME.yaml's experiment (its folder experiments/NAME/).
"""

import argparse
import shutil
import subprocess
from pathlib import Path

from . import experiments
from .io import StageError, run_stage
from .params import load_yaml
from .workflow import commit_to_dvc, dvc_status, last_line, snakemake_done


class Experiment:
    """The default experiment (params.yaml, dvc.yaml) or configs/NAME.yaml's (its folder)."""

    def __init__(self, name=None):
        self.params = str(experiments.params_file(name)) if name else "params.yaml"
        self.target = str(experiments.dvc_file(name)) if name else "dvc.yaml"
        self.lock = str(Path(self.target).with_name("dvc.lock"))
        self.snakemake = [shutil.which("snakemake") or "snakemake", "--cores", "1",
                          *(["--config", f"experiment={name}"] if name else [])]

    def dvc_up_to_date(self, set_aside_damaged_lock=False):
        """(whether `dvc status` has nothing to do, its mapping)."""
        status, error = dvc_status(self.target, set_aside_damaged_lock)
        if error:
            raise StageError(f"dvc status failed: {error}")
        return status == {}, status

    def snakemake_up_to_date(self):
        done, error = snakemake_done(self.snakemake)
        if error:
            raise StageError(f"snakemake -n failed: {error}")
        return done

    def folders(self):
        """The experiment's data, runs and results folders (params `paths:`)."""
        paths = load_yaml(self.params).get("paths", {})
        return [paths.get(k, k) for k in ("data", "runs", "results")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", help="configs/NAME.yaml's experiment (default: params.yaml's)")
    args = parser.parse_args(argv)
    exp = Experiment(args.experiment)
    try:
        dvc_done, status = exp.dvc_up_to_date()
    except StageError:  # a half-written dvc.lock is set aside only when Snakemake vouches for the outputs
        if not exp.snakemake_up_to_date():
            raise
        dvc_done, status = exp.dvc_up_to_date(set_aside_damaged_lock=True)
    if dvc_done:  # record every output in Snakemake's metadata, even where its file times agree
        touch = subprocess.run([*exp.snakemake, "--touch", "--forceall", "--quiet", "--no-hooks"],
                               capture_output=True, text=True)
        if touch.returncode != 0 or not exp.snakemake_up_to_date():
            raise StageError(f"snakemake --touch did not bring Snakemake up to date: {last_line(touch)}")
        print("Snakemake now records DVC's outputs: snakemake -n and dvc status both have nothing to do")
    elif exp.snakemake_up_to_date():
        error = commit_to_dvc(exp.target, exp.folders(), status)
        if error or not exp.dvc_up_to_date()[0]:
            raise StageError(f"{exp.lock} not updated: {error or 'dvc status still lists changes'}")
        print(f"{exp.lock} now records Snakemake's outputs: snakemake -n and dvc status both have nothing to do")
    else:
        raise StageError("neither tool has finished (snakemake -n and dvc status both list work): run "
                         "`snakemake --cores all` or `dvc repro` first")


if __name__ == "__main__":
    run_stage(main)
