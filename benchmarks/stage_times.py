"""Per-stage seconds and peak memory of the last `snakemake` run, from the `benchmark:` files
each rule writes under logs/benchmarks/ (Snakemake's own measurement: wall seconds, CPU
seconds and peak resident memory of the job's process tree); train, which Snakemake's output
cache forbids to benchmark, from its logs (logs/train/*.log: training-loop seconds, peak
resident memory of the stage's process). Prints one line per rule
(jobs, total, mean and max seconds, peak RSS) and the grid's CPU total, and writes
benchmarks/results/stage_times.json. Goal: no training job over 2 GiB on the default config.
Pass --wall SECONDS (the measured `snakemake --cores all` wall time) to record it beside them."""

import argparse
import csv
from collections import defaultdict
from pathlib import Path

from common import train_log, write

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "logs" / "benchmarks"


def read_tsv(path):
    with path.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return rows[-1] if rows else None


def number(row, key):
    """A numeric column of Snakemake's benchmark row; NaN where it has none ('NA' or '-')."""
    value = row.get(key, "NA")
    return float("nan") if value in ("NA", "-", "") else float(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wall", type=float, default=None, help="measured wall seconds of the run")
    args = parser.parse_args()
    if not BENCH.is_dir():
        raise SystemExit(f"error: {BENCH} does not exist; run `snakemake --cores all` first")
    jobs = defaultdict(list)
    for path in sorted(BENCH.rglob("*.tsv")):
        row = read_tsv(path)
        if row is None:
            continue
        rule = path.relative_to(BENCH).parts[0].removesuffix(".tsv")
        jobs[rule].append({"job": str(path.relative_to(BENCH)), "seconds": float(row["s"]),
                           "cpu_seconds": number(row, "cpu_time"), "max_rss_mb": number(row, "max_rss")})
    for path in sorted((ROOT / "logs" / "train").glob("*.log")):
        seconds, peak = train_log(path)
        jobs["train"].append({"job": str(path.relative_to(ROOT)), "seconds": seconds,
                              "cpu_seconds": float("nan"), "max_rss_mb": peak})
    stages = {}
    print(f"{'rule':<15}{'jobs':>5}{'total s':>10}{'mean s':>9}{'max s':>9}{'peak RSS MB':>13}")
    for rule, rows in jobs.items():
        seconds = [r["seconds"] for r in rows]
        rss = max(r["max_rss_mb"] for r in rows)
        stages[rule] = {"jobs": len(rows), "total_seconds": sum(seconds), "mean_seconds": sum(seconds) / len(rows),
                        "max_seconds": max(seconds), "peak_rss_mb": rss}
        print(f"{rule:<15}{len(rows):>5}{sum(seconds):>10.1f}{sum(seconds) / len(rows):>9.1f}"
              f"{max(seconds):>9.1f}{rss:>13.0f}")
    total = sum(s["total_seconds"] for s in stages.values())
    print(f"sum of job seconds: {total:.0f} s" + (f"; wall {args.wall:.0f} s" if args.wall else ""))
    train_peak = stages.get("train", {}).get("peak_rss_mb")
    write("stage_times", {"stages": stages, "job_seconds_total": total, "wall_seconds": args.wall,
                          "train_peak_rss_mb": train_peak,
                          "train_under_2_gib": None if train_peak is None else train_peak < 2048})


if __name__ == "__main__":
    main()
