"""Stage `curves`: write a trained cell's loss curve, per-t loss profile and summary, the
small results committed under results/train/<cell>/, from its model file. Training keeps
them in that file so that the train stage has one output, which Snakemake's between-workflow
cache can store and restore (restored outputs are symlinks into the cache, which git must
not see)."""

import argparse

from .io import load_torch, run_stage, save_json, write_csv


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="the train stage's model file (.pt)")
    parser.add_argument("--losses", required=True, help="output: loss curve (.csv)")
    parser.add_argument("--profile", required=True, help="output: per-t loss profile (.csv)")
    parser.add_argument("--summary", required=True, help="output: status and timing (.json)")
    args = parser.parse_args(argv)
    state = load_torch(args.model)
    write_csv(state["losses"], args.losses)
    write_csv(state["profile"], args.profile)
    save_json(state["summary"], args.summary)


if __name__ == "__main__":
    run_stage(main)
