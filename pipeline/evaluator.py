"""Stage `evaluator`: train the small classifier that torch-fidelity uses as its feature
extractor on offline data (logits for IS, penultimate features for FID/KID). 2-D point data
needs none (its metrics are distances on the points): the stage then writes a marker, so
the DAG is the same for every data set."""

import argparse
import time

from .io import load_torch, run_stage, save_json, save_torch, set_threads
from .params import load_or_exit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True)
    parser.add_argument("--heldout", required=True)
    parser.add_argument("--out", required=True, help="output: classifier weights (.pt)")
    parser.add_argument("--metrics", required=True, help="output: accuracy (.json)")
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    set_threads()
    if params.points:
        save_torch({"kind": "none", "data": params.data.name}, args.out)
        save_json({"note": f"{params.data.name}: 2-D points, no feature extractor"}, args.metrics)
        print(f"evaluator: not needed for {params.data.name} (2-D points)")
        return
    from .fidelity import classifier_accuracy, save_classifier, train_classifier

    train, heldout = load_torch(args.train), load_torch(args.heldout)
    e = params.evaluator
    start = time.perf_counter()
    num_classes = int(train["labels"].max()) + 1
    model = train_classifier(train["images"], train["labels"], num_classes, steps=e.steps,
                             batch_size=e.batch_size, lr=e.lr, seed=e.seed, feature_dim=e.feature_dim)
    result = {
        "train_accuracy": classifier_accuracy(model, train["images"], train["labels"]),
        "heldout_accuracy": classifier_accuracy(model, heldout["images"], heldout["labels"]),
        "feature_dim": e.feature_dim,
        "seconds": round(time.perf_counter() - start, 2),
    }
    save_classifier(model, args.out)
    save_json(result, args.metrics)
    print(f"evaluator: held-out accuracy {result['heldout_accuracy']:.3f}")


if __name__ == "__main__":
    run_stage(main)
