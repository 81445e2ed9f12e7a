"""Construct the library's objects (process, network, objective, denoiser) from validated params."""

import json

import torch

from diffusion import Denoiser, Objective, TimestepOptions, output_channels, timestep_sampler, ve_process, vp_process
from diffusion.nets import MLP, UNet


def build_process(p):
    if p.kind == "ve":
        return ve_process(p.T, sigma_min=p.sigma_min, sigma_max=p.sigma_max)
    return vp_process(p.schedule, p.T)


def build_net(model, data_shape, Sigma, weighting=None):
    """The plain network for per-example `data_shape` (C, H, W) or (D,); seed 004's
    uncertainty model and a learned Sigma take twice the data's channels."""
    out = output_channels(data_shape[0], Sigma, weighting)
    if model.net == "unet":
        return UNet(image_size=data_shape[-1], in_channels=data_shape[0], out_channels=out,
                    model_channels=model.model_channels, channel_mult=model.channel_mult,
                    num_res_blocks=model.num_res_blocks,
                    attention_resolutions=model.attention_resolutions, dropout=model.dropout)
    return MLP(tuple(data_shape), out_channels=out, hidden=model.hidden,
               num_blocks=model.num_blocks, dropout=model.dropout)


def build_objective(params, cell_id, process, levels):
    cell, train = params.cells[cell_id], params.cell_train(cell_id)
    return Objective(process, cell.parameterization, cell.weighting, cell.Sigma,
                     weighting_space=train.weighting_space, gamma=train.min_snr_gamma,
                     levels=levels, vlb_scale=train.vlb_scale,
                     hybrid_lambda=train.hybrid_lambda, normalize=train.normalize_weights,
                     sigma_data=params.model.sigma_data, decoder_cdf=params.cell_process(cell_id).decoder_cdf)


def build_timestep_sampler(train, process):
    """The cell's t distribution (train.timestep_sampler) with its settings."""
    return timestep_sampler(train.timestep_sampler, process,
                            TimestepOptions(lognormal_mean=train.lognormal_mean, lognormal_std=train.lognormal_std))


def scores_of(config):
    """The scores a trained cell is sampled with: Tweedie's always, seed 004's as well for the
    uncertainty model (its proposed -(x - mu_theta)/sigma_phi^2 from the same network)."""
    return ("tweedie", "uncertainty") if config["weighting"] == "uncertainty" else ("tweedie",)


def load_denoiser(params, state, data_shape, device=torch.device("cpu"), weights=None, clip_x0=False,
                  score="tweedie"):
    """The EMA network of a trained cell's state (or the snapshot `weights`) on `device`,
    wrapped as a Denoiser in eval mode (channels_last where it helps, see accel)."""
    from . import accel

    config = json.loads(state["config"])
    process = build_process(params.cell_process(config["cell"]))
    net = build_net(params.model, data_shape, config["Sigma"], config.get("weighting"))
    net.load_state_dict(state["ema"] if weights is None else weights)
    channels_last = accel.uses_channels_last(device, params.model)
    net = net.to(device, memory_format=torch.channels_last) if channels_last else net.to(device)
    net.eval()
    return Denoiser(accel.Forward(net, channels_last=channels_last), config["parameterization"], process,
                    config["Sigma"], clip_x0=clip_x0, uncertainty=config.get("weighting") == "uncertainty",
                    score=score, sigma_data=params.model.sigma_data)
