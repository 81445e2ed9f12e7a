"""Atomic, safe file output and loading shared by every stage.

Every output is written to a temporary file in the same folder and renamed into place, so
a killed stage never leaves a file that Snakemake or DVC would take as finished; it gets the
permissions of a normal file (0666 less the umask, not mkstemp's 0600), and a write that
fails (permissions, a full disk) is one line naming the output. Identical objects give
identical bytes: tensors are saved as plain dicts (no pickled objects) under a fixed archive
name (torch.save names the archive after the file, here a random temporary name) and loaded
with `weights_only=True`; JSON keeps its key order.
"""

import contextlib
import csv
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import torch


class StageError(RuntimeError):
    """A user-facing error: one line, no traceback."""


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it into place only on success. An OSError
    (no permission, disk full) becomes a StageError naming `path`; the previous file stays."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        raise StageError(f"{path}: cannot write ({err.strerror or err})") from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def save_torch(obj, path):
    """torch.save through a file object: the archive is named 'archive', not after the file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as err:  # torch's writer reports a full disk as a RuntimeError
            raise OSError(str(err).splitlines()[0]) from None


def load_torch(path):
    """torch.load with weights_only=True; a missing, corrupt or truncated file is a StageError."""
    path = Path(path)
    if not path.exists():
        raise StageError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/corrupt archives
        raise StageError(f"{path}: corrupt or truncated file ({type(err).__name__}: {err})".splitlines()[0]) from None


def save_json(obj, path):
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def load_json(path):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StageError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise StageError(f"{path}: not valid JSON ({err})") from None


def save_text(text, path):
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(rows, path):
    """Rows of dicts as a CSV file with a header (empty when there are no rows), atomically."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    save_text(buf.getvalue(), path)


def read_csv(path, columns=()):
    """What write_csv wrote, as a DataFrame: an empty file (no rows: a cell that diverged
    before its first log) reads as an empty table with `columns`; a missing file is a StageError."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise StageError(f"{path}: file not found")
    return pd.read_csv(path) if path.stat().st_size else pd.DataFrame({c: [] for c in columns})


def save_figure(fig, path, **kwargs):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip("."), **kwargs)


def add_threads_argument(parser):
    """`--threads N`: the torch threads a stage computes with. The pipeline passes the
    stage table's value (pipeline/dag.py) under both tools; a float reduction's result
    depends on it in the last digits, so a rerun by hand should pass the same value."""
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; the pipeline's value is in pipeline/dag.py)")


def set_threads(threads):
    """Pin torch's threads whatever OMP_NUM_THREADS or the tool says: the same count under
    Snakemake and DVC, so the same floats."""
    if threads < 1:
        raise StageError(f"--threads must be at least 1, got {threads}")
    torch.set_num_threads(threads)


def run_stage(main):
    """Run a stage's main(); user-facing errors become one line on stderr and exit 1."""
    from .params import ParamsError

    try:
        main()
    except (StageError, ParamsError) as err:
        print(err.report() if isinstance(err, ParamsError) else f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
