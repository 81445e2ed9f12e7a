"""Tests for pipeline.metrics's classifier, extractor, fidelity and torchvision_ops modules:
offline torch-fidelity metrics with a digits classifier.

Fast (well under a minute on one thread): 8x8 sklearn digits, a ~5 s classifier.
"""

import math
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

torch.set_num_threads(1)

from pipeline.metrics.classifier import (classifier_accuracy, load_classifier, save_classifier,  # noqa: E402
                                         train_classifier)
from pipeline.metrics.extractor import (FEATURE_EXTRACTOR_NAME, ClassifierFeatureExtractor,  # noqa: E402
                                        import_torch_fidelity)
from pipeline.metrics.fidelity import (METRIC_KEYS, compute_metrics, extract_features,  # noqa: E402
                                       fid_from_statistics, fid_statistics, precompute_reference,
                                       reference_cache_key)
from pipeline.metrics.torchvision_ops import install_torchvision_op_shim  # noqa: E402
from pipeline.provenance import file_sha256  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(np.round(d.images * 255.0 / 16.0).astype(np.uint8))[:, None]  # [N,1,8,8]
    labels = torch.from_numpy(d.target).long()
    perm = torch.from_numpy(np.random.RandomState(0).permutation(len(images)))
    train, held = perm[:1400], perm[1400:]
    return {
        "train_x": images[train].contiguous(),
        "train_y": labels[train].contiguous(),
        "held_x": images[held].contiguous(),
        "held_y": labels[held].contiguous(),
    }


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    model = train_classifier(digits["train_x"], digits["train_y"], 10, steps=300, batch_size=128, lr=5e-3, seed=0,
                                feature_dim=64)
    path = tmp_path_factory.mktemp("clf") / "classifier.pt"
    save_classifier(model, path)
    return model, str(path)


@pytest.fixture(scope="module")
def noise():
    g = torch.Generator().manual_seed(123)
    return torch.randint(0, 256, (500, 1, 8, 8), generator=g, dtype=torch.uint8)


def _finite(metrics):
    return all(math.isfinite(metrics[k]) for k in METRIC_KEYS)


def test_shim_idempotent():
    first = install_torchvision_op_shim()
    tf1 = import_torch_fidelity()
    tf2 = import_torch_fidelity()
    assert tf1 is tf2
    assert install_torchvision_op_shim() == first
    import torchvision  # noqa: F401  (importable now, real ops or shim)

    assert hasattr(torch.ops.torchvision, "nms")
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    assert FEATURE_EXTRACTORS_REGISTRY[FEATURE_EXTRACTOR_NAME] is ClassifierFeatureExtractor


def test_classifier_accuracy_and_checkpoint(digits, trained):
    model, path = trained
    assert classifier_accuracy(model, digits["train_x"], digits["train_y"]) > 0.95
    assert classifier_accuracy(model, digits["held_x"], digits["held_y"]) > 0.9
    ckpt = torch.load(path, weights_only=True)  # plain tensors and ints only
    assert set(ckpt) == {"state_dict", "config"}
    loaded = load_classifier(path)
    x = digits["held_x"][:16].float() / 127.5 - 1
    assert torch.equal(loaded(x), model(x))
    feats, logits = loaded.features(x)
    assert feats.shape == (16, 64) and logits.shape == (16, 10)


def test_training_deterministic(digits):
    args = (digits["train_x"][:256], digits["train_y"][:256], 10)
    a = train_classifier(*args, steps=5, batch_size=32, lr=1e-3, seed=7, feature_dim=64)
    b = train_classifier(*args, steps=5, batch_size=32, lr=1e-3, seed=7, feature_dim=64)
    c = train_classifier(*args, steps=5, batch_size=32, lr=1e-3, seed=8, feature_dim=64)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_extractor_channels(digits, trained):
    _, path = trained
    ext = ClassifierFeatureExtractor(FEATURE_EXTRACTOR_NAME, ["features", "logits_unbiased"],
                                        feature_extractor_weights_path=path)
    x1 = digits["held_x"][:8]
    f1, l1 = ext(x1)
    f3, l3 = ext(x1.expand(-1, 3, -1, -1).contiguous())  # gray stored as RGB
    assert torch.equal(f1, f3) and torch.equal(l1, l3)
    with pytest.raises(ValueError):
        ClassifierFeatureExtractor(FEATURE_EXTRACTOR_NAME, ["features"])  # no weights: never downloads


