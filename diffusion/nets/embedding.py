"""Sinusoidal embeddings of (possibly fractional) diffusion timesteps.

Shared by every network in this package so that all of them read time the same way.
"""

import math

import torch


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Embed real-valued timesteps t of shape [B] as [B, dim] sin/cos features.

    t is on the discrete-step scale (0..T-1) but may be fractional. The result is float32
    (float64 if t is float64) on t's device; callers cast it to their own dtype.
    """
    # Vaswani et al. 2017, Sec. 3.5; used for diffusion time by Ho et al. 2020, App. B.
    if t.dim() != 1:
        raise ValueError(f"expected t of shape [B], got {tuple(t.shape)}")
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    half = dim // 2
    exponent = torch.arange(half, device=t.device, dtype=dtype) / max(half, 1)
    freqs = torch.exp(-math.log(max_period) * exponent)
    args = t.to(dtype)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb
