"""Atomic, safe file output and loading shared by every stage.

Every output is written to a temporary file in the same folder and renamed into place, so
a killed stage never leaves a file that Snakemake or DVC would take as finished. Tensors
are saved as plain dicts (no pickled objects) and loaded with `weights_only=True`.
"""

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import torch


class StageError(RuntimeError):
    """A user-facing error: one line, no traceback."""


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_torch(obj, path):
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


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


def save_figure(fig, path, **kwargs):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip("."), **kwargs)


def set_threads():
    """Torch threads follow OMP_NUM_THREADS (Snakemake sets it from a rule's `threads`);
    without it (DVC runs one stage at a time) a stage uses every core."""
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    torch.set_num_threads(max(1, threads))
    return threads


def run_stage(main):
    """Run a stage's main(); user-facing errors become one line on stderr and exit 1."""
    from .params import ParamsError

    try:
        main()
    except (StageError, ParamsError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