def test_metrics_real_vs_noise(digits, trained, noise):
    _, path = trained
    real = compute_metrics(digits["held_x"], digits["train_x"], path, kid_subset_size=1000)
    fake = compute_metrics(noise, digits["train_x"], path, kid_subset_size=1000)
    assert set(real) == set(METRIC_KEYS) and _finite(real) and _finite(fake)
    assert fake["fid"] >= 10 * real["fid"]
    assert real["isc_mean"] > 5.0  # 10 classes: at most 10
    assert real["isc_mean"] > 2 * fake["isc_mean"]
    assert fake["kid_mean"] > 10 * abs(real["kid_mean"])


def test_kid_subset_size_clamped(digits, trained):
    _, path = trained
    out = compute_metrics(digits["held_x"][:40], digits["train_x"], path, kid_subset_size=10**6, kid_subsets=5)
    assert _finite(out)


def test_reference_cache_reuse(digits, trained, noise, tmp_path):
    _, path = trained
    cache_root = tmp_path / "reference_cache"
    with pytest.raises(FileNotFoundError):  # evaluate never writes into the reference stage's directory
        compute_metrics(noise, digits["train_x"], path, 1000, cache_root=cache_root, reference_cache_name="digits")

    info = precompute_reference(digits["train_x"], path, cache_root, "digits")
    assert all(os.path.exists(f) for f in info["files"])
    assert info["cache_key"].startswith("digits-w" + file_sha256(path)[:16])
    assert info["isc_mean"] > 5.0
    mtimes = {f: os.stat(f).st_mtime_ns for f in info["files"]}

    for samples in (digits["held_x"], noise):
        cached = compute_metrics(samples, digits["train_x"], path, 1000, cache_root=cache_root,
                                    reference_cache_name="digits", seed=3, kid_subsets=20)
        uncached = compute_metrics(samples, digits["train_x"], path, 1000, seed=3, kid_subsets=20)
        assert cached == uncached
    assert {f: os.stat(f).st_mtime_ns for f in info["files"]} == mtimes  # reused, not rewritten

    # Other weights or other reference images -> another cache entry (stale stats never reused).
    other = tmp_path / "other.pt"
    save_classifier(train_classifier(digits["train_x"][:64], digits["train_y"][:64], 10, steps=1,
                                           batch_size=16, lr=1e-3, seed=1, feature_dim=64), other)
    assert reference_cache_key(digits["train_x"], other, "digits") != info["cache_key"]
    assert reference_cache_key(digits["train_x"][:-1], path, "digits") != info["cache_key"]


def test_fid_from_cached_features_equals_calculate_metrics(digits, trained, noise):
    """Draws and bootstrap resamples score cached features with torch-fidelity's own
    statistics functions: on the full sets they give calculate_metrics' FID."""
    _, path = trained
    reference = fid_statistics(extract_features(digits["train_x"], path))
    for samples in (digits["held_x"], noise):
        features = extract_features(samples, path)
        assert features.shape == (len(samples), 64)
        direct = compute_metrics(samples, digits["train_x"], path, kid_subset_size=100, kid_subsets=2)["fid"]
        assert fid_from_statistics(fid_statistics(features), reference) == pytest.approx(direct, rel=1e-5)
    same = fid_statistics(extract_features(digits["held_x"], path))
    assert abs(fid_from_statistics(same, same)) < 1e-6  # a set against itself: 0
