"""Runs one RunSpec in its own process (``python -m peft3d.schedule.worker RESULTS_DIR``,
the RunSpec as JSON on stdin: no spec file exists that a killed run could leave behind).

Claims the run first (:mod:`peft3d.schedule.claims`); exits with :data:`CLAIMED` without doing anything when
the run is done or another live process holds it. Prints one JSON progress line per epoch on stdout (prefixed
``@progress``) for the scheduler's bars, checkpoints the run (``results/checkpoints/<run_id>.pt``) and resumes
from it, and writes the result JSON atomically. A Python exception becomes a ``failed`` result with a one-line
reason; SIGTERM/SIGUSR1 save a checkpoint and exit with :data:`PREEMPTED` writing no result.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path


def _progress(event: dict) -> None:
    print("@progress " + json.dumps(event), flush=True)


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the scheduler dies (even by kill -9), so no orphan keeps training."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


CLAIMED = 75  # EX_TEMPFAIL: nothing done, the run is done or claimed elsewhere
PREEMPTED = 143  # stopped by SIGTERM/SIGUSR1 after saving its checkpoint


def execute(spec, root: Path, progress=None, slot: str | None = None) -> int:
    """Claim, train (resuming from the checkpoint), write the result, drop the checkpoint; an exit code."""
    from peft3d.schedule.claims import claim
    from peft3d.training.checkpoint import checkpoint_path

    held = claim(root, spec.run_id, slot)
    if held is None:
        return CLAIMED
    held.keep_alive()

    def report(event: dict) -> None:
        held.beat(epoch=event["epoch"])
        if progress:
            progress(event)

    path = checkpoint_path(root, spec.run_id)
    try:  # the claim is released only after the result is written: no window for a second trainer
        return _train_and_write(spec, root, report, path)
    finally:
        held.release()


def _train_and_write(spec, root: Path, report, path: Path) -> int:
    from peft3d.core.errors import Peft3dError
    from peft3d.core.result import RunResult, write_result
    from peft3d.training.checkpoint import Preempted, remove
    from peft3d.training.train import train_run

    try:
        result = train_run(spec, progress=report, checkpoint=path)
    except Preempted:
        return PREEMPTED
    except KeyboardInterrupt:
        return 130
    except (Peft3dError, FloatingPointError, ValueError, RuntimeError) as e:
        kind = "user error" if isinstance(e, Peft3dError) else type(e).__name__
        msg = " ".join(str(e).split()) or type(e).__name__
        tb = traceback.format_exc().splitlines()[-12:]
        write_result(root, RunResult.failure(spec.to_dict(), spec.run_id, f"{kind}: {msg}", traceback=tb))
        print(f"@failed {kind}: {msg}", flush=True)
        return 1
    write_result(root, result)
    remove(path)  # after the result: a kill in between leaves a checkpoint, never a lost run
    return 0


def main(argv: list[str]) -> int:
    root = Path(argv[0])
    spec_json = sys.stdin.read()  # read before anything can fail, so the parent's write never blocks
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PEFT3D_CACHE", str(root / "cache"))  # evaluation FPS cache beside the results
    from peft3d.training.checkpoint import STOP

    STOP.install()  # SIGTERM/SIGUSR1: checkpoint at the next step, then exit
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        return 130
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # our own strict check reports key problems; keep stdout for progress
    from peft3d.core.spec import RunSpec
    from peft3d.training.checkpoint import Preempted

    spec = RunSpec.from_dict(json.loads(spec_json))
    threads = os.environ.get("PEFT3D_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    try:
        return execute(spec, root, _progress, os.environ.get("PEFT3D_SLOT"))
    except Preempted:  # stopped before training started: nothing to save
        return PREEMPTED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
