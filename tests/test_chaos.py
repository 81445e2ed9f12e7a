"""Chaos: after any sequence of interruptions, deletions, truncations and edits, one rerun
brings every artifact back, byte-identical to a clean run, and both tools agree.

The small grid of tests/configs/chaos.yaml is built once (Snakemake, in a DVC workspace) and
copied per seed; each seed plays a seeded random plan of STEPS steps. A step is one
perturbation (delete or truncate a random artifact; edit a cell's training setting, a sampling
setting or the data split) and one rerun; reruns alternate between `dvc repro` and
`snakemake --cores 2`. Some reruns are interrupted (SIGKILL of a running
`python -m pipeline.<stage>`, or Ctrl-C: SIGINT to the tool's process group); the next step's
rerun, by the other tool, then runs to completion on top of the next perturbation. A completion
rerun may fail only with one `error: ...` line per failed stage (listed as a finding). After
each seed's last rerun: either it succeeded, results/metrics/*.json and results/table.md are
byte-identical to a clean run of the final params.yaml in a fresh project, and the other tool
has nothing to do (`dvc status` after Snakemake; `python -m pipeline.sync`, then `snakemake -n`
after DVC); or it failed with exactly one `error:` line naming what is wrong. Locks left by an
interruption are findings; a refusal by one is handled only as its own message says.

Replay: every seed, event and rerun is printed (pytest -s). The plans depend on the seeds only;
what a kill or Ctrl-C hits, and so which files exist to delete, depends on timing.
Budget: ~12 min wall on 2 cores (12:13 and 13:44 measured while another workload shared them):
2 seeds x 8 steps = 24 events, 8 of them interruptions; one initial build and 2 clean runs.
"""

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import ROOT, make_project, run, tool, tool_env
from pipeline.params import load_yaml

pytestmark = pytest.mark.slow

CHAOS = ROOT / "tests" / "configs" / "chaos.yaml"
SEEDS = (1, 28)  # chosen by their plans alone: every kind, each tool interrupted both ways and
#                   last once, one data edit (the costliest)
STEPS = 8
MIN_EVENTS = 20
PERTURBATIONS = ("delete", "truncate", "edit_train", "edit_sample", "edit_data")
WEIGHTS = (3, 3, 2, 2, 1)
INTERRUPTIONS = ("kill", "ctrl_c")
COMMANDS = {"snakemake": ["snakemake", "--cores", "2"], "dvc": ["dvc", "repro"]}
ARTIFACTS = ("data/*.pt", "runs/*.pt", "runs/params.valid", "runs/train/*.pt", "runs/samples/*.pt",
             "runs/reference/*.pt", "results/*.json", "results/*.csv", "results/*.md", "results/*.tex",
             "results/metrics/*.json", "results/train/*/*", "results/samples/*.png", "results/plots/*.png",
             "results/sampler_study/*/*.json")
TRAIN_VALUES = {"lr": [5.0e-4, 1.0e-3, 2.0e-3], "steps": [30, 40, 50], "seed": [0, 1, 2]}
SAMPLE_VALUES = {"steps": [8, 10, 12], "seed": [1, 2, 3]}
SPLIT_SEEDS = [0, 1, 2]
LOCK_HINTS = ("--unlock", "cannot be locked", ".dvc/tmp/rwlock", "is busy", "Unable to acquire lock")


# ----- the plan: deterministic given the seed ------------------------------------------------
def plan(seed):
    """STEPS steps (perturbation, interruption of its rerun or None, delay s, rng for the
    perturbation's choices). An interrupted step edits a training or sampling setting (so that
    its rerun has stages to interrupt) and is followed by one whose rerun completes (by the other
    tool) on top of the next perturbation; the last step completes. Data edits are rarer (each
    remakes everything)."""
    rng = random.Random(seed)
    steps, previous = [], None
    for i in range(STEPS):
        interrupt = previous is None and i < STEPS - 1 and rng.random() < 0.75
        previous = rng.choice(INTERRUPTIONS) if interrupt else None
        kind = rng.choice(("edit_train", "edit_sample")) if interrupt else rng.choices(PERTURBATIONS, WEIGHTS)[0]
        steps.append((kind, previous, round(rng.uniform(0.5, 6.0), 2), random.Random(rng.random())))
    return steps


def n_events(steps):
    return sum(1 + (interruption is not None) for _, interruption, _, _ in steps)


