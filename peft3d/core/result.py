"""RunResult: the typed record of one run, and the only way result JSONs are written and read.

A result file is trusted only after :meth:`RunResult.from_dict` validated it (schema version, types, every
accuracy a finite number in [0, 1], a success carries metrics). A file that does not validate is reported once
(one line: file and problem), moved to ``<results>/quarantine/`` and treated as missing, so a re-run redoes the
run and no table ever shows a number read from it.

The JSON layout is the one results have always had (schema 1): typed parts for what tables and tuning read
(status, metrics, parameter counts, timing), and the descriptive sections (environment, weights, memory, ...)
kept as they were written, so rewriting a result never drops a field.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from peft3d.core.atomic import atomic_write

SCHEMA = 1
STATUSES = ("success", "failed", "pruned")
ACCURACIES = ("val_acc", "test_acc", "test_macc", "test_acc_best_test", "test_acc_last")
REQUIRED_ACCURACIES = ("val_acc",)  # and test_acc, unless the run's spec says evaluate_test: false
COUNTS = ("selected_epoch", "best_test_epoch", "n_val", "n_test")
ACC_CURVES = ("val_acc", "test_acc", "test_macc", "train_acc")


class ResultInvalid(ValueError):
    """A result file that does not validate; the message is the problem, in one line."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _accuracy(v: Any, where: str) -> float:
    if not _is_number(v) or not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise ResultInvalid(f"{where} must be a finite number in [0, 1], got {v!r}")
    return float(v)


def _count(v: Any, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ResultInvalid(f"{where} must be a non-negative integer, got {v!r}")
    return v


def _mapping(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        raise ResultInvalid(f"{where} must be a JSON object, got {type(v).__name__}")
    return dict(v)


@dataclass(frozen=True)
class Metrics:
    """Accuracies are fractions in [0, 1]; ``test_acc`` is read at the best-validation epoch (None, with every
    test field, for a run that did not evaluate its test split: a tuning trial)."""

    val_acc: float
    test_acc: float | None = None
    test_macc: float | None = None
    test_acc_best_test: float | None = None
    test_acc_last: float | None = None
    selected_epoch: int | None = None
    best_test_epoch: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    curves: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # metrics a newer writer added; kept on rewrite

    @classmethod
    def from_dict(cls, d: Any) -> "Metrics":
        d = _mapping(d, "metrics")
        known = {f.name for f in fields(cls)} - {"extra"}
        d = {k: v for k, v in d.items() if k in known} | {"extra": {k: v for k, v in d.items() if k not in known}}
        missing = [k for k in REQUIRED_ACCURACIES if d.get(k) is None]
        if missing:
            raise ResultInvalid(f"metrics lack {missing}")
        for k in ACCURACIES:
            if d.get(k) is not None:
                d[k] = _accuracy(d[k], f"metrics.{k}")
        for k in COUNTS:
            if d.get(k) is not None:
                d[k] = _count(d[k], f"metrics.{k}")
        d["curves"] = _curves(d.get("curves") or {})
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**{k: v for k, v in d.items() if v is not None}, **self.extra}


def _curves(d: Any) -> dict[str, list[float]]:
    d = _mapping(d, "metrics.curves")
    for k, values in d.items():
        if not isinstance(values, list) or not all(_is_number(v) and math.isfinite(v) for v in values):
            raise ResultInvalid(f"metrics.curves.{k} must be a list of finite numbers")
        if k in ACC_CURVES:
            for v in values:
                _accuracy(v, f"metrics.curves.{k}")
    return d


@dataclass(frozen=True)
class Params:
    """Trainable-parameter accounting (protocol: what counts as trainable); other counts kept in ``extra``."""

    method: int | None = None
    trainable_excluding_head: int | None = None
    trainable: int | None = None
    total: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    KNOWN = ("method", "trainable_excluding_head", "trainable", "total")

    @classmethod
    def from_dict(cls, d: Any) -> "Params":
        d = _mapping(d, "params")
        known = {k: _count(d[k], f"params.{k}") for k in cls.KNOWN if d.get(k) is not None}
        return cls(**known, extra={k: v for k, v in d.items() if k not in cls.KNOWN})

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.KNOWN if getattr(self, k) is not None}
        return {**d, **self.extra}


