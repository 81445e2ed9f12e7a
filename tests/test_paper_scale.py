"""Paper scale on CPU: the CIFAR-10 config's DAG (six Table 2 cells), one cell of a shrunk copy
end to end through the real Inception metrics path (fake CIFAR-10 batches, random Inception
weights written here: nothing is downloaded), the one-line errors for missing data and
missing weights, and the GPU-side switches that run on a CPU too (bf16 autocast, DDP over
gloo, torch.compile). No test needs a GPU."""

import contextlib
import copy
import json
import pickle
import re
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import yaml

from conftest import ROOT, experiment_params, make_project, run, table_rows, tool, tool_env, write_params
from pipeline import accel, dag
from pipeline.data import load_cifar10
from pipeline.io import StageError, load_torch
from pipeline.metrics import inception
from pipeline.params import ParamsError, parse

PAPER = experiment_params("cifar10")  # configs/cifar10.yaml on top of params.yaml
TABLE2 = {("mu", "vlb", "learned"), ("mu", "vlb", "fixed_large"), ("mu", "native", "fixed_large"),
          ("eps", "vlb", "learned"), ("eps", "vlb", "fixed_large"), ("eps", "eps", "fixed_large")}
TRAIN_PER_BATCH, TEST_IMAGES = 2, 10


def write_fake_cifar10(folder, seed=0):
    """CIFAR-10's python format: data_batch_1..5 and test_batch, pickled dicts of a uint8
    [N, 3072] array and a label list, as in cifar-10-batches-py."""
    folder = Path(folder) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    batches = [(f"data_batch_{i}", TRAIN_PER_BATCH) for i in range(1, 6)] + [("test_batch", TEST_IMAGES)]
    for name, n in batches:
        colour = rng.integers(0, 256, (n, 3, 1, 1))
        images = np.clip(colour + rng.normal(0, 40, (n, 3, 32, 32)), 0, 255).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
                         b"data": images.reshape(n, -1), b"filenames": [b"x.png"] * n}, f)
    return folder.parent


