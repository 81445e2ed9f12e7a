# Long: the whole params schema and its cross-key checks, loaded and validated in one place.
"""params.yaml's schema (frozen pydantic dataclasses; their defaults are the default experiment)
and the checks across keys, run once before any compute. Every mistake is reported at once, one
`<key path>: <what is wrong>` line each: the schema's (unknown or missing key, wrong type, a bound)
or, when it holds, the checks' (unknown slug, empty grid, duplicate cell, an untrained head, ...).
`python -m pipeline.params` validates a file and lists the grid; `--json-schema` prints the schema
that editors read (params.schema.json).
"""

import dataclasses
import hashlib
import json
import re
import sys
import typing
from pathlib import Path
from typing import Annotated, Dict, Optional, Tuple

import yaml
from annotated_types import Ge, Gt, Lt, MinLen
from pydantic import ConfigDict, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, TypeAdapter
from pydantic import ValidationError
from pydantic.dataclasses import dataclass
from typing_extensions import TypedDict

DATASETS = ("digits", "fashion_mnist", "cifar10", "swiss_roll")
TEST_SPLITS = ("cifar10",)            # data sets whose own test split can be the held-out set
DEVICES = ("auto", "cpu", "cuda")     # auto: cuda when torch sees a GPU, else cpu
PRECISIONS = ("fp32", "bf16")
FEATURE_EXTRACTORS = ("classifier", "inception-v3-compat")
POINT_DATASETS = ("swiss_roll",)  # 2-D points: scatter plots and distances instead of images and FID
SLUG = re.compile(r"^[a-z0-9_]+$")
CELL_ID = re.compile(r"^[a-z0-9_]+(-[a-z0-9_]+)*$")
REPLICATE_SUFFIX = re.compile(r"-s([0-9]+)$")
# What the stages write directly under each folder: an experiment kept beside the default one
# (`paths: {results: results/<name>}`) must not take one of these names.
RESERVED_NAMES = ("benchmarks", "checkpoints", "evaluate", "metrics", "plots", "reference", "sample",
                  "sampler_study", "samples", "train")


class ParamsError(ValueError):
    """params.yaml mistakes, one `<key path>: <what is wrong>` line each; str() joins them."""

    def __init__(self, *lines):
        super().__init__(*lines)
        self.lines = list(lines)

    def __str__(self):
        return "\n".join(self.lines)

    def report(self):
        """What a command prints before exiting nonzero: `error: <line>` per mistake."""
        return "\n".join(f"error: {line}" for line in self.lines)

    def under(self, prefix):
        """The same mistakes, each line prefixed (`params.yaml: train.steps: ...`)."""
        return ParamsError(*(f"{prefix}: {line}" for line in self.lines))


# ----- the schema ---------------------------------------------------------------------------------
# Strict: no coercion (an int field refuses 10.5, "1" and true; a float field takes ints only).
# Pydantic's strict dataclasses take instances only from Python, so parse() validates JSON.
CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
section = dataclass(frozen=True, config=CONFIG)
Fraction = Annotated[float, Ge(0), Lt(1)]     # [0, 1)
Probability = Annotated[float, Gt(0), Lt(1)]  # (0, 1)


@section
class Data:
    name: str = "digits"
    heldout_fraction: Fraction = 0.2       # 0: the data set's own test split (cifar10)
    split_seed: int = 0
    path: Optional[str] = None             # local folder for data sets that are not shipped
    random_flip: bool = False


@section
class Process:
    kind: str = "vp"
    schedule: str = "linear"
    T: PositiveInt = 1000
    sigma_min: PositiveFloat = 0.01        # VE only
    sigma_max: PositiveFloat = 10.0        # VE only
    decoder_cdf: str = "erf"               # the discretized decoder's Gaussian CDF at t = 0: erf or tanh


