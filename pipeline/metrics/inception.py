"""torch-fidelity's `inception-v3-compat` weights for the paper-scale metrics, offline-safe.

`metrics.inception_weights` names a local copy of torch-fidelity's converted TF Inception
weights (clusters without network); null takes them from torch's hub cache, downloading
them there once where the network allows. Either way the file is checked as a plain state
dict with `torch.load(weights_only=True)` before torch-fidelity (which loads it itself,
without weights_only) ever sees it, and a missing file or failed download is one line
naming both ways out. `prepare` calls `resolve_weights` first, so a run that could not score
its samples fails before anything trains.
"""

import hashlib
import os
import re
import shutil
from pathlib import Path

import torch

from ..io import StageError, atomic_path

NAME = "inception-v3-compat"
# torch_fidelity.feature_extractor_inceptionv3.URL_INCEPTION_V3 (0.4.0); kept here so that
# checking the weights never imports torch-fidelity and torchvision.
URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
       "weights-inception-2015-12-05-6726825d.pth")
# A few (key, shape) pairs that identify the network; load_state_dict checks the rest.
SIGNATURE = {"Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3), "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
             "fc.weight": (1008, 2048), "fc.bias": (1008,)}
DOWNLOAD_TIMEOUT_S = 60


def hub_path():
    """Where torch.hub (and so torch-fidelity) caches the downloaded weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(URL)


def load_state(path, key="metrics.inception_weights"):
    """The weights at `path` as a plain state dict (weights_only=True), or a StageError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise StageError(f"{key}: {path} is not a loadable weights file "
                         f"({type(err).__name__}: {err})".splitlines()[0]) from None
    if not isinstance(state, dict):
        raise StageError(f"{key}: {path} does not hold a state dict")
    for name, shape in SIGNATURE.items():
        value = state.get(name)
        if not torch.is_tensor(value) or tuple(value.shape) != shape:
            raise StageError(f"{key}: {path} is not torch-fidelity's Inception state dict "
                             f"({name} missing or not of shape {shape})")
    return state


def _download(url, dest, timeout=DOWNLOAD_TIMEOUT_S):
    """Fetch url into dest atomically; the sha256 must start with the hash in the file name
    (torch.hub's convention), so a truncated or wrong file is never left in the cache."""
    import urllib.request

    expected = re.search(r"-([a-f0-9]{8,})\.", os.path.basename(url))
    with atomic_path(dest) as tmp:
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                f.write(block)
        if expected and not digest.hexdigest().startswith(expected.group(1)):
            raise OSError(f"sha256 {digest.hexdigest()[:8]} does not match {expected.group(1)}")


def resolve_weights(path=None):
    """Path of usable Inception weights: `path` (metrics.inception_weights) if given, else
    torch's hub cache, downloading into it where the network allows."""
    if path is not None:
        if not Path(path).is_file():
            raise StageError(f"metrics.inception_weights: {path} does not exist")
        load_state(path)
        return Path(path)
    cached = hub_path()
    if not cached.is_file():
        try:
            _download(URL, cached)
        except Exception as err:  # URLError, timeout, HTTP error, hash mismatch
            reason = f"{type(err).__name__}: {err}".splitlines()[0]
            raise StageError(
                f"metrics.inception_weights is null and the Inception weights could not be downloaded "
                f"to {cached} ({reason}); fetch {URL} where there is network and either set "
                f"metrics.inception_weights to that file or put it at {cached}") from None
    load_state(cached, key=f"torch hub cache {cached}")
    return cached


def copy_weights(source, dest):
    """Copy validated weights byte for byte (atomically): the evaluator stage's output, so the
    weights travel with the DAG's outputs (DVC cache, shared file system) to every node."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
