"""params.yaml: loaded and validated once, into frozen dataclasses, before any compute.

Every mistake (unknown or missing key, wrong type, unknown slug, impossible value, empty
grid, duplicate key or cell, a float that is not finite, a trained head left without gradient)
is reported as one line naming its key path, and `python -m pipeline.params` (or any stage)
exits nonzero. Numbers are read as YAML 1.2 reads them (`1e-3` is a float, as for DVC) and
typed strictly: a quoted "1e-3", or 10.5 for an integer, is an error in `train` and in a
cell's overrides alike. The grid is the `cells:` mapping, one line per trained model:
`id: {parameterization, weighting, sigma, train: {overrides}}`.
A seed replicate is a cell whose only override is `train: {seed: N}`, id suffix `-sN`
(`eps-eps-s1`); `replicate_groups` joins replicates into one table row.
`sampler_study` lists trained cells, samplers and NFE budgets for the sampler study stages.
`paths` names the four folders of the experiment (optional: data, runs, results, logs).
"""

import dataclasses
import math
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

import hashlib

import yaml

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
    """A params.yaml mistake; str() is the one line shown to the user."""


@dataclass(frozen=True)
class Data:
    name: str = "digits"
    heldout_fraction: float = 0.2       # 0: the data set's own test split (cifar10)
    split_seed: int = 0
    path: typing.Optional[str] = None   # local folder for data sets that are not shipped
    random_flip: bool = False


@dataclass(frozen=True)
class Process:
    kind: str = "vp"
    schedule: str = "linear"
    T: int = 1000
    sigma_min: float = 0.01   # VE only
    sigma_max: float = 10.0   # VE only


@dataclass(frozen=True)
class Model:
    net: str = "mlp"
    hidden: int = 256                 # mlp
    num_blocks: int = 3               # mlp
    model_channels: int = 128         # unet
    channel_mult: typing.Tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: typing.Tuple[int, ...] = (16,)
    dropout: float = 0.0
    sigma_data: float = 0.5           # the edm parameterization and weighting (Karras et al. 2022)


@dataclass(frozen=True)
class Train:
    steps: int = 6000
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    weighting_space: str = "eps"
    min_snr_gamma: float = 5.0
    normalize_weights: bool = False
    vlb_scale: str = "ddpm"
    hybrid_lambda: float = 1e-3
    timestep_sampler: str = "uniform"
    checkpoint_every: int = 1000
    log_every: int = 100
    seed: int = 0
    device: str = "auto"              # auto | cpu | cuda
    precision: str = "fp32"           # fp32 | bf16 (autocast around the network)
    compile: bool = False             # torch.compile the network's forward
    gpus: int = 1                     # > 1: DDP, the stage relaunches itself under torchrun
    eval_every: int = 0               # > 0: keep an EMA snapshot every so many steps (FID vs step)


