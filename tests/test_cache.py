"""Reuse across experiments: a training cell whose params and code are unchanged is never
retrained because another cell was added. Two separate project copies share one Snakemake
output cache (SNAKEMAKE_OUTPUT_CACHE + --cache), or one DVC cache directory (its run cache);
the second adds a cell and trains only that one, and an edit of the training code is a miss."""

import re

import pytest
import yaml

from conftest import copy_project, make_project, run, tool

pytestmark = pytest.mark.slow

NEW = "eps-min_snr"


def add_cell(project):
    """The tiny grid plus one new weighting row."""
    params = project / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    raw["cells"][NEW] = {"parameterization": "eps", "weighting": "min_snr", "Sigma": "fixed_large"}
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    return list(raw["cells"])


def snakemake(project, cache, *targets):
    result = run([tool("snakemake"), "--cache", "--cores", "2", *targets], cwd=project,
                 env={"SNAKEMAKE_OUTPUT_CACHE": str(cache)})
    return result.stdout + result.stderr


def trained(project, cell):
    """Whether the cell's train command ran: it logs its steps (Snakemake creates the log
    file empty for a job restored from the cache)."""
    log = project / f"logs/train/{cell}.log"
    return log.exists() and "step" in log.read_text()


def summaries(cells):
    return [f"results/train/{c}/summary.json" for c in cells]


@pytest.fixture(scope="module")
def snakemake_runs(tmp_path_factory, tiny_params):
    root = tmp_path_factory.mktemp("sm-cache")
    cache = root / "cache"
    cache.mkdir()
    first = make_project(root / "first", tiny_params)
    old = list(yaml.safe_load(first.joinpath("params.yaml").read_text())["cells"])
    snakemake(first, cache, *summaries(old))
    second = make_project(root / "second", tiny_params)
    cells = add_cell(second)
    log = snakemake(second, cache, *summaries(cells))
    return root, cache, first, second, old, log


def test_snakemake_trains_only_the_new_cell(snakemake_runs):
    _, cache, first, second, old, log = snakemake_runs
    assert trained(second, NEW)
    assert f"Moving output file runs/train/{NEW}.pt to cache" in log
    for cell in old:
        assert f"Symlinking output file runs/train/{cell}.pt from cache" in log
        assert f"Moving output file runs/train/{cell}.pt to cache" not in log  # what a run stores
        assert not trained(second, cell)
        assert (second / f"runs/train/{cell}.pt").resolve().parent == cache.resolve()
        # the committed small results are plain files, written from the restored model
        losses = second / f"results/train/{cell}/losses.csv"
        assert not losses.is_symlink()
        assert losses.read_text() == (first / f"results/train/{cell}/losses.csv").read_text()


def test_snakemake_code_edit_is_a_cache_miss(snakemake_runs):
    _, cache, _, second, old, _ = snakemake_runs
    with open(second / "diffusion" / "losses.py", "a") as f:
        f.write("\n# a change to the training code\n")
    log = snakemake(second, cache, f"runs/train/{old[0]}.pt")
    assert f"Moving output file runs/train/{old[0]}.pt to cache" in log
    assert trained(second, old[0])
    assert len(list(cache.glob("*.pt"))) == len(old) + 2


def test_dvc_run_cache_runs_only_what_the_new_cell_changes(dvc_grid, tmp_path, tiny_params):
    """Two workspaces that share only the DVC cache: the first ran the tiny grid from empty;
    the second, fresh, with one more cell, runs that cell's stages and the grid-wide ones its
    row changes (and the params check); every other stage is restored from the run cache,
    byte for byte, except sampler_table: DVC keeps no run cache for a stage with an uncached
    output that is neither a metric nor a plot (its markdown table), so it runs again
    (seconds, identical bytes)."""
    first = copy_project(dvc_grid, tmp_path / "first")
    old = list(yaml.safe_load(first.joinpath("params.yaml").read_text())["cells"])
    second = make_project(tmp_path / "second", tiny_params)
    run([tool("dvc"), "init", "--no-scm", "-q"], cwd=second)
    run([tool("dvc"), "config", "core.analytics", "false"], cwd=second)
    run([tool("dvc"), "cache", "dir", str(first / ".dvc" / "cache")], cwd=second)
    add_cell(second)
    log = run([tool("dvc"), "repro"], cwd=second).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", log))
    assert ran == {"validate", "aggregate", "plot", "sampler_table", *(f"{s}@{NEW}" for s in ("train", "curves", "sample", "evaluate"))}
    for cell in old:
        assert f"Stage 'train@{cell}' is cached - skipping run, checking out outputs" in log
        for name in (f"runs/train/{cell}.pt", f"runs/samples/{cell}.pt", f"results/metrics/{cell}.json",
                     f"results/train/{cell}/profile.csv", "results/sampler_table.md"):
            assert (second / name).read_bytes() == (first / name).read_bytes(), name
