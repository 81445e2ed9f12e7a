"""The sample stage's figures: images as one grid per panel, quantized to the data's grey
levels; 2-D points as a scatter over the data beside the learned score field (its direction
at a few noise levels, colored by magnitude).
"""

import math

import torch

from diffusion.samplers import score_ve

from ..io import save_figure


def image_grid(images, nrow=None):
    """uint8 [N, C, H, W] -> one [H', W', C] uint8 grid with 1-pixel borders."""
    n, c, h, w = images.shape
    nrow = nrow or int(math.ceil(math.sqrt(n)))
    ncol = int(math.ceil(n / nrow))
    grid = torch.full((c, ncol * (h + 1) + 1, nrow * (w + 1) + 1), 255, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[:, 1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + col * (w + 1): 1 + col * (w + 1) + w] = images[i]
    return grid.permute(1, 2, 0)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_grid_png(images, path, title=None, panels=None):
    """A grid of up to 64 images, or one grid per entry of `panels` ({title: images})."""
    plt = _plt()
    panels = panels or {title: images}
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.3), squeeze=False)
    for ax, (name, imgs) in zip(axes[0], panels.items()):
        if imgs is None or len(imgs) == 0:
            ax.text(0.5, 0.5, name or "no samples", ha="center", va="center", fontsize=14)
        else:
            grid = image_grid(imgs[:64])
            ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid,
                      cmap="gray_r" if grid.shape[-1] == 1 else None, vmin=0, vmax=255,
                      interpolation="nearest")
            if name:
                ax.set_title(name, fontsize=10)
        ax.axis("off")
    save_figure(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def field_levels(process, n=3):
    """n noise levels s = sigma/alpha spread geometrically over the middle of the process."""
    s = (process.sigma / process.alpha).double()
    lo, hi = math.log(float(s[0])), math.log(float(s[-1]))
    return [math.exp(lo + f * (hi - lo)) for f in torch.linspace(0.2, 0.8, n).tolist()]


@torch.no_grad()
def save_points_figure(panels, data, denoiser, path, title=None):
    """Scatter of each sample set ({title: points}) over the data (grey), then the score field
    of `denoiser` at three noise levels: arrows along the score (unit length, so the field
    reads everywhere) colored by |s score| = |D(x; s) - x| / s, which is O(1) where x is
    typical for noise level s and grows away from it."""
    from matplotlib.colors import LogNorm

    plt = _plt()
    data = data.float()
    lo, hi = data.min(0).values, data.max(0).values
    pad = 0.25 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    levels = field_levels(denoiser.process) if denoiser is not None else []
    ncols = len(panels) + len(levels)
    fig, axes = plt.subplots(1, ncols, figsize=(3.6 * ncols, 3.8), squeeze=False)
    for ax, (name, x) in zip(axes[0], panels.items()):
        ax.scatter(data[:, 0], data[:, 1], s=2, c="0.75", label="data")
        if x is not None and len(x):
            ax.scatter(x[:, 0], x[:, 1], s=2, c="C0", label="samples")
        ax.set_title(name, fontsize=9)
    n = 17
    gx, gy = torch.meshgrid(torch.linspace(float(lo[0]), float(hi[0]), n),
                            torch.linspace(float(lo[1]), float(hi[1]), n), indexing="xy")
    grid = torch.stack([gx.flatten(), gy.flatten()], 1)
    step = 0.7 * float((hi - lo).min()) / (n - 1)
    for ax, s in zip(axes[0][len(panels):], levels):
        ax.scatter(data[:, 0], data[:, 1], s=1, c="0.8")
        score = score_ve(denoiser, grid, s)
        size = score.norm(dim=1, keepdim=True).clamp(min=1e-12)
        arrow = score / size * step
        q = ax.quiver(grid[:, 0], grid[:, 1], arrow[:, 0], arrow[:, 1], (size[:, 0] * s).clamp(min=1e-3),
                      cmap="viridis", norm=LogNorm(), angles="xy", scale_units="xy", scale=1, width=0.005)
        fig.colorbar(q, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(which="both", labelsize=6)
        ax.set_title(f"score direction at s = {s:.3g} (color |s score|)", fontsize=8)
    for ax in axes[0]:
        ax.set_xlim(float(lo[0]), float(hi[0]))
        ax.set_ylim(float(lo[1]), float(hi[1]))
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)