@section
class Model:
    net: str = "mlp"
    hidden: PositiveInt = 256              # mlp
    num_blocks: PositiveInt = 3            # mlp
    model_channels: PositiveInt = 128      # unet
    channel_mult: Tuple[PositiveInt, ...] = (1, 2, 2, 2)
    num_res_blocks: PositiveInt = 2
    attention_resolutions: Tuple[PositiveInt, ...] = (16,)
    dropout: Fraction = 0.0
    sigma_data: PositiveFloat = 0.5        # the edm parameterization and weighting (Karras et al. 2022)


@section
class Train:
    steps: PositiveInt = 4000
    batch_size: PositiveInt = 128          # global: split over train.gpus processes
    lr: PositiveFloat = 1e-3
    warmup: NonNegativeInt = 200
    grad_clip: NonNegativeFloat = 1.0
    ema_decay: Fraction = 0.999
    weighting_space: str = "eps"
    min_snr_gamma: PositiveFloat = 5.0
    normalize_weights: bool = False
    vlb_scale: str = "ddpm"
    hybrid_lambda: NonNegativeFloat = 1e-3
    timestep_sampler: str = "uniform"
    lognormal_mean: float = -1.2           # EDM's ln(sigma/alpha) ~ N(mean, std^2) (timestep_sampler: lognormal)
    lognormal_std: PositiveFloat = 1.2
    checkpoint_every: PositiveInt = 1000
    log_every: PositiveInt = 100
    seed: int = 0
    device: str = "cpu"                    # auto (cuda when torch sees a GPU) | cpu | cuda
    precision: str = "fp32"                # fp32 | bf16 (autocast around the network)
    compile: bool = False                  # torch.compile the network's forward
    gpus: PositiveInt = 1                  # > 1: DDP, the stage relaunches itself under torchrun
    eval_every: NonNegativeInt = 0         # > 0: keep an EMA snapshot every so many steps (FID vs step)


# A cell's `train:` overrides: any Train key, typed as the field it replaces.
TrainOverrides = TypedDict("TrainOverrides", typing.get_type_hints(Train, include_extras=True), total=False)
TrainOverrides.__pydantic_config__ = CONFIG
# A cell's `process:` overrides: the noise schedule and the decoder's CDF, so one grid can set
# schedules side by side (Improved DDPM's linear vs cosine); kind, T and the VE range are the
# experiment's, shared by every cell (the samplers' and the study's step checks read them).
ProcessOverrides = TypedDict("ProcessOverrides", {"schedule": str, "decoder_cdf": str}, total=False)
ProcessOverrides.__pydantic_config__ = CONFIG


# One cell of the grid, one trained model: `id: {parameterization, weighting, Sigma, train: {...},
# process: {...}}`;
# a seed replicate overrides train.seed alone and has the id suffix `-sN` (`eps-eps-s1`).
@section
class Cell:
    parameterization: str
    weighting: str
    Sigma: str = "fixed_large"
    train: TrainOverrides = dataclasses.field(default_factory=dict)
    process: ProcessOverrides = dataclasses.field(default_factory=dict)


@section
class Sample:
    sampler: str = "ancestral"
    steps: PositiveInt = 250
    num_samples: PositiveInt = 1000
    batch_size: PositiveInt = 1000
    clip_x0: bool = True
    seed: int = 1
    device: str = "cpu"
    langevin_steps_per_level: PositiveInt = 5   # annealed Langevin: updates per noise level
    langevin_step_size: PositiveFloat = 2.0e-5  # Song & Ermon 2019's epsilon (step at the smallest level)
    sigma_max: PositiveFloat = 80.0             # heun, euler_maruyama: top noise level sigma/alpha (EDM's 80)


@section
class SamplerStudy:
    cells: Annotated[Tuple[str, ...], MinLen(1)] = ("eps-eps",)
    samplers: Annotated[Tuple[str, ...], MinLen(1)] = ("ancestral", "ddim", "heun", "euler_maruyama")
    nfe: Annotated[Tuple[PositiveInt, ...], MinLen(1)] = (10, 20, 50, 100)
    num_samples: PositiveInt = 500
    seed: int = 3


