"""RunSpec and its parts: everything a run does follows from one frozen, hashable description."""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Mapping, TypeVar, Union

from peft3d.core.digest import json_sha256
from peft3d.core.errors import ConfigError

T = TypeVar("T")


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise (no silent typos in grids)."""
    data = dict(data or {})
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    hints = _hints(cls)
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            data[f.name] = coerce(data[f.name], hints.get(f.name, Any), f"{where}: {f.name}")
    try:
        return cls(**data)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation this module cannot resolve: checked by the class itself
        return {}


def as_number(value: Any) -> float | None:
    """A number, or a string YAML 1.1 left unparsed (``1e-3``); None for anything else (bools included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against the annotation ``tp``: types, finite numbers, integers that are integers.
    Numeric strings (YAML 1.1 reads ``1e-3`` as a string) become numbers; nothing is ever clipped."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for a in options[:-1]:
            try:
                return coerce(value, a, where)
            except ConfigError:
                pass
        return coerce(value, options[-1], where)
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        x = as_number(value)
        if x is None or not math.isfinite(x) or x != int(x):
            raise ConfigError(f"{where} must be a whole number, got {value!r}")
        return int(x)
    if tp is float:
        x = as_number(value)
        if x is None or not math.isfinite(x):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return x if isinstance(value, str) else value  # an int stays an int: run_ids hash the value as written
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping, typing.Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping (key: value), got {value!r}")
        return value
    if isinstance(value, list):
        return tuple(value)  # YAML lists -> hashable tuples
    return value


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name}={value!r} is out of range: use a value in [{low:g}, {high:g}]")


MAX_EPOCHS = 100_000
MAX_BATCH = 65_536
SCHEDULES = ("cosine", "onecycle", "constant")
TOKEN_NORMS = ("batchnorm", "layernorm", "none")
POS_ENCODINGS = ("mlp", "table", "none")
HEADS = ("paper", "mean_ln_linear")


@dataclass(frozen=True)
class Budget:
    """Training budget and optimisation settings; identical for every method in a comparison."""

    epochs: int = 10
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: int = 1
    min_lr: float = 1e-6
    grad_clip: float = 0.0  # max gradient norm; 0 turns clipping off (the paper's pipeline clips at 10)
    label_smoothing: float = 0.0
    # "onecycle": torch's OneCycleLR (warmup unused; the default, chosen on validation: docs/protocol.md);
    # "cosine": linear warm-up then cosine (the paper's pipeline); "constant": linear warm-up then the lr
    # unchanged, so a run's schedule does not depend on when early stopping ends it
    schedule: str = "onecycle"
    # Early stopping: end the run once validation accuracy has not improved for ``patience`` epochs (0: off;
    # ``epochs`` is then the cap). The result records whether it stopped early (protocol.md "Convergence").
    patience: int = 0

    def __post_init__(self) -> None:
        # Bounds far beyond any real run: a value outside them is a typo, and failing beats clipping.
        _in_range("epochs", self.epochs, 1, MAX_EPOCHS)
        _in_range("batch_size", self.batch_size, 1, MAX_BATCH)
        _in_range("eval_batch_size", self.eval_batch_size, 1, MAX_BATCH)
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} must lie in [0, epochs={self.epochs}]")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 10):
            raise ValueError(f"lr must be a finite number in (0, 10], got {self.lr}")
        _in_range("weight_decay", self.weight_decay, 0, 10)
        _in_range("min_lr", self.min_lr, 0, 10)
        _in_range("grad_clip", self.grad_clip, 0, 1e12)  # 0 turns clipping off
        _in_range("label_smoothing", self.label_smoothing, 0, 0.999)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        _in_range("patience", self.patience, 0, MAX_EPOCHS)


