"""``bench plan``: what a grid will cost on a device, measured before a cluster allocation is spent.

Every distinct cell of the grid (what shapes a training step: backbone, method and its settings, pipeline,
tokenizer, points, batch, budget) is built at its real size with random weights (a step's time and memory do
not depend on the weights' values) and a few steps of :func:`peft3d.training.step.train_step` -- the step
training takes -- are timed on random clouds, plus one evaluation batch. From the dataset's published counts
(10% of train held out for validation, as the protocol does) that gives a time per run and for the grid, the
device memory each cell needs, which cells will not fit, and a ``bench submit --time/--mem`` that leaves room.
A grid with a ``tuning:`` block also gets the stages ``bench tune`` adds to its own runs (each cell's trials and
the most extra seeds its precision rule may run), costed at its cells' run times (``stages``, built by
``peft3d.tuning.cells.tune_stages``).

``tiny=True`` swaps every backbone for its tiny test twin (same code paths, widths of 24-32) and narrows the
tokenizer to width 8 (same stages, points and neighbours): a quick CPU check that every cell of a grid builds
and steps, not a forecast of its cost.
"""
from __future__ import annotations

import dataclasses
import math
import os
import resource
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from peft3d.core.errors import ConfigError
from peft3d.core.spec import RunSpec
from peft3d.training import step as training_step
from peft3d.training.perf import CudaPeak, estimated_peak_mb, timed
from peft3d.training.step import Trainer, autocast, precision_for

VAL_FRACTION = 0.1  # the protocol's validation split, carved from train
TIME_MARGIN = 1.5  # --time suggestion: slowest run x this, plus STARTUP_S
STARTUP_S = 300  # interpreter, data loading and weights reading, which the timing does not see
MEM_MARGIN = 1.5
MIN_MEM_GB = 4


@dataclass
class PlanSettings:
    grid: str
    device: str = "cpu"
    batch: int | None = None  # override the grid's batch size
    steps: int = 3
    warmup: int = 1
    tiny: bool = False
    check_weights: bool = True
    threads: int = 0  # 0: one thread on the CPU (as `bench run` runs one single-threaded run per core)
    seeds: list[int] | None = None

    def __post_init__(self) -> None:
        from peft3d.grids.validate import check_device

        check_device(self.device, "--device")
        if self.device == "mps":
            raise ConfigError("--device must be cpu, cuda or cuda:N (bench plan measures CUDA or the CPU)")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {self.device}: no CUDA device visible to torch; fix: --device cpu")
        if self.steps < 1 or self.warmup < 0 or (self.batch is not None and self.batch < 2):
            raise ConfigError("--steps must be >= 1, --warmup >= 0 and --batch >= 2 (BatchNorm needs 2 samples)")


def cell_key(spec: RunSpec) -> str:
    """What shapes a training step: every spec field but the seed, weights, dataset files and bookkeeping."""
    d = spec.to_dict()
    for k in ("seed", "weights", "variant", "data_root", "grid", "device", "checkpoint_every", "protocol",
              "evaluate_test"):  # how many evaluations a run makes, not what a step or a batch costs
        d.pop(k, None)
    return repr(sorted(d.items()))


def tiny_twin(backbone: str) -> str:
    """The tiny test backbone standing in for ``backbone``: ``test_<name>`` where registered, else the first
    test backbone declaring the same modality and Any2Point arm (their code paths); controls stay."""
    from peft3d.backbones import BACKBONES

    meta = BACKBONES.meta(backbone)
    if meta.get("test") or meta.get("control"):
        return backbone
    if f"test_{backbone}" in BACKBONES:
        return f"test_{backbone}"
    keys = ("modality", "a2p_settings", "a2p_pe_injection", "a2p_arm_quirks")
    twins = [n for n in BACKBONES.names() if BACKBONES.meta(n).get("test")
             and all(BACKBONES.meta(n).get(k) == meta.get(k) for k in keys)]
    if not twins:
        raise ConfigError(f"--tiny: backbone {backbone} has no tiny test twin; fix: drop --tiny")
    return twins[0]


