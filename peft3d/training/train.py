"""Train and evaluate one RunSpec (protocol.md): select the epoch on validation, read test there."""
from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from peft3d.backbones.base import state_checksum
from peft3d.core.environment import environment
from peft3d.core.result import Metrics, Params, RunResult
from peft3d.core.spec import RunSpec
from peft3d.datasets import DATASETS, split_name
from peft3d.datasets.base import PointCloudData
from peft3d.datasets.protocols import eval_points, get_protocol
from peft3d.datasets.sampling import TrainSampler
from peft3d.methods.build import build_model
from peft3d.models.geometry import geometry_backend
from peft3d.models.model import param_groups
from peft3d.training import checkpoint as ckpt
from peft3d.training import step as training_step
from peft3d.training.schedules import plateaued
from peft3d.training.step import Trainer, autocast, optimizer_for, precision_for  # noqa: F401  (re-exported)

Progress = Callable[[dict[str, Any]], None]


def load_data(spec: RunSpec) -> PointCloudData:
    family, variant = split_name(spec.dataset)
    return DATASETS.get(family)().load(variant or spec.variant, spec.data_root)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()  # not inference_mode: methods may cache tensors that a later training step reuses
def evaluate(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray, batch: int, device: str,
             num_classes: int, precision: str = "fp32") -> dict[str, float]:
    """Accuracy and class-mean accuracy; predictions stay on the device until one copy at the end."""
    model.eval()
    xt = torch.as_tensor(x).to(device)
    preds = []
    with autocast(device, precision):
        for i in range(0, len(xt), batch):
            preds.append(model(xt[i:i + batch]).argmax(-1))
    pred = torch.cat(preds).cpu().numpy() if preds else np.zeros(0, dtype=np.int64)
    correct = pred == y
    per_class = [correct[y == c].mean() for c in range(num_classes) if (y == c).any()]
    return {"acc": float(correct.mean()) if len(y) else float("nan"),
            "macc": float(np.mean(per_class)) if per_class else float("nan")}


@dataclass
class Curves:
    epoch: list[int]
    train_loss: list[float]
    train_acc: list[float]
    val_acc: list[float]
    test_acc: list[float]
    test_macc: list[float]
    lr: list[float]

    @classmethod
    def empty(cls) -> "Curves":
        return cls([], [], [], [], [], [], [])


@dataclass
class Loop:
    """Where the training loop is: completed epochs, the epoch in progress (its order, step, partial sums)."""

    curves: Curves
    epochs_done: int = 0
    step: int = 0
    order: np.ndarray | None = None
    losses: float = 0.0
    correct: int = 0
    seen: int = 0
    steps: int = 0
    train_s: float = 0.0
    eval_s: float = 0.0
    wall_s: float = 0.0  # wall seconds of the earlier segments, up to their last checkpoint (a resumed run's cost)
    resumed_from: list[int] = field(default_factory=list)