@dataclass(frozen=True)
class Cell:
    parameterization: str
    weighting: str
    sigma: str = "fixed_large"
    train: typing.Dict[str, typing.Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    sampler: str = "ancestral"
    steps: int = 1000
    num_samples: int = 1000
    batch_size: int = 1000
    clip_x0: bool = True
    seed: int = 1
    device: str = "auto"
    langevin_steps_per_level: int = 5      # annealed Langevin: updates per noise level
    langevin_step_size: float = 2.0e-5     # Song & Ermon 2019's epsilon (step at the smallest level)
    sigma_max: float = 80.0                # heun, euler_maruyama: top noise level sigma/alpha (EDM's 80)


@dataclass(frozen=True)
class SamplerStudy:
    cells: typing.Tuple[str, ...] = ("eps-eps",)
    samplers: typing.Tuple[str, ...] = ("ancestral", "ddim", "heun", "euler_maruyama")
    nfe: typing.Tuple[int, ...] = (10, 20, 50, 100)
    num_samples: int = 500
    seed: int = 3


@dataclass(frozen=True)
class Evaluator:
    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    feature_dim: int = 64
    seed: int = 0


@dataclass(frozen=True)
class Metrics:
    kid_subset_size: int = 300
    nll_examples: int = 200
    matched_n: typing.Optional[int] = None  # images per set at equal n; None: min(held-out, samples)
    draws: int = 5                # subsample draws at matched_n
    resamples: int = 200          # bootstrap resamples of each cell's samples (FID on cached features)
    copy_threshold: float = 1.0   # L2 distance in [-1, 1] pixel space that makes a near-copy
    seed: int = 2
    feature_extractor: str = "classifier"           # or inception-v3-compat (torch-fidelity's)
    inception_weights: typing.Optional[str] = None  # local Inception weights; null: download once
    snapshot_samples: int = 1000                    # samples per EMA snapshot (train.eval_every)
    device: str = "auto"


@dataclass(frozen=True)
class Stats:
    baseline: str = "eps-eps"     # the cell whose replicate group every row is compared with
    confidence: float = 0.95
    bootstrap: int = 2000         # resamples of the hierarchical (seeds x samples) bootstrap
    seed: int = 3


@dataclass(frozen=True)
class Paths:
    """Where the experiment's files go: its own subfolders keep experiments side by side."""
    data: str = "data"          # prepared data sets
    runs: str = "runs"          # checkpoints, samples, evaluator, reference cache (DVC-cached)
    results: str = "results"    # metrics, tables and plots (committed to git)
    logs: str = "logs"          # stage logs and Snakemake benchmarks


@dataclass(frozen=True)
class Params:
    data: Data
    process: Process
    model: Model
    train: Train
    cells: typing.Dict[str, Cell]
    sample: Sample
    sampler_study: SamplerStudy
    evaluator: Evaluator
    metrics: Metrics
    stats: Stats
    paths: Paths = Paths()      # optional section: an old params file keeps the default folders

    @property
    def points(self):
        """True for 2-D point data (scatter plots, distances) rather than images (grids, FID)."""
        return self.data.name in POINT_DATASETS

    def cell_train(self, cell_id):
        """The training settings of one cell: `train` with the cell's overrides applied."""
        return dataclasses.replace(self.train, **self.cells[cell_id].train)

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
            groups.setdefault((cell.parameterization, cell.weighting, cell.sigma, overrides), []).append(cell_id)
        labels = {}
        for ids in groups.values():
            label = REPLICATE_SUFFIX.sub("", ids[0])
            labels[ids[0] if label in labels or label in self.cells and label not in ids else label] = ids
        return labels

    def group_of(self, cell_id):
        return next(label for label, ids in self.replicate_groups().items() if cell_id in ids)


# ----- generic structural validation --------------------------------------------------
def _type_name(tp):
    return getattr(tp, "__name__", str(tp))


def _coerce(value, tp, path):
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, inner, path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{path}: expected a list, got {value!r}")
        (inner, _) = typing.get_args(tp)
        return tuple(_coerce(v, inner, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ParamsError(f"{path}: must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def _build(cls, raw, path):
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ParamsError(f"{path}.{key}: unknown key (allowed: {', '.join(fields)})")
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for name, f in fields.items():
        if name in raw:
            kwargs[name] = _coerce(raw[name], hints[name], f"{path}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ParamsError(f"{path}.{name}: missing key")
    return cls(**kwargs)


def _build_cell(raw, path):
    """A grid cell, its `train` overrides typed as the Train fields they replace."""
    cell = _build(Cell, raw, path)
    hints = typing.get_type_hints(Train)
    for key in cell.train:
        if key not in hints:
            raise ParamsError(f"{path}.train.{key}: unknown key (allowed: {', '.join(sorted(hints))})")
    train = {key: _coerce(value, hints[key], f"{path}.train.{key}") for key, value in cell.train.items()}
    return dataclasses.replace(cell, train=train)


# ----- semantic checks ----------------------------------------------------------------------
def _choice(value, allowed, path):
    if value not in allowed:
        raise ParamsError(f"{path}: unknown value {value!r} (choose from {', '.join(sorted(allowed))})")


def _positive(value, path, zero_ok=False):
    if value < 0 or (value == 0 and not zero_ok):
        raise ParamsError(f"{path}: must be {'>= 0' if zero_ok else '> 0'}, got {value!r}")


def _check_train(train, path):
    from diffusion import TIMESTEP_SAMPLERS

    for name in ("steps", "batch_size", "lr", "log_every", "checkpoint_every"):
        _positive(getattr(train, name), f"{path}.{name}")
    for name in ("warmup", "grad_clip", "hybrid_lambda"):
        _positive(getattr(train, name), f"{path}.{name}", zero_ok=True)
    if not 0 <= train.ema_decay < 1:
        raise ParamsError(f"{path}.ema_decay: must be in [0, 1), got {train.ema_decay!r}")
    _choice(train.weighting_space, ("eps", "target"), f"{path}.weighting_space")
    _choice(train.vlb_scale, ("ddpm", "rescaled"), f"{path}.vlb_scale")
    _choice(train.timestep_sampler, TIMESTEP_SAMPLERS, f"{path}.timestep_sampler")
    _positive(train.min_snr_gamma, f"{path}.min_snr_gamma")
    _choice(train.device, DEVICES, f"{path}.device")
    _choice(train.precision, PRECISIONS, f"{path}.precision")
    _positive(train.gpus, f"{path}.gpus")
    _positive(train.eval_every, f"{path}.eval_every", zero_ok=True)
    if train.batch_size % train.gpus:
        raise ParamsError(f"{path}.batch_size: {train.batch_size} is not divisible by "
                          f"{path}.gpus = {train.gpus} (the batch is split across processes)")


def _check(p: Params):
    # The slugs come from the library's registries (imported here, not at module level, so
    # that reading params stays cheap for a no-op Snakemake run; see validate_once).
    from diffusion import LEARNED_SIGMAS, PARAMETERIZATIONS, SAMPLERS, SCHEDULES, SIGMAS, WEIGHTINGS
    from diffusion.nets import NETWORKS

    _choice(p.data.name, DATASETS, "data.name")
    if p.data.heldout_fraction == 0 and p.data.name not in TEST_SPLITS:
        raise ParamsError(f"data.heldout_fraction: 0 (the data set's own test split) is only available "
                          f"for {', '.join(TEST_SPLITS)}; use a fraction in (0, 1)")
    if not 0 <= p.data.heldout_fraction < 1:
        raise ParamsError(f"data.heldout_fraction: must be in (0, 1), or 0 for the test split, "
                          f"got {p.data.heldout_fraction!r}")
    if p.data.path is not None and not Path(p.data.path).exists():
        raise ParamsError(f"data.path: {p.data.path} does not exist")
    _choice(p.process.kind, ("vp", "ve"), "process.kind")
    _choice(p.process.schedule, SCHEDULES, "process.schedule")
    _positive(p.process.T, "process.T")
    if not 0 < p.process.sigma_min < p.process.sigma_max:
        raise ParamsError("process.sigma_min: need 0 < sigma_min < sigma_max")
    _choice(p.model.net, NETWORKS, "model.net")
    for name in ("hidden", "num_blocks", "model_channels", "num_res_blocks"):
        _positive(getattr(p.model, name), f"model.{name}")
    if not 0 <= p.model.dropout < 1:
        raise ParamsError(f"model.dropout: must be in [0, 1), got {p.model.dropout!r}")
    _positive(p.model.sigma_data, "model.sigma_data")
    _check_train(p.train, "train")
    if not p.cells:
        raise ParamsError("cells: the grid is empty; add at least one cell")
    seen = {}
    for cell_id, cell in p.cells.items():
        path = f"cells.{cell_id}"
        if not isinstance(cell_id, str) or not CELL_ID.match(cell_id):
            raise ParamsError(f"{path}: cell ids use a-z, 0-9, '_' and '-' only")
        _choice(cell.parameterization, PARAMETERIZATIONS, f"{path}.parameterization")
        if p.process.kind not in PARAMETERIZATIONS[cell.parameterization].processes:
            raise ParamsError(f"{path}.parameterization: {cell.parameterization!r} is not defined "
                              f"for a {p.process.kind} process")
        _choice(cell.weighting, WEIGHTINGS, f"{path}.weighting")
        _choice(cell.sigma, SIGMAS, f"{path}.sigma")
        if cell.weighting == "uncertainty" and cell.sigma in LEARNED_SIGMAS:
            raise ParamsError(f"{path}.sigma: the uncertainty weighting (seed 004) needs a fixed Sigma, "
                              f"got {cell.sigma!r}")
        train = p.cell_train(cell_id)
        _check_train(train, f"{path}.train")
        # Only the VLB term reaches a learned Sigma: under any other weighting (the adaptive
        # ones included) it is the hybrid term lambda * T * L_t (diffusion/losses.py).
        if cell.sigma in LEARNED_SIGMAS and cell.weighting != "vlb" and train.hybrid_lambda == 0:
            raise ParamsError(f"{path}.train.hybrid_lambda: 0 leaves the learned Sigma head of {path} "
                              f"(sigma: {cell.sigma}, weighting: {cell.weighting}) without gradient; "
                              "use weighting vlb or hybrid_lambda > 0")
        replicate = REPLICATE_SUFFIX.search(cell_id)
        if replicate and int(replicate.group(1)) != train.seed:
            raise ParamsError(f"{path}: the id says seed {replicate.group(1)} but train.seed is "
                              f"{train.seed}; add train: {{seed: {replicate.group(1)}}}")
        # Resolved settings, so a replicate that repeats another cell's seed is caught too.
        signature = (cell.parameterization, cell.weighting, cell.sigma,
                     tuple(sorted(dataclasses.asdict(train).items())))
        if signature in seen:
            raise ParamsError(f"{path}: same objective and settings as cells.{seen[signature]}")
        seen[signature] = cell_id
    _choice(p.sample.sampler, SAMPLERS, "sample.sampler")
    for name in ("steps", "num_samples", "batch_size"):
        _positive(getattr(p.sample, name), f"sample.{name}")
    if p.sample.sampler in ("ancestral", "ddim") and p.sample.steps > p.process.T:
        raise ParamsError(f"sample.steps: {p.sample.steps} is more than process.T = {p.process.T}")
    _positive(p.sample.langevin_steps_per_level, "sample.langevin_steps_per_level")
    _positive(p.sample.langevin_step_size, "sample.langevin_step_size")
    _positive(p.sample.sigma_max, "sample.sigma_max")
    if p.points and p.data.random_flip:
        raise ParamsError(f"data.random_flip: must be false for 2-D point data ({p.data.name})")
    if p.points and p.sample.clip_x0:
        raise ParamsError(f"sample.clip_x0: must be false for 2-D point data ({p.data.name} is not in [-1, 1])")
    _check_study(p)
    _check_paths(p.paths)
    for name in ("steps", "batch_size", "lr", "feature_dim"):
        _positive(getattr(p.evaluator, name), f"evaluator.{name}")
    _choice(p.sample.device, DEVICES, "sample.device")
    _positive(p.metrics.kid_subset_size, "metrics.kid_subset_size")
    _positive(p.metrics.nll_examples, "metrics.nll_examples")
    _choice(p.metrics.feature_extractor, FEATURE_EXTRACTORS, "metrics.feature_extractor")
    _choice(p.metrics.device, DEVICES, "metrics.device")
    if p.metrics.inception_weights is not None and not Path(p.metrics.inception_weights).is_file():
        raise ParamsError(f"metrics.inception_weights: {p.metrics.inception_weights} does not exist "
                          "(a local copy of torch-fidelity's Inception weights, or null to download them)")
    if p.metrics.snapshot_samples < 10:
        raise ParamsError(f"metrics.snapshot_samples: must be >= 10 (IS uses 10 splits), "
                          f"got {p.metrics.snapshot_samples!r}")
    if p.metrics.matched_n is not None:
        if p.metrics.matched_n < 2:
            raise ParamsError(f"metrics.matched_n: must be >= 2 or null, got {p.metrics.matched_n!r}")
        if p.metrics.matched_n > p.sample.num_samples:
            raise ParamsError(f"metrics.matched_n: {p.metrics.matched_n} is larger than "
                              f"sample.num_samples = {p.sample.num_samples}")
    for name in ("draws", "resamples", "copy_threshold"):
        _positive(getattr(p.metrics, name), f"metrics.{name}")
    if p.stats.baseline not in p.cells:
        raise ParamsError(f"stats.baseline: {p.stats.baseline!r} is not a cell of the grid")
    if not 0 < p.stats.confidence < 1:
        raise ParamsError(f"stats.confidence: must be in (0, 1), got {p.stats.confidence!r}")
    _positive(p.stats.bootstrap, "stats.bootstrap")
    for path, n in (("sample.num_samples", p.sample.num_samples),
                    ("sampler_study.num_samples", p.sampler_study.num_samples)):
        if not p.points and p.metrics.kid_subset_size > n:
            raise ParamsError(f"metrics.kid_subset_size: {p.metrics.kid_subset_size} is larger than "
                              f"{path} = {n}")


def _check_paths(paths):
    """Each folder is its default (`results`) or a new folder inside it (`results/<name>`): inside
    the repository, under the folders git ignores (data, runs, logs) or commits (results)."""
    for key, value in dataclasses.asdict(paths).items():
        name = value[len(key) + 1:] if value.startswith(f"{key}/") else None
        if value != key and not (name and SLUG.match(name) and name not in RESERVED_NAMES):
            raise ParamsError(f"paths.{key}: must be {key!r} or '{key}/<name>' with <name> of a-z, 0-9, '_' "
                              f"and not one of the pipeline's own folders ({', '.join(RESERVED_NAMES)}), "
                              f"got {value!r}")


def _check_study(p: Params):
    from diffusion import SAMPLERS

    s = p.sampler_study
    for name in ("cells", "samplers", "nfe"):
        values = getattr(s, name)
        if not values:
            raise ParamsError(f"sampler_study.{name}: empty; list at least one")
        if len(set(values)) != len(values):
            raise ParamsError(f"sampler_study.{name}: duplicate entries in {list(values)}")
    for i, cell in enumerate(s.cells):
        if cell not in p.cells:
            raise ParamsError(f"sampler_study.cells[{i}]: {cell!r} is not a cell of cells: "
                              f"(choose from {', '.join(p.cells)})")
    for i, sampler in enumerate(s.samplers):
        _choice(sampler, SAMPLERS, f"sampler_study.samplers[{i}]")
    for i, nfe in enumerate(s.nfe):
        _positive(nfe, f"sampler_study.nfe[{i}]")
        if nfe > p.process.T and ({"ancestral", "ddim"} & set(s.samplers)):
            raise ParamsError(f"sampler_study.nfe[{i}]: {nfe} is more than process.T = {p.process.T} "
                              "(ancestral and ddim take one network evaluation per step of the process)")
    _positive(s.num_samples, "sampler_study.num_samples")


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
    """Validate a params mapping (as load_yaml reads it) into Params, or raise ParamsError."""
    if not isinstance(raw, dict):
        raise ParamsError("params: expected a mapping at the top level")
    raw = dict(raw)
    cells = raw.get("cells")
    if isinstance(cells, dict):
        raw["cells"] = {k: _build_cell(v, f"cells.{k}") for k, v in cells.items()}
    elif cells is not None and cells != {}:
        raise ParamsError("cells: expected a mapping of cell id -> {parameterization, weighting, sigma}")
    fields = {f.name for f in dataclasses.fields(Params)}
    for key in raw:
        if key not in fields:
            raise ParamsError(f"{key}: unknown key (allowed: {', '.join(sorted(fields))})")
    for key in fields - {"paths"}:
        if key not in raw:
            raise ParamsError(f"{key}: missing section")
    hints = typing.get_type_hints(Params)
    kwargs = {k: (raw[k] if k == "cells" else _coerce(raw[k] or {}, hints[k], k)) for k in fields if k in raw}
    params = Params(**kwargs)
    _check(params)
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
        raise ParamsError(f"{path}: {err}") from None
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
        raise ParamsError(f"{path}: {err}") from None


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
    """load(), turning a mistake into one line on stderr and exit status 2."""
    try:
        return load(path)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description="Validate params.yaml and list the grid.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--stamp", help="write this file when valid (DVC's first stage: every stage depends on "
                                        "it, so a bad param stops `dvc repro` before any output is removed)")
    args = parser.parse_args(argv)
    params = load_or_exit(args.params)
    for cell_id, cell in params.cells.items():
        extra = f" train={cell.train}" if cell.train else ""
        print(f"{cell_id}: {cell.parameterization} / {cell.weighting} / {cell.sigma}{extra}")
    print(f"{len(params.cells)} cells; {args.params} is valid")
    if args.stamp:  # the same bytes whatever the params: a valid edit alone reruns nothing downstream
        Path(args.stamp).parent.mkdir(parents=True, exist_ok=True)
        Path(args.stamp).write_text("valid\n")


if __name__ == "__main__":
    main()
