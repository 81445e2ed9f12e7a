"""Sample-quality metrics (IS, FID, KID) through torch-fidelity, fully offline.

All metric arithmetic is torch-fidelity's own (``torch_fidelity.calculate_metrics``); this
module only feeds it the images and the extractor (pipeline.metrics.extractor: the classifier,
or torch-fidelity's own InceptionV3, ``inception-v3-compat``, for the paper-scale metrics, whose
``extractor_weights_path`` is then a local Inception state dict checked by
pipeline.metrics.inception; gray images are replicated to RGB for it).

- **FID on resampled sets** (:func:`extract_features`, :func:`fid_statistics`,
  :func:`fid_from_statistics`): features are extracted once by the registered extractor through
  torch-fidelity's own loop, and torch-fidelity's ``fid_features_to_statistics`` /
  ``fid_statistics_to_metric`` score any subset or bootstrap resample of them, so draws and
  resamples cost no new feature extraction and no FID is written by hand.
- **Reference-statistics caching** through torch-fidelity's own cache (``cache_root`` +
  ``input2_cache_name``): :func:`precompute_reference` fills the cache in a directory owned by
  the ``reference`` stage and :func:`compute_metrics` reuses it. The cache entry name embeds a
  hash of the extractor weights file and of the reference images (:func:`reference_cache_key`),
  so stale statistics are never reused.

Images everywhere are ``torch.uint8`` tensors of shape ``[N, C, H, W]`` (C = 1 or 3), as
torch-fidelity expects them.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch

from ..provenance import file_sha256
from .classifier import check_images
from .extractor import FEATURE_EXTRACTOR_NAME, import_torch_fidelity

METRIC_KEYS = ("isc_mean", "isc_std", "fid", "kid_mean", "kid_std")
DEFAULT_BATCH_SIZE = 256
INCEPTION_NAME = "inception-v3-compat"


class UInt8ImageDataset(torch.utils.data.Dataset):
    """Wrap a uint8 tensor [N, C, H, W] as the Dataset torch-fidelity expects (yields uint8 CHW).
    ``rgb=True`` replicates gray images to three channels (InceptionV3 takes RGB only)."""

    def __init__(self, images: torch.Tensor, rgb: bool = False):
        check_images(images)
        if rgb and images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        self.images = images.contiguous()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def extractor_settings(feature_extractor: str, device: torch.device) -> dict[str, Any]:
    """``feature_extractor`` and ``cuda`` kwargs of these functions for params.metrics'
    ``feature_extractor`` setting (``classifier`` or a torch-fidelity name) and a device."""
    name = FEATURE_EXTRACTOR_NAME if feature_extractor == "classifier" else feature_extractor
    return {"feature_extractor": name, "cuda": device.type == "cuda"}


def _tensor_sha256(images: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(f"{images.dtype}:{tuple(images.shape)}:".encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()


def reference_cache_key(reference_uint8: torch.Tensor, extractor_weights_path: str | os.PathLike,
                        reference_cache_name: str) -> str:
    """torch-fidelity cache entry name for the reference set:
    ``<name>-w<sha256(weights file)[:16]>-d<sha256(reference images)[:16]>``."""
    if not reference_cache_name or os.sep in reference_cache_name or "/" in reference_cache_name:
        raise ValueError(f"bad reference_cache_name {reference_cache_name!r}")
    return (f"{reference_cache_name}-w{file_sha256(extractor_weights_path)[:16]}"
            f"-d{_tensor_sha256(reference_uint8)[:16]}")


def reference_cache_files(cache_root: str | os.PathLike, cache_key: str,
                          feature_extractor: str = FEATURE_EXTRACTOR_NAME) -> list[str]:
    """Files torch-fidelity reads for a cached reference (features for IS/FID/KID + FID stats)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    cls = FEATURE_EXTRACTORS_REGISTRY[feature_extractor]
    layers = sorted({cls.get_default_feature_layer_for_metric(m) for m in ("isc", "fid", "kid")})
    prefix = os.path.join(os.fspath(cache_root), f"{cache_key}-{feature_extractor}")
    fid_layer = cls.get_default_feature_layer_for_metric("fid")
    return [f"{prefix}-features-{layer}.pt" for layer in layers] + [f"{prefix}-stat-fid-{fid_layer}.pt"]


