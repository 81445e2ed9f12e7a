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


DVC_FILES = ["dvc.yaml", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "experiments").glob("*/dvc.yaml"))]


@pytest.fixture(scope="module")
def small_outputs():
    """{dvc.yaml path: its stages' uncached (committed) outputs}, DVC's project read once."""
    from dvc.repo import Repo

    outputs = {}
    with Repo(str(ROOT)) as repo:
        for stage in repo.index.stages:
            dvc_file = str(Path(stage.dvcfile.path).resolve().relative_to(ROOT))
            outputs.setdefault(dvc_file, set()).update(str(o.def_path) for o in stage.outs if not o.use_cache)
    return outputs


@pytest.mark.parametrize("dvc_file", DVC_FILES)
def test_dvc_lock_records_the_committed_params_and_results(dvc_file, small_outputs):
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
    small = sorted(small_outputs.get(dvc_file, ()))
    assert small
    for path in small:
        assert path in recorded, f"{path}: not in {folder / 'dvc.lock'}"
        require(path)
        assert hashlib.md5((ROOT / path).read_bytes()).hexdigest() == recorded[path], path
