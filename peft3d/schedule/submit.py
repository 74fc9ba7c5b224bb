"""SLURM (or local) job arrays through submitit: one array task per missing run, requeued on preemption.

Each task is :class:`RunTask` — the same claim / checkpoint / result path as a ``bench run`` worker
(:func:`peft3d.schedule.worker.execute`). On submitit's preemption/time-out signal (USR2, sent ahead of the
limit) the training loop saves its checkpoint at the next step boundary, then submitit's own handler resubmits
the task (``checkpoint``) and requeues it; the requeued task resumes from the checkpoint. SIGTERM (``scontrol
requeue``, ``scancel``) also saves first. Submissions are recorded in ``results/submissions.jsonl``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from peft3d.core.atomic import atomic_write
from peft3d.core.spec import RunSpec


class RunTask:
    """The callable of one array task (pickled by submitit)."""

    def __init__(self, root: str, threads: int = 1) -> None:
        self.root, self.threads = root, threads

    def __call__(self, spec_dict: dict[str, Any]) -> dict[str, Any]:
        import torch

        from peft3d.schedule.worker import PREEMPTED, execute
        from peft3d.training.checkpoint import STOP, Preempted

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("PEFT3D_CACHE", str(Path(self.root) / "cache"))
        torch.set_num_threads(self.threads)
        spec = RunSpec.from_dict(spec_dict)
        preempt = _preempt_signal()
        submitit_handler = signal.getsignal(preempt)
        STOP.install((signal.SIGTERM, signal.SIGUSR1, preempt))
        try:
            code = execute(spec, Path(self.root), slot=_task_name())
        except Preempted:
            code = PREEMPTED
        if code == PREEMPTED and STOP.signum == preempt and callable(submitit_handler):
            submitit_handler(preempt, None)  # submitit: checkpoint() below, requeue, exit
        return {"run_id": spec.run_id, "exit_code": code}

    def checkpoint(self, spec_dict: dict[str, Any]) -> Any:
        """Called by submitit before requeuing: run the same call again (it resumes from the run checkpoint)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, spec_dict)


class TuneTask:
    """One tuning worker (an array task): ``bench tune`` with the submitted arguments, run as a child process so
    that the task is exactly the command a user runs by hand (exit code, Ctrl-C/SIGTERM handling). Workers share
    the study through the Optuna storage; a requeued task simply joins again (its interrupted trial is retried)."""

    def __init__(self, argv: list[str], threads: int = 1) -> None:
        self.argv, self.threads = argv, threads

    def __call__(self, worker: int) -> dict[str, Any]:
        import sys

        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), PEFT3D_TUNE_WORKER=str(worker))
        env.setdefault("HF_HUB_OFFLINE", "1")
        code = subprocess.call([sys.executable, "-m", "peft3d", "tune", *self.argv], env=env)
        return {"worker": worker, "exit_code": code}

    def checkpoint(self, worker: int) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, worker)


def submit_tune(argv: list[str], workers: int, root: Path, cluster: str, opts: dict[str, Any],
                grid: str) -> list[str]:
    """Submit ``workers`` tuning workers (``bench tune`` + ``argv``) as one job array; records their job ids."""
    threads = max(1, int(opts.get("cpus_per_task") or 1))
    jobs = executor_for(root, cluster, opts).map_array(TuneTask(argv, threads), list(range(workers)))
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record_submissions(root, [{"grid": grid, "executor": cluster, "job_id": j.job_id, "run_id": f"tune-worker-{i}",
                               "label": f"tune worker {i}", "submitted": now} for i, j in enumerate(jobs)])
    return [j.job_id for j in jobs]


def _preempt_signal() -> int:
    from submitit.core.job_environment import JobEnvironment

    return JobEnvironment._usr_sig()  # USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise


def _task_name() -> str:
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env:
        return f"slurm:{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '?')}"
    if "SLURM_JOB_ID" in env:
        return f"slurm:{env['SLURM_JOB_ID']}"
    return f"local:{env.get('SUBMITIT_LOCAL_JOB_ID', os.getpid())}"


