"""Lets torchvision (and so torch-fidelity) import where its compiled operators cannot load.

The installed torchvision wheel is a CUDA build whose compiled extension (``torchvision/_C.so``)
cannot be loaded on a machine without the CUDA libraries, so its operators (``torchvision::nms``,
``roi_align``, ...) are never registered, yet ``torchvision/_meta_registrations.py`` calls
``torch.library.register_fake("torchvision::nms")`` at import time and fails with
``RuntimeError: operator torchvision::nms does not exist``. :func:`install_torchvision_op_shim`,
run before torchvision is first imported, *declares* the missing schemas (no kernels) in a
``torch.library.Library("torchvision", "DEF")``: the import then succeeds, and calling one of
those detection ops (which neither torch-fidelity nor this pipeline uses) raises a clear "no
kernel" error. It does so only when the real ops cannot be loaded (it first loads ``_C`` as
torchvision would) and is idempotent. This is the one place in the project that knows about
the problem: import torch-fidelity through ``pipeline.metrics.extractor.import_torch_fidelity``,
or call the shim before importing torchvision.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

import torch

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
