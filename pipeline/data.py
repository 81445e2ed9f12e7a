"""Data sets as uint8 image tensors [N, C, H, W] with labels and their number of grey levels.

All come from installed packages or a local folder; only CIFAR-10 may come from the network:
`digits` (scikit-learn, 8x8, 17 levels), `fashion_mnist` (Debian's dataset-fashion-mnist IDX
files or `data.path`), `cifar10` (`data.path`: the python batches or their archive, read by
an unpickler that admits numpy arrays only; else torchvision's download where the network
allows; its test batch can be the held-out split), `swiss_roll` (scikit-learn, 2-D).
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


CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_DOWNLOAD_ROOT = "data/cifar10-download"
CIFAR_HINT = (f"set data.path to a folder holding CIFAR-10's python batches ({CIFAR_TRAIN[0]}..5, "
              f"{CIFAR_TEST}) or {CIFAR_ARCHIVE}, or set data.path: null where the network allows "
              "torchvision's download")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR-10's batches (dicts of numpy arrays, lists and bytes) and nothing
    else: any other global in the file is refused instead of executed."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}")
        if module == "numpy.core.multiarray" and np.lib.NumpyVersion(np.__version__) >= "2.0.0":
            module = "numpy._core.multiarray"  # the batches were pickled by numpy 1.x
        return super().find_class(module, name)


def _read_cifar_batch(f, where):
    try:
        d = _ArrayUnpickler(f, encoding="bytes").load()
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return x, np.asarray(d[b"labels"], dtype=np.int64)
    except Exception as err:
        raise StageError(f"cifar10: {where} is not a CIFAR-10 python batch ({type(err).__name__}: {err})"
                         .splitlines()[0]) from None


def _cifar_from_folder(path, names):
    """{name: (images, labels)} for the batch names found under path (files or the archive)."""
    found = {}
    for name in names:
        candidate = next(iter(sorted(Path(path).rglob(name))), None)
        if candidate is not None:
            with open(candidate, "rb") as f:
                found[name] = _read_cifar_batch(f, candidate)
    archive = next(iter(sorted(Path(path).rglob(CIFAR_ARCHIVE))), None)
    if archive is not None and len(found) < len(names):
        import tarfile

        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if name in names and name not in found and member.isfile():
                    found[name] = _read_cifar_batch(tar.extractfile(member), f"{archive}:{member.name}")
    return found


def _download_cifar10(root, train):
    """torchvision's CIFAR10 (downloads once into root); a stalled network times out."""
    import socket

    from .metrics.torchvision_ops import install_torchvision_op_shim

    install_torchvision_op_shim()
    from torchvision import datasets

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)
    try:
        ds = datasets.CIFAR10(root=root, train=train, download=True)
    finally:
        socket.setdefaulttimeout(previous)
    return np.asarray(ds.data).transpose(0, 3, 1, 2), np.asarray(ds.targets, dtype=np.int64)


def load_cifar10(path=None, with_test=False):
    """CIFAR-10's 50000 training images (and with_test, its 10000 test images) as uint8
    [N, 3, 32, 32], from data.path (the python batches or the archive) or torchvision."""
    names = CIFAR_TRAIN + ((CIFAR_TEST,) if with_test else ())
    if path:
        found = _cifar_from_folder(path, names)
        missing = [n for n in names if n not in found]
        if missing:
            raise StageError(f"cifar10: {', '.join(missing)} not found under data.path = {path}; {CIFAR_HINT}")
        parts = [tuple(np.concatenate(a) for a in zip(*(found[n] for n in CIFAR_TRAIN)))]
        if with_test:
            parts.append(found[CIFAR_TEST])
    else:
        try:
            parts = [_download_cifar10(CIFAR_DOWNLOAD_ROOT, train) for train in (True, False)[: 1 + with_test]]
        except Exception as err:
            reason = f"{type(err).__name__}: {err}".splitlines()[0]
            raise StageError(f"cifar10: data.path is null and torchvision could not download CIFAR-10 "
                             f"({reason}); {CIFAR_HINT}") from None
    out = [(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y), 256) for x, y in parts]
    return tuple(out) if with_test else out[0]


def load_swiss_roll(n=4000, seed=0):
    from sklearn.datasets import make_swiss_roll

    points, _ = make_swiss_roll(n, noise=0.5, random_state=seed)
    xy = torch.from_numpy(points[:, [0, 2]]).float() / 7.5  # roughly unit scale
    return xy, torch.zeros(n, dtype=torch.long), None


def load_dataset(name, path=None, with_test=False):
    """(images or points, labels, levels) for a data set name from params.data.name; with_test
    (cifar10 only): ((train images, labels, levels), (test images, labels, levels))."""
    if with_test and name != "cifar10":
        raise StageError(f"{name}: no test split here; use data.heldout_fraction > 0")
    if name == "cifar10":
        return load_cifar10(path, with_test)
    if name == "digits":
        return load_digits()
    if name == "fashion_mnist":
        return load_fashion_mnist(path)
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
