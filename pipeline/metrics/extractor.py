"""The classifier as torch-fidelity's feature extractor, registered under
:data:`FEATURE_EXTRACTOR_NAME` on import. torch-fidelity instantiates it by name and forwards
the ``feature_extractor_weights_path`` kwarg (a checkpoint written by
pipeline.metrics.classifier.save_classifier); without one it refuses to build, so nothing is
ever downloaded. It provides ``"logits_unbiased"`` (IS) and ``"features"`` (the penultimate
layer; FID/KID); the classifier's last layer has no bias, so its "unbiased" logits are its
real logits.
"""

from __future__ import annotations

import torch

from .classifier import load_classifier, to_unit_range
from .torchvision_ops import install_torchvision_op_shim

install_torchvision_op_shim()  # before torch_fidelity imports torchvision
from torch_fidelity.feature_extractor_base import FeatureExtractorBase  # noqa: E402
from torch_fidelity.helpers import vassert  # noqa: E402

FEATURE_EXTRACTOR_NAME = "digits-classifier"


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
            "pipeline.metrics.classifier.save_classifier); it never downloads weights",
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
        x = to_unit_range(x, self.internal_dtype)
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


def import_torch_fidelity():
    """Install the torchvision shim if needed, then import and return ``torch_fidelity``.

    Also registers :class:`ClassifierFeatureExtractor` (idempotent)."""
    install_torchvision_op_shim()
    import torch_fidelity

    _register_feature_extractor(torch_fidelity)
    return torch_fidelity


import_torch_fidelity()  # registered on import: torch-fidelity builds extractors by name