@section
class Evaluator:
    steps: PositiveInt = 800
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 3e-3
    feature_dim: PositiveInt = 64
    seed: int = 0


@section
class Metrics:
    kid_subset_size: PositiveInt = 300
    nll_examples: PositiveInt = 200
    matched_n: Optional[Annotated[int, Ge(2)]] = None  # images per set at equal n; None: min(held-out, samples)
    draws: PositiveInt = 5                 # subsample draws at matched_n
    resamples: PositiveInt = 200           # bootstrap resamples of each cell's samples (FID on cached features)
    copy_threshold: PositiveFloat = 1.0    # L2 distance in [-1, 1] pixel space that makes a near-copy
    seed: int = 2
    feature_extractor: str = "classifier"  # or inception-v3-compat (torch-fidelity's)
    inception_weights: Optional[str] = None  # local Inception weights; null: download once
    snapshot_samples: Annotated[int, Ge(10)] = 1000  # samples per EMA snapshot (train.eval_every); IS: 10 splits
    snapshot_nll: bool = False  # also the held-out NLL of every EMA snapshot (NLL vs training step)
    device: str = "cpu"


@section
class Stats:
    baseline: str = "eps-eps"              # the cell whose replicate group every row is compared with
    confidence: Probability = 0.95
    bootstrap: PositiveInt = 2000          # resamples of the hierarchical (seeds x samples) bootstrap
    seed: int = 3


@section
class Paths:
    """Where the experiment's files go: its own subfolders keep experiments side by side."""
    data: str = "data"          # prepared data sets
    runs: str = "runs"          # checkpoints, samples, evaluator, reference cache (DVC-cached)
    results: str = "results"    # metrics, tables and plots (committed to git)
    logs: str = "logs"          # stage logs and Snakemake benchmarks


@dataclass(frozen=True, config=CONFIG, kw_only=True)
class Params:
    """A params file: every section may be left out (its defaults), but not the grid."""
    paths: Paths = Paths()
    data: Data = Data()
    process: Process = Process()
    model: Model = Model()
    train: Train = Train()
    cells: Dict[str, Cell]
    sample: Sample = Sample()
    sampler_study: SamplerStudy = SamplerStudy()
    evaluator: Evaluator = Evaluator()
    metrics: Metrics = Metrics()
    stats: Stats = Stats()

    @property
    def points(self):
        """True for 2-D point data (scatter plots, distances) rather than images (grids, FID)."""
        return self.data.name in POINT_DATASETS

    def cell_train(self, cell_id):
        """The training settings of one cell: `train` with the cell's overrides applied."""
        return dataclasses.replace(self.train, **self.cells[cell_id].train)

    def cell_process(self, cell_id):
        """The forward process of one cell: `process` with the cell's overrides applied."""
        return dataclasses.replace(self.process, **self.cells[cell_id].process)

    def cell_sample_seed(self, cell_id):
        """A replicate's seed also moves its sampling noise: models trained from different
        seeds map the same noise to similar images, which would hide part of the spread."""
        return self.sample.seed + self.cell_train(cell_id).seed

    def replicate_groups(self):
        """{label: [cell ids]} in grid order: cells that differ only in train.seed form one
        group (one table row); the label is the first cell's id without its `-sN` suffix."""
        groups = {}
        for cell_id, cell in self.cells.items():
            overrides = tuple(sorted((k, v) for k, v in cell.train.items() if k != "seed"))
            overrides += tuple(sorted((f"process.{k}", v) for k, v in cell.process.items()))
            groups.setdefault((cell.parameterization, cell.weighting, cell.Sigma, overrides), []).append(cell_id)
        labels = {}
        for ids in groups.values():
            label = REPLICATE_SUFFIX.sub("", ids[0])
            labels[ids[0] if label in labels or label in self.cells and label not in ids else label] = ids
        return labels

    def group_of(self, cell_id):
        return next(label for label, ids in self.replicate_groups().items() if cell_id in ids)


