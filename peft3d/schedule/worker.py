"""Runs one RunSpec in its own process (``python -m peft3d.schedule.worker SPEC_JSON RESULTS_DIR``).

Prints one JSON progress line per epoch on stdout (prefixed ``@progress``) for the scheduler's bars and
writes the result JSON atomically. A Python exception becomes a ``failed`` result with a one-line reason;
an interrupt (SIGINT/SIGTERM) writes nothing, so the run is simply redone on resume.
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


def main(argv: list[str]) -> int:
    spec_json, root = argv[0], Path(argv[1])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("PEFT3D_CACHE", str(root / "cache"))  # evaluation FPS cache beside the results
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        return 130
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # our own strict check reports key problems; keep stdout for progress
    from peft3d.core.errors import Peft3dError
    from peft3d.core.results import failure_result, write_result
    from peft3d.core.spec import RunSpec
    from peft3d.training.train import train_run

    spec = RunSpec.from_dict(json.loads(Path(spec_json).read_text()))
    threads = os.environ.get("PEFT3D_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    try:
        result = train_run(spec, progress=_progress)
    except KeyboardInterrupt:
        return 130
    except (Peft3dError, FloatingPointError, ValueError, RuntimeError) as e:
        kind = "user error" if isinstance(e, Peft3dError) else type(e).__name__
        msg = " ".join(str(e).split()) or type(e).__name__
        tb = traceback.format_exc().splitlines()[-12:]
        write_result(root, failure_result(spec.to_dict(), spec.run_id, f"{kind}: {msg}", traceback=tb))
        print(f"@failed {kind}: {msg}", flush=True)
        return 1
    write_result(root, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
