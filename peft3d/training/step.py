"""One optimisation step, defined once: training (``train.py``), ``bench perf`` and ``bench plan`` all call
:func:`train_step`, so the step they time is the step a run takes (a test checks they call this very function).

The step: forward under the run's precision (bf16 autocast on CUDA, fp32 on the CPU), label-smoothed
cross-entropy on fp32 logits, backward, global gradient-norm clipping, AdamW step, learning-rate scheduler
step. There is no gradient accumulation: one batch is one optimizer step.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from peft3d.core.spec import Budget
from peft3d.training.schedules import clip_gradients, make_scheduler


def precision_for(device: str) -> str:
    """bf16 autocast on CUDA, fp32 on the CPU; ``PEFT3D_PRECISION=fp32|bf16`` overrides (recorded in the
    result's environment). An execution detail like the device: not part of the run id."""
    from peft3d.core.errors import ConfigError

    p = os.environ.get("PEFT3D_PRECISION") or ("bf16" if device.startswith("cuda") else "fp32")
    if p not in ("fp32", "bf16"):
        raise ConfigError(f"PEFT3D_PRECISION must be fp32 or bf16, got {p!r}")
    return p


def autocast(device: str, precision: str):
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def optimizer_for(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; biases, norms (1-D tensors) and tokens get no weight decay (as in the Any2Point recipe); each
    parameter's lr is scaled by ``model.lr_scale(name)`` (e.g. the pretrained weights under ``full``)."""
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            no_decay = p.ndim <= 1 or name.endswith(".bias") or "token" in name
            groups.setdefault((no_decay, model.lr_scale(name)), []).append(p)
    return torch.optim.AdamW([{"params": ps, "weight_decay": 0.0 if nd else weight_decay, "lr": lr * scale}
                              for (nd, scale), ps in sorted(groups.items())], lr=lr)


@dataclass
class Trainer:
    """What one step needs: the model (or its ``torch.compile`` wrapper in ``forward``), the optimiser and
    scheduler of the run's budget, the loss, the clipping norm, the device and precision."""

    model: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    current_lr: Callable[[], float]
    loss_fn: nn.Module
    grad_clip: float
    device: str
    precision: str
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def for_budget(cls, model: nn.Module, budget: Budget, steps_per_epoch: int, device: str, precision: str,
                   forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> "Trainer":
        opt = optimizer_for(model, budget.lr, budget.weight_decay)
        sched, current_lr = make_scheduler(opt, budget, steps_per_epoch)
        return cls(model, opt, sched, current_lr, nn.CrossEntropyLoss(label_smoothing=budget.label_smoothing),
                   budget.grad_clip, device, precision, forward)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and loss under the precision's autocast: ``(loss, logits)``."""
        with autocast(self.device, self.precision):
            # `is None`, not `or`: a torch.compile wrapper of a model without __len__ raises on truth testing
            logits = (self.model if self.forward is None else self.forward)(x)
            return self.loss_fn(logits.float(), y), logits


def train_step(t: Trainer, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on the batch ``(x, y)``; returns the (still attached to nothing) loss and logits.
    No host synchronisation: the caller decides when to read them."""
    loss, logits = t.loss(x, y)
    t.opt.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(t.opt, t.grad_clip)
    t.opt.step()
    t.sched.step()
    return loss.detach(), logits.detach()