def _choices():
    """{schema class: {field: allowed values}}: the slugs the checks accept and the JSON schema's
    enums. The library's registries are imported here, not at module level, so that reading
    params stays cheap for a no-op Snakemake run (see validate_once)."""
    from diffusion import (PARAMETERIZATIONS, PROCESSES, SAMPLERS, SCHEDULES, SIGMAS, TIMESTEP_SAMPLERS,
                           WEIGHTINGS)
    from diffusion.losses import NORMAL_CDFS
    from diffusion.nets import NETWORKS

    train = {"weighting_space": ("eps", "target"), "vlb_scale": ("ddpm", "rescaled"),
             "timestep_sampler": TIMESTEP_SAMPLERS, "device": DEVICES, "precision": PRECISIONS}
    return {"Data": {"name": DATASETS}, "Model": {"net": NETWORKS}, "Train": train, "TrainOverrides": train,
            "Process": {"kind": PROCESSES, "schedule": SCHEDULES, "decoder_cdf": NORMAL_CDFS},
            "ProcessOverrides": {"schedule": SCHEDULES, "decoder_cdf": NORMAL_CDFS},
            "Cell": {"parameterization": PARAMETERIZATIONS, "weighting": WEIGHTINGS, "Sigma": SIGMAS},
            "Sample": {"sampler": SAMPLERS, "device": DEVICES}, "SamplerStudy": {"samplers": SAMPLERS},
            "Metrics": {"feature_extractor": FEATURE_EXTRACTORS, "device": DEVICES}}


def json_schema():
    """The schema as JSON Schema for editors (params.schema.json), with the choices as enums."""
    schema = TypeAdapter(Params).json_schema()
    for name, fields in _choices().items():
        for key, allowed in fields.items():
            prop = schema["$defs"][name]["properties"][key]
            prop.get("items", prop)["enum"] = sorted(allowed)
    schema["properties"]["cells"]["propertyNames"] = {"pattern": CELL_ID.pattern}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


# ----- the schema's errors, as `<key path>: <what is wrong>` --------------------------------------
_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
             "dict": "a mapping", "dataclass": "a mapping", "tuple": "a list", "list": "a list"}
_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "<=")}


def _jsonable(value, path, errors):
    """`value` as JSON holds it; a key that is not text (YAML reads `1:` as a number) is a mistake."""
    if isinstance(value, dict):
        errors += [f"{path}{key}: expected a text key, got {key!r}" for key in value if not isinstance(key, str)]
        return {k: _jsonable(v, f"{path}{k}.", errors) for k, v in value.items() if isinstance(k, str)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, path, errors) for v in value]
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def _keys(loc):
    """The keys allowed in the mapping at `loc` (a section, a cell, a cell's overrides)."""
    tp = Params
    for key in loc:
        tp = typing.get_args(tp)[1] if typing.get_origin(tp) is dict else typing.get_type_hints(tp)[key]
    return ", ".join(typing.get_type_hints(tp))


def _line(error):
    """One pydantic error as `<key path>: <what is wrong>`, worded as the checks word theirs."""
    kind, loc, got = error["type"], error["loc"], error.get("input")
    where = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in loc).lstrip(".")
    if kind == "missing":
        what = "missing key"
    elif kind in ("extra_forbidden", "unexpected_keyword_argument"):
        what = f"unknown key (allowed: {_keys(loc[:-1])})"
    elif kind == "finite_number":
        what = f"must be a finite number, got {got!r}"
    elif kind in _BOUNDS:
        name, op = _BOUNDS[kind]
        what = f"must be {op} {error['ctx'][name]:g}, got {got!r}"
    elif kind == "too_short":
        what = "empty; list at least one"
    elif kind.endswith("_type") and kind[:-5] in _EXPECTED:
        what = f"expected {_EXPECTED[kind[:-5]]}, got {got!r}"
    else:
        what = error["msg"][:1].lower() + error["msg"][1:]
    return f"{where}: {what}"


