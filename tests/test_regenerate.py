"""The committed results/ are what the pipeline produces from the committed params.yaml and
code: the aggregate stage's command, rerun from the committed per-cell metrics (with the data
and evaluator remade, which their fingerprints are checked against), rewrites the committed
tables byte for byte, and dvc.lock records params.yaml's values for every stage and the md5
of every committed small result. (A full `dvc repro` of the default grid takes ~20 minutes;
README's "Regenerate the results of a tagged version" gives the commands.)"""

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, make_project, run

TABLES = ("results/table.md", "results/table.tex", "results/metrics.csv", "results/summary.csv")


def require(*names):
    missing = [name for name in names if not (ROOT / name).exists()]
    if missing:
        pytest.skip(f"not committed: {', '.join(missing)}")


def lookup(params, dotted):
    for key in dotted.split("."):
        params = params[key]
    return params


@pytest.mark.slow  # the evaluator is retrained: ~30 s
@pytest.mark.parametrize("params_file", ["params.yaml", "experiments/ncsn_swiss_roll/params.yaml"])
def test_aggregate_rewrites_the_committed_tables(tmp_path, params_file):
    """Each experiment's committed tables, in its own results folder (`paths:`)."""
    paths = yaml.safe_load((ROOT / params_file).read_text())["paths"]
    results = paths["results"]
    tables = [name.replace("results", results, 1) for name in TABLES]
    require(f"{results}/metrics", f"{results}/reference.json", f"{results}/evaluator.json", *tables)
    project = make_project(tmp_path / "project", ROOT / params_file)
    shutil.copytree(ROOT / results / "metrics", project / results / "metrics")
    shutil.copy2(ROOT / results / "reference.json", project / results / "reference.json")
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]

    def stage(name):
        cmd = stages[name]["cmd"]
        for key, value in paths.items():
            cmd = cmd.replace(f"${{paths.{key}}}", value)
        run(["bash", "-c", cmd], cwd=project)

    # aggregate checks every cell's fingerprint against the data's tensors and the evaluator's
    # bytes: remade here, they must be what the committed metrics were scored with.
    for name in ("validate", "prepare", "evaluator", "aggregate"):
        stage(name)
    assert (project / results / "evaluator.json").read_bytes() == (ROOT / results / "evaluator.json").read_bytes()
    for name in tables:
        assert (project / name).read_bytes() == (ROOT / name).read_bytes(), name


# The default experiment's lock in the quick loop; every folder's (DVC reads each file's
# foreach/matrix stages in seconds) with the slow tests.
DVC_FILES = ["dvc.yaml", *(pytest.param(str(p.relative_to(ROOT)), marks=pytest.mark.slow)
                           for p in sorted((ROOT / "experiments").glob("*/dvc.yaml")))]


def small_outputs(dvc_file):
    """The uncached (committed) outputs of `dvc_file`'s stages, as DVC reads the file."""
    from dvc.dvcfile import load_file
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {str(o.def_path) for stage in load_file(repo, dvc_file).stages.values()
                for o in stage.outs if not o.use_cache}


@pytest.mark.parametrize("dvc_file", DVC_FILES)
def test_dvc_lock_records_the_committed_params_and_results(dvc_file):
    """Each experiment's dvc.lock (the default's and every folder's) records its params file's
    values and the committed bytes of its small results."""
    from dvc.utils.serialize import load_yaml  # YAML 1.2, as DVC reads them: 2e-05 is a float

    folder = Path(dvc_file).parent
    params_file = str(folder / "params.yaml")  # as the lock names it (stages run from the root)
    require(str(folder / "dvc.lock"))
    params = load_yaml(ROOT / params_file)
    lock = load_yaml(ROOT / folder / "dvc.lock")["stages"]
    for stage, entry in lock.items():
        for key, value in entry.get("params", {}).get(params_file, {}).items():
            assert value == lookup(params, key), f"{stage}: {key}"
    recorded = {out["path"]: out["md5"] for entry in lock.values() for out in entry.get("outs", [])}
    small = sorted(small_outputs(dvc_file))
    assert small
    for path in small:
        assert path in recorded, f"{path}: not in {folder / 'dvc.lock'}"
        require(path)
        assert hashlib.md5((ROOT / path).read_bytes()).hexdigest() == recorded[path], path
