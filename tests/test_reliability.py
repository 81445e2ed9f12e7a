"""Reliability: resume after SIGKILL gives identical weights, atomic outputs, divergence is
recorded and skipped, corrupt files give one clear line, and loading is weights-only."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, make_project, run, table_rows
from pipeline.io import StageError, atomic_path, load_torch, save_torch


def tiny_raw(tiny_params, **train):
    raw = yaml.safe_load(Path(tiny_params).read_text())
    raw["train"].update(train)
    return raw


def prepare(project):
    run([sys.executable, "-m", "pipeline.prepare", "--train", "data/train.pt", "--heldout", "data/heldout.pt"],
        cwd=project)


def train_cmd(cell, tag):
    return [sys.executable, "-m", "pipeline.train", "--cell", cell, "--data", "data/train.pt",
            "--out", f"out/{tag}/model.pt", "--checkpoint", f"out/{tag}/checkpoint.pt",
            "--live", f"out/{tag}/live"]


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_params):
    project = make_project(tmp_path_factory.mktemp("reliability"), tiny_params)
    raw = tiny_raw(tiny_params, steps=1500, checkpoint_every=100, log_every=100)
    raw["model"]["dropout"] = 0.1  # resume must also restore the global RNG that dropout uses
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    prepare(project)
    return project


@pytest.mark.slow
def test_sigkill_and_resume_give_identical_weights(project):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run(train_cmd("eps-vlb", "straight"), cwd=project, env=env)
    proc = subprocess.Popen(train_cmd("eps-vlb", "killed"), cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = project / "out/killed/checkpoint.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if checkpoint.exists() and load_torch(checkpoint)["step"] >= 300:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed; raise train.steps"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_torch(checkpoint)["step"]
    assert 0 < killed_at < 1500
    assert not (project / "out/killed/model.pt").exists()  # nothing that looks finished
    rerun = run(train_cmd("eps-vlb", "killed"), cwd=project, env=env)
    assert f"resuming from step {killed_at}" in rerun.stderr
    a, b = load_torch(project / "out/straight/model.pt"), load_torch(project / "out/killed/model.pt")
    for part in ("ema", "net"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    assert not checkpoint.exists()  # superseded by the outputs
    for name in ("loss", "lr"):  # the live curves continue at the checkpoint: no gap, no repeated step
        straight, resumed = (project / f"out/{tag}/live/plots/metrics/{name}.tsv" for tag in ("straight", "killed"))
        assert resumed.read_text() == straight.read_text(), name
    steps = [int(line.split("\t")[0]) for line in resumed.read_text().splitlines()[1:]]
    assert steps == list(range(100, 1501, 100))


def test_identical_objectives_give_identical_weights(project):
    """eps-native and eps-eps are the same objective: the default grid keeps both as a check."""
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train"]["steps"] = 50
    raw["cells"]["eps-native"] = {"parameterization": "eps", "weighting": "native", "Sigma": "fixed_large"}
    (project / "same.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for cell in ("eps-native", "eps-eps"):
        run(train_cmd(cell, cell)[:3] + ["--params", "same.yaml"] + train_cmd(cell, cell)[3:], cwd=project)
    a, b = load_torch(project / "out/eps-native/model.pt"), load_torch(project / "out/eps-eps/model.pt")
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "result.pt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    save_torch({"x": torch.ones(2)}, target)
    assert torch.equal(load_torch(target)["x"], torch.ones(2))


def test_killed_save_leaves_previous_output_intact(tmp_path):
    """A stage killed while writing leaves the earlier file (or none), never a half-file."""
    target = tmp_path / "big.pt"
    save_torch({"v": torch.zeros(3)}, target)
    code = (f"import torch, os, signal\nfrom pipeline.io import atomic_path\n"
            f"with atomic_path({str(target)!r}) as tmp:\n"
            f"    tmp.write_bytes(b'partial')\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT)
    assert torch.equal(load_torch(target)["v"], torch.zeros(3))


def test_corrupt_or_truncated_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "model.pt"
    save_torch({"w": torch.randn(100, 100)}, path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(StageError, match=re.escape(str(path)) + ": corrupt or truncated"):
        load_torch(path)
    result = subprocess.run([sys.executable, "-m", "pipeline.sample", "--model", str(path), "--data", str(path),
                             "--out", str(tmp_path / "s.pt"), "--grid", str(tmp_path / "g.png")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: corrupt or truncated")


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": Path("x")}, path)  # an arbitrary Python object
    with pytest.raises(StageError, match="corrupt or truncated|Unsupported"):
        load_torch(path)


def _calls(text, name):
    """The full argument text of every call `name(...)` (balanced parentheses)."""
    for match in re.finditer(re.escape(name) + r"\(", text):
        depth, i = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        yield text[match.start():i]


def test_every_torch_load_is_weights_only():
    calls = []
    for source in list((ROOT / "pipeline").rglob("*.py")) + list((ROOT / "diffusion").rglob("*.py")):
        for call in _calls(source.read_text(), "torch.load"):
            calls.append(call)
            assert "weights_only=True" in call, (source, call)
    assert calls  # the check looked at something


@pytest.mark.slow
def test_diverged_cell_is_recorded_and_the_grid_completes(tmp_path, tiny_params):
    project = make_project(tmp_path / "p", tiny_params)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["cells"]["eps-vlb"]["train"] = {"lr": 1.0e30}
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    from conftest import tool

    run([tool("snakemake"), "--cores", "2"], cwd=project)
    metrics = json.loads((project / "results/metrics/eps-vlb.json").read_text())
    assert metrics["status"] == "diverged" and 0 < metrics["step"] <= raw["train"]["steps"]
    assert "fid" not in metrics
    row = table_rows((project / "results/table.md").read_text())["eps-vlb"]
    assert row.count("-") >= 2 and any("diverged at step" in cell for cell in row)
    assert json.loads((project / "results/metrics/eps-eps.json").read_text())["status"] == "ok"


@pytest.mark.slow
def test_second_snakemake_is_refused_by_the_lock(tmp_path, tiny_params):
    from conftest import tool, tool_env

    project = make_project(tmp_path / "p", tiny_params)
    first = subprocess.Popen([tool("snakemake"), "--cores", "1"], cwd=project, env=tool_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not list((project / ".snakemake" / "locks").glob("*")) and time.time() < deadline:
            time.sleep(0.1)
        second = run([tool("snakemake"), "--cores", "1"], cwd=project, check=False)
        assert second.returncode != 0
        assert "cannot be locked" in second.stdout + second.stderr
    finally:
        first.kill()
        first.wait()
