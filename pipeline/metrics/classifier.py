"""The small CNN classifier that serves as the offline feature extractor on digits: the
model, its training and its checkpoint (save / load). torch-fidelity's Inception weights are
downloaded from the web; this classifier is trained on the data set itself instead, and
pipeline.metrics.extractor hands it to torch-fidelity.

Images everywhere are ``torch.uint8`` tensors of shape ``[N, C, H, W]`` (C = 1 or 3).
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F


def to_unit_range(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.to(dtype) / 127.5 - 1.0


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class Classifier(nn.Module):
    """Small CNN classifier for images of shape (C, H, W), H, W >= 8.

    conv3x3(C->w) -> conv3x3(w->2w) -> conv3x3 stride 2 (2w->2w) -> conv3x3
    (2w->2w), each with GroupNorm + ReLU; global average pool; a penultimate
    ``Linear(2w, feature_dim) + ReLU`` (the features used for FID/KID); and a
    bias-free ``Linear(feature_dim, num_classes)`` producing the logits.

    ``forward(x)`` takes float images in [-1, 1] and returns logits;
    ``features(x)`` returns ``(penultimate features, logits)``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, feature_dim: int = 64, width: int = 16):
        super().__init__()
        self.config = {
            "in_channels": int(in_channels),
            "num_classes": int(num_classes),
            "feature_dim": int(feature_dim),
            "width": int(width),
        }
        w = int(width)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1),
            _group_norm(w),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            _group_norm(2 * w),
            nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1),
            _group_norm(2 * w),
            nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            _group_norm(2 * w),
            nn.ReLU(),
        )
        self.feature = nn.Linear(2 * w, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes, bias=False)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x).mean(dim=(2, 3))
        f = F.relu(self.feature(h))
        return f, self.head(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[1]


def save_classifier(model: Classifier, path: str | os.PathLike) -> None:
    """Save ``{"state_dict": ..., "config": {...ints}}`` (plain tensors and ints only,
    loadable with ``torch.load(path, weights_only=True)``)."""
    from ..io import save_torch  # atomic: a killed stage leaves no half-written weights

    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    save_torch({"state_dict": state, "config": dict(model.config)}, path)


def load_classifier(path: str | os.PathLike) -> Classifier:
    ckpt = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path}: not a classifier checkpoint written by save_classifier")
    config = {k: int(v) for k, v in ckpt["config"].items()}
    model = Classifier(**config)
    model.load_state_dict(ckpt["state_dict"])
    model.requires_grad_(False)
    model.eval()
    return model


def check_images(images: torch.Tensor, what: str = "images") -> None:
    if not torch.is_tensor(images) or images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"{what} must be a uint8 tensor [N, C, H, W], got {getattr(images, 'dtype', type(images))} "
                         f"{tuple(getattr(images, 'shape', ()))}")
    if images.shape[2] < 8 or images.shape[3] < 8:
        raise ValueError(f"{what}: H and W must be >= 8, got {tuple(images.shape)}")


def _random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels (zero-padded in [-1,1] space: -1)."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])  # [n, h]
    cols = (dx[:, None] + torch.arange(w)[None, :])  # [n, w]
    idx_n = torch.arange(n)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # [n, h, w, c]
    return out.permute(0, 3, 1, 2).contiguous()


def train_classifier(
    images_uint8: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    feature_dim: int,
    width: int = 16,
    max_shift: int = 1,
    weight_decay: float = 1e-4,
) -> Classifier:
    """Train a :class:`Classifier` on ``images_uint8`` [N,C,H,W] / ``labels`` [N] (CPU).

    Deterministic for a fixed seed (and thread count): the global RNG is not
    touched.  Light augmentation: random translation by up to ``max_shift``
    pixels.  AdamW with a cosine learning-rate schedule.  Returns the model in
    eval mode with gradients disabled.
    """
    check_images(images_uint8)
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != (images_uint8.shape[0],):
        raise ValueError("labels must have shape [N]")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError("labels out of range")
    x_all = to_unit_range(images_uint8)
    n = x_all.shape[0]
    batch_size = min(int(batch_size), n)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = Classifier(images_uint8.shape[1], num_classes, feature_dim, width)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, int(steps)))
    model.train()
    order = torch.randperm(n, generator=gen)
    pos = 0
    for _ in range(int(steps)):
        if pos + batch_size > n:
            order = torch.randperm(n, generator=gen)
            pos = 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        xb = _random_shift(x_all[idx], max_shift, gen)
        loss = F.cross_entropy(model(xb), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.requires_grad_(False)
    model.eval()
    return model


@torch.no_grad()
def classifier_accuracy(model: Classifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on uint8 ``images`` [N,C,H,W]."""
    check_images(images)
    labels = torch.as_tensor(labels, dtype=torch.long)
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        logits = model(to_unit_range(images[start : start + batch_size]))
        correct += int((logits.argmax(dim=1) == labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, images.shape[0])
