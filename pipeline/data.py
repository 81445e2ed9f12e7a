"""Data sets as uint8 image tensors [N, C, H, W] with labels and their number of grey levels.

All come from installed packages or a local folder, never from the network:
`digits` (scikit-learn, 8x8, 17 levels), `fashion_mnist` (Debian's dataset-fashion-mnist IDX
files or `data.path`), `cifar10` (a local folder in the python pickle format, `data.path`,
or torchvision's download where the network allows), `swiss_roll` (scikit-learn, 2-D).
Models see x in [-1, 1]; `to_model` and `quantize` convert both ways on the data's grid.
"""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from .io import StageError

FASHION_DIRS = ("/usr/share/datasets/fashion-mnist",)  # Debian package dataset-fashion-mnist


def load_digits():
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    levels = 17
    images = np.round(bunch.images * 255 / (levels - 1)).astype(np.uint8)[:, None]
    return torch.from_numpy(images), torch.from_numpy(bunch.target).long(), levels


def _read_idx(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        _, _, dtype, ndim = struct.unpack(">HBBB", f.read(4))
        shape = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(shape)


def _find(folder, stem):
    for suffix in ("", ".gz"):
        for candidate in Path(folder).rglob(stem + suffix):
            return candidate
    return None


def load_fashion_mnist(path=None):
    folders = [path] if path else list(FASHION_DIRS)
    for folder in folders:
        if folder and Path(folder).exists():
            images = _find(folder, "train-images-idx3-ubyte")
            labels = _find(folder, "train-labels-idx1-ubyte")
            if images and labels:
                x = torch.from_numpy(_read_idx(images).copy())[:, None]
                return x, torch.from_numpy(_read_idx(labels).astype(np.int64)), 256
    raise StageError("fashion_mnist: IDX files not found; install the Debian package "
                     "dataset-fashion-mnist or set data.path to a folder holding them")


def load_cifar10(path=None):
    if path:
        batches = sorted(Path(path).rglob("data_batch_*"))
        if not batches:
            raise StageError(f"cifar10: no data_batch_* files under data.path = {path}")
        xs, ys = [], []
        for batch in batches:
            with open(batch, "rb") as f:
                d = pickle.load(f, encoding="bytes")  # the data set's own format; trusted local file
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[b"labels"], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)), 256
    try:
        from .fidelity import install_torchvision_op_shim

        install_torchvision_op_shim()
        from torchvision import datasets
        ds = datasets.CIFAR10(root="data/cifar10-download", train=True, download=True)
    except Exception as err:
        raise StageError("cifar10: could not download through torchvision "
                         f"({type(err).__name__}); set data.path to a local folder holding "
                         "CIFAR-10's python batches (data_batch_1..5)") from None
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(ds.targets, dtype=torch.long), 256


def load_swiss_roll(n=4000, seed=0):
    from sklearn.datasets import make_swiss_roll

    points, _ = make_swiss_roll(n, noise=0.5, random_state=seed)
    xy = torch.from_numpy(points[:, [0, 2]]).float() / 7.5  # roughly unit scale
    return xy, torch.zeros(n, dtype=torch.long), None


def load_dataset(name, path=None):
    """(images or points, labels, levels) for a data set name from params.data.name."""
    if name == "digits":
        return load_digits()
    if name == "fashion_mnist":
        return load_fashion_mnist(path)
    if name == "cifar10":
        return load_cifar10(path)
    if name == "swiss_roll":
        return load_swiss_roll()
    raise StageError(f"unknown data set {name!r}")


def split(n, heldout_fraction, seed):
    """A fixed permutation split into (train indices, held-out indices)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_heldout = int(round(n * heldout_fraction))
    return perm[n_heldout:].sort().values, perm[:n_heldout].sort().values


def to_model(images, levels):
    """uint8 images on a grid of `levels` values -> float in [-1, 1]."""
    if levels is None:
        return images.float()
    q = torch.round(images.float() * (levels - 1) / 255)
    return q / (levels - 1) * 2 - 1


def quantize(x, levels):
    """Model-space samples -> uint8 images on the data's grid of `levels` values."""
    q = torch.round((x.clamp(-1, 1) + 1) / 2 * (levels - 1))
    return torch.round(q * 255 / (levels - 1)).to(torch.uint8)
