"""Construct the library's objects (process, network, objective) from validated params."""

from diffusion import Objective, output_channels, ve_process, vp_process
from diffusion.nets import MLP, UNet


def build_process(p):
    if p.kind == "ve":
        return ve_process(p.T, sigma_min=p.sigma_min, sigma_max=p.sigma_max)
    return vp_process(p.schedule, p.T)


def build_net(model, data_shape, sigma):
    """The plain network for per-example `data_shape` (C, H, W) or (D,)."""
    out = output_channels(data_shape[0], sigma)
    if model.net == "unet":
        return UNet(image_size=data_shape[-1], in_channels=data_shape[0], out_channels=out,
                    model_channels=model.model_channels, channel_mult=model.channel_mult,
                    num_res_blocks=model.num_res_blocks,
                    attention_resolutions=model.attention_resolutions, dropout=model.dropout)
    return MLP(tuple(data_shape), out_channels=out, hidden=model.hidden,
               num_blocks=model.num_blocks, dropout=model.dropout)


def build_objective(params, cell_id, process, levels):
    cell, train = params.cells[cell_id], params.cell_train(cell_id)
    return Objective(process, cell.parameterization, cell.weighting, cell.sigma,
                     weighting_space=train.weighting_space, gamma=train.min_snr_gamma,
                     levels=levels, vlb_scale=train.vlb_scale,
                     hybrid_lambda=train.hybrid_lambda, normalize=train.normalize_weights)
