"""Stage `prepare`: load the data set once and write a fixed train / held-out split."""

import argparse

from .data import load_dataset, split
from .io import run_stage, save_torch
from .params import load_or_exit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True, help="output: training split (.pt)")
    parser.add_argument("--heldout", required=True, help="output: held-out split (.pt)")
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    images, labels, levels = load_dataset(params.data.name, params.data.path)
    train_idx, heldout_idx = split(len(images), params.data.heldout_fraction, params.data.split_seed)
    for path, idx in ((args.train, train_idx), (args.heldout, heldout_idx)):
        save_torch({"images": images[idx].contiguous(), "labels": labels[idx],
                    "levels": levels if levels is not None else 0}, path)
    print(f"{params.data.name}: {len(train_idx)} train, {len(heldout_idx)} held-out, "
          f"shape {tuple(images.shape[1:])}, levels {levels}")


if __name__ == "__main__":
    run_stage(main)
