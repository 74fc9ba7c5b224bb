"""MLflow mirror of result JSONs (for browsing; tables never read MLflow).

Default backend ``sqlite:///<results>/mlflow.db``; ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` override.
A run is mirrored once, after its result JSON is complete, so MLflow never shows a half-finished run as
finished; the MLflow run id is looked up by the tag ``peft3d.run_id`` so re-mirroring is idempotent.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any


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


class Mirror:
    def __init__(self, uri: str, experiment: str) -> None:
        import mlflow

        for name in ("mlflow", "alembic"):  # after the import: mlflow configures its loggers on import
            logging.getLogger(name).setLevel(logging.WARNING)

        self.client = mlflow.MlflowClient(uri)
        exp = self.client.get_experiment_by_name(experiment)
        self.exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment)

    def existing(self, run_id: str) -> str | None:
        hits = self.client.search_runs([self.exp_id], f"tags.`peft3d.run_id` = '{run_id}'", max_results=1)
        return hits[0].info.run_id if hits else None

    def log(self, result: dict[str, Any], parent: str | None = None) -> str:
        """Mirror one result; returns the MLflow run id. Failed runs are mirrored with status FAILED."""
        spec = result["spec"]
        old = self.existing(result["run_id"])
        if old:
            self.client.delete_run(old)  # replace: the JSON is the source of truth
        tags = {"peft3d.run_id": result["run_id"], "peft3d.status": result["status"],
                "mlflow.runName": result.get("label") or result["run_id"]}
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.exp_id, tags=tags)
        rid = run.info.run_id
        params = _flat("", {k: v for k, v in spec.items() if k != "method_cfg"}, {})
        params.update(_flat("method_cfg.", spec.get("method_cfg") or {}, {}))
        from mlflow.entities import Metric, Param

        m = result.get("metrics") or {}
        metrics = [Metric(k, float(v), 0, 0) for k, v in m.items() if isinstance(v, (int, float))]
        curves = m.get("curves") or {}
        for key in ("train_loss", "val_acc", "test_acc", "lr"):
            for ep, v in zip(curves.get("epoch", []), curves.get(key, []), strict=True):
                metrics.append(Metric(f"curve.{key}", float(v), 0, int(ep)))
        for k, v in (result.get("params") or {}).items():
            if isinstance(v, (int, float)):
                metrics.append(Metric(f"params.{k}", float(v), 0, 0))
        plist = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, max(len(plist), len(metrics)), 100):
            self.client.log_batch(rid, metrics=metrics[i:i + 100], params=plist[i:i + 100])
        if result.get("error"):
            self.client.set_tag(rid, "peft3d.error", str(result["error"])[:5000])
        self.client.set_terminated(rid, "FINISHED" if result["status"] == "success" else "FAILED")
        return rid
