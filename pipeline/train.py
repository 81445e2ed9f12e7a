"""Stage `train`: train one grid cell and write one model file: its EMA weights, loss curve,
per-t profile and summary (the `curves` stage writes the last three out as small results,
so that this stage has a single output for Snakemake's between-workflow cache).

Checkpoints (model, EMA, optimizer, RNG and timestep-sampler state, step) are written
atomically every `train.checkpoint_every` steps to `--checkpoint`; a rerun after a kill
resumes there and ends with the same weights as an uninterrupted run. A loss that becomes
NaN/inf stops the cell cleanly: it is recorded as diverged with its step, and the later
stages skip it.

On a GPU (`train.device`) the data set, the batches and every random draw live on the
device, so no step waits on the host; `train.precision: bf16` runs the network under
autocast, `train.compile` compiles it, and `train.gpus: N > 1` relaunches this stage under
torchrun as N DDP processes that take the steps one process takes: each draws the same global
batch (data, t, noise) from the cell's generator and computes its 1/N of it, the gradients
are averaged, and the timestep sampler sees the whole batch's losses (diffusion.training_step),
so the weights equal a 1-process run's up to float reduction order (with dropout > 0 the masks
differ between ranks). `train.eval_every` keeps EMA snapshots in the output for the evaluate
stage's FID-vs-step curve.

`--live DIR` logs the loss and learning rate through dvclive while the cell trains (every
`train.log_every` steps, from values the loop already has on the host: no extra device
sync), rank 0 only; a resumed run continues the curves from its checkpoint.
"""

import argparse
import dataclasses
import json
import resource
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from diffusion import EMA, training_step, warmup_lr

from . import accel, provenance
from .build import build_net, build_objective, build_process, build_timestep_sampler
from .data import to_model
from .io import add_threads_argument, load_torch, run_stage, save_torch, set_threads
from .params import load_or_exit

PROFILE_POINTS = 40


def cell_config(params, cell_id, data_shape):
    """Everything that determines a cell's training run; stored in its files."""
    return {
        "cell": cell_id,
        **{k: v for k, v in dataclasses.asdict(params.cells[cell_id]).items() if k not in ("train", "process")},
        "train": dataclasses.asdict(params.cell_train(cell_id)),
        "model": dataclasses.asdict(params.model),
        "process": dataclasses.asdict(params.cell_process(cell_id)),
        "data": {"name": params.data.name, "shape": list(data_shape)},
    }


def _random_flip(x0, generator):
    flip = torch.rand(x0.shape[0], generator=generator, device=generator.device) < 0.5
    return torch.where(flip[:, None, None, None].to(x0.device), x0.flip(-1), x0)


@torch.no_grad()
def loss_profile(objective, net, x0, generator, points=PROFILE_POINTS):
    """Mean eps-space MSE and objective loss of `net` at evenly spaced t (the per-t profile).
    For seed 004's uncertainty model also the noise level s = sigma/alpha, the learned
    variance sigma_phi^2 and the seed's predicted optimum s^2 + (mu_theta - x0)^2 (means over
    pixels and examples)."""
    process = objective.process
    rows = []
    for t_value in torch.linspace(0, process.T - 1, points).round().long().tolist():
        t = torch.full(x0.shape[:1], t_value, dtype=torch.long, device=x0.device)
        eps = torch.randn(x0.shape, generator=generator).to(x0.device)
        terms = objective(net, x0, t, eps)
        row = {"t": t_value, "mse_eps": float(terms["mse_eps"].mean()), "loss": float(terms["loss"].mean())}
        if "sigma_phi2" in terms:
            row.update(s=float(process.sigma[t_value] / process.alpha[t_value]),
                       sigma_phi2=float(terms["sigma_phi2"].mean()),
                       seed_sigma_phi2=float(terms["seed_sigma_phi2"].mean()))
        rows.append(row)
    return rows


def live_logger(live_dir, rows, cell_id):
    """A dvclive logger in `live_dir` (emptied) holding `rows`, the loss curve so far: a
    resumed run continues its curves at the checkpoint, without what a killed run logged
    after it. It writes only the metric histories (`plots/metrics/{loss,lr}.tsv`): no
    dvc.yaml, report, experiment or summary (summary.json is the stage's), so the DAG's
    files stay the record and `dvc plots show` reads every file under logs/live. None when
    dvclive cannot start (it refuses a git repository without commits): live metrics are a
    side product and never fail a cell."""
    from dvclive import Live  # imported only when used (half a second)

    try:
        live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)
    except Exception as err:
        print(f"{cell_id}: no live metrics in {live_dir}: dvclive: {err}", file=sys.stderr)
        return None
    for row in rows:
        log_live(live, row)
    return live


