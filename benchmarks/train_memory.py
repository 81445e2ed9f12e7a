"""Peak resident memory of one training job of the default config (the train stage as the
pipeline runs it, with fewer steps: memory does not grow with steps). Goal: < 2 GiB."""

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from common import write

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--cell", default="mu-vlb-learned")
    args = parser.parse_args()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["steps"] = args.steps
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
        run = lambda *a: subprocess.run([sys.executable, "-m", *a], cwd=ROOT, check=True, capture_output=True)
        run("pipeline.prepare", "--params", str(tmp / "params.yaml"), "--train", str(tmp / "train.pt"),
            "--heldout", str(tmp / "heldout.pt"))
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        run("pipeline.train", "--params", str(tmp / "params.yaml"), "--cell", args.cell, "--data", str(tmp / "train.pt"),
            "--out", str(tmp / "m.pt"), "--checkpoint", str(tmp / "c.pt"))
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    write("train_memory", {"config": vars(args), "peak_rss_mib": peak_kib / 1024,
                           "note": "max RSS over the child processes (the train job dominates)",
                           "prepare_peak_mib": before / 1024})


if __name__ == "__main__":
    main()
