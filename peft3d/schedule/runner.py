"""Scheduler: expand a grid, skip runs whose result records success, run the rest each in its own process.

Each process runs in a device slot (:mod:`peft3d.schedule.devices`: a GPU pinned through
``CUDA_VISIBLE_DEVICES``, or a CPU core). A crash or out-of-memory costs one cell, not the grid. Several
schedulers (``bench run``, SLURM tasks) may share one results folder: a run claimed by another live process
(:mod:`peft3d.schedule.claims`) is left to it and waited for, a stale claim is taken over. Ctrl-C stops the
running children (they checkpoint) and writes no result for them, so a re-run finishes exactly what is missing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from peft3d.core.allocator import MALLOC_ENV
from peft3d.core.result import RunResult, read_result, run_path, succeeded, write_result
from peft3d.core.spec import RunSpec
from peft3d.schedule.claims import holder
from peft3d.schedule.devices import Slot, cpu_slots
from peft3d.schedule.worker import CLAIMED

RECHECK_S = 2.0  # how often runs claimed by other processes are looked at again



@dataclass
class Job:
    spec: RunSpec
    slot: Slot | None = None
    proc: subprocess.Popen | None = None
    last: dict = field(default_factory=dict)
    failed_line: str | None = None
    started: float = 0.0
    reader: threading.Thread | None = None
    output: list[str] = field(default_factory=list)


def pending(specs: list[RunSpec], root: Path) -> list[RunSpec]:
    return [s for s in specs if not succeeded(root, s.run_id)]


def _reader(job: Job, on_event: Callable[[Job], None]) -> None:
    assert job.proc is not None and job.proc.stdout is not None
    for line in job.proc.stdout:
        line = line.rstrip("\n")
        if line.startswith("@progress "):
            job.last = json.loads(line[len("@progress "):])
            on_event(job)
        elif line.startswith("@failed "):
            job.failed_line = line[len("@failed "):]
        else:
            job.output.append(line)
            del job.output[:-40]


def _start(job: Job, root: Path, on_event: Callable[[Job], None]) -> None:
    assert job.slot is not None
    spec = job.spec.replace(device=job.slot.device) if job.slot.device else job.spec
    env = dict(os.environ, PEFT3D_THREADS=str(job.slot.threads), PEFT3D_SLOT=job.slot.name,
               HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"), PYTHONUNBUFFERED="1", **job.slot.env)
    env.update({k: v for k, v in MALLOC_ENV.items() if k not in os.environ})
    # The spec goes on stdin, not in a temp file: a killed scheduler leaves nothing behind.
    job.proc = subprocess.Popen([sys.executable, "-m", "peft3d.schedule.worker", str(root)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, start_new_session=True)  # Ctrl-C reaches the parent only; we stop children
    assert job.proc.stdin is not None
    try:
        with job.proc.stdin:  # a few KB: fits the pipe buffer, so this never waits for the child
            job.proc.stdin.write(json.dumps(spec.to_dict()))
    except BrokenPipeError:
        pass  # the child died before reading: _finish records why from its exit code and output
    job.started = time.time()
    job.reader = threading.Thread(target=_reader, args=(job, on_event), daemon=True)
    job.reader.start()


def _finish(job: Job, root: Path) -> RunResult | None:
    """Collect a finished child; a child that died without writing a result gets a failure record."""
    assert job.proc is not None
    if job.reader:
        job.reader.join(timeout=5)
    result = read_result(root, job.spec.run_id)
    code = job.proc.returncode
    if code == CLAIMED:
        return None  # another process has it (or finished it): nothing was done here
    if code != 0 and (result is None or result.ok):
        tail = " | ".join(job.output[-3:])
        why = "killed (out of memory?)" if code in (-9, 137) else f"exited with code {code}"
        result = RunResult.failure(job.spec.to_dict(), job.spec.run_id, f"worker {why}: {tail}"[:500])
        write_result(root, result)
    return result


def run_specs(specs: list[RunSpec], root: Path, jobs: int = 1, on_event: Callable[[Job], None] | None = None,
              on_done: Callable[[Job, RunResult | None], None] | None = None, slots: list[Slot] | None = None,
              on_elsewhere: Callable[[RunSpec], None] | None = None) -> list[RunResult | None]:
    """Run ``specs``, one process per slot (default: ``jobs`` CPU slots); returns the results of the runs this
    call executed, in completion order (None: nothing was recorded, e.g. claimed elsewhere). Runs claimed by
    another live process are waited for (a stale claim is taken over); ``on_elsewhere`` hears of each run
    finished by someone else."""
    on_event = on_event or (lambda j: None)
    free = list(slots or cpu_slots(jobs))
    queue, waiting, running, done = list(specs), [], [], []
    stamps: dict[str, int | None] = {}  # result file's mtime when a run was first seen claimed elsewhere
    last_check = time.time()
    try:
        while queue or running or waiting:
            while queue and free:
                spec = queue.pop(0)
                if succeeded(root, spec.run_id) or _finished_since(root, spec, stamps):
                    if on_elsewhere:
                        on_elsewhere(spec)
                    continue
                if holder(root, spec.run_id) is not None:
                    stamps.setdefault(spec.run_id, _stamp(root, spec))
                    waiting.append(spec)
                    continue
                job = Job(spec, slot=free.pop(0))
                _start(job, root, on_event)
                running.append(job)
                on_event(job)
            time.sleep(0.2)
            for job in [j for j in running if j.proc and j.proc.poll() is not None]:
                running.remove(job)
                free.append(job.slot)
                result = _finish(job, root)
                if not result:  # claimed elsewhere after all: wait for it like the others
                    stamps.setdefault(job.spec.run_id, _stamp(root, job.spec))
                    waiting.append(job.spec)
                    continue
                done.append(result)
                if on_done:
                    on_done(job, result)
            if waiting and time.time() - last_check > RECHECK_S:
                queue.extend(waiting)
                waiting.clear()
                last_check = time.time()
    except KeyboardInterrupt:
        for job in running:
            _stop(job)
        raise
    return done


def _stamp(root: Path, spec: RunSpec) -> int | None:
    path = run_path(root, spec.run_id)
    return path.stat().st_mtime_ns if path.exists() else None


def _finished_since(root: Path, spec: RunSpec, stamps: dict[str, int | None]) -> bool:
    """The other process that held ``spec`` wrote a result (even a failure): it is not retried here."""
    return spec.run_id in stamps and _stamp(root, spec) != stamps[spec.run_id]


def _stop(job: Job) -> None:
    if job.proc and job.proc.poll() is None:
        job.proc.terminate()
        try:
            job.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            job.proc.kill()
    # A child stopped mid-run writes nothing (results are written atomically at the end): nothing to clean.
