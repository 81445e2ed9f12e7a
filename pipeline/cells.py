"""Inspect the grid: `python -m pipeline.cells list | show CELL | samples CELL`.

`list` prints every cell of params.yaml with its status (done, diverged, running, missing)
and headline metrics; `show` prints one cell's resolved params, metrics and output paths;
`samples` prints the path of its sample grid and tensor.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .params import load_or_exit


def paths(params, cell):
    """A cell's files, under the experiment's folders (params.yaml `paths:`)."""
    runs, results = params.paths.runs, params.paths.results
    return {
        "model": f"{runs}/train/{cell}.pt",
        "checkpoint": f"{runs}/checkpoints/{cell}.pt",
        "losses": f"{results}/train/{cell}/losses.csv",
        "summary": f"{results}/train/{cell}/summary.json",
        "samples": f"{runs}/samples/{cell}.pt",
        "grid": f"{results}/samples/{cell}.png",
        "metrics": f"{results}/metrics/{cell}.json",
    }


def status(params, cell):
    p = {k: Path(v) for k, v in paths(params, cell).items()}
    if p["metrics"].exists():
        metrics = json.loads(p["metrics"].read_text())
        return metrics.get("status", "done") if metrics.get("status") != "ok" else "done", metrics
    if p["summary"].exists():
        summary = json.loads(p["summary"].read_text())
        if summary.get("status") == "diverged":
            return "diverged", summary
        return "trained", summary
    if p["checkpoint"].exists():
        return "running", {}
    return "missing", {}


def _fmt(value, digits):
    return "-" if value is None else f"{value:.{digits}f}"


def cmd_list(params):
    # 2-D point data has distances instead of FID / IS
    first, second = (("sw", "SW"), ("mmd", "MMD2")) if params.points else (("fid", "FID"), ("isc_mean", "IS"))
    print(f"{'cell':<24} {'param':<6} {'weighting':<18} {'Sigma':<13} {'status':<9} {first[1]:>8} "
          f"{second[1]:>8} {'NLL':>7}")
    for cell_id, cell in params.cells.items():
        state, m = status(params, cell_id)
        print(f"{cell_id:<24} {cell.parameterization:<6} {cell.weighting:<18} {cell.Sigma:<13} {state:<9} "
              f"{_fmt(m.get(first[0]), 3):>8} {_fmt(m.get(second[0]), 4):>8} {_fmt(m.get('nll_bpd'), 3):>7}")


def cmd_show(params, cell_id):
    state, metrics = status(params, cell_id)
    print(json.dumps({
        "cell": cell_id, "status": state,
        "params": {**dataclasses.asdict(params.cells[cell_id]),
                   "train": dataclasses.asdict(params.cell_train(cell_id))},
        "metrics": {k: v for k, v in metrics.items() if k not in ("fingerprint", "versions")},
        "paths": {k: v + ("" if Path(v).exists() else "  (missing)") for k, v in paths(params, cell_id).items()},
    }, indent=2))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every cell with its status and headline metrics")
    for name in ("show", "samples"):
        sub.add_parser(name).add_argument("cell")
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    if args.command == "list":
        return cmd_list(params)
    if args.cell not in params.cells:
        print(f"error: no cell {args.cell!r} in {args.params} (cells: {', '.join(params.cells)})", file=sys.stderr)
        raise SystemExit(2)
    if args.command == "show":
        return cmd_show(params, args.cell)
    p = paths(params, args.cell)
    for key in ("grid", "samples"):
        print(f"{p[key]}{'' if Path(p[key]).exists() else '  (missing)'}")


if __name__ == "__main__":
    main()