def _common_kwargs(extractor_weights_path, seed: int, batch_size: int,
                   feature_extractor: str = FEATURE_EXTRACTOR_NAME, cuda: bool = False) -> dict[str, Any]:
    return dict(
        cuda=bool(cuda),
        isc=True,
        fid=True,
        kid=True,
        feature_extractor=feature_extractor,
        feature_extractor_weights_path=os.fspath(extractor_weights_path),
        batch_size=int(batch_size),
        rng_seed=int(seed),
        save_cpu_ram=True,  # num_workers=0: no worker processes
        datasets_download=False,
        verbose=False,
    )


def precompute_reference(
    reference_uint8: torch.Tensor,
    extractor_weights_path: str | os.PathLike,
    cache_root: str | os.PathLike,
    reference_cache_name: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    feature_extractor: str = FEATURE_EXTRACTOR_NAME,
    cuda: bool = False,
) -> dict[str, Any]:
    """Fill torch-fidelity's cache in ``cache_root`` with the reference features and FID statistics.

    Runs ``calculate_metrics`` with the reference as both inputs under the same
    cache name: features are extracted once (input1 misses, input2 hits).
    Returns ``{"cache_key", "files", "isc_mean", "isc_std"}`` (IS of the real data).
    """
    check_images(reference_uint8, "reference_uint8")
    tf = import_torch_fidelity()
    key = reference_cache_key(reference_uint8, extractor_weights_path, reference_cache_name)
    os.makedirs(cache_root, exist_ok=True)
    ds = UInt8ImageDataset(reference_uint8, rgb=feature_extractor == INCEPTION_NAME)
    kwargs = _common_kwargs(extractor_weights_path, 0, batch_size, feature_extractor, cuda)
    kwargs.update(
        input1=ds, input2=ds, input1_cache_name=key, input2_cache_name=key,
        cache=True, cache_root=os.fspath(cache_root),
        kid_subsets=1, kid_subset_size=min(2, len(ds)),  # KID itself is irrelevant here
    )
    out = tf.calculate_metrics(**kwargs)
    files = reference_cache_files(cache_root, key, feature_extractor)
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise RuntimeError(f"torch-fidelity did not write the expected cache files: {missing}")
    return {
        "cache_key": key,
        "files": files,
        "isc_mean": float(out[tf.KEY_METRIC_ISC_MEAN]),
        "isc_std": float(out[tf.KEY_METRIC_ISC_STD]),
    }


def compute_metrics(
    samples_uint8: torch.Tensor,
    reference_uint8: torch.Tensor,
    extractor_weights_path: str | os.PathLike,
    kid_subset_size: int = 1000,
    cache_root: str | os.PathLike | None = None,
    reference_cache_name: str | None = None,
    seed: int = 0,
    *,
    kid_subsets: int = 100,
    isc_splits: int = 10,
    batch_size: int = DEFAULT_BATCH_SIZE,
    require_reference_cache: bool = True,
    feature_extractor: str = FEATURE_EXTRACTOR_NAME,
    cuda: bool = False,
) -> dict[str, float]:
    """IS of ``samples_uint8``; FID and KID of samples vs ``reference_uint8`` (torch-fidelity).

    ``kid_subset_size`` is clamped to ``min(kid_subset_size, len(samples), len(reference))``.
    With ``cache_root`` and ``reference_cache_name`` the reference features and
    statistics come from the cache written by :func:`precompute_reference`
    (same arguments); if it is missing and ``require_reference_cache`` is True a
    FileNotFoundError is raised instead of writing into that directory.
    Without them nothing is cached.  Returns floats under :data:`METRIC_KEYS`.
    """
    check_images(samples_uint8, "samples_uint8")
    check_images(reference_uint8, "reference_uint8")
    if samples_uint8.shape[1:] != reference_uint8.shape[1:]:
        raise ValueError(f"samples {tuple(samples_uint8.shape)} and reference {tuple(reference_uint8.shape)} differ")
    n1, n2 = samples_uint8.shape[0], reference_uint8.shape[0]
    if min(n1, n2) < 2 or n1 < isc_splits:
        raise ValueError(f"too few images: samples {n1}, reference {n2} (need >= 2 and >= isc_splits={isc_splits})")
    if (cache_root is None) != (reference_cache_name is None):
        raise ValueError("give both cache_root and reference_cache_name, or neither")
    tf = import_torch_fidelity()
    rgb = feature_extractor == INCEPTION_NAME
    kwargs = _common_kwargs(extractor_weights_path, seed, batch_size, feature_extractor, cuda)
    kwargs.update(
        input1=UInt8ImageDataset(samples_uint8, rgb=rgb),
        input2=UInt8ImageDataset(reference_uint8, rgb=rgb),
        kid_subsets=int(kid_subsets),
        kid_subset_size=int(min(kid_subset_size, n1, n2)),
        isc_splits=int(isc_splits),
    )
    if cache_root is not None:
        key = reference_cache_key(reference_uint8, extractor_weights_path, reference_cache_name)
        missing = [f for f in reference_cache_files(cache_root, key, feature_extractor) if not os.path.exists(f)]
        if missing and require_reference_cache:
            raise FileNotFoundError(
                f"reference cache {key!r} not found in {os.fspath(cache_root)} (missing {missing}); "
                "run precompute_reference with the same weights and reference images first"
            )
        kwargs.update(cache=True, cache_root=os.fspath(cache_root), input2_cache_name=key)
    else:
        kwargs.update(cache=False)
    out = tf.calculate_metrics(**kwargs)
    return {
        "isc_mean": float(out[tf.KEY_METRIC_ISC_MEAN]),
        "isc_std": float(out[tf.KEY_METRIC_ISC_STD]),
        "fid": float(out[tf.KEY_METRIC_FID]),
        "kid_mean": float(out[tf.KEY_METRIC_KID_MEAN]),
        "kid_std": float(out[tf.KEY_METRIC_KID_STD]),
    }


