"""Claims: which process is running which run, so several schedulers share one results folder.

A claim is ``results/claims/<run_id>.json`` (owner host/pid/start, heartbeat, epoch, slot, SLURM job), read and
written only while holding ``<run_id>.lock`` through ``filelock``. The lock is held for milliseconds (claim,
heartbeat, release), never for a whole run, so a dead owner leaves no lock behind, only a claim that is taken
over once stale: its pid is dead on this host, or (another host) its heartbeat is older than the grace period.
Every claim taken is appended to ``claims/log.jsonl``: the record of who ran what (and of takeovers).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from peft3d.core.atomic import atomic_write
from peft3d.core.owners import owner_alive, owner_token, same_host
from peft3d.core.result import succeeded

HEARTBEAT_S = float(os.environ.get("PEFT3D_HEARTBEAT_S", 30))
GRACE_S = float(os.environ.get("PEFT3D_CLAIM_GRACE_S", 300))  # another host's claim without a beat this long is dead
LOCK_TIMEOUT_S = 120


def claims_dir(root: Path) -> Path:
    return root / "claims"


def _lock(root: Path, run_id: str) -> FileLock:
    claims_dir(root).mkdir(parents=True, exist_ok=True)
    return FileLock(claims_dir(root) / f"{run_id}.lock", timeout=LOCK_TIMEOUT_S, thread_local=False)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_stale(info: dict[str, Any], now: float | None = None, grace: float | None = None) -> bool:
    """A claim is stale when its owner is certainly dead (this host) or silent for ``grace`` seconds (another)."""
    owner = info.get("owner")
    if same_host(owner):
        return not owner_alive(owner)
    age = (now or time.time()) - float(info.get("heartbeat", 0))
    return age > (GRACE_S if grace is None else grace)


def holder(root: Path, run_id: str) -> dict[str, Any] | None:
    """The live claim on ``run_id`` (a dict), or None when unclaimed or stale. Lock-free: a hint for skipping."""
    info = _read(claims_dir(root) / f"{run_id}.json")
    return None if info is None or is_stale(info) else info


def live_claims(root: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for p in sorted(claims_dir(root).glob("*.json")):
        info = _read(p)
        if info is not None and not is_stale(info):
            out[p.stem] = info
    return out


def _job_env() -> dict[str, str]:
    keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT",
            "SUBMITIT_LOCAL_JOB_ID")
    return {k.lower(): os.environ[k] for k in keys if k in os.environ}


def _same_slurm_job(info: dict[str, Any]) -> bool:
    """A requeued SLURM task finding its own earlier claim: SLURM runs one instance of a job at a time, so the
    earlier one is gone even if its node's heartbeat is still within the grace period."""
    job = os.environ.get("SLURM_JOB_ID")
    return job is not None and info.get("slurm_job_id") == job


@dataclass
class Claim:
    """A claim this process holds; ``beat`` keeps it alive, ``release`` ends it."""

    root: Path
    run_id: str
    info: dict[str, Any]
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def path(self) -> Path:
        return claims_dir(self.root) / f"{self.run_id}.json"

    def beat(self, **progress: Any) -> None:
        """Refresh the heartbeat (and e.g. the epoch); marks the claim lost if someone took it over."""
        with _lock(self.root, self.run_id):
            now = _read(self.path)
            if now is None or now.get("owner") != self.info["owner"]:
                self.lost = True
                return
            self.info.update(progress, heartbeat=time.time())
            _write(self.path, self.info)

    def keep_alive(self, interval: float = HEARTBEAT_S) -> None:
        """Beat from a daemon thread every ``interval`` seconds until released."""

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.beat()
                except Exception:  # a missed beat is harmless; the next one retries
                    pass

        threading.Thread(target=loop, daemon=True, name=f"claim-{self.run_id}").start()

    def release(self) -> None:
        self._stop.set()
        with _lock(self.root, self.run_id):
            now = _read(self.path)
            if now is not None and now.get("owner") == self.info["owner"]:
                self.path.unlink(missing_ok=True)


def _write(path: Path, info: dict[str, Any]) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(info, sort_keys=True)))


def claim(root: Path, run_id: str, slot: str | None = None) -> Claim | None:
    """Claim ``run_id`` for this process; None when it is done or claimed by a live owner."""
    with _lock(root, run_id):
        if succeeded(root, run_id):
            return None
        path = claims_dir(root) / f"{run_id}.json"
        old = _read(path)
        if old is not None and not is_stale(old) and not _same_slurm_job(old):
            return None
        now = time.time()
        info = {"run_id": run_id, "owner": owner_token(), "host": socket.gethostname(), "pid": os.getpid(),
                "started": now, "heartbeat": now, "epoch": 0, "slot": slot, **_job_env()}
        _write(path, info)
        event = dict(info, event="takeover" if old else "claim", previous=old.get("owner") if old else None)
        with open(claims_dir(root) / "log.jsonl", "a") as f:  # appended under the run's lock: one line per claim
            f.write(json.dumps(event, sort_keys=True) + "\n")
    return Claim(root, run_id, info)


def claim_log(root: Path) -> list[dict[str, Any]]:
    path = claims_dir(root) / "log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