def tools(first, steps):
    """The tool of each step's rerun: alternating, from ("dvc", "snakemake")[first]."""
    return [("dvc", "snakemake")[(first + i) % 2] for i in range(len(steps))]


# ----- perturbations ------------------------------------------------------------------------
def artifacts(project):
    return sorted({str(p.relative_to(project)) for g in ARTIFACTS for p in project.glob(g) if p.is_file()})


def edit_params(project, change):
    raw = load_yaml(project / "params.yaml")
    what = change(raw)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return what


def pick_other(rng, values, current):
    return rng.choice([v for v in values if v != current])


def edit_train(raw, rng):
    cell = rng.choice(sorted(raw["cells"]))
    key = rng.choice(sorted(TRAIN_VALUES))
    overrides = raw["cells"][cell].setdefault("train", {})
    overrides[key] = pick_other(rng, TRAIN_VALUES[key], overrides.get(key, raw["train"][key]))
    return f"cells.{cell}.train.{key} = {overrides[key]}"


def edit_sample(raw, rng):
    key = rng.choice(sorted(SAMPLE_VALUES))
    raw["sample"][key] = pick_other(rng, SAMPLE_VALUES[key], raw["sample"][key])
    return f"sample.{key} = {raw['sample'][key]}"


def edit_data(raw, rng):
    raw["data"]["split_seed"] = pick_other(rng, SPLIT_SEEDS, raw["data"]["split_seed"])
    return f"data.split_seed = {raw['data']['split_seed']}"


