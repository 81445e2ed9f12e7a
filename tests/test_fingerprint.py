"""The fingerprint contract in pieces (fast): records and their check, resume only from an
identical fingerprint, byte-identical outputs, one-line write errors, the params Snakemake
plans with, and corrupt outputs found before planning."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import make_project, run, tool
from pipeline import provenance, workflow
from pipeline.io import StageError, save_json, save_torch
from pipeline.params import load, parse


@pytest.fixture(scope="module")
def tiny(tiny_params):
    return yaml.safe_load(tiny_params.read_text())


def with_train(raw, **train):
    raw = json.loads(json.dumps(raw))
    raw["train"].update(train)
    return parse(raw)


def test_records_name_what_differs(tiny):
    data = {"train": "a" * 16}
    old = provenance.model_record(parse(tiny), "eps-vlb", data)
    new = provenance.model_record(with_train(tiny, lr=5e-4), "eps-vlb", data)
    assert old["id"] != new["id"] and old["code"] == provenance.code_hash("train")
    assert provenance.difference(old, new) == "train.lr: 0.001 in the file, 0.0005 now"
    moved = provenance.model_record(parse(tiny), "eps-vlb", {"train": "b" * 16})
    assert provenance.difference(old, moved) == f'data.train: "{"a" * 16}" in the file, "{"b" * 16}" now'
    assert provenance.difference(old, provenance.model_record(parse(tiny), "eps-vlb", data)) is None
    with pytest.raises(StageError) as err:
        provenance.check([("cells.x", old, new), ("cells.y", old, new), ("cells.z", None, new),
                          ("cells.ok", new, new)])
    message = str(err.value)
    assert "\n" not in message and "cells.ok" not in message
    assert "cells.x, cells.y: train.lr: 0.001 in the file, 0.0005 now" in message
    assert "cells.z: no fingerprint" in message


def test_tensor_hash_is_by_value_not_by_file(tmp_path):
    x = {"images": torch.arange(12, dtype=torch.uint8).reshape(3, 4), "levels": 17}
    save_torch(x, tmp_path / "a.pt")
    save_torch({"levels": 17, "images": x["images"].clone()}, tmp_path / "b.pt")
    loaded = torch.load(tmp_path / "b.pt", weights_only=True)
    assert provenance.tensor_hash(x) == provenance.tensor_hash(loaded)
    assert provenance.tensor_hash(x) != provenance.tensor_hash({**x, "images": x["images"].float()})
    assert provenance.tensor_hash(x) != provenance.tensor_hash({**x, "levels": 16})


def test_same_object_same_bytes_and_normal_permissions(tmp_path):
    """torch.save names its archive after the file (here a random temporary name): saved
    through a file object it does not, so two saves are byte-identical."""
    state = {"w": torch.randn(4, 4, generator=torch.Generator().manual_seed(0)), "step": 3}
    save_torch(state, tmp_path / "one.pt")
    save_torch(state, tmp_path / "other.pt")
    assert (tmp_path / "one.pt").read_bytes() == (tmp_path / "other.pt").read_bytes()
    save_json({"b": 1, "a": 2}, tmp_path / "m.json")
    mask = os.umask(0)
    os.umask(mask)
    for name in ("one.pt", "m.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_prepare_twice_writes_identical_bytes(tmp_path, tiny_params):
    project = make_project(tmp_path / "p", tiny_params)
    for name in ("a", "b"):
        run([sys.executable, "-m", "pipeline.prepare", "--train", f"{name}/train.pt", "--heldout",
             f"{name}/heldout.pt"], cwd=project)
    for split in ("train", "heldout"):
        assert (project / f"a/{split}.pt").read_bytes() == (project / f"b/{split}.pt").read_bytes()


def test_a_write_failure_is_one_line(tmp_path, tiny_params):
    project = make_project(tmp_path / "p", tiny_params)
    (project / "blocker").write_text("a file where a folder should be\n")
    result = subprocess.run([sys.executable, "-m", "pipeline.prepare", "--train", "blocker/train.pt",
                             "--heldout", "h.pt"], cwd=project, capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: blocker/train.pt: cannot write ("), lines
    blocker = tmp_path / "blocker-file"
    blocker.write_text("")
    with pytest.raises(StageError, match="cannot write"):
        save_json({"x": 1}, blocker / "x.json")


def test_training_resumes_only_from_an_identical_fingerprint(tmp_path, tiny, capsys):
    """Defect 3: a checkpoint made from other data (or settings) is not resumed from; the run
    starts over and says why, and ends with the weights of a run that had no checkpoint."""
    from pipeline.data import load_dataset
    from pipeline.train import train_cell

    raw = json.loads(json.dumps(tiny))
    raw["train"].update(steps=40, checkpoint_every=20, log_every=10)
    params = parse(raw)
    images, labels, levels = load_dataset("digits", None)
    data = {"images": images[:500], "labels": labels[:500], "levels": levels}
    other = {**data, "images": images[500:1000]}
    checkpoint = tmp_path / "ck.pt"
    train_cell(params, "eps-eps", data, checkpoint, progress=False)
    assert torch.load(checkpoint, weights_only=True)["step"] == 20
    capsys.readouterr()
    resumed, *_ = train_cell(params, "eps-eps", other, checkpoint, progress=False)
    err = capsys.readouterr().err
    assert "not resuming" in err and "data.train" in err and "training from step 0" in err
    fresh, *_ = train_cell(params, "eps-eps", other, tmp_path / "none.pt", progress=False)
    for key in fresh["ema"]:
        assert torch.equal(resumed["ema"][key], fresh["ema"][key]), key
    assert resumed["fingerprint"]["inputs"]["data"]["train"] == provenance.tensor_hash(other)
    # the same data and settings: resumed, and the same weights as without interruption
    train_cell(params, "eps-eps", other, checkpoint, progress=False)
    capsys.readouterr()
    again, *_ = train_cell(params, "eps-eps", other, checkpoint, progress=False)
    assert "resuming from step 20" in capsys.readouterr().err
    for key in fresh["ema"]:
        assert torch.equal(again["ema"][key], fresh["ema"][key]), key


def test_snakemake_params_merge_configfiles_and_config_values_as_yaml_1_2(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(tiny_params.read_text())
    (tmp_path / "over.yaml").write_text("train:\n  lr: 5e-4\ncells:\n  eps-vlb:\n    train: {steps: 30}\n")
    as_snakemake_read_it = yaml.safe_load((tmp_path / "over.yaml").read_text())  # YAML 1.1: '5e-4' a string
    assert as_snakemake_read_it["train"]["lr"] == "5e-4"
    path, merged = workflow.effective_params([tmp_path / "over.yaml"], as_snakemake_read_it, {"stats": {"seed": "4"}})
    assert path.startswith(".snakemake/params/") and merged["train"]["lr"] == 5e-4
    assert merged["stats"]["seed"] == 4 and merged["cells"]["eps-vlb"]["train"] == {"steps": 30}
    assert merged["cells"]["eps-vlb"]["parameterization"] == "eps"
    params = load(path)  # what every stage then reads
    assert params.cell_train("eps-vlb").steps == 30 and params.train.lr == 5e-4
    assert workflow.effective_params([], {}, {}) == ("params.yaml", yaml.safe_load(tiny_params.read_text()))


def test_corrupt_outputs_are_removed_before_planning(tmp_path, capsys):
    good, truncated = tmp_path / "good.pt", tmp_path / "truncated.pt"
    save_torch({"w": torch.zeros(1000)}, good)
    save_torch({"w": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    (tmp_path / "bad.json").write_text('{"fid": 1.')
    (tmp_path / "ok.json").write_text('{"fid": 1.0}')
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    paths = [tmp_path / n for n in ("good.pt", "truncated.pt", "bad.json", "ok.json", "cut.png", "missing.pt")]
    workflow.remove_corrupt(paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.pt", "ok.json"]
    assert capsys.readouterr().err.count("truncated or corrupt") == 3


@pytest.mark.slow  # a Snakemake/torchrun start: the full suite runs it
def test_a_yaml_mistake_under_snakemake_is_the_validators_line(tmp_path, tiny_params):
    project = make_project(tmp_path / "p", tiny_params)
    text = (project / "params.yaml").read_text().replace("  steps: 60", "  steps: [60")
    (project / "params.yaml").write_text(text)
    result = run([tool("snakemake"), "-n", "--cores", "1"], cwd=project, check=False)
    assert result.returncode != 0
    line = next(l for l in result.stderr.splitlines() if l.startswith("error:"))
    assert line.startswith("error: params.yaml: line ") and "not valid YAML" in line, result.stderr[-2000:]