# ----- the checks across keys, once the schema holds -------------------------------------------------
def _unknown(values, allowed, path):
    """A line for each value (or list item) of `values` that is not among its key's choices."""
    lines = []
    for key, choices in allowed.items():
        value = values.get(key)
        for where, item in (enumerate(value) if isinstance(value, tuple) else [(None, value)]):
            if key in values and item not in choices:
                lines.append(f"{path}.{key}{'' if where is None else f'[{where}]'}: unknown value {item!r} "
                             f"(choose from {', '.join(sorted(choices))})")
    return lines


def _check_batch(train, path):
    if train.batch_size % train.gpus:
        return [f"{path}.batch_size: {train.batch_size} is not divisible by {path}.gpus = {train.gpus} "
                "(the batch is split across processes)"]
    return []


def _check_cells(p, choices):
    from diffusion import LEARNED_SIGMAS, PARAMETERIZATIONS

    if not p.cells:
        return ["cells: the grid is empty; add at least one cell"]
    lines, seen = [], {}
    for cell_id, cell in p.cells.items():
        path = f"cells.{cell_id}"
        if not CELL_ID.match(cell_id):
            lines.append(f"{path}: cell ids use a-z, 0-9, '_' and '-' only")
            continue
        unknown = (_unknown(vars(cell), choices["Cell"], path) + _unknown(cell.train, choices["Train"], f"{path}.train")
                   + _unknown(cell.process, choices["Process"], f"{path}.process"))
        lines += unknown
        train = p.cell_train(cell_id)
        if cell.train.keys() & {"batch_size", "gpus"}:
            lines += _check_batch(train, f"{path}.train")
        if unknown:
            continue
        if p.process.kind not in PARAMETERIZATIONS[cell.parameterization].processes:
            lines.append(f"{path}.parameterization: {cell.parameterization!r} is not defined "
                         f"for a {p.process.kind} process")
        if cell.weighting == "uncertainty" and cell.Sigma in LEARNED_SIGMAS:
            lines.append(f"{path}.Sigma: the uncertainty weighting (seed 004) needs a fixed Sigma, got {cell.Sigma!r}")
        # Only the VLB term reaches a learned Sigma: under any other weighting (the adaptive
        # ones included) it is the hybrid term lambda * T * L_t (diffusion/losses.py).
        elif cell.Sigma in LEARNED_SIGMAS and cell.weighting != "vlb" and train.hybrid_lambda == 0:
            lines.append(f"{path}.train.hybrid_lambda: 0 leaves the learned Sigma head of {path} "
                         f"(Sigma: {cell.Sigma}, weighting: {cell.weighting}) without gradient; "
                         "use weighting vlb or hybrid_lambda > 0")
        replicate = REPLICATE_SUFFIX.search(cell_id)
        if replicate and int(replicate.group(1)) != train.seed:
            lines.append(f"{path}: the id says seed {replicate.group(1)} but train.seed is "
                         f"{train.seed}; add train: {{seed: {replicate.group(1)}}}")
        # Resolved settings, so a replicate that repeats another cell's seed is caught too.
        signature = (cell.parameterization, cell.weighting, cell.Sigma,
                     tuple(sorted(dataclasses.asdict(train).items())),
                     tuple(sorted(dataclasses.asdict(p.cell_process(cell_id)).items())))
        if signature in seen:
            lines.append(f"{path}: same objective and settings as cells.{seen[signature]}")
        seen.setdefault(signature, cell_id)
    return lines


def _check_study(p):
    s, lines = p.sampler_study, []
    for name in ("cells", "samplers", "nfe"):
        values = getattr(s, name)
        if len(set(values)) != len(values):
            lines.append(f"sampler_study.{name}: duplicate entries in {list(values)}")
    for i, cell in enumerate(s.cells):
        if p.cells and cell not in p.cells:
            lines.append(f"sampler_study.cells[{i}]: {cell!r} is not a cell of cells: "
                         f"(choose from {', '.join(p.cells)})")
    for i, nfe in enumerate(s.nfe):
        if nfe > p.process.T and ({"ancestral", "ddim"} & set(s.samplers)):
            lines.append(f"sampler_study.nfe[{i}]: {nfe} is more than process.T = {p.process.T} "
                         "(ancestral and ddim take one network evaluation per step of the process)")
    return lines


