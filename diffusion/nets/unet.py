"""DDPM U-Net for image data (Ho et al. 2020, App. B).

Mirrors the layout of the official diffusion_tf model so that the CIFAR-10 configuration
has the published parameter count (35.7M).
"""

import math
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .embedding import timestep_embedding


def group_norm(channels: int, num_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm whose group count divides `channels` (so tiny test configs work)."""
    return nn.GroupNorm(math.gcd(num_groups, channels), channels)


def zero_(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters in place and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def expand_time(t: torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """Turn a scalar or [B] timestep into a float tensor of shape [B] on `device`."""
    t = torch.as_tensor(t, device=device)
    if not t.is_floating_point():
        t = t.float()
    return t.reshape(-1).expand(batch) if t.numel() == 1 else t


class ResBlock(nn.Module):
    """Two 3x3 convs with GroupNorm/SiLU, time embedding added after the first conv."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, num_groups: int):
        super().__init__()
        self.norm1 = group_norm(in_ch, num_groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = group_norm(out_ch, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1))  # Ho et al. 2020: init_scale=0
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over spatial positions, with a residual connection."""

    def __init__(self, channels: int, num_groups: int):
        super().__init__()
        self.norm = group_norm(channels, num_groups)
        # DDPM's 1x1 "nin" projections as Linear layers on the tokens (the same parameters):
        # q, k, v come out with unit stride on channels, which PyTorch's fused attention needs.
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_(nn.Linear(channels, channels))  # Ho et al. 2020: proj_out init_scale=0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [b, hw, c]
        q, k, v = self.qkv(tokens).unsqueeze(1).chunk(3, dim=-1)  # [b, heads=1, hw, c] each
        # softmax(q k^T / sqrt(c)) v through PyTorch's fused kernel (flash / memory-efficient).
        out = self.proj(F.scaled_dot_product_attention(q, k, v).squeeze(1))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution with nearest-neighbour upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One ResBlock, optionally followed by self-attention (a U-Net stage unit)."""

    def __init__(self, in_ch, out_ch, emb_dim, dropout, num_groups, attn: bool):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, dropout, num_groups)
        self.attn = AttnBlock(out_ch, num_groups) if attn else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.res(x, emb))


class UNet(nn.Module):
    """Noise/score predictor eps(x, t) for images: [B, C, H, W], t [B] -> [B, out_channels, H, W].

    t is a float on the discrete-step scale and may be fractional.
    """

    def __init__(
        self,
        image_size: int = 32,
        in_channels: int = 3,
        model_channels: int = 128,
        out_channels: Optional[int] = None,
        channel_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        num_groups: int = 32,
    ):
        super().__init__()
        factor = 2 ** (len(channel_mult) - 1)
        if image_size % factor != 0:
            raise ValueError(f"image_size {image_size} not divisible by 2**{len(channel_mult) - 1}")
        self.image_size = image_size
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.model_channels = model_channels
        emb_dim = 4 * model_channels
        block = dict(emb_dim=emb_dim, dropout=dropout, num_groups=num_groups)

        # Ho et al. 2020, App. B: sinusoidal embedding -> Dense -> SiLU -> Dense.
        self.time_mlp = nn.Sequential(
            nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)

        # Encoder: record the channel count of every feature map kept for a skip connection.
        self.down = nn.ModuleList()
        skips, ch, res = [model_channels], model_channels, image_size
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                out = model_channels * mult
                self.down.append(Level(ch, out, attn=res in attention_resolutions, **block))
                ch = out
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
                res //= 2

        # Ho et al. 2020, App. B: middle is ResBlock -> Attention -> ResBlock.
        self.mid = nn.ModuleList([
            Level(ch, ch, attn=True, **block),
            Level(ch, ch, attn=False, **block),
        ])

        # Decoder: num_res_blocks + 1 blocks per level, each consuming one skip.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                out = model_channels * mult
                self.up.append(Level(ch + skips.pop(), out, attn=res in attention_resolutions, **block))
                ch = out
            if level != 0:
                self.up.append(Upsample(ch))
                res *= 2

        self.norm_out = group_norm(ch, num_groups)
        self.conv_out = zero_(nn.Conv2d(ch, self.out_channels, 3, padding=1))  # Ho et al. 2020: init_scale=0

    def embed_time(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Sinusoidal features of t passed through the time MLP."""
        return self.time_mlp(timestep_embedding(t, self.model_channels).to(dtype))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.embed_time(expand_time(t, x.shape[0], x.device), x.dtype)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, Level) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, Level):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))
