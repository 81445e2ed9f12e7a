"""The fingerprint contract: every artifact records what made it, so that no stale number can
reach a table.

A fingerprint is a record `{stage, settings, code, inputs, id}`: the stage's fully resolved
settings (from params), the hash of the code that ran (the stage's pipeline modules and the
diffusion library when it uses it, the same files both tools declare as its code inputs), and
the fingerprints of what it read (nested records, or content hashes: the data by its tensors,
not its file bytes; the evaluator by its file's bytes). `id` hashes the rest. Training resumes
only from a checkpoint with the same id; aggregate and sampler_table recompute the expected
records from the current params, code and data and refuse, in one line, any input that
disagrees (`check`). Package versions are recorded beside (`versions`), not in the id.
"""

import ast
import dataclasses
import hashlib
import importlib.metadata
import json
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# prepare imports inception only to fail early when Inception weights are missing: a check
# that writes nothing, so its edits need not redo the data split and all that follows.
NOT_CODE = {("prepare", "metrics.inception")}


def module_path(name):
    """The repository path of pipeline module `name`, dotted below pipeline ("io",
    "metrics.fidelity")."""
    return f"pipeline/{name.replace('.', '/')}.py"


def _module(parts):
    """The pipeline module that `parts` (a dotted name below pipeline, split) names, or None
    for a package (its __init__.py holds only a docstring: no code) or nothing."""
    name = ".".join(parts)
    return name if parts and (ROOT / module_path(name)).is_file() else None


def _imports(name, module_level_only):
    """(pipeline modules, whether diffusion is imported) by pipeline module `name`: relative
    imports at any depth (`from . import x`, `from .metrics.fidelity import f`, `from ..io
    import g`) and absolute ones of pipeline."""
    tree = ast.parse((ROOT / module_path(name)).read_text())
    package = name.split(".")[:-1]
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    modules, diffusion = set(), False
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            dotted = node.module.split(".") if node.module else []
            if node.level:
                if node.level - 1 > len(package):
                    continue
                base = package[:len(package) - node.level + 1] + dotted
            elif dotted[0] == "pipeline":
                base = dotted[1:]
            else:
                diffusion |= dotted[0] == "diffusion"
                continue
            # each name is a submodule (`from .metrics import stats`) or defined in `base`
            modules |= {_module([*base, alias.name]) or _module(base) for alias in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                dotted = alias.name.split(".")
                diffusion |= dotted[0] == "diffusion"
                if dotted[0] == "pipeline":
                    modules.add(_module(dotted[1:]))
    return modules - {None}, diffusion


def stage_modules(stage):
    """The pipeline modules whose code runs in `stage`: everything imported at module level,
    transitively (into pipeline.metrics and pipeline.report too), and the stage's own imports
    inside its functions; and whether any of them (params.py aside, which imports the
    library's registries only to validate names) uses the diffusion library."""
    seen, todo = set(), [stage]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += _imports(name, module_level_only=True)[0]
    seen |= _imports(stage, module_level_only=False)[0]
    uses_diffusion = any(_imports(m, module_level_only=False)[1] for m in seen - {"params"})
    return {m for m in seen if (stage, m) not in NOT_CODE}, uses_diffusion


def stage_code(stage):
    """The code inputs of `stage` as repository paths, sorted: its pipeline modules and, when
    it uses the library, every file of diffusion/. Both tools declare exactly these."""
    modules, uses_diffusion = stage_modules(stage)
    files = sorted(module_path(m) for m in modules)
    if uses_diffusion:
        files += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "diffusion").rglob("*.py"))
    return files


_CODE_HASHES = {}


def code_hash(stage):
    """sha256 (16 hex digits) of the code inputs of `stage`: their paths and bytes."""
    if stage not in _CODE_HASHES:
        digest = hashlib.sha256()
        for path in stage_code(stage):
            digest.update(path.encode() + b"\0" + (ROOT / path).read_bytes() + b"\0")
        _CODE_HASHES[stage] = digest.hexdigest()[:16]
    return _CODE_HASHES[stage]


def tensor_hash(tensors):
    """sha256 (16 hex digits) of a dict of tensors and numbers by value: dtype, shape and
    bytes, not the file that holds them."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(tensors):
        value = tensors[key]
        digest.update(key.encode() + b"\0")
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().contiguous()
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
        else:
            digest.update(json.dumps(value).encode())
    return digest.hexdigest()[:16]


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _id(record):
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def record(stage, settings, inputs=None):
    """The fingerprint of an artifact that `stage` makes from `settings` (JSON values) and
    `inputs` ({name: fingerprint record or content hash})."""
    body = {"stage": stage, "settings": settings, "code": code_hash(stage), "inputs": inputs or {}}
    return {**body, "id": _id(body)}


# ----- each stage's settings: what in params it reads (the sections its rule declares) -----
def _asdict(x):
    return json.loads(json.dumps(dataclasses.asdict(x)))  # tuples -> lists, as JSON stores them


def data_inputs(train, heldout=None):
    """The data as a fingerprint input: its tensors' hashes."""
    out = {"train": tensor_hash(train)}
    if heldout is not None:
        out["heldout"] = tensor_hash(heldout)
    return out