def _check_paths(paths):
    """Each folder is its default (`results`) or a new folder inside it (`results/<name>`): inside
    the repository, under the folders git ignores (data, runs, logs) or commits (results)."""
    lines = []
    for key, value in dataclasses.asdict(paths).items():
        name = value[len(key) + 1:] if value.startswith(f"{key}/") else None
        if value != key and not (name and SLUG.match(name) and name not in RESERVED_NAMES):
            lines.append(f"paths.{key}: must be {key!r} or '{key}/<name>' with <name> of a-z, 0-9, '_' "
                         f"and not one of the pipeline's own folders ({', '.join(RESERVED_NAMES)}), got {value!r}")
    return lines


def _check(p: Params):
    """Every rule that spans keys or needs the library's registries or the disk: the lines."""
    choices = _choices()
    sections = {f.name: getattr(p, f.name) for f in dataclasses.fields(Params) if f.name != "cells"}
    lines = [line for name, part in sections.items()
             for line in _unknown(vars(part), choices.get(type(part).__name__, {}), name)]
    d, m, n = p.data, p.metrics, p.sample.num_samples
    if d.heldout_fraction == 0 and d.name not in TEST_SPLITS:
        lines.append(f"data.heldout_fraction: 0 (the data set's own test split) is only available "
                     f"for {', '.join(TEST_SPLITS)}; use a fraction in (0, 1)")
    if d.path is not None and not Path(d.path).exists():
        lines.append(f"data.path: {d.path} does not exist")
    if p.points and d.random_flip:
        lines.append(f"data.random_flip: must be false for 2-D point data ({d.name})")
    if not p.process.sigma_min < p.process.sigma_max:
        lines.append(f"process.sigma_min: {p.process.sigma_min} is not below "
                     f"process.sigma_max = {p.process.sigma_max}")
    lines += _check_batch(p.train, "train") + _check_cells(p, choices)
    if p.sample.sampler in ("ancestral", "ddim") and p.sample.steps > p.process.T:
        lines.append(f"sample.steps: {p.sample.steps} is more than process.T = {p.process.T}")
    if p.points and p.sample.clip_x0:
        lines.append(f"sample.clip_x0: must be false for 2-D point data ({d.name} is not in [-1, 1])")
    lines += _check_study(p) + _check_paths(p.paths)
    if m.inception_weights is not None and not Path(m.inception_weights).is_file():
        lines.append(f"metrics.inception_weights: {m.inception_weights} does not exist "
                     "(a local copy of torch-fidelity's Inception weights, or null to download them)")
    if m.matched_n is not None and m.matched_n > n:
        lines.append(f"metrics.matched_n: {m.matched_n} is larger than sample.num_samples = {n}")
    smaller = [f"{path} = {count}" for path, count in
               (("sample.num_samples", n), ("sampler_study.num_samples", p.sampler_study.num_samples))
               if not p.points and m.kid_subset_size > count]
    if smaller:
        lines.append(f"metrics.kid_subset_size: {m.kid_subset_size} is larger than {' and '.join(smaller)}")
    if p.cells and p.stats.baseline not in p.cells:
        lines.append(f"stats.baseline: {p.stats.baseline!r} is not a cell of the grid")
    return lines