@dataclass(frozen=True)
class RunResult:
    """One run's outcome. ``sections`` holds the descriptive blocks (backbone, time, environment, ...)."""

    run_id: str
    status: str
    spec: dict[str, Any]
    error: str | None = None
    label: str | None = None
    metrics: Metrics | None = None
    params: Params | None = None
    sections: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA

    TYPED = ("schema", "run_id", "status", "spec", "error", "label", "metrics", "params")

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def section(self, name: str) -> dict[str, Any]:
        v = self.sections.get(name)
        return v if isinstance(v, dict) else {}

    @property
    def pretrain_modality(self) -> str | None:
        return self.section("backbone").get("pretrain_modality")

    @classmethod
    def failure(cls, spec: Mapping[str, Any], run_id: str, error: str, status: str = "failed",
                **sections: Any) -> "RunResult":
        return cls(run_id=run_id, status=status, spec=dict(spec), error=error, sections=sections)

    @classmethod
    def from_dict(cls, d: Any) -> "RunResult":
        d = _mapping(d, "a result")
        schema = d.get("schema", SCHEMA)
        if schema != SCHEMA or isinstance(schema, bool):
            raise ResultInvalid(f"schema version {schema!r} is not one this peft3d reads ({SCHEMA})")
        if not isinstance(d.get("run_id"), str) or not d["run_id"]:
            raise ResultInvalid("run_id must be a non-empty string")
        if d.get("status") not in STATUSES:
            raise ResultInvalid(f"status must be one of {list(STATUSES)}, got {d.get('status')!r}")
        for k in ("error", "label"):
            if d.get(k) is not None and not isinstance(d[k], str):
                raise ResultInvalid(f"{k} must be a string or null, got {type(d[k]).__name__}")
        ok = d["status"] == "success"
        if ok and d.get("metrics") is None:
            raise ResultInvalid("status is success but there are no metrics")
        metrics = Metrics.from_dict(d["metrics"]) if ok or d.get("metrics") is not None else None
        spec = _mapping(d.get("spec") or {}, "spec")
        if ok and metrics.test_acc is None and spec.get("evaluate_test", True):
            raise ResultInvalid("metrics lack ['test_acc'] (only a run with evaluate_test: false may)")
        params = Params.from_dict(d["params"]) if d.get("params") is not None else None
        return cls(run_id=d["run_id"], status=d["status"], spec=spec,
                   error=d.get("error"), label=d.get("label"), metrics=metrics, params=params,
                   sections={k: v for k, v in d.items() if k not in cls.TYPED}, schema=SCHEMA)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema": self.schema, "run_id": self.run_id, "status": self.status, "spec": self.spec,
                             "error": self.error, **self.sections}
        if self.label is not None:
            d["label"] = self.label
        if self.metrics is not None:
            d["metrics"] = self.metrics.to_dict()
        if self.params is not None:
            d["params"] = self.params.to_dict()
        return d

    def validated(self) -> "RunResult":
        """Round-trip through the validator: a writer never stores what a reader would reject."""
        return RunResult.from_dict(json.loads(json.dumps(self.to_dict(), allow_nan=False)))

    def with_sections(self, **sections: Any) -> "RunResult":
        return RunResult(**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "sections"},
                         sections={**self.sections, **sections})


# ------------------------------------------------------------------------------------------------ the store

def wall_seconds(time_section: dict[str, Any]) -> float | None:
    """What a run cost in wall seconds, from its result's ``time`` section: ``wall_s`` counts every segment of a
    resumed run; results written before it carry ``total_s``, their last segment only. None when neither is
    recorded."""
    s = time_section.get("wall_s", time_section.get("total_s"))
    return None if s is None else float(s)


def results_dir(override: str | os.PathLike | None = None) -> Path:
    return Path(override or os.environ.get("PEFT3D_RESULTS", "results")).resolve()


def ensure_writable(root: Path) -> None:
    """Fail before anything runs when results could not be stored (a read-only or foreign folder)."""
    import tempfile

    from peft3d.core.errors import Peft3dError

    try:
        (root / "runs").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root / "runs"):
            pass
    except OSError as e:
        raise Peft3dError(f"results folder {root} is not writable ({e.strerror}): pass --results DIR or set "
                          "PEFT3D_RESULTS to a writable folder") from None


def run_path(root: Path, run_id: str) -> Path:
    return root / "runs" / f"{run_id}.json"


def atomic_write_text(path: Path, text: str) -> None:
    """Readers see all of ``text`` or the previous file, never a part."""
    atomic_write(path, lambda f: f.write(text))


def write_result(root: Path, result: RunResult) -> Path:
    try:
        checked = result.validated()
    except ValueError as e:  # a bug in a writer, not user input: refuse to store it
        raise ResultInvalid(f"refusing to write result {result.run_id}: {e}") from None
    path = run_path(root, checked.run_id)
    atomic_write_text(path, json.dumps(checked.to_dict(), indent=1, sort_keys=True, allow_nan=False))
    return path


_reported: set[Path] = set()


def report_invalid(path: Path, problem: str, root: Path) -> None:
    """One line per bad file (stderr), then move it aside so the run is redone; reported once per process
    even when it cannot be moved (a read-only results folder)."""
    moved = quarantine(path, root)
    if path in _reported:
        return
    _reported.add(path)
    where = f"moved to {moved}" if moved else "left in place (could not move it)"
    print(f"warning: invalid result {path}: {problem}; treated as missing, {where}", file=sys.stderr)


def quarantine(path: Path, root: Path) -> Path | None:
    dest_dir = root / "quarantine"
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / path.name
        n = 1
        while dest.exists() or dest.is_symlink():
            dest, n = dest_dir / f"{path.name}.{n}", n + 1
        shutil.move(str(path), dest)
        return dest
    except OSError:
        return None


def parse_result(path: Path, run_id: str | None = None) -> RunResult:
    """Read and validate one file; raises :class:`ResultInvalid` naming the problem."""
    try:
        text = path.read_bytes().decode("utf-8")
    except IsADirectoryError:
        raise ResultInvalid("is a directory, not a file") from None
    except UnicodeDecodeError as e:
        raise ResultInvalid(f"is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ResultInvalid(f"cannot be read ({e.strerror})") from None
    try:
        data = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ResultInvalid(f"contains {c}")))
    except json.JSONDecodeError as e:
        raise ResultInvalid(f"is not valid JSON ({e.msg} at line {e.lineno})") from None
    result = RunResult.from_dict(data)
    if run_id is not None and result.run_id != run_id:
        raise ResultInvalid(f"holds run_id {result.run_id!r}, not {run_id!r}")
    return result


def read_result(root: Path, run_id: str) -> RunResult | None:
    """The run's validated result, or None when it has none (an invalid file counts as none)."""
    path = run_path(root, run_id)
    if not (path.exists() or path.is_symlink()):
        return None
    try:
        return parse_result(path, run_id)
    except ResultInvalid as e:
        report_invalid(path, str(e), root)
        return None


def succeeded(root: Path, run_id: str) -> bool:
    r = read_result(root, run_id)
    return bool(r and r.ok)


def load_results(root: Path, run_ids: Iterable[str]) -> dict[str, RunResult | None]:
    return {rid: read_result(root, rid) for rid in run_ids}
