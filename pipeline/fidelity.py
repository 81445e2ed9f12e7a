"""Sample-quality metrics (IS, FID, KID) through torch-fidelity, fully offline.

All metric arithmetic is torch-fidelity's own (``torch_fidelity.calculate_metrics``);
this module only supplies what torch-fidelity needs to run here:

1. **The torchvision operator shim** (:func:`import_torch_fidelity`).
   torch-fidelity imports torchvision.  The installed torchvision wheel is a
   CUDA build whose compiled extension (``torchvision/_C.so``) cannot be loaded
   on a machine without the CUDA libraries, so its operators
   (``torchvision::nms``, ``roi_align``, ...) are never registered.
   ``torchvision/_meta_registrations.py`` nevertheless calls
   ``torch.library.register_fake("torchvision::nms")`` (and ``qnms``) at import
   time, which fails with ``RuntimeError: operator torchvision::nms does not
   exist``.  Before torchvision is imported for the first time we therefore
   *declare* the missing operator schemas (no kernels) in a
   ``torch.library.Library("torchvision", "DEF")``.  The import then succeeds;
   calling one of those detection ops would still raise a clear "no kernel"
   error, and neither torch-fidelity nor this pipeline uses them.  The shim is
   installed only when the real compiled ops are unavailable (it first tries to
   load ``_C`` exactly as torchvision would) and it is idempotent.  This is the
   ONE place in the project that knows about the problem: import torchvision /
   torch_fidelity through :func:`import_torch_fidelity` (or call
   :func:`install_torchvision_op_shim` first).

2. **An offline feature extractor.**  torch-fidelity's default InceptionV3
   weights are downloaded from the web.  Instead we train a small CNN
   :class:`Classifier` on the data set itself (:func:`train_classifier`), save
   it with :func:`save_classifier`, and register
   :class:`ClassifierFeatureExtractor` under the name
   :data:`FEATURE_EXTRACTOR_NAME`.  torch-fidelity instantiates it by name and
   forwards the ``feature_extractor_weights_path`` kwarg to it.  It provides
   ``"logits_unbiased"`` (IS) and ``"features"`` (penultimate layer; FID/KID).
   The classifier's last layer has no bias, so its "unbiased" logits are its
   real logits.  Without a weights path the extractor refuses to build: nothing
   is ever downloaded.

3. **FID on resampled sets** (:func:`extract_features`, :func:`fid_statistics`,
   :func:`fid_from_statistics`): features are extracted once by the registered
   extractor through torch-fidelity's own loop, and torch-fidelity's
   ``fid_features_to_statistics`` / ``fid_statistics_to_metric`` score any
   subset or bootstrap resample of them, so draws and resamples cost no new
   feature extraction and no FID is written by hand.

4. **Reference-statistics caching** through torch-fidelity's own cache
   (``cache_root`` + ``input2_cache_name``): :func:`precompute_reference` fills
   the cache in a directory owned by a ``reference`` stage and
   :func:`compute_metrics` reuses it.  The cache entry name embeds a hash of the
   extractor weights file and of the reference images
   (:func:`reference_cache_key`), so stale statistics are never reused.

4. **torch-fidelity's own InceptionV3** (``inception-v3-compat``) for the paper-scale
   metrics: every function takes ``feature_extractor`` (default: the classifier) and
   ``cuda``; ``extractor_weights_path`` is then a local Inception state dict (checked by
   :mod:`pipeline.inception`).  Gray images are replicated to RGB for it.

Images everywhere are ``torch.uint8`` tensors of shape ``[N, C, H, W]``
(C = 1 or 3), as torch-fidelity expects them.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .provenance import file_sha256

__all__ = [
    "FEATURE_EXTRACTOR_NAME",
    "METRIC_KEYS",
    "Classifier",
    "ClassifierFeatureExtractor",
    "UInt8ImageDataset",
    "classifier_accuracy",
    "cached_reference_features",
    "compute_metrics",
    "extract_features",
    "fid_from_statistics",
    "fid_statistics",
    "file_sha256",
    "import_torch_fidelity",
    "install_torchvision_op_shim",
    "load_classifier",
    "precompute_reference",
    "reference_cache_files",
    "reference_cache_key",
    "save_classifier",
    "train_classifier",
]

# ---------------------------------------------------------------------------
# 1. torchvision operator shim
# ---------------------------------------------------------------------------

# Schemas of the operators torchvision's compiled extension registers (copied
# from the schema strings inside torchvision 0.28's _C.so).  The python side of
# torchvision registers fake/meta/autograd kernels for these at import time.
_TORCHVISION_OP_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align": (
        "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor"
    ),
    "_roi_align_backward": (
        "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
        "int sampling_ratio, bool aligned) -> Tensor"
    ),
    "qroi_align": (
        "qroi_align(Tensor input, Tensor rois, float input_scale, int input_zero_point, "
        "float rois_scale, int rois_zero_point, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor"
    ),
    "roi_pool": (
        "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width) -> (Tensor, Tensor)"
    ),
    "_roi_pool_backward": (
        "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
        "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
        "SymInt height, SymInt width) -> Tensor"
    ),
    "ps_roi_align": (
        "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)"
    ),
    "_ps_roi_align_backward": (
        "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
        "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, "
        "SymInt channels, SymInt height, SymInt width) -> Tensor"
    ),
    "ps_roi_pool": (
        "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width) -> (Tensor, Tensor)"
    ),
    "_ps_roi_pool_backward": (
        "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
        "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
        "SymInt height, SymInt width) -> Tensor"
    ),
    "deform_conv2d": (
        "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
        "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, "
        "SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor"
    ),
    "_deform_conv2d_backward": (
        "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, "
        "Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, "
        "SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> (Tensor, Tensor, "
        "Tensor, Tensor, Tensor)"
    ),
}

# The Library object must stay alive: its registrations are removed when it is
# garbage-collected.
_SHIM_LIBRARY: torch.library.Library | None = None
# None: not decided yet; True: real compiled ops present; False: shim in use.
_REAL_TORCHVISION_OPS: bool | None = None


def _torchvision_op_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def _try_load_torchvision_extension() -> bool:
    """Load ``torchvision/_C`` the way ``torchvision.extension`` does, without
    importing the torchvision package.  Returns True if its ops are now present."""
    if _torchvision_op_exists("nms"):
        return True
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, "_C" + suffix)
            if os.path.isfile(path):
                try:
                    torch.ops.load_library(path)
                except (OSError, ImportError, RuntimeError):
                    return False
                return _torchvision_op_exists("nms")
    return False


def install_torchvision_op_shim() -> bool:
    """Make ``import torchvision`` work when its compiled ops cannot be loaded.

    Idempotent.  Must run before torchvision is first imported (if torchvision
    is already imported successfully, there is nothing to do).  Returns True if
    the schema shim is in use, False if the real compiled ops are available.
    """
    global _SHIM_LIBRARY, _REAL_TORCHVISION_OPS
    if _REAL_TORCHVISION_OPS is not None:
        return not _REAL_TORCHVISION_OPS
    if "torchvision" in sys.modules:
        # Already imported successfully (so the ops, real or declared elsewhere,
        # exist): leave it alone.
        _REAL_TORCHVISION_OPS = True
        return False
    if _try_load_torchvision_extension():
        _REAL_TORCHVISION_OPS = True
        return False
    lib = torch.library.Library("torchvision", "DEF")
    for name, schema in _TORCHVISION_OP_SCHEMAS.items():
        if not _torchvision_op_exists(name):
            lib.define(schema)
    _SHIM_LIBRARY = lib
    _REAL_TORCHVISION_OPS = False
    return True


def import_torch_fidelity():
    """Install the torchvision shim if needed, then import and return ``torch_fidelity``.

    Also registers :class:`ClassifierFeatureExtractor` (idempotent)."""
    install_torchvision_op_shim()
    import torch_fidelity

    if "ClassifierFeatureExtractor" in globals():
        _register_feature_extractor(torch_fidelity)
    return torch_fidelity


# ---------------------------------------------------------------------------
# 2. The classifier used as feature extractor
# ---------------------------------------------------------------------------


def _to_unit_range(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
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
    from .io import save_torch  # atomic: a killed stage leaves no half-written weights

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


def _check_images(images: torch.Tensor, what: str = "images") -> None:
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
    _check_images(images_uint8)
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != (images_uint8.shape[0],):
        raise ValueError("labels must have shape [N]")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError("labels out of range")
    x_all = _to_unit_range(images_uint8)
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
    _check_images(images)
    labels = torch.as_tensor(labels, dtype=torch.long)
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        logits = model(_to_unit_range(images[start : start + batch_size]))
        correct += int((logits.argmax(dim=1) == labels[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, images.shape[0])


# ---------------------------------------------------------------------------
# 3. torch-fidelity integration
# ---------------------------------------------------------------------------

_tf = import_torch_fidelity()
from torch_fidelity.feature_extractor_base import FeatureExtractorBase  # noqa: E402
from torch_fidelity.helpers import vassert  # noqa: E402

FEATURE_EXTRACTOR_NAME = "digits-classifier"
METRIC_KEYS = ("isc_mean", "isc_std", "fid", "kid_mean", "kid_std")
DEFAULT_BATCH_SIZE = 256


class ClassifierFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity feature extractor wrapping a saved :class:`Classifier`.

    Built by torch-fidelity as ``cls(name, features_list, **calculate_metrics_kwargs)``;
    the classifier checkpoint comes from the ``feature_extractor_weights_path``
    kwarg (required: nothing is downloaded).  Input: uint8 ``[N, C, H, W]``.
    A 1-channel classifier accepts 3-channel input (averaged to gray, exact for
    gray images stored as RGB); a 3-channel classifier accepts 1-channel input
    (replicated).

    Features: ``"features"`` (penultimate layer, FID/KID/PRC default),
    ``"logits_unbiased"`` (IS default; the head has no bias so these are the
    classifier's logits) and ``"logits"`` (same values).
    """

    def __init__(
        self,
        name,
        features_list,
        feature_extractor_weights_path=None,
        feature_extractor_internal_dtype=None,
        **kwargs,
    ):
        super().__init__(name, features_list)
        vassert(
            feature_extractor_weights_path is not None,
            f'Feature extractor "{name}" needs feature_extractor_weights_path (a checkpoint written by '
            "pipeline.fidelity.save_classifier); it never downloads weights",
        )
        vassert(
            feature_extractor_internal_dtype in (None, "float32", "float64"),
            "Only float32 and float64 are supported as internal dtype",
        )
        self.internal_dtype = torch.float64 if feature_extractor_internal_dtype == "float64" else torch.float32
        self.model = load_classifier(feature_extractor_weights_path)
        self.in_channels = self.model.config["in_channels"]
        self.to(self.internal_dtype)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list():
        return "features", "logits_unbiased", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {
            "isc": "logits_unbiased",
            "fid": "features",
            "kid": "features",
            "prc": "features",
        }[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros([1, 1, 8, 8], dtype=torch.uint8)

    def forward(self, x):
        vassert(torch.is_tensor(x) and x.dtype == torch.uint8, "Expecting image as torch.Tensor with dtype=torch.uint8")
        vassert(x.dim() == 4, f"Input is not BxCxHxW: {tuple(x.shape)}")
        c = x.shape[1]
        if c != self.in_channels:
            if self.in_channels == 1 and c == 3:
                if torch.equal(x[:, :1].expand(-1, 3, -1, -1), x):
                    x = x[:, :1]  # gray stored as RGB: exact
                else:
                    x = x.to(self.internal_dtype).mean(dim=1, keepdim=True)
            elif self.in_channels == 3 and c == 1:
                x = x.expand(-1, 3, -1, -1)
            else:
                raise ValueError(f"Classifier expects {self.in_channels} channels, got {c}")
        x = _to_unit_range(x, self.internal_dtype)
        feats, logits = self.model.features(x)
        out = {"features": feats, "logits_unbiased": logits, "logits": logits}
        return tuple(out[name].to(torch.float32) for name in self.features_list)


def _register_feature_extractor(tf) -> None:
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    existing = FEATURE_EXTRACTORS_REGISTRY.get(FEATURE_EXTRACTOR_NAME)
    if existing is None:
        tf.register_feature_extractor(FEATURE_EXTRACTOR_NAME, ClassifierFeatureExtractor)
    elif existing is not ClassifierFeatureExtractor:
        # Module re-imported (e.g. importlib.reload): point the name at the current class.
        FEATURE_EXTRACTORS_REGISTRY[FEATURE_EXTRACTOR_NAME] = ClassifierFeatureExtractor


_register_feature_extractor(_tf)


INCEPTION_NAME = "inception-v3-compat"


class UInt8ImageDataset(torch.utils.data.Dataset):
    """Wrap a uint8 tensor [N, C, H, W] as the Dataset torch-fidelity expects (yields uint8 CHW).
    ``rgb=True`` replicates gray images to three channels (InceptionV3 takes RGB only)."""

    def __init__(self, images: torch.Tensor, rgb: bool = False):
        _check_images(images)
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
    _check_images(reference_uint8, "reference_uint8")
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
    _check_images(samples_uint8, "samples_uint8")
    _check_images(reference_uint8, "reference_uint8")
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
    _check_images(images)
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
