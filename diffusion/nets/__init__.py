"""Denoising networks: a DDPM U-Net for images and a residual MLP for small data.

NETWORKS maps config names to constructors.
"""

from .embedding import timestep_embedding
from .mlp import MLP
from .unet import UNet

NETWORKS = {"unet": UNet, "mlp": MLP}

__all__ = ["UNet", "MLP", "timestep_embedding", "NETWORKS"]
