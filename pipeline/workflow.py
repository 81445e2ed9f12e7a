# Long: all of the Snakefile's glue (listed below), so that the Snakefile holds only rules.
"""What the Snakefile does besides declaring rules, kept here so that it stays readable:

- `effective_params`: the params Snakemake plans with, which the stages must read too.
  params.yaml (read with the project's YAML 1.2 loader, so `1e-3` is a number), then any
  `--configfile` and `--config` on top. Without overrides the stages read params.yaml; with
  them, a resolved copy under .snakemake/params/ whose path every command passes.
- `remove_corrupt`: an output that is present but truncated or corrupt is removed, so that
  Snakemake remakes it (it would otherwise count as done, or fail every rerun downstream).
- `age_edited`: an output changed after Snakemake made it (a text file truncated or edited,
  which no parser can tell) no longer has the time Snakemake recorded; it is remade.
- `age_stale_unrecorded`: outputs that DVC made (or a pull brought) carry no Snakemake record
  of their params, so Snakemake cannot see a params change since; their fingerprints can, and
  a stale one is dated 1970 so that Snakemake remakes it (a dry run shows the same plan).
- `record_in_dvc`: after a successful complete run, `dvc commit` records the outputs in
  dvc.lock, so that `dvc status` agrees with `snakemake -n` (see pipeline/sync.py for DVC ->
  Snakemake).

Imports stay light (no torch): the Snakefile runs this on every invocation.
"""

import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from . import experiments
from .experiments import merge
from .params import load_yaml, yaml_scalar

PARAMS = "params.yaml"


def _numbers_from(parsed, snakemake_value):
    """Snakemake reads --configfile with YAML 1.1, where `1e-3` is a string: take the number
    our YAML 1.2 reading of that file found at the same key path."""
    if isinstance(snakemake_value, dict) and isinstance(parsed, dict):
        return {k: _numbers_from(parsed.get(k), v) for k, v in snakemake_value.items()}
    if isinstance(snakemake_value, str) and isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
        return parsed
    return snakemake_value


def _scalars(value):
    """--config values: Snakemake reads nested ones as text ('{seed: 4}' -> {'seed': '4'})."""
    if isinstance(value, dict):
        return {k: _scalars(v) for k, v in value.items()}
    return yaml_scalar(value) if isinstance(value, str) else value


def effective_params(configfiles, overrides, config_values, path=PARAMS):
    """(params file the stages read, its mapping): `path` (or, for `--config experiment=NAME`,
    that experiment's resolved params: pipeline/experiments.py, its folder refreshed) with
    Snakemake's --configfile files and --config values (`overrides`: both, as Snakemake merged
    them; `config_values`: the --config ones alone) on top, numbers read as YAML 1.2 reads
    them. Raises ParamsError."""
    overrides, config_values = dict(overrides or {}), dict(config_values or {})
    experiment = overrides.pop("experiment", None)
    config_values.pop("experiment", None)
    if experiment is not None:
        path = experiments.write(str(experiment), refresh_dvc=False)
    base = load_yaml(path)
    for configfile in configfiles or ():
        overrides = _numbers_from(load_yaml(configfile), overrides)
    merged = merge(merge(base, overrides), _scalars(config_values))
    if merged == base:
        return path, base
    text = json.dumps(merged, indent=1, sort_keys=False)  # JSON is YAML: the stages read it as usual
    resolved = Path(".snakemake/params") / f"{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
    if not resolved.exists() or resolved.read_text() != text:
        resolved.parent.mkdir(parents=True, exist_ok=True)
        resolved.write_text(text)
    return str(resolved), merged


def _corrupt_file(path):
    if path.suffix == ".pt":
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".png":
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 12))
            if f.read(12)[4:8] != b"IEND":
                return "no PNG end chunk"
    return None