# ----- reading the file ----------------------------------------------------------------------------
_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate keys (PyYAML silently keeps the last one) and reads
    numbers as YAML 1.2's core schema does (and DVC): `1e-3` is a float, not PyYAML's string."""

    yaml_implicit_resolvers = {first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT, _FLOAT)]
                               for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


_UniqueKeyLoader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                       list("-+0123456789"))
_UniqueKeyLoader.add_implicit_resolver(_FLOAT, re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+.0123456789"))


def _construct_int(loader, node):
    """A YAML 1.2 integer: decimal (leading zeros and all), 0o octal or 0x hexadecimal."""
    value = loader.construct_scalar(node)
    base = {"0o": 8, "0x": 16}.get(value[:2], 10)
    return int(value if base == 10 else value[2:], base)


def _construct_mapping(loader, node, deep=False):
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise ParamsError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
        keys.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_UniqueKeyLoader.add_constructor(_INT, _construct_int)  # floats: SafeLoader's handles YAML 1.2's forms


def parse(raw) -> Params:
    """Validate a params mapping (as load_yaml reads it) into Params, or raise ParamsError with
    every mistake: the schema's, or when it holds, the checks'."""
    if not isinstance(raw, dict):
        raise ParamsError("params: expected a mapping at the top level")
    lines = []
    raw = _jsonable({key: {} if value is None else value for key, value in raw.items()}, "", lines)
    try:
        params = TypeAdapter(Params).validate_json(json.dumps(raw))
    except ValidationError as err:
        lines += [_line(error) for error in err.errors()]
    if not lines:
        lines = _check(params)
    if lines:
        raise ParamsError(*lines)
    return params


def load_yaml(path="params.yaml"):
    """The raw mapping of a params file (YAML 1.2 numbers); a missing file, a duplicate key or
    invalid YAML is a ParamsError naming the file (and line)."""
    path = Path(path)
    try:
        with open(path) as f:
            return yaml.load(f, Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except ParamsError as err:  # a duplicate key
        raise err.under(path) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}:{where} not valid YAML ({getattr(err, 'problem', err)})") from None


def yaml_scalar(text):
    """A command-line value as YAML 1.2 reads it: '5e-4' -> 0.0005, 'true' -> True, else text."""
    try:
        value = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool)) or value is None else text


def load(path="params.yaml") -> Params:
    path = Path(path)
    raw = load_yaml(path)
    try:
        return parse(raw)
    except ParamsError as err:
        raise err.under(path) from None


def _validation_key(path):
    """Hash of the params file and of the code that judges it (this module and the library)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(Path(path).read_bytes())
    for source in [Path(__file__), *sorted((root / "diffusion").rglob("*.py"))]:
        digest.update(source.read_bytes())
    return digest.hexdigest()


def validate_once(path="params.yaml", stamp=".snakemake/params-validated"):
    """Validate `path` unless this exact file was already validated by this exact code.

    Used by the Snakefile: a no-op rerun then costs no torch import. Raises ParamsError.
    """
    stamp = Path(stamp)
    try:
        key = _validation_key(path)
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    if stamp.exists() and stamp.read_text() == key:
        return
    load(path)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key)


def load_or_exit(path="params.yaml") -> Params:
    """load(), turning the mistakes into `error: ...` lines on stderr and exit status 2."""
    try:
        return load(path)
    except ParamsError as err:
        print(err.report(), file=sys.stderr)
        raise SystemExit(2) from None


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="Validate params.yaml and list the grid.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--stamp", help="write this file when valid (DVC's first stage: every stage depends on "
                                        "it, so a bad param stops `dvc repro` before any output is removed)")
    parser.add_argument("--json-schema", action="store_true",
                        help="print the JSON schema of params files (params.schema.json) and exit")
    args = parser.parse_args(argv)
    if args.json_schema:
        print(json_schema(), end="")
        return
    params = load_or_exit(args.params)
    for cell_id, cell in params.cells.items():
        extra = (f" train={cell.train}" if cell.train else "") + (f" process={cell.process}" if cell.process else "")
        print(f"{cell_id}: {cell.parameterization} / {cell.weighting} / {cell.Sigma}{extra}")
    print(f"{len(params.cells)} cells; {args.params} is valid")
    if args.stamp:  # the same bytes whatever the params: a valid edit alone reruns nothing downstream
        Path(args.stamp).parent.mkdir(parents=True, exist_ok=True)
        Path(args.stamp).write_text("valid\n")


if __name__ == "__main__":
    main()