def model_record(params, cell_id, data):
    """What a cell's training run is: its objective, resolved train settings, model, process
    and data settings, and the training tensors (`data`: data_inputs(train))."""
    cell = params.cells[cell_id]
    settings = {"cell": cell_id, "parameterization": cell.parameterization, "weighting": cell.weighting,
                "Sigma": cell.Sigma, "train": _asdict(params.cell_train(cell_id)),
                "model": _asdict(params.model), "process": _asdict(params.cell_process(cell_id)), "data": _asdict(params.data)}
    return record("train", settings, {"data": data})


def samples_record(params, cell_id, model):
    return record("sample", {"sample": _asdict(params.sample), "seed": params.cell_sample_seed(cell_id)},
                  {"model": model})


def evaluator_record(params, data):
    m = params.metrics
    return record("evaluator", {"evaluator": _asdict(params.evaluator), "feature_extractor": m.feature_extractor,
                                "inception_weights": m.inception_weights}, {"data": data})


def reference_record(params, data, evaluator_sha):
    return record("reference", {"metrics": _asdict(params.metrics), "num_samples": params.sample.num_samples},
                  {"data": data, "evaluator": evaluator_sha})


def _scoring_inputs(data, evaluator_sha, reference, model):
    return {"data": data, "evaluator": evaluator_sha, "reference": reference["id"], "model": model}


def metrics_record(params, data, evaluator_sha, reference, model, samples):
    return record("evaluate", {"metrics": _asdict(params.metrics), "sample": _asdict(params.sample)},
                  {**_scoring_inputs(data, evaluator_sha, reference, model), "samples": samples})


def study_record(params, sampler, nfe, data, evaluator_sha, reference, model):
    s = params.sampler_study
    settings = {"sampler": sampler, "nfe": nfe, "num_samples": s.num_samples, "seed": s.seed,
                "sample": _asdict(params.sample), "metrics": _asdict(params.metrics)}
    return record("sampler_study", settings, _scoring_inputs(data, evaluator_sha, reference, model))


# ----- checking --------------------------------------------------------------------------------
def _short(value):
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def difference(found, expected, where=""):
    """The first place where two fingerprint records differ, in words; None when equal."""
    if isinstance(found, dict) and isinstance(expected, dict):
        if found.get("id") is not None and found.get("id") == expected.get("id"):
            return None
        stage = expected.get("stage")
        if stage and found.get("code") != expected.get("code"):
            return f"the code of stage {stage} changed"
        for key in sorted(set(found) | set(expected), key=lambda k: ({"settings": 0, "inputs": 1}.get(k, 2), k)):
            if key == "id":
                continue
            sub = f"{where}.{key}" if where else key
            if key not in found or key not in expected:
                return f"{sub.replace('settings.', '')} is {'new' if key not in found else 'gone'}"
            diff = difference(found[key], expected[key], sub)
            if diff:
                return diff
        return None
    if found == expected:
        return None
    path = ".".join(p for p in where.split(".") if p not in ("settings", "inputs"))
    return f"{path}: {_short(found)} in the file, {_short(expected)} now"


def check(items):
    """items: [(name, found record or None, expected record)]. Raise StageError naming every
    stale input and what differs, in one line."""
    from .io import StageError

    stale = {}  # what differs -> the inputs it concerns
    for name, found, expected in items:
        if not isinstance(found, dict) or "id" not in found:
            stale.setdefault("no fingerprint: made by older code", []).append(name)
        elif found["id"] != expected["id"]:
            why = difference(found, expected) or "its fingerprint does not match its content (edited?)"
            stale.setdefault(why, []).append(name)
    if stale:
        what = "; ".join(f"{', '.join(names)}: {why}" for why, names in stale.items())
        raise StageError(f"stale inputs, made from other params, code or data than now: {what}. "
                         "Rerun the workflow (snakemake --cores all, or dvc repro) to remake them")


def expected_shared(params, train, heldout, evaluator_path, evaluator_json, reference):
    """Check what every cell's scores share (the evaluator and the reference statistics)
    against the current params, code and data; return the expected (data, evaluator hash,
    reference record) to check the cells' records with, and the check items so far."""
    data = data_inputs(train, heldout)
    evaluator_sha = file_sha256(evaluator_path)
    written = evaluator_json.get("weights_file_sha256")
    ref = reference_record(params, data, evaluator_sha)
    items = [("evaluator", evaluator_json.get("fingerprint"), evaluator_record(params, data)),
             (str(evaluator_path), {"id": written, "sha256": written}, {"id": evaluator_sha, "sha256": evaluator_sha}),
             ("reference", reference.get("fingerprint"), ref)]
    return (data, evaluator_sha, ref), items


def expected_metrics(params, cell_id, data, evaluator_sha, reference):
    """The fingerprint the evaluate stage's JSON of `cell_id` has when it is up to date."""
    model = model_record(params, cell_id, {"train": data["train"]})
    return metrics_record(params, data, evaluator_sha, reference, model, samples_record(params, cell_id, model))


def expected_study(params, cell_id, sampler, nfe, data, evaluator_sha, reference):
    """The fingerprint of an up-to-date sampler-study point."""
    model = model_record(params, cell_id, {"train": data["train"]})
    return study_record(params, sampler, nfe, data, evaluator_sha, reference, model)


def versions():
    """The interpreter and packages that ran: recorded beside the fingerprint, not in it."""
    out = {"python": platform.python_version()}
    for package in ("torch", "torch-fidelity", "diffusion-ablations"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    return out