def _corrupt_folder(path):
    """The reference statistics' folder: every file readable, and as many files for the
    held-out set as for the training set (torch-fidelity's cache) or the points marker."""
    files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
    for file in files:
        try:
            why = _corrupt_file(file)
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            why = str(err).splitlines()[0] or type(err).__name__
        if why:
            return f"{file.name}: {why}"
    counts = {split: sum(p.name.startswith(f"{split}-") for p in files) for split in ("train", "heldout")}
    if not (path / "points.json").exists() and (counts["train"] == 0 or counts["train"] != counts["heldout"]):
        return f"incomplete ({counts['train']} training and {counts['heldout']} held-out statistics files)"
    return None


def _corrupt(path):
    """Why a finished output cannot be read, or None. Cheap: a zip's central directory (every
    .pt is one), JSON parsing, a PNG's last chunk, a folder's files; other files pass (see
    `age_edited` for those)."""
    try:
        why = _corrupt_folder(path) if path.is_dir() else _corrupt_file(path)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
    return why and (why if why.startswith("incomplete") else f"truncated or corrupt ({why})")


def remove_corrupt(paths):
    """Remove every present output in `paths` that cannot be read (it holds nothing to keep),
    saying so on stderr: Snakemake then remakes it."""
    for path in map(Path, paths):
        why = _corrupt(path) if path.exists() else None
        if why:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            print(f"removed {path}: {why}; it will be remade", file=sys.stderr)


def _metadata_path(path):
    """Where Snakemake keeps its record (params, code, checksums, end time) of `path`: present
    for one it made or `--touch`ed, not for one DVC made or a pull brought."""
    key = base64.urlsafe_b64encode(str(path).encode()).decode()
    parts = [key[i:i + 254] for i in range(0, len(key), 254)]
    return Path(".snakemake/metadata", *["@" + p for p in parts[:-1]], parts[-1])


def _has_metadata(path):
    return _metadata_path(path).exists()


def _made_by_snakemake(path):
    """Snakemake made (or touched) `path` and it has not changed since."""
    record = _metadata_path(path)
    try:
        endtime = json.loads(record.read_text()).get("endtime")
    except (OSError, ValueError):
        return False
    return endtime is not None and abs(Path(path).stat().st_mtime - endtime) <= 1e-3


def _age(path):
    """Date `path` 1970 (second 1: Snakemake skips its time check for an output time of 0), older
    than anything made from it, so that Snakemake remakes it."""
    os.utime(path, (1, 1))


def age_edited(paths):
    """Outputs changed after Snakemake made them (edited, truncated, replaced by another tool)
    would count as done: Snakemake recorded their end time, which their file time no longer
    matches. Forget that record and date them 1970, so that the job that makes them runs
    again (Snakemake compares small inputs by checksum when it has a record, so the date
    alone would not do). Each is said on stderr."""
    for path in map(Path, paths):
        record = _metadata_path(path)
        if path.is_file() and record.is_file() and not _made_by_snakemake(path):
            record.unlink()
            _age(path)
            print(f"{path} changed after Snakemake made it: it will be remade", file=sys.stderr)


def age_stale_unrecorded(params_file, metrics, runs):
    """Snakemake sees a params change only through its own records: for cells whose metrics
    were made outside it (dvc repro, a pull; `python -m pipeline.sync` records them), compare
    their fingerprints with the current params and code instead. A stale file (the model when
    its settings changed, else the samples when theirs did, else the metrics) gets the time
    1970-01-01, older than its inputs, so that Snakemake remakes it and what follows; nothing is
    deleted. Each is said on stderr. `metrics`: {cell: JSON path}; `runs`: the runs folder."""
    unrecorded = {cell: Path(p) for cell, p in metrics.items() if Path(p).exists() and not _has_metadata(p)}
    if not unrecorded:
        return
    from . import provenance
    from .params import load

    params = load(params_file)
    for cell, path in unrecorded.items():
        try:
            found = json.loads(path.read_text())["fingerprint"]
            inputs = found["inputs"]
            model = provenance.model_record(params, cell, inputs["model"]["inputs"]["data"])
            expected = provenance.metrics_record(params, inputs["data"], inputs["evaluator"],
                                                 {"id": inputs["reference"]}, model,
                                                 provenance.samples_record(params, cell, model))
        except (ValueError, KeyError, TypeError):
            found, expected = None, None
        if found is not None and found["id"] == expected["id"]:
            continue
        if found is None or found["inputs"]["model"]["id"] != expected["inputs"]["model"]["id"]:
            remake = Path(runs, "train", f"{cell}.pt")
        elif found["inputs"]["samples"]["id"] != expected["inputs"]["samples"]["id"]:
            remake = Path(runs, "samples", f"{cell}.pt")
        else:
            remake = path
        if not remake.exists():
            continue  # it is made anyway
        _age(remake)
        why = provenance.difference(found, expected) if found else "no fingerprint"
        print(f"{path} was made outside Snakemake from other params or code ({why}): {remake} and what "
              "follows from it will be remade", file=sys.stderr)