def perturb(project, kind, rng):
    """Apply one perturbation; return what it did, in words."""
    if kind in ("delete", "truncate"):
        files = [f for f in artifacts(project) if kind == "delete" or (project / f).stat().st_size > 1]
        path = project / rng.choice(files)
        if kind == "delete":
            path.unlink()
            return f"delete {path.relative_to(project)}"
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.truncate(size // 2)
        return f"truncate {path.relative_to(project)} {size} -> {size // 2} bytes"
    edit = {"edit_train": edit_train, "edit_sample": edit_sample, "edit_data": edit_data}[kind]
    return "edit " + edit_params(project, lambda raw: edit(raw, rng))


# ----- running the tools --------------------------------------------------------------------
def stage_processes(proc):
    """The `python -m pipeline.<stage>` processes below the tool's process."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if len(cmd) > 2 and Path(cmd[0]).name.startswith("python") and cmd[1] == "-m" \
                and cmd[2].startswith("pipeline."):
            found.append((child, cmd[2]))
    return found


def kill_a_stage(proc, delay):
    """After `delay` s, SIGKILL the first stage process that runs; None if the tool ends first."""
    time.sleep(delay)
    while proc.poll() is None:
        for child, name in stage_processes(proc):
            try:
                child.send_signal(signal.SIGKILL)
                return f"SIGKILL {name} (pid {child.pid}) at {time.time() - proc.started:.1f} s"
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.05)
    return None


def ctrl_c(proc, delay):
    """SIGINT to the tool's process group after `delay` s, as a terminal's Ctrl-C; None if it ended first."""
    try:
        proc.wait(delay)
        return None
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        return f"Ctrl-C at {time.time() - proc.started:.1f} s"


def run_tool(project, name, logdir, tag, interruption=None, delay=0.0):
    """Run `name` in project, optionally interrupted; return a dict of what happened."""
    out, err = logdir / f"{tag}-{name}.out", logdir / f"{tag}-{name}.err"
    cmd = [tool(COMMANDS[name][0]), *COMMANDS[name][1:]]
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(cmd, cwd=project, env=tool_env(), stdout=stdout, stderr=stderr,
                                start_new_session=True)
        proc.started = time.time()
        hit = {"kill": kill_a_stage, "ctrl_c": ctrl_c}[interruption](proc, delay) if interruption else None
        try:
            rc = proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = f"hung after {interruption or 'start'}; killed"
    return {"tool": name, "rc": rc, "hit": hit, "secs": round(time.time() - proc.started, 1),
            "stdout": out.read_text(), "stderr": err.read_text(), "tag": tag}


def failed_logs(project, result):
    """Snakemake's failed jobs' log files (their stages write stderr there)."""
    logs = []
    for match in re.finditer(r"^\s*log: (.+?) \(check log file", result["stdout"] + result["stderr"], re.M):
        logs += [project / p.strip() for p in match.group(1).split(",")]
    return [p for p in logs if p.is_file()]


def error_lines(project, result):
    """{where: [lines starting with 'error: ']} over the tool's stderr and failed jobs' logs."""
    sources = {"stderr": result["stderr"]}
    sources.update({str(p.relative_to(project)): p.read_text() for p in failed_logs(project, result)})
    found = {where: [l for l in text.splitlines() if l.startswith("error: ")] for where, text in sources.items()}
    return {where: lines for where, lines in found.items() if lines}


def leftover_locks(project):
    """Lock files an interrupted run left behind."""
    locks = [str(p.relative_to(project)) for p in (project / ".snakemake" / "locks").glob("*")]
    rwlock = project / ".dvc" / "tmp" / "rwlock"
    if rwlock.exists() and re.search(r'"(read|write)":\s*\{\s*"', rwlock.read_text()):
        locks.append(f".dvc/tmp/rwlock: {rwlock.read_text().strip()}")
    return locks


def complete(project, name, logdir, tag, findings):
    """A rerun to completion. On a lock refusal whose message says how, do what it says, once."""
    result = run_tool(project, name, logdir, tag)
    text = result["stdout"] + result["stderr"]
    if result["rc"] != 0 and any(h in text for h in LOCK_HINTS):
        lines = [l for l in text.splitlines() if any(h in l for h in LOCK_HINTS + ("lock", "Lock"))]
        findings.append(f"{tag} {name} refused by a leftover lock: {' | '.join(lines[-4:])}")
        if "--unlock" in text:
            run([tool("snakemake"), "--unlock", "--cores", "1"], cwd=project)
        elif ".dvc/tmp/rwlock" in text:
            (project / ".dvc" / "tmp" / "rwlock").unlink()
        else:
            return result
        result = run_tool(project, name, logdir, tag + "-after-unlock")
    return result


# ----- checks -------------------------------------------------------------------------------
def describe(project, result):
    errors = error_lines(project, result)
    tail = [l for l in (result["stdout"] + result["stderr"]).splitlines() if l.strip()][-3:]
    tail += [f"{p.name}: {p.read_text().strip().splitlines()[-1:]}" for p in failed_logs(project, result)]
    return f"{result['tool']} rc={result['rc']} {result['secs']} s" + (f" {result['hit']}" if result["hit"] else "") \
        + (f" errors={errors}" if errors else "") + (f" tail={tail}" if result["rc"] != 0 and not errors else "")


def clean_error(project, result):
    """Whether a failed run said what is wrong: one `error:` line in each place that has any."""
    errors = error_lines(project, result)
    return bool(errors) and all(len(lines) == 1 for lines in errors.values())


def compared_files(project):
    return sorted(str(p.relative_to(project)) for p in (project / "results" / "metrics").glob("*.json")) \
        + ["results/table.md"]


def differences(project, clean, names):
    return [n for n in names if not (project / n).is_file() or (project / n).read_bytes() != (clean / n).read_bytes()]


def other_tool_agrees(project, name):
    """After a successful run of `name`, the other tool's view: (ok, what it said)."""
    if name == "snakemake":
        status = run([tool("dvc"), "status"], cwd=project, check=False)
        return "Data and pipelines are up to date" in status.stdout, (status.stdout + status.stderr).strip()[-600:]
    sync = run([sys.executable, "-m", "pipeline.sync"], cwd=project, check=False)
    dry = run([tool("snakemake"), "-n", "--cores", "1"], cwd=project, check=False)
    said = (sync.stdout + sync.stderr).strip()[-600:] + " || " + (dry.stdout + dry.stderr).strip()[-600:]
    return "Nothing to be done" in dry.stdout + dry.stderr, said


# ----- projects -----------------------------------------------------------------------------
def copy_code(template, dest, params_text):
    """A fresh project with the template's code (a snapshot: the checkout may change meanwhile)."""
    project = make_project(dest, template / "params.yaml", source=template)
    (project / "params.yaml").write_text(params_text)
    return project


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The chaos grid made once by Snakemake in a DVC workspace (its onsuccess commits to DVC)."""
    root = tmp_path_factory.mktemp("chaos")
    template = make_project(root / "template", CHAOS)
    run([tool("dvc"), "init", "--no-scm", "-q"], cwd=template)
    run([tool("dvc"), "config", "core.analytics", "false"], cwd=template)
    start = time.time()
    run([tool("snakemake"), "--cores", "2"], cwd=template)
    print(f"\ninitial build: {time.time() - start:.0f} s")
    assert other_tool_agrees(template, "snakemake")[0]
    return root, template


def clean_run(root, template, params_text, cache):
    """The results of a clean Snakemake run of params_text in a fresh project (cached by text)."""
    if params_text == (template / "params.yaml").read_text():
        return template  # the initial build is a clean run of the unedited params
    if params_text not in cache:
        dest = copy_code(template, root / f"clean{len(cache)}", params_text)
        start = time.time()
        run([tool("snakemake"), "--cores", "2"], cwd=dest)
        print(f"  clean run of the final params: {time.time() - start:.0f} s")
        cache[params_text] = dest
    return cache[params_text]


# ----- the test -----------------------------------------------------------------------------
def play(root, template, seed, first, findings, problems):
    """Play one seed's plan in a copy of the built project; return (project, last result)."""
    project = root / f"seed{seed}"
    shutil.copytree(template, project, symlinks=True)
    logdir = root / f"logs{seed}"
    logdir.mkdir()
    steps, result = plan(seed), None
    for step, ((kind, interruption, delay, rng), name) in enumerate(zip(steps, tools(first, steps))):
        where = f"[seed {seed} step {step}]"
        print(f"{where} {perturb(project, kind, rng)}", flush=True)
        if interruption:
            result = run_tool(project, name, logdir, f"s{step}i", interruption, delay)
            print(f"{where} {interruption} after {delay} s: {describe(project, result)}", flush=True)
            if result["hit"] is None:
                findings.append(f"seed {seed} step {step}: {interruption} hit nothing ({name} ended first)")
            locks = leftover_locks(project)
            if locks:
                findings.append(f"seed {seed} step {step}: {interruption} of {name} left locks: {locks}")
            continue
        result = complete(project, name, logdir, f"s{step}", findings)
        print(f"{where} rerun: {describe(project, result)}", flush=True)
        if result["rc"] != 0:
            (findings if clean_error(project, result) else problems).append(
                f"seed {seed} step {step}: {name} failed: {describe(project, result)}")
    return project, result


def check_final(root, template, seed, project, result, cache, problems):
    """The contract after a seed's last rerun (see the module docstring)."""
    where = f"seed {seed} final {result['tool']}"
    if result["rc"] != 0:
        errors = error_lines(project, result)
        print(f"  final rerun failed; its error lines: {errors}")
        if not (len(errors) == 1 and clean_error(project, result)):
            problems.append(f"{where}: failed without exactly one error line: {describe(project, result)}")
        return
    clean = clean_run(root, template, (project / "params.yaml").read_text(), cache)
    diff = differences(project, clean, compared_files(clean))
    if diff:
        problems.append(f"{where}: differs from a clean run: {diff}")
    others = differences(project, clean, sorted(set(artifacts(clean)) - set(compared_files(clean))))
    print(f"  identical to a clean run: {not diff}; other artifacts that differ (not asserted): {others}")
    ok, said = other_tool_agrees(project, result["tool"])
    print(f"  the other tool agrees: {ok}")
    if not ok:
        problems.append(f"{where}: the other tool does not agree: {said}")


def test_chaos(built):
    root, template = built
    plans = {seed: plan(seed) for seed in SEEDS}
    kinds = {kind for steps in plans.values() for k, i, _, _ in steps for kind in (k, i) if kind}
    finals = {tools(first, plans[seed])[-1] for first, seed in enumerate(SEEDS)}
    assert sum(map(n_events, plans.values())) >= MIN_EVENTS, "too few events: choose other seeds"
    assert kinds == set(PERTURBATIONS + INTERRUPTIONS) and finals == {"snakemake", "dvc"}, "choose other seeds"
    findings, problems, cache, start = [], [], {}, time.time()
    for first, seed in enumerate(SEEDS):
        print(f"\n=== seed {seed}: {n_events(plans[seed])} events ===", flush=True)
        project, result = play(root, template, seed, first, findings, problems)
        check_final(root, template, seed, project, result, cache, problems)
    print(f"\nchaos: {sum(map(n_events, plans.values()))} events over seeds {SEEDS} in {time.time() - start:.0f} s")
    print("findings (allowed):\n  " + "\n  ".join(findings or ["none"]))
    print("problems:\n  " + "\n  ".join(problems or ["none"]))
    assert not problems, "\n".join(problems)