def write_random_inception(path):
    """torch-fidelity's FeatureExtractorInceptionV3 with random weights, saved as the plain
    state dict it loads. Its constructor always loads weights (a URL or a path), so loading is
    stubbed while it is built; batch-norm statistics are then set from one batch of random
    images so that features stay O(1) through the 20-odd layers."""
    from pipeline.metrics.extractor import import_torch_fidelity

    import_torch_fidelity()
    from torch_fidelity import feature_extractor_inceptionv3 as module

    cls = module.FeatureExtractorInceptionV3
    saved = cls.load_state_dict, module.load_state_dict_from_url
    cls.load_state_dict, module.load_state_dict_from_url = (lambda self, *a, **k: None), (lambda *a, **k: {})
    try:
        torch.manual_seed(0)
        net = cls(inception.NAME, ["logits"])
    finally:
        cls.load_state_dict, module.load_state_dict_from_url = saved
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: one batch sets the statistics
            m.reset_running_stats()
    net.train()
    with torch.no_grad():
        net(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
    torch.save({k: v.clone() for k, v in net.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    return write_fake_cifar10(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    return write_random_inception(tmp_path_factory.mktemp("inception") / "inception.pth")


def shrunk_paper_config(cifar_dir, weights):
    """configs/cifar10.yaml with a tiny U-Net, a few steps and few samples: one cell, the same
    keys, the same data and metrics path (test split, flips, bf16, snapshots, Inception)."""
    raw = copy.deepcopy(PAPER)
    raw["data"]["path"] = str(cifar_dir)
    raw["process"]["T"] = 100
    raw["model"].update(model_channels=8, channel_mult=[1, 2], num_res_blocks=1)
    raw["train"].update(steps=4, batch_size=8, warmup=2, checkpoint_every=2, log_every=2, eval_every=4,
                        device="cpu", precision="bf16")
    raw["cells"] = {"eps-eps": raw["cells"]["eps-eps"]}
    raw["sample"].update(steps=5, num_samples=10, batch_size=10, device="cpu")
    raw["metrics"].update(kid_subset_size=10, nll_examples=4, snapshot_samples=10, snapshot_nll=True,
                          inception_weights=str(weights), device="cpu", draws=2, resamples=3)
    raw["sampler_study"].update(cells=["eps-eps"], samplers=["ddim"], nfe=[5], num_samples=10)
    raw["stats"].update(bootstrap=50)
    return raw


# ----- the paper config ----------------------------------------------------------------------
def test_paper_config_is_ddpm_table2():
    params = parse(PAPER)
    assert {(c.parameterization, c.weighting, c.Sigma) for c in params.cells.values()} == TABLE2
    assert (params.data.name, params.data.heldout_fraction, params.data.random_flip) == ("cifar10", 0, True)
    t = params.train
    assert (t.steps, t.batch_size, t.lr, t.warmup, t.grad_clip, t.ema_decay) == (800000, 128, 2e-4, 5000, 1.0, 0.9999)
    assert (params.process.schedule, params.process.T, params.model.dropout) == ("linear", 1000, 0.1)
    assert params.sample.num_samples == 50000 and params.metrics.feature_extractor == inception.NAME
    from pipeline.build import build_net

    net = build_net(params.model, (3, 32, 32), "fixed_large")
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == 35.7  # Ho et al. 2020, App. B


@pytest.mark.slow  # a Snakemake/torchrun start: the full suite runs it
def test_paper_dag_dry_runs_six_train_jobs_in_both_tools(tmp_path):
    project = make_project(tmp_path / "paper", write_params(PAPER, tmp_path / "cifar10.yaml"))
    out = run([tool("snakemake"), "-n", "--forceall", "--cores", "2", "--quiet", "rules"], cwd=project).stdout
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M)}
    assert counts["train"] == counts["sample"] == counts["evaluate"] == 6, out
    assert counts["prepare"] == counts["evaluator"] == counts["reference"] == counts["aggregate"] == 1, out
    run([tool("dvc"), "init", "--no-scm", "-q"], cwd=project)
    stages = run([tool("dvc"), "stage", "list"], cwd=project).stdout
    assert len(re.findall(r"^train@", stages, re.M)) == 6, stages


def test_slurm_profile_requests_gpus_for_the_gpu_rules():
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    rules = {stage.name for stage in dag.STAGES}  # the Snakefile's rules besides `all`
    assert set(profile["set-resources"]) <= rules and set(profile["set-threads"]) <= rules
    for rule in ("train", "sample", "evaluate", "reference"):
        assert "--gres=gpu:1" in profile["set-resources"][rule]["slurm_extra"], rule
        assert profile["set-threads"][rule] == profile["set-resources"][rule]["cpus_per_task"], rule


# ----- CIFAR-10 loading ----------------------------------------------------------------------
def test_cifar10_from_a_folder_or_its_archive(cifar_dir, tmp_path):
    (x, y, levels), (xt, yt, _) = load_cifar10(cifar_dir, with_test=True)
    assert x.shape == (5 * TRAIN_PER_BATCH, 3, 32, 32) and x.dtype == torch.uint8 and levels == 256
    assert xt.shape == (TEST_IMAGES, 3, 32, 32) and y.shape == (5 * TRAIN_PER_BATCH,) and yt.dtype == torch.long
    with open(cifar_dir / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        second = pickle.load(f, encoding="bytes")
    assert torch.equal(x[TRAIN_PER_BATCH:2 * TRAIN_PER_BATCH].reshape(TRAIN_PER_BATCH, -1),
                       torch.from_numpy(second[b"data"]))
    archive = tmp_path / "archive"
    archive.mkdir()
    with tarfile.open(archive / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(cifar_dir / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    assert torch.equal(load_cifar10(archive)[0], x)


def test_cifar10_batches_refuse_foreign_pickles(tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps({b"data": Path("x"), b"labels": []}))
    with pytest.raises(StageError, match="is not a CIFAR-10 python batch .*refusing pathlib"):
        load_cifar10(folder)


def _one_line(err):
    text = str(err.value)
    assert "\n" not in text
    return text


def test_missing_cifar10_is_one_line_naming_both_options(tmp_path, monkeypatch):
    with pytest.raises(StageError) as err:
        load_cifar10(tmp_path)  # a folder without the batches
    text = _one_line(err)
    assert "data_batch_1" in text and "data.path" in text and "data.path: null" in text

    def offline(root, train):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr("pipeline.data._download_cifar10", offline)
    with pytest.raises(StageError) as err:
        load_cifar10(None)
    text = _one_line(err)
    assert "could not download" in text and "URLError" in text and "set data.path" in text


def test_prepare_stage_prints_the_cifar_error_as_one_line(tmp_path, capsys):
    from pipeline import prepare
    from pipeline.io import run_stage

    raw = copy.deepcopy(PAPER)
    raw["data"]["path"] = str(tmp_path)  # exists, but holds no batches
    raw["metrics"]["feature_extractor"] = "classifier"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    argv = ["--params", str(tmp_path / "params.yaml"), "--train", str(tmp_path / "t.pt"), "--heldout", str(tmp_path / "h.pt")]
    with pytest.raises(SystemExit) as exit_:
        run_stage(lambda: prepare.main(argv))
    assert exit_.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cifar10: data_batch_1") and "data.path" in lines[0]
    assert not (tmp_path / "t.pt").exists()


# ----- Inception weights ------------------------------------------------------------------------
def test_missing_inception_weights_file_fails_validation():
    raw = copy.deepcopy(PAPER)
    raw["metrics"]["inception_weights"] = "/no/such/inception.pth"
    with pytest.raises(ParamsError) as err:
        parse(raw)
    assert _one_line(err).startswith("metrics.inception_weights: /no/such/inception.pth does not exist")


def test_inception_without_weights_or_network_fails_before_compute(tmp_path, monkeypatch, capsys):
    from pipeline import prepare
    from pipeline.io import run_stage

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache

    def offline(url, dest, timeout=None):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(inception, "_download", offline)
    write_params(PAPER, tmp_path / "params.yaml")  # inception, weights null
    argv = ["--params", str(tmp_path / "params.yaml"), "--train", str(tmp_path / "t.pt"), "--heldout", str(tmp_path / "h.pt")]
    with pytest.raises(SystemExit):
        run_stage(lambda: prepare.main(argv))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: metrics.inception_weights is null and the Inception weights could not be downloaded")
    assert inception.URL in lines[0] and "set metrics.inception_weights" in lines[0]
    assert not (tmp_path / "t.pt").exists()  # before any compute, even before the data


def test_inception_weights_are_checked_weights_only(tmp_path, inception_weights):
    assert inception.resolve_weights(inception_weights) == inception_weights
    wrong = tmp_path / "classifier.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, wrong)
    with pytest.raises(StageError, match="not torch-fidelity's Inception state dict"):
        inception.resolve_weights(wrong)
    pickled = tmp_path / "pickled.pt"
    torch.save({"fc.weight": Path("x")}, pickled)
    with pytest.raises(StageError, match="is not a loadable weights file"):
        inception.resolve_weights(pickled)
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    assert inception.URL == URL_INCEPTION_V3


# ----- GPU-side switches that also run on a CPU ----------------------------------------------
def test_cuda_without_a_gpu_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(StageError) as err:
        accel.resolve_device("cuda", "train.device")
    assert _one_line(err).startswith("train.device: cuda requested but torch sees no GPU")
    assert accel.resolve_device("auto", "train.device") == torch.device("cpu")


def test_ddp_on_missing_gpus_fails_before_relaunch(tmp_path, tiny_params, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from pipeline import train
    from pipeline.io import run_stage

    raw = yaml.safe_load(Path(tiny_params).read_text())
    raw["train"].update(gpus=2, device="cuda")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    outs = {k: str(tmp_path / k) for k in ("out", "checkpoint")}
    argv = ["--params", str(tmp_path / "params.yaml"), "--cell", "eps-eps", "--data", "none.pt",
            *[x for k, v in outs.items() for x in (f"--{k}", v)]]
    with pytest.raises(SystemExit):
        run_stage(lambda: train.main(argv))
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: train.device: cuda requested but torch sees no GPU "
                     "(torch.cuda.is_available() is False); use auto or cpu"]


def test_bf16_forward_returns_float32_close_to_fp32():
    from diffusion.nets import UNet

    torch.manual_seed(0)
    net = UNet(image_size=16, in_channels=3, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
               attention_resolutions=(8,), dropout=0.0)
    for p in net.parameters():  # the U-Net zero-initialises its output layers
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3.0, 700.0])
    exact = accel.Forward(net, "fp32")(x, t)
    low = accel.Forward(net, "bf16", channels_last=True)(x, t)
    assert low.dtype == torch.float32
    assert torch.allclose(low, exact, rtol=0.1, atol=0.05 * exact.abs().max().item())
    assert not torch.equal(low, exact)  # autocast did run the network in bf16


def _train_cell(project, gpus, steps, background=False):
    """The train stage on eps-vlb of `project` with train.gpus and steps set (importance-sampled
    t, so the timestep sampler's state must follow the whole batch too), one thread each."""
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["train"].update(gpus=gpus, steps=steps, checkpoint_every=20, log_every=10, timestep_sampler="importance")
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {"OMP_NUM_THREADS": "1"}
    if not (project / "data/train.pt").exists():
        run([sys.executable, "-m", "pipeline.prepare", "--train", "data/train.pt", "--heldout", "data/heldout.pt"],
            cwd=project, env=env)
    cmd = [sys.executable, "-m", "pipeline.train", "--cell", "eps-vlb", "--data", "data/train.pt",
           "--out", "out/model.pt", "--checkpoint", "out/checkpoint.pt"]
    if background:
        return subprocess.Popen(cmd, cwd=project, env=tool_env(env), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    return run(cmd, cwd=project, env=env)


# Two processes sum the batch's gradient in another order than one (two shard means, averaged
# by the all-reduce): each step differs by float32 rounding, ~1e-7 of a weight; 60-400 Adam
# steps keep the weights within 1e-6 (measured: 3e-8 after 60 steps).
DDP_ATOL = 1e-6


def _assert_same_weights(a, b):
    for key in ("net", "ema"):
        for name in a[key]:
            torch.testing.assert_close(b[key][name], a[key][name], rtol=0, atol=DDP_ATOL, msg=f"{key}.{name}")


@pytest.mark.slow  # a Snakemake/torchrun start: the full suite runs it
def test_ddp_over_gloo_takes_the_steps_of_one_process(tmp_path, tiny_params):
    """train.gpus: 2 on a CPU: the stage relaunches itself under torchrun; the two gloo processes
    draw the same global batch, t and noise, each computes half, and the weights equal a
    1-process run's (DDP_ATOL); rank 0 alone writes the outputs."""
    one = make_project(tmp_path / "one", tiny_params)
    two = make_project(tmp_path / "two", tiny_params)
    _train_cell(one, 1, 60)
    result = _train_cell(two, 2, 60)
    assert "relaunching under torchrun with 2 processes" in result.stderr
    a, b = load_torch(one / "out/model.pt"), load_torch(two / "out/model.pt")
    assert b["summary"]["status"] == "ok" and b["summary"]["processes"] == 2
    assert len(b["losses"]) == 6 and not (two / "out/checkpoint.pt").exists()
    _assert_same_weights(a, b)
    assert [r["step"] for r in a["losses"]] == [r["step"] for r in b["losses"]]
    np.testing.assert_allclose([r["loss"] for r in b["losses"]], [r["loss"] for r in a["losses"]], rtol=1e-5)


@pytest.mark.slow
def test_ddp_killed_and_resumed_still_takes_the_steps_of_one_process(tmp_path, tiny_params):
    """Two gloo processes SIGKILLed after a checkpoint, then rerun: they resume (weights,
    optimizer, EMA, generator and the importance sampler's history) and end with the weights
    of an uninterrupted 1-process run."""
    one = make_project(tmp_path / "one", tiny_params)
    two = make_project(tmp_path / "two", tiny_params)
    _train_cell(one, 1, 400)
    job = _train_cell(two, 2, 400, background=True)
    deadline = time.time() + 120
    while not (two / "out/checkpoint.pt").exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    # torchrun starts its workers in process groups of their own: kill the whole tree, as a
    # scheduler's cgroup would
    tree = psutil.Process(job.pid)
    procs = [*tree.children(recursive=True), tree]
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=10)
    job.wait()
    assert (two / "out/checkpoint.pt").exists() and not (two / "out/model.pt").exists(), \
        "the run was not interrupted between a checkpoint and its end"
    result = _train_cell(two, 2, 400)
    assert re.search(r"resuming from step \d+", result.stderr), result.stderr[-2000:]
    _assert_same_weights(load_torch(one / "out/model.pt"), load_torch(two / "out/model.pt"))


def test_compiled_bf16_training_step_runs_on_cpu():
    """torch.compile's graph capture (the eager backend: no C++ toolchain needed) under
    autocast inside the library's training step."""
    from diffusion import EMA, Objective, training_step, vp_process
    from diffusion.timesteps import UniformSampler
    from diffusion.nets import MLP

    torch.manual_seed(0)
    process = vp_process("linear", 50)
    net = MLP((1, 4, 4), out_channels=1, hidden=16, num_blocks=1)
    objective = Objective(process, "eps", "eps")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    ema = EMA(net, decay=0.9)
    forward = accel.Forward(accel.compiled(net, True, backend="eager"), "bf16")
    generator = torch.Generator().manual_seed(0)
    before = [p.detach().clone() for p in net.parameters()]
    for _ in range(2):
        loss, _, _ = training_step(net, objective, optimizer, torch.randn(8, 1, 4, 4), UniformSampler(50),
                                   generator=generator, ema=ema, forward=forward)
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


# ----- one cell end to end -----------------------------------------------------------------------
@pytest.mark.slow
def test_one_cell_end_to_end_through_inception_metrics(tmp_path, cifar_dir, inception_weights):
    raw = shrunk_paper_config(cifar_dir, inception_weights)
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    project = make_project(tmp_path / "p", tmp_path / "small.yaml")
    run([tool("snakemake"), "--cores", "2"], cwd=project, env={"TORCH_HOME": str(tmp_path / "no-hub")})
    folders = {k: project / v for k, v in raw["paths"].items()}  # the config's own folders
    d, runs_dir, p = folders["data"], folders["runs"], folders["results"]
    assert torch.load(d / "heldout.pt", weights_only=True)["images"].shape[0] == TEST_IMAGES  # the test split
    evaluator = json.loads((p / "evaluator.json").read_text())
    assert evaluator["feature_extractor"] == inception.NAME and evaluator["weights_source"] == str(inception_weights)
    reference = json.loads((p / "reference.json").read_text())
    assert reference["feature_extractor"] == inception.NAME
    assert list((runs_dir / "reference").glob(f"train-w*-{inception.NAME}-stat-fid-2048.pt"))  # cached once, keyed
    summary = json.loads((p / "train/eps-eps/summary.json").read_text())
    assert summary["status"] == "ok" and summary["precision"] == "bf16" and summary["device"] == "cpu"
    metrics = json.loads((p / "metrics/eps-eps.json").read_text())
    assert metrics["status"] == "ok" and metrics["feature_extractor"] == inception.NAME
    for key in ("isc_mean", "fid", "kid_mean", "nll_bpd", "fid_best"):
        assert np.isfinite(metrics[key]), key
    assert [r["step"] for r in metrics["fid_by_step"]] == [4] and metrics["fid_best_step"] == 4
    assert np.isfinite(metrics["fid_by_step"][0]["nll_bpd"])  # metrics.snapshot_nll
    assert 0 < sum(metrics["nll_bpd_by_t"].values()) <= metrics["nll_bpd"] + 1e-4  # the total adds the prior (>= 0)
    assert "class_fractions" not in metrics  # Inception's classes are not CIFAR-10's
    table = (p / "table.md").read_text()
    assert "eps-eps" in table_rows(table) and "inception-v3-compat" in table
    assert "fid_best" in (p / "metrics.csv").read_text() and "nll_bpd@4" in (p / "metrics.csv").read_text()
    assert not list((tmp_path / "no-hub").rglob("*.pth"))  # nothing was downloaded