@dataclass(frozen=True)
class TokenizerCfg:
    """Point-PN style tokenizer (any2point.md §1.1). Output tokens G = num_points / 2**num_stages."""

    num_stages: int = 3
    embed_dim: int = 96  # width after the raw embedding; doubles every stage
    k: int = 32  # neighbours per group, same in every stage
    lga_blocks: tuple[int, ...] = (2, 1, 1)  # residual blocks per stage
    last_bottleneck: int = 32  # bottleneck width of the last stage's blocks (paper: 32)
    group_norm: str = "scan"  # "scan": per-axis max|offset| per group; "std": per-sample scalar std
    alpha: float = 1000.0  # PosE frequency base
    beta: float = 100.0  # PosE scale
    # Output-token norm: True / "batchnorm" (the paper's), "layernorm", False / "none". Stored as True / False /
    # "layernorm" so run_ids of specs written before the string spellings existed do not change. The default
    # was chosen on validation accuracy (docs/protocol.md "The shared pipeline").
    out_norm: bool | str = False

    def __post_init__(self) -> None:
        canon = {"batchnorm": True, "none": False}.get(self.out_norm, self.out_norm) \
            if isinstance(self.out_norm, str) else self.out_norm
        if canon not in (True, False, "layernorm"):
            raise ValueError(f"out_norm must be one of {TOKEN_NORMS}, got {self.out_norm!r}")
        object.__setattr__(self, "out_norm", canon)
        if len(self.lga_blocks) != self.num_stages:
            raise ValueError(f"lga_blocks {self.lga_blocks} must have num_stages={self.num_stages} entries")
        if self.group_norm not in ("scan", "std"):
            raise ValueError(f"group_norm must be 'scan' or 'std', got {self.group_norm!r}")

    @property
    def out_dim(self) -> int:
        return self.embed_dim * 2**self.num_stages

    @property
    def out_norm_name(self) -> str:
        return {True: "batchnorm", False: "none"}.get(self.out_norm, str(self.out_norm))


# run_ids hash the pipeline relative to the paper's pipeline (the only one when ids were first published), not
# relative to today's defaults: a change of default then changes the ids of the runs that use it and of no others,
# and every stored result of an explicit paper pipeline (include: _pipeline_paper.yaml) stays found.
ID_BASELINE_PIPELINE = {"pos_encoding": "mlp", "cls_token": True, "head": "paper", "blocks": None}


@dataclass(frozen=True)
class PipelineCfg:
    """The shared pipeline around the backbone. Its defaults -- and those of the tokenizer's output norm
    (``TokenizerCfg.out_norm``), the schedule and the clipping (``Budget``) -- were chosen on validation
    accuracy by the ``transfer_ablation`` grid (docs/protocol.md "The shared pipeline"); the paper's pipeline is
    the named preset ``_pipeline_paper.yaml``, which the paper-reproduction grids include. The run_id hashes
    the options that differ from the paper's pipeline (``ID_BASELINE_PIPELINE``).

    ``pos_encoding``: "mlp" (a learned MLP on token centres), "table" (the backbone's own pretrained positional
    table read through a 3D -> 1D / 2D projection of the centres), "none". ``cls_token``: prepend a learned cls
    token. ``head``: "paper" (cls ⊕ max-pool -> BatchNorm MLP; mean-pool stands in for cls without one) or
    "mean_ln_linear" (mean-pool -> LayerNorm -> Linear). ``blocks``: keep only the backbone's first N blocks
    (matched-depth comparisons); None keeps all.
    """

    pos_encoding: str = "none"
    cls_token: bool = False
    head: str = "mean_ln_linear"
    blocks: int | None = None

    def __post_init__(self) -> None:
        if self.pos_encoding not in POS_ENCODINGS:
            raise ValueError(f"pos_encoding must be one of {POS_ENCODINGS}, got {self.pos_encoding!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if not isinstance(self.cls_token, bool):
            raise ValueError(f"cls_token must be true or false, got {self.cls_token!r}")
        if self.blocks is not None and (not isinstance(self.blocks, int) or self.blocks < 0):
            raise ValueError(f"blocks must be a whole number >= 0 (or null for all), got {self.blocks!r}")

    def non_default(self) -> dict[str, Any]:
        default = PipelineCfg()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}


