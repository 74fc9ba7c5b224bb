"""Provenance for ``bench tune``: owner tokens (host/pid/start time) and the MLflow side of a tune — a parent run
per study, a nested run per trial, created with the client and explicit run ids (trials run in other processes,
so there is no fluent active-run state), and reaping of RUNNING runs whose owner process is gone."""
from __future__ import annotations

from typing import Any

from peft3d.core.owners import owner_alive, owner_token
from peft3d.core.spec import RunSpec

__all__ = ["TuneTracker", "owner_alive", "owner_token"]

# ------------------------------------------------------------------------------------------- MLflow

class TuneTracker:
    """Parent MLflow run per study, nested run per trial; explicit run ids, owner-tagged, never left RUNNING."""

    def __init__(self, uri: str, experiment: str) -> None:
        from peft3d.reporting.mirror import open_experiment

        self.client, self.exp_id = open_experiment(uri, experiment)
        self.owner = owner_token()

    def reap(self) -> int:
        """Mark RUNNING runs of this experiment whose owner process is gone as KILLED; returns how many."""
        n = 0
        for run in self.client.search_runs([self.exp_id], "attributes.status = 'RUNNING'", max_results=10000):
            if not owner_alive(run.data.tags.get("peft3d.owner")):
                self.client.set_tag(run.info.run_id, "peft3d.reaped_by", self.owner)
                self.client.set_terminated(run.info.run_id, "KILLED")
                n += 1
        return n

    def study_run(self, study: str, attrs: dict[str, Any]) -> str:
        # Matched in Python, not in the filter: a study name comes from a file name and may hold quotes
        # (o'neil.yaml) that MLflow's filter syntax cannot carry.
        hits = [r for r in self.client.search_runs([self.exp_id], "tags.`peft3d.role` = 'study'", max_results=10000)
                if r.data.tags.get("peft3d.study") == study]
        if hits:
            rid = hits[0].info.run_id
            self.client.update_run(rid, status="RUNNING")
        else:
            rid = self.client.create_run(self.exp_id, tags={"peft3d.study": study, "peft3d.role": "study",
                                                            "mlflow.runName": study}).info.run_id
            self.client.log_batch(rid, params=_params({f"tune.{k}": v for k, v in attrs.items()}))
        self.client.set_tag(rid, "peft3d.owner", self.owner)
        return rid

    def trial_run(self, parent: str, study: str, number: int, spec: RunSpec, params: dict[str, Any]) -> str:
        tags = {"mlflow.parentRunId": parent, "peft3d.study": study, "peft3d.role": "trial",
                "peft3d.trial": str(number), "peft3d.run_id": spec.run_id, "peft3d.owner": self.owner,
                "mlflow.runName": f"trial {number}"}
        rid = self.client.create_run(self.exp_id, tags=tags).info.run_id
        self.client.log_batch(rid, params=_params(params))
        return rid

    def end_trial(self, rid: str, state: str, value: float | None, curve: list[dict]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(f"curve.{k}", float(ev[k]), 0, int(ev["epoch"])) for ev in curve
                   for k in ("val_acc", "train_loss") if k in ev]
        if value is not None:
            metrics.append(Metric("objective.best_val_acc", float(value), 0, 0))
        for i in range(0, len(metrics), 500):
            self.client.log_batch(rid, metrics=metrics[i:i + 500])
        self.client.set_tag(rid, "optuna.state", state)
        status = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}.get(state, "KILLED")
        self.client.set_terminated(rid, status)

    def end_study(self, rid: str, status: str, summary: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        nums = [Metric(f"tune.{k}", float(v), 0, 0) for k, v in summary.items()
                if isinstance(v, (int, float)) and v is not None]
        if nums:
            self.client.log_batch(rid, metrics=nums)
        self.client.set_terminated(rid, status)


def _params(d: dict[str, Any]) -> list:
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in d.items()]