def _fid_layer(feature_extractor: str) -> str:
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    return FEATURE_EXTRACTORS_REGISTRY[feature_extractor].get_default_feature_layer_for_metric("fid")


def extract_features(images: torch.Tensor, extractor_weights_path: str | os.PathLike,
                     batch_size: int = DEFAULT_BATCH_SIZE, feature_extractor: str = FEATURE_EXTRACTOR_NAME,
                     cuda: bool = False) -> torch.Tensor:
    """The FID features [N, D] of uint8 images, by the chosen extractor through
    torch-fidelity's extraction loop (the same features ``calculate_metrics`` uses)."""
    check_images(images)
    import_torch_fidelity()
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    layer = _fid_layer(feature_extractor)
    extractor = create_feature_extractor(feature_extractor, [layer], cuda=cuda, verbose=False,
                                         feature_extractor_weights_path=os.fspath(extractor_weights_path))
    dataset = UInt8ImageDataset(images, rgb=feature_extractor == INCEPTION_NAME)
    features = get_featuresdict_from_dataset(dataset, extractor, int(batch_size),
                                             cuda=cuda, save_cpu_ram=True, verbose=False)
    return features[layer].cpu()


def fid_statistics(features: torch.Tensor) -> dict[str, Any]:
    """torch-fidelity's FID statistics (mean, covariance) of a feature matrix."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    return fid_features_to_statistics(features)


def fid_from_statistics(stat_1: dict[str, Any], stat_2: dict[str, Any]) -> float:
    """torch-fidelity's Frechet distance between two sets of FID statistics."""
    tf = import_torch_fidelity()
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    return float(fid_statistics_to_metric(stat_1, stat_2, verbose=False)[tf.KEY_METRIC_FID])


def cached_reference_features(reference_uint8: torch.Tensor, extractor_weights_path: str | os.PathLike,
                              cache_root: str | os.PathLike, reference_cache_name: str,
                              feature_extractor: str = FEATURE_EXTRACTOR_NAME, cuda: bool = False) -> torch.Tensor:
    """The FID features of a reference set, read from the cache :func:`precompute_reference`
    wrote (a plain tensor, loaded weights-only), so no stage extracts them twice."""
    import_torch_fidelity()
    key = reference_cache_key(reference_uint8, extractor_weights_path, reference_cache_name)
    layer = _fid_layer(feature_extractor)
    path = os.path.join(os.fspath(cache_root), f"{key}-{feature_extractor}-features-{layer}.pt")
    if not os.path.exists(path):
        raise FileNotFoundError(f"reference features {path} not found; run precompute_reference first")
    return torch.load(path, map_location="cpu", weights_only=True)