def executor_for(root: Path, cluster: str, opts: dict[str, Any]) -> Any:
    """A submitit executor; ``opts`` keys: partition, gpus_per_task, cpus_per_task, mem, time_min, max_parallel,
    account, qos (None = the cluster's default)."""
    import submitit

    ex = submitit.AutoExecutor(folder=root / "submitit" / "%j", cluster=cluster)
    params: dict[str, Any] = {"timeout_min": opts.get("time_min") or 60, "tasks_per_node": 1, "nodes": 1,
                              "gpus_per_node": opts.get("gpus_per_task") or 0,
                              "cpus_per_task": opts.get("cpus_per_task") or 1}
    slurm = {"slurm_partition": opts.get("partition"), "slurm_mem": opts.get("mem"),
             "slurm_array_parallelism": opts.get("max_parallel"), "slurm_account": opts.get("account"),
             "slurm_qos": opts.get("qos")}
    params.update({k: v for k, v in slurm.items() if v is not None})
    ex.update_parameters(**params)
    return ex


def submit_runs(specs: list[RunSpec], root: Path, cluster: str, opts: dict[str, Any], grid: str) -> list[str]:
    """Submit ``specs`` as one job array; records and returns the job ids."""
    threads = max(1, int(opts.get("cpus_per_task") or 1))
    ex = executor_for(root, cluster, opts)
    jobs = ex.map_array(RunTask(str(root), threads), [s.to_dict() for s in specs])
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    lines = [{"grid": grid, "executor": cluster, "job_id": j.job_id, "run_id": s.run_id, "label": s.label,
              "submitted": now} for j, s in zip(jobs, specs, strict=True)]
    record_submissions(root, lines)
    return [j.job_id for j in jobs]


def record_submissions(root: Path, lines: list[dict[str, Any]]) -> None:
    from filelock import FileLock

    path = root / "submissions.jsonl"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / "submissions.lock", timeout=60):
        old = path.read_text() if path.exists() else ""
        atomic_write(path, lambda f: f.write(old + "".join(json.dumps(x, sort_keys=True) + "\n" for x in lines)))


def submissions(root: Path) -> dict[str, dict[str, Any]]:
    """The latest submission of each run id."""
    path = root / "submissions.jsonl"
    out: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                out[rec["run_id"]] = rec
    return out


def job_state(rec: dict[str, Any]) -> str | None:
    """SLURM's state of a recorded job from ``squeue`` (works without accounting, unlike sacct); "GONE" when
    the scheduler no longer lists it; None when unknown (local executor, no squeue)."""
    if rec.get("executor") != "slurm":
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", rec["job_id"], "-o", "%T"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return "GONE" if "Invalid job id" in out.stderr else None
    states = out.stdout.split()
    return states[0] if states else "GONE"


def run_states(specs: list[RunSpec], root: Path) -> list[dict[str, Any]]:
    """done / running (epoch, where) / queued / failed / missing per run, from the result files, the claims,
    the checkpoints, the recorded submissions and (SLURM) the scheduler's job states."""
    from peft3d.core.result import read_result
    from peft3d.schedule.claims import live_claims
    from peft3d.training.checkpoint import checkpoint_path, saved_epoch

    claims, subs = live_claims(root), submissions(root)
    rows = []
    for s in specs:
        result, claim, sub = read_result(root, s.run_id), claims.get(s.run_id), subs.get(s.run_id)
        ck = saved_epoch(checkpoint_path(root, s.run_id))
        row = {"run_id": s.run_id, "label": s.label, "epochs": s.budget.epochs, "epoch": None, "where": None,
               "job": sub["job_id"] if sub else None, "checkpoint_epoch": ck, "detail": None}
        if result and result.ok:
            row["state"] = "done"
        elif claim:
            row.update(state="running", epoch=claim.get("epoch"), where=f"{claim.get('slot') or ''} {claim['owner']}")
        elif result:
            row.update(state="failed", detail=str(result.error)[:120])
        elif sub:
            state = job_state(sub)
            ended = state in ("GONE", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")
            row.update(state="failed" if ended else "queued",
                       detail="job ended without a result" if state == "GONE" else state)
        else:
            row["state"] = "missing"
        rows.append(row)
    return rows
