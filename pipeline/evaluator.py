"""Stage `evaluator`: the feature extractor's weights for torch-fidelity. With
`metrics.feature_extractor: classifier`, train the small classifier used on offline data
(logits for IS, penultimate features for FID/KID); with `inception-v3-compat`, train
nothing: copy the checked Inception weights (local file or hub cache) to the output, so the
DAG and the reference-statistics key stay the same and the weights reach every node. 2-D
point data needs none (its metrics are distances on the points): the stage then writes a
marker, so the DAG is the same for every data set."""

import argparse
import time

from . import provenance
from .io import add_threads_argument, load_torch, run_stage, save_json, save_torch, set_threads
from .metrics import inception
from .params import load_or_exit


def inception_weights(params, out):
    source = inception.resolve_weights(params.metrics.inception_weights)
    inception.copy_weights(source, out)
    return {"feature_extractor": inception.NAME, "weights_source": str(source)}


def written(made_by, out):
    """The evaluator's fingerprint and the hash of the weights file it wrote, which every
    scoring stage records as its evaluator: aggregate checks one against the other."""
    return {"fingerprint": made_by, "weights_file_sha256": provenance.file_sha256(out)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--train", required=True)
    parser.add_argument("--heldout", required=True)
    parser.add_argument("--out", required=True, help="output: classifier weights (.pt)")
    parser.add_argument("--metrics", required=True, help="output: accuracy (.json)")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    set_threads(args.threads)
    start = time.perf_counter()
    train, heldout = load_torch(args.train), load_torch(args.heldout)
    made_by = provenance.evaluator_record(params, provenance.data_inputs(train, heldout))
    if params.points:
        save_torch({"kind": "none", "data": params.data.name}, args.out)
        save_json({"note": f"{params.data.name}: 2-D points, no feature extractor", **written(made_by, args.out)},
                  args.metrics)
        print(f"evaluator: not needed for {params.data.name} (2-D points)")
        return
    if params.metrics.feature_extractor == inception.NAME:
        result = inception_weights(params, args.out)
        save_json({**result, **written(made_by, args.out)}, args.metrics)
        print(f"evaluator: {inception.NAME} weights from {result['weights_source']}")
        return
    from .metrics.classifier import classifier_accuracy, save_classifier, train_classifier

    e = params.evaluator
    num_classes = int(train["labels"].max()) + 1
    model = train_classifier(train["images"], train["labels"], num_classes, steps=e.steps,
                             batch_size=e.batch_size, lr=e.lr, seed=e.seed, feature_dim=e.feature_dim)
    result = {
        "feature_extractor": "classifier",
        "train_accuracy": classifier_accuracy(model, train["images"], train["labels"]),
        "heldout_accuracy": classifier_accuracy(model, heldout["images"], heldout["labels"]),
        "feature_dim": e.feature_dim,
    }
    save_classifier(model, args.out)
    save_json({**result, **written(made_by, args.out)}, args.metrics)
    print(f"evaluator: held-out accuracy {result['heldout_accuracy']:.3f} "
          f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    run_stage(main)
