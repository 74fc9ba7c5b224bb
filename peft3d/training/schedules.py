"""Learning-rate schedules and gradient clipping of a Budget (``Budget.schedule``, ``Budget.grad_clip``)."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from peft3d.core.spec import Budget


def lr_lambda(total: int, warmup: int, lr: float, min_lr: float, decay: bool = True) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to ``min_lr`` (or, ``decay=False``, the lr held), per optimizer step
    (factor of the base lr)."""
    floor = min(min_lr / lr, 1.0)

    def f(step: int) -> float:
        if step < warmup:
            return max(floor, (step + 1) / warmup)
        if not decay:
            return 1.0
        t = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return f


def make_scheduler(opt: torch.optim.Optimizer, budget: Budget, steps_per_epoch: int
                   ) -> tuple[torch.optim.lr_scheduler.LRScheduler, Callable[[], float]]:
    """The scheduler (stepped once per optimizer step) and a function giving the current base lr (the lr of a
    parameter whose ``lr_scale`` is 1), for the curves. ``onecycle`` is torch's ``OneCycleLR`` with its defaults
    (30% warm-up from lr/25, cosine annealing, Adam beta1 cycled 0.85..0.95), peaking at each group's lr."""
    total = budget.epochs * steps_per_epoch
    base0 = opt.param_groups[0]["lr"] if opt.param_groups else budget.lr
    if budget.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                    total_steps=total)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(total, budget.warmup_epochs * steps_per_epoch, budget.lr, budget.min_lr,
                           decay=budget.schedule == "cosine"))

    def current() -> float:
        return budget.lr * opt.param_groups[0]["lr"] / base0 if opt.param_groups else budget.lr

    return sched, current


def clip_gradients(opt: torch.optim.Optimizer, max_norm: float) -> None:
    """Clip the global gradient norm to ``max_norm``; 0 means no clipping."""
    if max_norm > 0:
        nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], max_norm)


def plateaued(val_acc: list[float], patience: int) -> bool:
    """Early stopping (``Budget.patience``): True once the best validation accuracy is ``patience`` or more epochs
    old (the earliest best counts, as in epoch selection); never with ``patience`` 0."""
    if patience <= 0 or not val_acc:
        return False
    best = max(range(len(val_acc)), key=lambda i: (val_acc[i], -i))
    return len(val_acc) - 1 - best >= patience
