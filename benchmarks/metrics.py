"""The metric stage's cost: IS + FID + KID on 1000 generated 8x8 images with the offline
classifier extractor, against the same torch-fidelity code path with Inception-v3
(random weights saved locally: the cost does not depend on the weights). Goal: >= 50x."""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from common import write
from pipeline.data import load_digits
from pipeline.metrics.classifier import save_classifier, train_classifier
from pipeline.metrics.extractor import import_torch_fidelity
from pipeline.metrics.fidelity import compute_metrics


def random_inception_weights(path):
    """Save a random-weight state dict in the layout torch-fidelity's Inception-v3 expects,
    without any download (its loaders are bypassed while the network is built)."""
    from unittest import mock

    import torch_fidelity.feature_extractor_inceptionv3 as inc

    torch.manual_seed(0)
    with mock.patch.object(inc, "load_state_dict_from_url", return_value={}), \
            mock.patch.object(inc.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None):
        model = inc.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
    torch.save(model.state_dict(), path)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    tf = import_torch_fidelity()
    images, labels, _ = load_digits()
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "classifier.pt"
        classifier = train_classifier(images, labels, 10, steps=200, batch_size=128, lr=3e-3, seed=0,
                                      feature_dim=64)
        save_classifier(classifier, weights)
        g = torch.Generator().manual_seed(0)
        fake = images[torch.randint(len(images), (args.n,), generator=g)]
        start = time.perf_counter()
        compute_metrics(fake, images, weights, kid_subset_size=1000)
        ours = time.perf_counter() - start
        rgb = lambda x: torch.nn.functional.interpolate(x.float(), size=32).round().to(torch.uint8).repeat(1, 3, 1, 1)
        random_inception_weights(Path(tmp) / "inception.pth")
        from pipeline.metrics.fidelity import UInt8ImageDataset

        start = time.perf_counter()
        ref = tf.calculate_metrics(input1=UInt8ImageDataset(rgb(fake)), input2=UInt8ImageDataset(rgb(images)),
                                       cuda=False, isc=True, fid=True, kid=True, kid_subset_size=min(1000, args.n),
                                       feature_extractor="inception-v3-compat",
                                       feature_extractor_weights_path=str(Path(tmp) / "inception.pth"),
                                       verbose=False)
        theirs = time.perf_counter() - start
    write("metrics", {"config": vars(args), "seconds_ours": ours, "seconds_inception": theirs,
                      "speedup": theirs / ours, "inception_input": "the same images, nearest-upsampled to 32x32 RGB "
                      "(torch-fidelity resizes to 299x299 inside)", "inception_keys": sorted(ref)})


if __name__ == "__main__":
    main()
