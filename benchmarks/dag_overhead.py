"""No-op rerun of the whole default grid against the tools' own bookkeeping floor: the
same DAG (same rules, inputs and outputs) with every command replaced by `true` and params
validation skipped. Run after a complete grid; both sides
use mtime triggers only so they judge staleness the same way. Goal: <= 1.2x the floor."""

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import write

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def floor_snakefile(text):
    """The Snakefile with params validation skipped and every shell command replaced by `true`."""
    text = text.replace('    validate_once("params.yaml")\n', "    pass\n")
    return re.sub(r"    shell:\n(        \".*\"\n)+", '    shell:\n        "true"\n', text)


def timed(cmd, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if "Nothing to be done" not in out.stdout + out.stderr and "up to date" not in out.stdout:
            raise SystemExit(f"{' '.join(cmd)} is not a no-op here; run the grid first:\n{out.stdout[-2000:]}")
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    floor = ROOT / ".floor.smk"
    floor.write_text(floor_snakefile((ROOT / "Snakefile").read_text()))
    try:
        common = ["--cores", "all", "--rerun-triggers", "mtime"]
        ours = timed([str(BIN / "snakemake"), *common], args.repeats)
        base = timed([str(BIN / "snakemake"), "-s", str(floor), *common], args.repeats)
        dvc = timed([str(BIN / "dvc"), "repro"], args.repeats) if (ROOT / "dvc.lock").exists() else None
    finally:
        floor.unlink(missing_ok=True)
        shutil.rmtree(ROOT / ".snakemake" / "locks", ignore_errors=True)
    write("dag_overhead", {"seconds_snakemake_noop": ours, "seconds_floor": base, "ratio": ours / base,
                           "seconds_dvc_repro_noop": dvc})


if __name__ == "__main__":
    main()