@dataclass(frozen=True)
class RunSpec:
    """One cell of a grid at one seed. ``run_id`` is a stable hash of the canonical dict."""

    backbone: str
    method: str
    dataset: str = "synthetic"
    variant: str = "scan"
    weights: str = "pretrained"  # pretrained | random | path:/local/dir/or/file
    method_cfg: Mapping[str, Any] = field(default_factory=dict)  # resolved (defaults filled in)
    preset: str | None = None  # name of the method preset method_cfg came from, for display
    protocol: str = "plain"  # data protocol preset: augmentation + point count
    num_points: int = 1024
    seed: int = 0
    budget: Budget = field(default_factory=Budget)
    tokenizer: TokenizerCfg = field(default_factory=TokenizerCfg)
    head_hidden: int = 256
    head_dropout: float = 0.5
    pipeline: PipelineCfg = field(default_factory=PipelineCfg)
    data_root: str | None = None  # machine-specific: not part of run_id
    device: str = "cpu"  # execution detail: not part of run_id
    grid: str | None = None  # the grid that scheduled it: not part of run_id
    # Save a resumable checkpoint every this many epochs (and on SIGTERM/SIGUSR1). Execution detail: not part
    # of run_id. 5: at paper size an epoch is minutes, a PEFT checkpoint megabytes; `full` writes the backbone.
    checkpoint_every: int = 5
    # False: the run never evaluates its test split (a tuning trial, whose objective is validation alone: test
    # must not be looked at while tuning, and skipping it saves the trial's test passes). Part of run_id when
    # False: such a result has no test accuracy and must never stand in for a full run.
    evaluate_test: bool = True

    NON_IDENTITY = ("data_root", "device", "grid", "checkpoint_every")

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["method_cfg"] = _plain(dict(self.method_cfg))
        return _plain(d)

    def identity(self) -> dict[str, Any]:
        """What run_id hashes. Options added after run_ids were first published enter only when they differ
        from their default, so every earlier run keeps its id (and its results stay found)."""
        d = self.to_dict()
        for k in self.NON_IDENTITY:
            d.pop(k)
        d["pipeline"] = {k: v for k, v in dataclasses.asdict(self.pipeline).items() if v != ID_BASELINE_PIPELINE[k]}
        if not d["pipeline"]:
            d.pop("pipeline")
        if d["budget"]["schedule"] == "cosine":
            d["budget"].pop("schedule")
        if d["budget"]["patience"] == 0:
            d["budget"].pop("patience")
        if d["evaluate_test"]:
            d.pop("evaluate_test")
        return d

    @property
    def run_id(self) -> str:
        return json_sha256(self.identity())[:12]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        d = dict(d)
        d["budget"] = from_mapping(Budget, d.get("budget"), "budget")
        d["tokenizer"] = from_mapping(TokenizerCfg, d.get("tokenizer"), "tokenizer")
        d["pipeline"] = from_mapping(PipelineCfg, d.get("pipeline"), "pipeline")
        return from_mapping(cls, d, "run spec")

    def replace(self, **changes: Any) -> "RunSpec":
        return dataclasses.replace(self, **changes)

    def pipeline_options(self) -> dict[str, Any]:
        """Every shared-pipeline ablation option of this run (defaults included), for labels and tables."""
        return {**dataclasses.asdict(self.pipeline), "token_norm": self.tokenizer.out_norm_name,
                "schedule": self.budget.schedule, "grad_clip": self.budget.grad_clip}

    @property
    def label(self) -> str:
        default = default_pipeline_options()
        extra = ",".join(f"{k}={v}" for k, v in self.pipeline_options().items() if v != default[k])
        weights = f"{self.weights};{extra}" if extra else self.weights
        return f"{self.backbone}[{weights}]/{self.method}/{self.dataset}:{self.variant}/s{self.seed}"


@functools.cache
def default_pipeline_options() -> dict[str, Any]:
    """Every shared-pipeline option at today's default (labels name only the options that differ)."""
    return RunSpec(backbone="-", method="-").pipeline_options()


def _plain(x: Any) -> Any:
    """Tuples -> lists, recursively, so the canonical JSON is the same whatever built the spec."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