def log_live(live, row):
    """One row of the loss curve (step, loss, lr): one line appended to each history."""
    live.step = row["step"]
    live.log_metric("loss", row["loss"])
    live.log_metric("lr", row["lr"])


def train_cell(params, cell_id, data, checkpoint_path, progress=True, runtime=None, live_dir=None):
    """Train one cell; returns (final state dict, loss rows, status dict, (objective, EMA
    net, data)). Under DDP every rank calls it; only rank 0's return value is written, and
    only rank 0 logs live metrics to `live_dir` (None: none)."""
    rt = runtime or accel.Runtime(torch.device("cpu"))
    train = params.cell_train(cell_id)
    cell = params.cells[cell_id]
    images, levels = data["images"], int(data["levels"]) or None
    x_all = to_model(images, levels)
    config = cell_config(params, cell_id, x_all.shape[1:])
    made_by = provenance.model_record(params, cell_id, provenance.data_inputs(data))
    key = made_by["id"]

    torch.manual_seed(train.seed)
    process = build_process(params.cell_process(cell_id))
    net = build_net(params.model, x_all.shape[1:], cell.Sigma, cell.weighting).to(rt.device)
    channels_last = accel.uses_channels_last(rt.device, params.model)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    objective = build_objective(params, cell_id, process, levels).to(rt.device)
    trainable = list(net.parameters()) + list(objective.parameters())
    # fused: one kernel per step instead of a loop over parameters (13% of a default CPU step)
    optimizer = torch.optim.Adam(trainable, lr=train.lr, fused=True)
    ema = EMA(net, decay=train.ema_decay)
    sampler = build_timestep_sampler(train, process)
    if rt.world > 1:
        torch.manual_seed(train.seed + accel.SEED_STRIDE * rt.rank)  # dropout masks differ between ranks
    # One generator, seeded alike on every rank: every rank draws the global batch, t and noise.
    generator = torch.Generator(rt.device).manual_seed(train.seed)
    x_data = x_all.to(rt.device)  # the whole data set on the device: no loader, no host copies
    losses, snapshots, start = [], [], 0

    if checkpoint_path.exists():
        state = load_torch(checkpoint_path)
        found = state.get("fingerprint")
        if not isinstance(found, dict) or found.get("id") != key:
            if rt.main:
                why = provenance.difference(found, made_by) if isinstance(found, dict) else "no fingerprint"
                print(f"{cell_id}: not resuming from {checkpoint_path}: it was made from other settings, code "
                      f"or data ({why}); training from step 0", file=sys.stderr)
        else:
            net.load_state_dict(state["net"])
            objective.load_state_dict(state["objective"])
            optimizer.load_state_dict(state["optimizer"])
            ema.load_state_dict(state["ema"])
            mine = state["ranks"][rt.rank] if "ranks" in state else state
            sampler.load_state_dict(mine["sampler"])
            generator.set_state(mine["generator"])
            torch.set_rng_state(mine["torch_rng"])  # dropout draws from the global RNG
            if "cuda_rng" in mine and rt.device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda_rng"], rt.device)
            losses, start = state["losses"], int(state["step"])
            snapshots = state.get("snapshots", [])
            if rt.main:
                print(f"{cell_id}: resuming from step {start} ({checkpoint_path})", file=sys.stderr)

    # What the loss calls: the same parameters seen through DDP, torch.compile and autocast.
    forward = accel.Forward(accel.compiled(accel.data_parallel(net, rt, list(objective.parameters())),
                                           train.compile),
                            train.precision, channels_last)

    def rank_state():
        mine = {"sampler": sampler.state_dict(), "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state()}
        if rt.device.type == "cuda":
            mine["cuda_rng"] = torch.cuda.get_rng_state(rt.device)
        return mine

    def checkpoint(step):
        ranks = rt.gather(rank_state())  # a collective: every rank takes part
        if not rt.main:
            return
        extra = {"ranks": ranks} if rt.world > 1 else {}
        save_torch({"fingerprint": made_by, "step": step, "net": net.state_dict(),
                    "objective": objective.state_dict(), "optimizer": optimizer.state_dict(),
                    "ema": ema.state_dict(), **ranks[0], **extra, "losses": losses,
                    **({"snapshots": snapshots} if snapshots else {})}, checkpoint_path)

    live = live_logger(live_dir, losses, cell_id) if live_dir and rt.main else None
    status = {"status": "ok", "step": train.steps}
    per_rank = train.batch_size // rt.world
    shard = slice(rt.rank * per_rank, (rt.rank + 1) * per_rank) if rt.world > 1 else None
    gather = rt.all_gather if rt.world > 1 else None
    running = torch.zeros((), device=rt.device)
    bar = tqdm(total=train.steps, initial=start, desc=cell_id, mininterval=1.0,
               disable=not (progress and rt.main and sys.stderr.isatty()))
    t0 = time.perf_counter()
    net.train()
    forward.train()
    for step in range(start, train.steps):
        idx = torch.randint(len(x_data), (train.batch_size,), generator=generator, device=generator.device)
        x0 = x_data[idx]
        if params.data.random_flip:
            x0 = _random_flip(x0, generator)
        lr = warmup_lr(step, train.lr, train.warmup)
        loss, _, _ = training_step(net, objective, optimizer, x0, sampler, generator=generator,
                                   grad_clip=train.grad_clip, ema=ema, lr=lr, forward=forward,
                                   shard=shard, gather=gather)
        running = running + loss  # stays on the device: no sync per step
        bar.update(1)
        if (step + 1) % train.log_every == 0 or step + 1 == train.steps:
            n = (step + 1) % train.log_every or train.log_every
            mean_loss = float(rt.mean(running)) / n  # every rank sees the same value
            running = torch.zeros((), device=rt.device)
            if not torch.isfinite(torch.tensor(mean_loss)):
                status = {"status": "diverged", "step": step + 1}
                if rt.main:
                    print(f"{cell_id}: loss is {mean_loss} at step {step + 1}: diverged", file=sys.stderr)
                break
            losses.append({"step": step + 1, "loss": mean_loss, "lr": lr})
            if live:
                log_live(live, losses[-1])
            if not bar.disable:
                bar.set_postfix(loss=f"{mean_loss:.4g}")
            elif rt.main:
                print(f"{cell_id}: step {step + 1}/{train.steps} loss {mean_loss:.5g}", file=sys.stderr)
        if train.eval_every and rt.main and ((step + 1) % train.eval_every == 0 or step + 1 == train.steps):
            snapshots.append({"step": step + 1, "ema": accel.cpu_state(ema.model)})
        if (step + 1) % train.checkpoint_every == 0 and step + 1 < train.steps:
            checkpoint(step + 1)
    bar.close()
    if rt.main:  # timings go to the log, never into an artifact (same inputs, same bytes)
        print(f"{cell_id}: {status['step'] - start} steps in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    status.update(device=str(rt.device), processes=rt.world, precision=train.precision,
                  compile=train.compile)
    state = {"config": json.dumps(config), "fingerprint": made_by, "status": status["status"],
             "step": status["step"], "ema": accel.cpu_state(ema.model), "net": accel.cpu_state(net),
             "objective": accel.cpu_state(objective)}
    if snapshots:
        state["snapshots"] = snapshots
    return state, losses, status, (objective, ema.model, x_data)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--cell", required=True)
    parser.add_argument("--data", required=True, help="training split (.pt)")
    parser.add_argument("--out", required=True, help="output: final weights, curves and summary (.pt)")
    parser.add_argument("--checkpoint", required=True, help="resumable checkpoint (not an output)")
    parser.add_argument("--live", help="folder for live training metrics (dvclive; not an output)")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    if args.cell not in params.cells:
        raise SystemExit(f"error: cell {args.cell!r} is not in {args.params}")
    set_threads(args.threads)
    train = params.cell_train(args.cell)
    if train.gpus > 1 and not accel.in_torchrun():
        accel.resolve_device(train.device, "train.device", train.gpus - 1)  # one line here, not N
        accel.relaunch(train.gpus, "pipeline.train", argv)  # the workers write every output
        return
    runtime = accel.setup(train.device, train.gpus)
    try:
        _train_and_write(params, args, runtime)
    finally:
        runtime.close()


def _train_and_write(params, args, runtime):
    data = load_torch(args.data)
    checkpoint_path = Path(args.checkpoint)
    state, losses, status, (objective, ema_net, x_all) = train_cell(params, args.cell, data, checkpoint_path,
                                                                    runtime=runtime, live_dir=args.live)
    if not runtime.main:
        return
    profile = []
    if status["status"] == "ok":
        generator = torch.Generator().manual_seed(params.cell_train(args.cell).seed + 1)
        idx = torch.randperm(len(x_all), generator=generator)[:256].to(x_all.device)
        profile = loss_profile(objective, ema_net, x_all[idx], generator)
    state.update(losses=[{"cell": args.cell, **row} for row in losses],
                 profile=[{"cell": args.cell, **row} for row in profile],
                 summary={"cell": args.cell, **status, "fingerprint": state["fingerprint"]["id"]})
    save_torch(state, args.out)
    checkpoint_path.unlink(missing_ok=True)  # finished: the outputs supersede it
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"{args.cell}: {status['status']} after {status['step']} steps; peak memory {peak_mb:.0f} MB",
          file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