@contextlib.contextmanager
def file_times_kept(folders):
    """Restore the access and modification times of every file under `folders` on exit:
    `dvc commit` re-links outputs from its cache, which gives them new times in no particular
    order, and Snakemake would then see an output newer than what was made from it."""
    times = {p: (p.stat().st_atime_ns, p.stat().st_mtime_ns)
             for folder in folders for p in Path(folder).rglob("*") if p.is_file()}
    try:
        yield
    finally:
        for path, (atime, mtime) in times.items():
            if path.is_file():
                os.utime(path, ns=(atime, mtime))


def last_line(result):
    """A failed command's last line of output, for a one-line message."""
    lines = (result.stderr or result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"


DAMAGED_LOCK = ("dvc.lock' is invalid", "dvc.lock' validation failed")  # DVC's words


def dvc_target(params_file):
    """The dvc.yaml that describes `params_file` (params.yaml, or an experiment's resolved
    params beside its own dvc.yaml), or None for a resolved copy with --config values."""
    path = Path(params_file)
    if path == Path(PARAMS):
        return "dvc.yaml"
    if path.name == PARAMS and path.with_name("dvc.yaml").is_file() and path.parent.parent.name == "experiments":
        return str(path.with_name("dvc.yaml"))
    return None


def dvc_status(target="dvc.yaml", set_aside_damaged_lock=False):
    """(`dvc status --json` as a mapping, {} when DVC has nothing to do; None) or (None, the
    failure's last line). DVC rewrites dvc.lock in place after each stage, so a `dvc repro`
    interrupted at that moment leaves it half-written, and every DVC command then fails on it;
    with `set_aside_damaged_lock` (only after Snakemake has checked everything) such a file is
    moved to dvc.lock.damaged, said on stderr, and the status is taken without it: every output
    then counts as changed, and commit_to_dvc records only what Snakemake made. DVC's own
    .dvc/tmp/rwlock, emptied the same way, is set aside too (set_aside_damaged_rwlock)."""
    out = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", target], capture_output=True, text=True)
    if out.returncode != 0:
        if set_aside_damaged_lock and "Unable to read RWLock-file" in out.stderr and set_aside_damaged_rwlock():
            return dvc_status(target, set_aside_damaged_lock)
        lock = Path(target).with_name("dvc.lock")
        if set_aside_damaged_lock and lock.is_file() and any(h in out.stderr + out.stdout for h in DAMAGED_LOCK):
            os.replace(lock, lock.with_name("dvc.lock.damaged"))
            print(f"{lock} could not be read (half-written by an interrupted dvc command?): moved to "
                  f"{lock}.damaged, a new one records this run", file=sys.stderr)
            return dvc_status(target)
        said = [line.strip() for line in out.stderr.splitlines() if line.strip()]
        return None, next((line for line in said if line.startswith("ERROR")), said[0] if said else last_line(out))
    try:
        return json.loads(out.stdout or "{}"), None
    except ValueError:
        return None, "dvc status printed no JSON"


def set_aside_damaged_rwlock(tmp_dir=Path(".dvc/tmp")):
    """DVC lists the stages its running commands hold in .dvc/tmp/rwlock, rewritten under its
    guard .dvc/tmp/rwlock.lock; a DVC command killed while rewriting it leaves the file empty or
    cut, and every later DVC command then fails on it. Under DVC's own guard, an unreadable
    file is moved to rwlock.damaged (what it held were the locks of commands that no longer
    run) and said on stderr; True when it was. A readable one, or one a live command is
    rewriting at this moment, is left alone."""
    from dvc.lock import LockError, make_lock

    path = tmp_dir / "rwlock"
    try:
        with make_lock(str(tmp_dir / "rwlock.lock"), tmp_dir=str(tmp_dir)):
            try:
                json.loads(path.read_text())
                return False
            except FileNotFoundError:
                return False
            except ValueError:
                os.replace(path, path.with_name("rwlock.damaged"))
    except LockError:
        return False
    print(f"{path} could not be read (cut short by an interrupted dvc command?): moved to {path}.damaged",
          file=sys.stderr)
    return True


def snakemake_done(snakemake_cmd):
    """(whether `snakemake -n` has nothing to do, the failure's last line or None)."""
    dry = subprocess.run([*snakemake_cmd, "-n", "--quiet", "rules"], capture_output=True, text=True)
    if dry.returncode != 0:
        return False, last_line(dry)
    return "Nothing to be done" in dry.stdout + dry.stderr, None


def _changed_outs(status):
    """The outputs a `dvc status` mapping finds changed (modified or deleted) against dvc.lock."""
    return [path for entries in status.values() for entry in entries if isinstance(entry, dict)
            for path in entry.get("changed outs", {})]


def _dvc_commit(target):
    """`dvc commit --force target` (records the outputs of every stage of the dvc.yaml `target`
    in its dvc.lock); None or its last line of error."""
    commit = subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet", target],
                            capture_output=True, text=True)
    return None if commit.returncode == 0 else last_line(commit)


