"""Stage `prepare`: load the data set once and write a fixed train / held-out split (or the
data set's own train / test split, `data.heldout_fraction: 0`). With Inception metrics it
first makes sure their weights are at hand, so a run that could not be scored fails here."""

import argparse

from .data import load_dataset, split
from .io import run_stage, save_torch
from .metrics import inception
from .params import load_or_exit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True, help="output: training split (.pt)")
    parser.add_argument("--heldout", required=True, help="output: held-out split (.pt)")
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    if params.metrics.feature_extractor == inception.NAME:
        # Before any compute: a run that cannot score its samples must not train for days.
        inception.resolve_weights(params.metrics.inception_weights)
    if params.data.heldout_fraction == 0:  # the data set's own test split (validated: cifar10)
        (images, labels, levels), (test_images, test_labels, _) = load_dataset(
            params.data.name, params.data.path, with_test=True)
        parts = ((args.train, images, labels), (args.heldout, test_images, test_labels))
    else:
        images, labels, levels = load_dataset(params.data.name, params.data.path)
        train_idx, heldout_idx = split(len(images), params.data.heldout_fraction, params.data.split_seed)
        parts = ((args.train, images[train_idx], labels[train_idx]),
                 (args.heldout, images[heldout_idx], labels[heldout_idx]))
    for path, x, y in parts:
        save_torch({"images": x.contiguous(), "labels": y, "levels": levels if levels is not None else 0}, path)
    print(f"{params.data.name}: {len(parts[0][1])} train, {len(parts[1][1])} held-out, "
          f"shape {tuple(images.shape[1:])}, levels {levels}")


if __name__ == "__main__":
    run_stage(main)