def _snapshot(spec: RunSpec, loop: Loop, model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
              rng: np.random.Generator) -> dict[str, Any]:
    state = {k: v for k, v in loop.__dict__.items() if k != "curves"}
    return {"run_id": spec.run_id, "loop": state, "curves": dict(loop.curves.__dict__),
            "model": ckpt.trainable_state(model), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": ckpt.rng_states(rng)}


def _restore(saved: dict[str, Any], model: nn.Module, opt: torch.optim.Optimizer, sched: Any,
             rng: np.random.Generator) -> Loop:
    ckpt.load_trainable_state(model, saved["model"])
    opt.load_state_dict(saved["optimizer"])
    sched.load_state_dict(saved["scheduler"])
    ckpt.set_rng_states(saved["rng"], rng)
    return Loop(curves=Curves(**{k: list(v) for k, v in saved["curves"].items()}), **saved["loop"])


def select(curves: Curves) -> dict[str, Any]:
    """Best validation epoch (earliest on ties) -> its test accuracy; optimistic and last alongside (no test
    field when the run did not evaluate its test split)."""
    v, t = np.asarray(curves.val_acc), np.asarray(curves.test_acc)
    sel = int(np.argmax(v))
    chosen = {"selected_epoch": curves.epoch[sel], "val_acc": float(v[sel])}
    if not len(t):
        return chosen
    best_t = int(np.argmax(t))
    return {**chosen, "test_acc": float(t[sel]), "test_macc": float(curves.test_macc[sel]),
            "test_acc_best_test": float(t[best_t]), "best_test_epoch": curves.epoch[best_t],
            "test_acc_last": float(t[-1])}


def frozen_checksum(model: nn.Module) -> str:
    frozen = nn.ParameterDict({n.replace(".", "/"): p for n, p in model.named_parameters() if not p.requires_grad})
    return state_checksum(frozen)


def _fold(loop, dev_loss: torch.Tensor, dev_correct: torch.Tensor, epoch: int) -> None:
    """Copy the device-side running sums (which started from the loop's) into ``loop``: one host sync."""
    loop.losses = float(dev_loss)
    loop.correct = int(dev_correct)
    if not math.isfinite(loop.losses):
        raise FloatingPointError(f"non-finite training loss in epoch {epoch}: lower the lr")


def train_run(spec: RunSpec, progress: Progress | None = None, checkpoint: Path | None = None) -> RunResult:
    """Train and evaluate ``spec``. With ``checkpoint`` (a file path), the run saves its state there every
    ``spec.checkpoint_every`` epochs and on a stop request (:data:`peft3d.training.checkpoint.STOP`), and resumes
    from it when it exists: the curves and metrics are bit-identical to an uninterrupted run (same device and
    thread count). The caller removes the file once the result is written."""
    t0 = time.time()
    device = spec.device
    seed_everything(spec.seed)
    data = load_data(spec)
    proto = get_protocol(spec.protocol)
    # Deterministic evaluation inputs, computed once per dataset and cached on disk (keyed by content).
    val_x = eval_points(data.val.points, spec.num_points, proto, cache_key=data.cache_key("val"))
    test_x = (eval_points(data.test.points, spec.num_points, proto, cache_key=data.cache_key("test"))
              if spec.evaluate_test else np.zeros((0, spec.num_points, 3), np.float32))
    # Training inputs: FPS candidate sets (8 random starts per sample, 1.2x oversampled, cached on disk), then a
    # random num_points of one of them per step -- the Point-BERT/Any2Point recipe without per-step CPU FPS.
    sampler = TrainSampler(data.train.points, spec.num_points, cache_key=data.cache_key("train"),
                           device=device)
    cuda = device.startswith("cuda")
    precision = precision_for(device)
    # Evaluation inputs live on the device for the whole run (one copy, not one per batch per epoch).
    val_x, test_x = torch.from_numpy(val_x).to(device), torch.from_numpy(test_x).to(device)
    model, method = build_model(spec, data.num_classes, device=device, attention="sdpa" if cuda else None)
    model.to(device)
    params = param_groups(model, method.prefix)
    frozen_before = frozen_checksum(model)
    b = spec.budget
    n = len(data.train)
    steps_per_epoch = max(1, n // b.batch_size)  # drop the last partial batch (BatchNorm needs > 1 sample)
    trainer = Trainer.for_budget(model, b, steps_per_epoch, device, precision)
    opt, sched, current_lr = trainer.opt, trainer.sched, trainer.current_lr
    rng = np.random.default_rng(spec.seed)
    loop = Loop(curves=Curves.empty())
    saved = ckpt.load(checkpoint, spec.run_id)
    if saved is not None:
        loop = _restore(saved, model, opt, sched, rng)
        loop.resumed_from.append(loop.epochs_done)

    earlier_s = loop.wall_s  # what the segments before this process spent

    def save() -> None:
        if checkpoint is not None:
            loop.wall_s = earlier_s + time.time() - t0
            ckpt.save(checkpoint, _snapshot(spec, loop, model, opt, sched, rng))

    every = max(1, spec.checkpoint_every)
    ckpt.STOP.armed = True
    try:
        for epoch in range(loop.epochs_done + 1, b.epochs + 1):
            model.train()
            ts = time.time()
            if loop.order is None:  # a new epoch (a restored mid-epoch stop keeps its permutation)
                loop.order, loop.losses, loop.correct, loop.seen = rng.permutation(n), 0.0, 0, 0
            lr_used = current_lr()
            # Running sums stay on the device: no host synchronisation inside the step loop (folded into
            # ``loop`` once per epoch, or before a checkpoint).
            # float64, continuing from the loop's own sums: the same sequence of additions as host floats, so a
            # run resumed mid-epoch reports bit-identical training loss.
            dev_loss = torch.tensor(loop.losses, dtype=torch.float64, device=device)
            dev_correct = torch.tensor(loop.correct, dtype=torch.long, device=device)
            for s in range(loop.step, steps_per_epoch):
                if ckpt.STOP.requested:
                    _fold(loop, dev_loss, dev_correct, epoch)
                    loop.step = s
                    save()
                    raise ckpt.Preempted(f"stopped at epoch {epoch} step {s}")
                idx = np.sort(loop.order[s * b.batch_size:(s + 1) * b.batch_size])
                x = torch.from_numpy(sampler.batch(idx, proto, rng))
                y = torch.from_numpy(data.train.labels[idx])
                if cuda:
                    x, y = x.pin_memory(), y.pin_memory()
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                lr_used = current_lr()  # the lr of this step's optimizer update
                loss, logits = training_step.train_step(trainer, x, y)  # the one step definition (bench perf times it)
                dev_loss += loss.double() * len(idx)
                dev_correct += (logits.argmax(-1) == y).sum()
                loop.seen += len(idx)
                loop.steps += 1
            _fold(loop, dev_loss, dev_correct, epoch)  # one synchronisation per epoch
            loop.train_s += time.time() - ts
            te = time.time()
            va = evaluate(model, val_x, data.val.labels, b.eval_batch_size, device, data.num_classes, precision)
            tst = (evaluate(model, test_x, data.test.labels, b.eval_batch_size, device, data.num_classes,
                            precision) if spec.evaluate_test else {})
            loop.eval_s += time.time() - te
            curves = loop.curves
            for k, v in (("epoch", epoch), ("train_loss", loop.losses / loop.seen),
                         ("train_acc", loop.correct / loop.seen), ("val_acc", va["acc"]),
                         ("test_acc", tst.get("acc")), ("test_macc", tst.get("macc")), ("lr", lr_used)):
                if v is not None:
                    getattr(curves, k).append(v)
            loop.epochs_done, loop.step, loop.order = epoch, 0, None
            if epoch < b.epochs and (epoch % every == 0 or ckpt.STOP.requested):
                save()
            if progress:
                progress({"epoch": epoch, "epochs": b.epochs, "train_loss": curves.train_loss[-1],
                          "val_acc": va["acc"], **({"test_acc": tst["acc"]} if tst else {})})
            if ckpt.STOP.requested and epoch < b.epochs:
                raise ckpt.Preempted(f"stopped after epoch {epoch}")
            if plateaued(curves.val_acc, b.patience):
                break
    finally:
        ckpt.STOP.armed = False
    curves, train_s, eval_s, steps = loop.curves, loop.train_s, loop.eval_s, loop.steps
    this_s = time.time() - t0  # this process's share of the run
    frozen_after = frozen_checksum(model)
    n_test = {"n_test": len(data.test)} if spec.evaluate_test else {}
    metrics = Metrics.from_dict(dict(select(curves), n_val=len(data.val), **n_test,
                                     curves={k: v for k, v in curves.__dict__.items() if v or k == "epoch"}))
    peak_cuda = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return RunResult(
        run_id=spec.run_id, status="success", spec=spec.to_dict(), label=spec.label, metrics=metrics,
        params=Params.from_dict(dict(params, method_name=spec.method)),
        sections={
            "dataset": data.identity,
            "method": {"name": spec.method, "trains_backbone": method.trains_backbone, "cfg": dict(spec.method_cfg)},
            "backbone": {"name": spec.backbone, "modality": model.backbone.spec.modality,
                         "pretrain_modality": model.backbone.spec.pretrain_modality,
                         "width": model.backbone.spec.width, "depth": model.backbone.spec.depth,
                         "dropout_in_training": model.backbone_train_mode},
            "weights": model.backbone.weights_info,
            "frozen_weights_unchanged": frozen_before == frozen_after,
            # total_s: this process; wall_s: every segment of the run (what it cost; work after a segment's last
            # checkpoint was redone, so it counts once)
            "time": {"total_s": this_s, "wall_s": earlier_s + this_s, "train_s": train_s, "eval_s": eval_s,
                     "step_ms": 1000 * train_s / max(steps, 1), "steps": steps},
            "memory": {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                       "peak_cuda_mb": peak_cuda},
            "selection": "best validation epoch; test read at that epoch. test_acc_best_test is optimistic "
                         "(selected on test, as papers do) and never the headline.",
            "environment": dict(environment(device), precision=precision,
                                attention="sdpa" if cuda else "backbone default",
                                geometry=geometry_backend(device, spec.num_points)),
            "resumed_from": loop.resumed_from,
            "stopping": {"cap": b.epochs, "patience": b.patience, "epochs_run": loop.epochs_done,
                         "stopped_early": loop.epochs_done < b.epochs},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
