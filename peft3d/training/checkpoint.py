"""Run checkpoints: everything a run needs to continue bit-identically, and nothing it can rebuild.

Saved: the trainable tensors and the buffers (BatchNorm statistics) — never the frozen backbone, which is rebuilt
from its weights —, the optimiser and scheduler states, every RNG the run draws from (python, numpy's global,
torch CPU/CUDA, and the data sampler's generator), the curves so far and the position in the epoch (its
permutation and partial sums, for a stop between two steps). Written atomically (temp file + rename): a kill
during the write leaves the previous checkpoint.

Stops: SIGTERM / SIGUSR1 (what SLURM sends before a preemption or the time limit) set a flag; the training
loop saves at the next step boundary and raises :class:`Preempted`. Before the loop starts, the signal raises
:class:`Preempted` at once (nothing to save yet).
"""
from __future__ import annotations

import json
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from peft3d.core.atomic import atomic_write

VERSION = 1


class Preempted(Exception):
    """The run stopped on request after saving its checkpoint; restart it to continue."""


class StopFlag:
    """Set by a signal handler; read by the training loop between steps."""

    def __init__(self) -> None:
        self.requested = False
        self.armed = False  # inside the training loop: a stop is deferred to the next step boundary
        self.signum: int | None = None  # the signal that asked for the stop

    def handle(self, signum: int, frame: Any = None) -> None:
        self.signum = signum
        if not self.armed:
            raise Preempted(f"signal {signal.Signals(signum).name} before training started")
        self.requested = True

    def install(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGUSR1)) -> None:
        for s in signals:
            signal.signal(s, self.handle)


STOP = StopFlag()


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that train and every buffer; the frozen parameters are rebuilt from the backbone's weights."""
    out = {f"param:{n}": p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    out.update({f"buffer:{n}": b.detach().clone() for n, b in model.named_buffers()})
    return out


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    expected = {f"param:{n}" for n, p in params.items() if p.requires_grad} | {f"buffer:{n}" for n in buffers}
    if set(state) != expected:
        diff = sorted(set(state) ^ expected)[:5]
        raise RuntimeError(f"checkpoint does not match the model (differing tensors, e.g. {diff})")
    with torch.no_grad():
        for key, value in state.items():
            kind, name = key.split(":", 1)
            (params if kind == "param" else buffers)[name].copy_(value)


def rng_states(sampler_rng: np.random.Generator) -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
              "sampler": sampler_rng.bit_generator.state}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any], sampler_rng: np.random.Generator) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    sampler_rng.bit_generator.state = states["sampler"]
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda f: torch.save(dict(state, version=VERSION), f), binary=True)
    loop = state.get("loop") or {}
    where = {"epochs_done": loop.get("epochs_done"), "step": loop.get("step")}
    atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(where)))  # read by `bench status`


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_suffix(".json").unlink(missing_ok=True)


def saved_epoch(path: Path) -> int | None:
    """Completed epochs in the checkpoint at ``path`` (from its small JSON side file: no torch load)."""
    try:
        return int(json.loads(path.with_suffix(".json").read_text())["epochs_done"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load(path: Path | None, run_id: str) -> dict[str, Any] | None:
    """The checkpoint of ``run_id`` at ``path``, or None when there is none (or it belongs to another run)."""
    if path is None or not path.exists():
        return None
    # Our own file (optimiser states, numpy RNG tuples): not loadable with weights_only.
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("version") != VERSION or state.get("run_id") != run_id:
        return None
    return state


def checkpoint_path(root: Path, run_id: str) -> Path:
    return root / "checkpoints" / f"{run_id}.pt"