def check_weights_present(specs: list[RunSpec]) -> None:
    """One line for the first backbone whose weights the runs need but this machine lacks."""
    from peft3d.backbones.sources import parse_weights, shuffle_seed, weights_available

    for backbone, weights in sorted({(s.backbone, s.weights) for s in specs}):
        kind = "pretrained" if shuffle_seed(weights) is not None else parse_weights(weights)[0]
        if kind == "pretrained":
            ok, where = weights_available(backbone)
            if not ok:
                raise ConfigError(f"backbone {backbone}: weights not found (looked in {where}); fix: fetch them "
                                  "(bench ls backbones --json), or pass --no-weights-check to time random weights")
        elif kind == "path" and not os.path.exists(parse_weights(weights)[1]):
            raise ConfigError(f"backbone {backbone}: weights file {parse_weights(weights)[1]} does not exist")


def run_counts(spec: RunSpec) -> tuple[int, int]:
    """(optimizer steps per epoch, evaluation samples per epoch) from the dataset's published counts."""
    from peft3d.datasets import DATASETS

    counts = DATASETS.meta(spec.dataset)["counts"]
    split = counts.get(spec.variant) or max(counts.values(), key=lambda c: c["train"])  # e.g. an "auto" variant
    val = round(split["train"] * VAL_FRACTION)
    test = split["test"] if spec.evaluate_test else 0  # a tuning trial never evaluates its test split
    return max(1, (split["train"] - val) // spec.budget.batch_size), val + test


def measure_cell(spec: RunSpec, num_classes: int, s: PlanSettings) -> dict[str, Any]:
    """Build ``spec`` with random weights, time its training step and one evaluation batch."""
    from peft3d.methods.build import build_model

    cuda = s.device.startswith("cuda")
    precision = precision_for(s.device)
    g = torch.Generator().manual_seed(0)
    b = spec.budget
    xyz = (torch.rand(b.batch_size, spec.num_points, 3, generator=g) * 2 - 1).to(s.device)
    labels = torch.randint(0, num_classes, (b.batch_size,), generator=g).to(s.device)
    t0 = time.perf_counter()
    with CudaPeak() if cuda else _NoPeak() as mem:
        model, _ = build_model(spec, num_classes, device=s.device, attention="sdpa" if cuda else None)
        model.to(s.device).train()
        trainer = Trainer.for_budget(model, b, s.warmup + s.steps + 1, s.device, precision)
        build_s = time.perf_counter() - t0
        times = [timed(lambda: training_step.train_step(trainer, xyz, labels), s.device)
                 for _ in range(s.warmup + s.steps)][s.warmup:]
    peak = mem.mb if cuda else estimated_peak_mb(model, lambda: trainer.loss(xyz, labels)[0])
    eval_s = _eval_batch_s(model, spec, s.device, precision)
    return {"s_per_step": statistics.median(times), "eval_s_per_batch": eval_s, "peak_mb": peak,
            "build_s": build_s}


class _NoPeak:
    mb = None

    def __enter__(self) -> "_NoPeak":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _eval_batch_s(model: torch.nn.Module, spec: RunSpec, device: str, precision: str) -> float:
    x = (torch.rand(spec.budget.eval_batch_size, spec.num_points, 3, generator=torch.Generator().manual_seed(1))
         * 2 - 1).to(device)
    model.eval()
    with torch.no_grad(), autocast(device, precision):
        return timed(lambda: model(x), device)


def device_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**20
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


Stages = dict[str, list[tuple[RunSpec, int]]]  # stage name -> (a spec costed like its grid cell, how many runs)


def plan(s: PlanSettings, log: Callable[[str], None] = lambda _m: None,
         stages: Stages | None = None) -> dict[str, Any]:
    """Measure every distinct cell of the grid; return the forecast (see the module docstring). ``stages``: runs
    beyond the grid's own that share its cells' cost (a tuned grid's trials, the extra seeds a precision rule may
    add), each costed at the run time of the grid cell its spec belongs to."""
    from peft3d.datasets import DATASETS
    from peft3d.grids.loader import expand

    if s.threads or s.device == "cpu":
        torch.set_num_threads(s.threads or 1)
    specs = expand(s.grid, s.seeds, None, s.device)
    if s.check_weights and not s.tiny:
        check_weights_present(specs)
    cells: dict[str, dict[str, Any]] = {}
    for spec in specs:
        timed_spec = _timed_spec(spec, s)
        cell = cells.setdefault(cell_key(timed_spec), {"spec": timed_spec, "runs": []})
        cell["runs"].append(spec)
    total_mem = device_memory_mb(s.device)
    _name_cells(list(cells.values()))
    for i, cell in enumerate(cells.values(), 1):
        spec = cell["spec"]
        log(f"cell {i}/{len(cells)}: {spec.backbone} {spec.method} ({len(cell['runs'])} runs)")
        cell.update(_measure_or_oom(spec, DATASETS.meta(spec.dataset)["classes"], s))
    result = summarise(s, list(cells.values()), total_mem)
    if stages:
        result["stages"] = cost_stages(stages, cells, total_mem, s)
    return result


def cost_stages(stages: Stages, cells: dict[str, dict[str, Any]], total_mem: float,
                s: PlanSettings) -> list[dict[str, Any]]:
    """Runs and device seconds of each stage: every (spec, n) costs n runs at the step and evaluation-batch times
    of the grid cell of ``spec`` (a stage's spec differs from its grid runs only by seed, variant, hyper-parameters
    or skipping the test split, which do not change a step's cost) and at its own number of evaluation batches (a
    trial evaluates validation alone); a cell that does not fit adds nothing, as in the grid total."""
    def run_s(spec: RunSpec) -> float:  # the grid cell's step and batch times, the stage spec's own evaluations
        timed = _timed_spec(spec, s)
        return _row({**cells[cell_key(timed)], "spec": timed}, total_mem)["run_s"] or 0.0

    out = []
    for name, items in stages.items():
        runs = sum(n for _, n in items)
        seconds = sum(n * run_s(spec) for spec, n in items)
        out.append({"stage": name, "runs": runs, "total_s": round(seconds, 1),
                    "device_hours": round(seconds / 3600, 3)})
    return out


def _name_cells(cells: list[dict[str, Any]]) -> None:
    """``backbone/method [preset] {options that differ from the default pipeline}``, numbered when two cells
    differ only in settings the name does not show (e.g. a method's rank)."""
    names = []
    for cell in cells:
        spec = cell["spec"]
        options = spec.label.split("[", 1)[1].split("]", 1)[0].partition(";")[2]
        names.append(f"{spec.backbone}/{spec.method}" + (f" [{spec.preset}]" if spec.preset else "")
                     + (f" {{{options}}}" if options else ""))
    for cell, name in zip(cells, names, strict=True):
        clash = [c for c, n in zip(cells, names, strict=True) if n == name]
        cell["name"] = name if len(clash) == 1 else f"{name} #{clash.index(cell) + 1}"


def _timed_spec(spec: RunSpec, s: PlanSettings) -> RunSpec:
    budget = spec.budget if s.batch is None else dataclasses.replace(spec.budget, batch_size=s.batch)
    if not s.tiny:
        return dataclasses.replace(spec, weights="random", budget=budget)
    # tiny: the backbone's twin, the tokenizer at width 8 (same stages, points, k), blocks cut to the twin's
    # depth, evaluation batches of the training batch's size
    from peft3d.backbones import BACKBONES

    twin = tiny_twin(spec.backbone)
    depth = BACKBONES.meta(twin).get("depth") or 0
    pipeline = spec.pipeline if spec.pipeline.blocks is None or spec.pipeline.blocks <= depth else \
        dataclasses.replace(spec.pipeline, blocks=depth)
    return dataclasses.replace(spec, weights="random", backbone=twin, pipeline=pipeline,
                               budget=dataclasses.replace(budget, eval_batch_size=budget.batch_size),
                               tokenizer=dataclasses.replace(spec.tokenizer, embed_dim=8, last_bottleneck=8))


def _measure_or_oom(spec: RunSpec, num_classes: int, s: PlanSettings) -> dict[str, Any]:
    try:
        return measure_cell(spec, num_classes, s)
    except torch.cuda.OutOfMemoryError as e:
        torch.cuda.empty_cache()
        return {"s_per_step": None, "eval_s_per_batch": None, "peak_mb": None, "build_s": None,
                "oom": str(e).splitlines()[0]}


def summarise(s: PlanSettings, cells: list[dict[str, Any]], total_mem: float) -> dict[str, Any]:
    rows = [_row(c, total_mem) for c in cells]
    ok = [r for r in rows if r["fits"]]
    total = sum(r["total_s"] for r in ok)
    slowest = max((r["run_s"] for r in ok), default=0.0)
    host_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    mem_gb = max(MIN_MEM_GB, math.ceil(MEM_MARGIN * host_gb))
    limit = _hms(TIME_MARGIN * slowest + STARTUP_S)
    gpus = " --gpus-per-task 1" if s.device.startswith("cuda") else ""
    return {
        "grid": s.grid, "device": s.device, "device_memory_mb": round(total_mem), "tiny": s.tiny,
        "runs": sum(r["runs"] for r in rows), "cells": rows,
        "total_s": round(total, 1), "device_hours": round(total / 3600, 3),
        "does_not_fit": [r["cell"] for r in rows if not r["fits"]],
        "suggested_submit": f"bench submit --grid {s.grid}{gpus} --time {limit} --mem {mem_gb}G",
        "notes": ("random weights (a step's time and memory do not depend on their values); times are medians of "
                  f"{s.steps} steps after {s.warmup} warm-up; run time = epochs x (steps x s/step + evaluation "
                  "batches x s/batch) + model build; --time = slowest run x "
                  f"{TIME_MARGIN} + {STARTUP_S} s; --mem = {MEM_MARGIN} x this process's peak RSS (every cell "
                  f"built in turn), at least {MIN_MEM_GB} GB"),
    }


def _row(cell: dict[str, Any], total_mem: float) -> dict[str, Any]:
    spec, runs = cell["spec"], cell["runs"]
    steps, eval_samples = run_counts(spec)
    row = {"cell": cell["name"], "backbone": spec.backbone, "method": spec.method, "preset": spec.preset,
           "points": spec.num_points,
           "batch": spec.budget.batch_size, "epochs": spec.budget.epochs, "runs": len(runs),
           "steps_per_epoch": steps, "eval_batches": math.ceil(eval_samples / spec.budget.eval_batch_size),
           "peak_mb": cell["peak_mb"], "s_per_step": cell["s_per_step"], "eval_s_per_batch": cell["eval_s_per_batch"],
           "build_s": cell["build_s"], "oom": cell.get("oom")}
    if cell["s_per_step"] is None:
        return {**row, "fits": False, "run_s": None, "total_s": None}
    run_s = spec.budget.epochs * (steps * cell["s_per_step"] + row["eval_batches"] * cell["eval_s_per_batch"]) \
        + cell["build_s"]
    return {**row, "fits": cell["peak_mb"] <= 0.9 * total_mem, "run_s": round(run_s, 1),
            "total_s": round(run_s * len(runs), 1), "peak_mb": round(cell["peak_mb"], 1),
            "s_per_step": round(cell["s_per_step"], 6)}


def _hms(seconds: float) -> str:
    """SLURM time: HH:MM:SS, or D-HH:MM:SS from a day on (rounded up to the minute)."""
    minutes = max(1, math.ceil(seconds / 60))
    days, rest = divmod(minutes, 24 * 60)
    hms = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{hms}" if days else hms