def record_in_dvc(params_file, snakemake_cmd, folders):
    """After a successful run: when it used params.yaml (or an experiment's params) itself and
    Snakemake has nothing left to do, `dvc commit` the outputs into the dvc.lock beside its
    dvc.yaml (DVC then has nothing to do either), keeping the times of the files under
    `folders`."""
    target = dvc_target(params_file)
    if target is None:
        print(f"dvc.lock not updated: this run used --config/--configfile values ({params_file}), "
              "which no params file that DVC tracks holds", file=sys.stderr)
        return
    if not Path(".dvc").is_dir() or os.environ.get("DIFFUSION_SKIP_DVC_COMMIT"):
        return
    if not snakemake_done([*snakemake_cmd, "--nolock"])[0]:
        print("dvc.lock not updated: Snakemake still has jobs to run (a partial target?)", file=sys.stderr)
        return
    status, error = dvc_status(target, set_aside_damaged_lock=True)
    error = f"dvc status failed: {error}" if error else commit_to_dvc(target, folders, status)
    lock = Path(target).with_name("dvc.lock")
    if error:
        print(f"{lock} not updated: {error}", file=sys.stderr)
    else:
        print(f"{lock} records this run: dvc status has nothing to do", file=sys.stderr)


def commit_to_dvc(target, folders, status):
    """`dvc commit` what Snakemake made, keeping file times; refused (the reason returned) when
    an output differs from dvc.lock (`status`: dvc_status()) and Snakemake did not make it:
    committing it would make the damage permanent, as neither tool would remake it."""
    foreign = [p for p in _changed_outs(status) if Path(p).is_file() and not _made_by_snakemake(p)]
    if foreign:
        return (f"{', '.join(foreign)} differ from what dvc.lock records and Snakemake did not make them "
                "(edited, or damaged?): remake them with `dvc repro` or `snakemake --forcerun <rule>`")
    with file_times_kept(folders):
        error = _dvc_commit(target)
    return error and f"dvc commit failed: {error}"
