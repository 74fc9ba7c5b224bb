"""MLflow mirror of result JSONs (for browsing; tables never read MLflow).

Default backend ``sqlite:///<results>/mlflow.db``; ``--tracking-uri`` (e.g. an ``mlflow server`` at
``http://host:port``) or ``MLFLOW_TRACKING_URI`` override. A run is mirrored once, after its result JSON is
complete, so MLflow never shows a half-finished run as finished; the MLflow run id is looked up by the tag
``peft3d.run_id`` so re-mirroring is idempotent. :meth:`Mirror.backfill` mirrors every finished run that MLflow
lacks (a run finished by another process, or by a ``bench run`` killed before it could mirror it).

Several processes may start on one results folder at once: a SQLite database is created (schema migrations)
under a file lock, and mirror writes of one folder are serialised by another, so a run is never mirrored twice.
"""
from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from filelock import FileLock

from peft3d.core.result import RunResult


def tracking_uri(root: Path, override: str | None = None) -> str:
    return override or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def _flat(prefix: str, d: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            _flat(key + ".", v, out)
        else:
            out[key] = v
    return out


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def uri_lock(uri: str) -> FileLock | nullcontext:
    """A lock beside a SQLite database (its creation and migrations are not safe to race); none for servers."""
    db = _sqlite_file(uri)
    if db is None:
        return nullcontext()
    db.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(db) + ".lock", timeout=300, thread_local=False)


def open_experiment(uri: str, experiment: str) -> tuple[Any, str]:
    """``(MlflowClient, experiment id)``; creates the database and the experiment once, whoever races."""
    import mlflow
    from mlflow.exceptions import MlflowException

    for name in ("mlflow", "alembic"):  # after the import: mlflow configures its loggers on import
        logging.getLogger(name).setLevel(logging.WARNING)
    with uri_lock(uri):
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            return client, exp.experiment_id
        try:
            return client, client.create_experiment(experiment)
        except MlflowException:  # created meanwhile by another process (a shared server has no file lock)
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise
            return client, exp.experiment_id


class Mirror:
    def __init__(self, uri: str, experiment: str, lock_dir: Path | None = None) -> None:
        self.client, self.exp_id = open_experiment(uri, experiment)
        # Serialises check-then-write across processes sharing a results folder (no duplicate MLflow runs).
        self.lock = FileLock(lock_dir / "mlflow-mirror.lock", timeout=300, thread_local=False) if lock_dir \
            else nullcontext()

    def mirrored(self) -> set[str]:
        """peft3d run ids that have a finished MLflow run in this experiment."""
        out = set()
        for r in self.client.search_runs([self.exp_id], "attributes.status != 'RUNNING'", max_results=50000):
            rid = r.data.tags.get("peft3d.run_id")
            if rid:
                out.add(rid)
        return out

    def backfill(self, results: list[RunResult]) -> list[str]:
        """Mirror each finished result that MLflow lacks; returns their run ids. Idempotent."""
        added = []
        with self.lock:
            have = self.mirrored()
            for r in results:
                if r and r.status in ("success", "failed") and r.run_id not in have:
                    self._log(r)
                    added.append(r.run_id)
        return added

    def existing(self, run_id: str) -> str | None:
        hits = self.client.search_runs([self.exp_id], f"tags.`peft3d.run_id` = '{run_id}'", max_results=1)
        return hits[0].info.run_id if hits else None

    def log(self, result: RunResult, parent: str | None = None) -> str:
        """Mirror one result (replacing an older mirror of it); returns the MLflow run id. Failed runs are
        mirrored with status FAILED."""
        with self.lock:
            return self._log(result, parent)

    def _log(self, result: RunResult, parent: str | None = None) -> str:
        old = self.existing(result.run_id)
        if old:
            self.client.delete_run(old)  # replace: the JSON is the source of truth
        tags = {"peft3d.run_id": result.run_id, "peft3d.status": result.status,
                "mlflow.runName": result.label or result.run_id}
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.exp_id, tags=tags)
        rid = run.info.run_id
        spec = result.spec
        params = _flat("", {k: v for k, v in spec.items() if k != "method_cfg"}, {})
        params.update(_flat("method_cfg.", spec.get("method_cfg") or {}, {}))
        from mlflow.entities import Metric, Param

        metrics = [Metric(k, float(v), 0, 0) for k, v in _numbers(result.metrics.to_dict() if result.metrics else {})]
        curves = result.metrics.curves if result.metrics else {}
        for key in ("train_loss", "val_acc", "test_acc", "lr"):
            for ep, v in zip(curves.get("epoch", []), curves.get(key, []), strict=True):
                metrics.append(Metric(f"curve.{key}", float(v), 0, int(ep)))
        metrics += [Metric(f"params.{k}", float(v), 0, 0) for k, v in
                    _numbers(result.params.to_dict() if result.params else {})]
        plist = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, max(len(plist), len(metrics)), 100):
            self.client.log_batch(rid, metrics=metrics[i:i + 100], params=plist[i:i + 100])
        if result.error:
            self.client.set_tag(rid, "peft3d.error", result.error[:5000])
        self.client.set_terminated(rid, "FINISHED" if result.ok else "FAILED")
        return rid


def _numbers(d: dict[str, Any]) -> list[tuple[str, float]]:
    return [(k, v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
