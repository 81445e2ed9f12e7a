"""Residual MLP denoiser for vector data and small images (e.g. 2-D points, 8x8 digits).

A cheap stand-in for the U-Net: the input is flattened, so it is fast on one CPU thread.
"""

import math
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .embedding import timestep_embedding
from .unet import expand_time, zero_


class MLPBlock(nn.Module):
    """Pre-norm residual block: LayerNorm, SiLU, Linear, + time embedding, SiLU, Linear."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb_proj = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.fc1(F.silu(self.norm(x))) + self.emb_proj(emb)
        return x + self.fc2(self.dropout(F.silu(h)))


class MLP(nn.Module):
    """Predictor for inputs of per-example shape in_shape = (C, *spatial).

    forward(x [B, *in_shape], t [B]) -> [B, out_channels, *spatial]; t may be fractional.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        out_channels: Optional[int] = None,
        hidden: int = 256,
        num_blocks: int = 3,
        emb_dim: int = 128,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_channels = out_channels or self.in_shape[0]
        self.out_shape = (self.out_channels, *self.in_shape[1:])
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(math.prod(self.in_shape), hidden)
        self.blocks = nn.ModuleList(MLPBlock(hidden, dropout) for _ in range(num_blocks))
        self.norm_out = nn.LayerNorm(hidden)
        self.out = zero_(nn.Linear(hidden, math.prod(self.out_shape)))  # as Ho et al. 2020 zero the last conv

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = expand_time(t, x.shape[0], x.device)
        emb = F.silu(self.time_mlp(timestep_embedding(t, self.emb_dim).to(x.dtype)))
        h = self.inp(x.reshape(x.shape[0], -1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(self.norm_out(h))).reshape(x.shape[0], *self.out_shape)
