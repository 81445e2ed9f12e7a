"""The tiny grid through SLURM: `snakemake --profile profiles/slurm-local` on the one-node
cluster of cluster/slurm.sh submits every non-local job with sbatch (the local rules run on
the submitting host), asks SLURM for the CPUs, memory and time the profile maps from each rule,
and gives the same metrics, byte for byte, as a plain `snakemake --cores 2` run; a job that
crashes inside SLURM fails the run with the path of its SLURM log.

Needs SLURM (`cluster/slurm.sh install`, as root) and the executor plugin (`pip install -e
'.[slurm]'`). The cluster is started here when it is installed but not running and the tests
run as root; otherwise the tests skip, saying why, except under CI=true, where a skip would
hide a broken setup: there they fail. About 5 minutes on 2 cores (4:07 and 4:54 measured), the
local `snakemake_grid` (about 1 minute) included."""

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

import conftest
from conftest import ROOT, copy_project, init_repos, make_project, table_rows, tool, tool_env
from pipeline import dag
from pipeline import dag_snakemake

pytestmark = pytest.mark.slow

SLURM_SH = ROOT / "cluster" / "slurm.sh"
PROFILE = "profiles/slurm-local"
RUN_TIMEOUT = 480  # seconds for one Snakemake run through SLURM (the grid: 160-170 s measured)
READY = ("idle", "mixed", "allocated", "completing")
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")


SETUP = "as root: cluster/slurm.sh install && cluster/slurm.sh start"


def unavailable(reason):
    conftest.unavailable(reason, SETUP)


def profile():
    return yaml.safe_load((ROOT / PROFILE / "config.yaml").read_text())


def partition_state(partition):
    """The states of the partition's nodes per sinfo ('' when no controller answers)."""
    try:
        out = subprocess.run(["sinfo", "-h", "-p", partition, "-o", "%T"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def min_job_age():
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=20).stdout
    found = re.search(r"^MinJobAge\s*=\s*(\d+)", out, re.M)
    return int(found.group(1)) if found else None


def takes_jobs(partition):
    return any(state in READY for state in partition_state(partition).split())


@pytest.fixture(scope="module")
def cluster():
    """A SLURM partition that takes jobs, with the plugin installed; the cluster of
    cluster/slurm.sh is started (and stopped afterwards) when it is installed but not running
    and we are root."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        unavailable("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    if not all(shutil.which(name) for name in ("sbatch", "squeue", "sinfo", "scontrol")):
        unavailable(f"SLURM's commands are not on PATH ({SETUP})")
    partition = profile()["default-resources"]["slurm_partition"]
    started = False
    if not takes_jobs(partition):
        if os.geteuid() != 0 or not shutil.which("slurmctld"):
            unavailable(f"no node of SLURM partition {partition!r} takes jobs (sinfo: "
                        f"{partition_state(partition) or 'no answer'}), and starting the daemons needs root "
                        f"and slurmctld ({SETUP})")
        start = subprocess.run(["bash", str(SLURM_SH), "start"], capture_output=True, text=True, timeout=300)
        started = start.returncode == 0
        if not started or not takes_jobs(partition):
            unavailable(f"cluster/slurm.sh start did not bring up partition {partition!r}: "
                        f"{(start.stdout + start.stderr).strip()[-1000:]}")
    age = min_job_age()
    if age is None or age < 120:
        unavailable(f"SLURM's MinJobAge is {age}: squeue forgets a finished job before the status "
                    "polling sees it, and there is no accounting database here (cluster/slurm.sh sets 600)")
    yield partition
    if started:
        subprocess.run(["bash", str(SLURM_SH), "stop"], capture_output=True, timeout=120)


def run_snakemake(project, *args):
    """`snakemake --profile profiles/slurm-local ARGS` in project (its own process group, killed
    whole on timeout); returns (returncode, stdout + stderr)."""
    cmd = [tool("snakemake"), "--profile", PROFILE, *args]
    process = subprocess.Popen(cmd, cwd=project, env=tool_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = process.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGINT)  # Snakemake cancels its SLURM jobs on Ctrl-C
        try:
            out, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, _ = process.communicate()
        raise AssertionError(f"{' '.join(cmd)} ran over {RUN_TIMEOUT} s:\n{out[-4000:]}")
    return process.returncode, out


def jobs_of(output):
    """{snakemake jobid: (rule, local?)} from the job blocks Snakemake logs."""
    jobs, current = {}, None
    for line in output.splitlines():
        start = re.match(r"^(localrule|rule) (\w+):$", line)
        if start:
            current = (start.group(2), start.group(1) == "localrule")
            continue
        jobid = re.match(r"^\s+jobid: (\d+)$", line)
        if jobid and current:
            jobs[int(jobid.group(1))] = current
            current = None
    return jobs


def expected_jobs(project):
    """{rule: number of jobs} of a run from empty, from the stage table and the grid."""
    config = yaml.safe_load((project / "params.yaml").read_text())
    per = {None: 1, "cells": len(config["cells"]), "study": len(dag_snakemake.study_points(config))}
    return {stage.name: per[stage.over] for stage in dag.STAGES}


def scontrol(jobid):
    """`scontrol show job` as {key: value}."""
    out = subprocess.run(["scontrol", "show", "job", str(jobid)], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, f"scontrol show job {jobid}: {out.stderr} (older than MinJobAge?)"
    return dict(re.findall(r"(\S+?)=(\S*)", out.stdout))


@pytest.fixture(scope="module")
def slurm_grid(cluster, tmp_path_factory, tiny_params):
    """The tiny grid made from empty through SLURM, in a git + DVC repository like the local
    `snakemake_grid`; also the run's output, its submitted jobs {snakemake jobid: (slurm jobid,
    log)} and `scontrol show job` of each, taken at once (SLURM keeps them MinJobAge seconds)."""
    project = init_repos(make_project(tmp_path_factory.mktemp("slurm") / "grid", tiny_params))
    code, output = run_snakemake(project)
    assert code == 0, f"snakemake --profile {PROFILE} failed ({code}):\n{output[-6000:]}"
    submitted = {int(job): (slurm, log) for job, slurm, log in SUBMITTED.findall(output)}
    records = {slurm: scontrol(slurm) for slurm, _ in submitted.values()}
    return {"project": project, "output": output, "submitted": submitted, "records": records}


def test_every_non_local_job_goes_through_sbatch(slurm_grid):
    project, output, submitted = slurm_grid["project"], slurm_grid["output"], slurm_grid["submitted"]
    jobs = jobs_of(output)
    expected = expected_jobs(project)
    ran = {}
    for jobid, (rule, local) in jobs.items():
        if rule == "all":
            continue
        ran[rule] = ran.get(rule, 0) + 1
        assert local == dag.STAGE[rule].local, f"job {jobid} of rule {rule} local={local} on the cluster"
        assert (jobid in submitted) != local, f"job {jobid} of rule {rule}: local={local}, submitted={jobid in submitted}"
    assert ran == expected
    assert len(submitted) == sum(n for rule, n in expected.items() if not dag.STAGE[rule].local)
    for slurm, record in slurm_grid["records"].items():
        assert record["JobState"] == "COMPLETED", (slurm, record["JobState"])
        assert record["WorkDir"] == str(project)
    assert "dvc.lock records this run" in output  # the onsuccess handler ran on the host


def test_metrics_equal_a_local_run(slurm_grid, snakemake_grid):
    project = slurm_grid["project"]
    names = sorted(p.relative_to(snakemake_grid).as_posix()
                   for pattern in ("results/metrics/*.json", "results/sampler_study/*/*.json")
                   for p in snakemake_grid.glob(pattern))
    assert len(names) == 7
    assert names == sorted(p.relative_to(project).as_posix()
                           for pattern in ("results/metrics/*.json", "results/sampler_study/*/*.json")
                           for p in project.glob(pattern))
    for name in [*names, "results/table.md", "results/table.tex", "results/metrics.csv", "results/summary.csv",
                 "results/sampler_table.md"]:
        assert (project / name).read_bytes() == (snakemake_grid / name).read_bytes(), name


def test_sbatch_gets_the_resources_the_profile_maps_from_each_rule(slurm_grid):
    settings = profile()
    defaults, per_rule = settings["default-resources"], settings["set-resources"]
    rules = {jobid: rule for jobid, (rule, _) in jobs_of(slurm_grid["output"]).items()}
    checked = set()
    for jobid, (slurm, _) in slurm_grid["submitted"].items():
        rule, record = rules[jobid], slurm_grid["records"][slurm]
        want = {**defaults, **per_rule.get(rule, {})}
        assert settings["set-threads"][rule] == (dag.STAGE[rule].threads or 1) == want["cpus_per_task"], rule
        assert record["Partition"] == want["slurm_partition"], (rule, record["Partition"])
        assert record["CPUs/Task"] == str(want["cpus_per_task"]), (rule, record["CPUs/Task"])
        assert record["NumTasks"] == "1", rule
        assert record["MinMemoryNode"] == f"{want['mem_mb']}M", (rule, record["MinMemoryNode"])
        assert dag.STAGE[rule].mem_mb in (None, want["mem_mb"]), rule
        hours, minutes = divmod(want["runtime"], 60)
        assert record["TimeLimit"] == f"{hours:02d}:{minutes:02d}:00", (rule, record["TimeLimit"])
        checked.add(rule)
    assert checked == {"reference", "train", "sample", "evaluate", "sampler_study"}


def test_a_crashing_job_fails_the_run_and_names_its_slurm_log(slurm_grid, tmp_path):
    """sample.device: cuda passes params validation (a valid choice) and the sample stage
    rejects it at run time on a machine where torch sees no GPU: the job fails inside SLURM."""
    import torch

    project = copy_project(slurm_grid["project"], tmp_path / "crash")
    if torch.cuda.is_available():  # a GPU here: break the stage's code instead
        with open(project / "pipeline" / "sample.py", "a") as module:
            module.write("\nthis is not python\n")
        reason = "SyntaxError"
    else:
        params = project / "params.yaml"
        text = params.read_text()
        section = text[text.index("\nsample:\n"):text.index("\nsampler_study:")]
        params.write_text(text.replace(section, section.replace("  device: cpu\n", "  device: cuda\n")))
        assert yaml.safe_load(params.read_text())["sample"]["device"] == "cuda"
        reason = "sample.device: cuda requested but torch sees no GPU"
    code, output = run_snakemake(project)
    assert code != 0, output[-4000:]
    error = re.search(r"^Error in rule sample:\n.*?^\s+external_jobid: (\d+)$", output, re.S | re.M)
    assert error, output[-4000:]
    slurm, block = error.group(1), error.group(0)
    log = {job: Path(path) for _, job, path in SUBMITTED.findall(output)}[slurm]
    assert f"SLURM-job '{slurm}' failed" in block, block
    assert re.search(rf"^\s+log: .*{re.escape(str(log))}", block, re.M), f"no SLURM log path in the error:\n{block}"
    assert log.is_relative_to(project / ".snakemake" / "slurm_logs" / "rule_sample"), log
    assert log.is_file(), f"{log} (named in the error) does not exist"
    assert "Error in rule sample" in log.read_text()
    stage_logs = "".join(p.read_text() for p in (project / "logs" / "sample").glob("*.log"))
    assert reason in stage_logs + log.read_text()


def test_a_diverging_cell_gets_dashes_and_the_grid_completes(slurm_grid, tmp_path):
    """A cell whose training diverges inside its SLURM job is a result, not a failure: the run
    completes, its metrics say `diverged` and its table row shows '-'."""
    project = copy_project(slurm_grid["project"], tmp_path / "diverged")
    params = project / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    raw["cells"]["eps-vlb"]["train"] = {"lr": 1.0e30}
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    code, output = run_snakemake(project)
    assert code == 0, output[-4000:]
    rules = {jobid: rule for jobid, (rule, _) in jobs_of(output).items()}
    assert "train" in {rules[jobid] for jobid in {int(j) for j, _, _ in SUBMITTED.findall(output)}}
    metrics = json.loads((project / "results/metrics/eps-vlb.json").read_text())
    assert metrics["status"] == "diverged" and "fid" not in metrics
    row = table_rows((project / "results/table.md").read_text())["eps-vlb"]
    assert row.count("-") >= 2 and any("diverged at step" in cell for cell in row)
