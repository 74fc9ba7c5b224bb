"""``bench perf``: the cost of one training step per method against the cheapest possible step.

The floor is the ``linear`` step (trainable tokenizer and head, gradients flowing back through the frozen
backbone without weight gradients). Every method is built on the same inputs, their steps alternate (so load
from other processes hits all alike) and the median per method is reported, with its ratio to the floor,
its peak memory, samples/s, and the tokenizer's own forward+backward share of the floor.

Memory: on CUDA, ``max_memory_allocated`` while each model is built and warmed up (the other models are
resident and idle), above what was allocated before its build. The CPU allocator keeps no statistics and RSS
does not fall when tensors are freed, so there the figure is an estimate: weights, gradients, AdamW moments
and the activations autograd saves in one forward (:func:`estimated_peak_mb`).

Nothing here imports mlflow or optuna: the command must run on a bare GPU machine.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from peft3d.training import step as training_step
from peft3d.training.step import Trainer, autocast

PAPER_POINTS = 1024
PAPER_K = 64  # Any2Point's DINOv2-Scan arm (--patchknn 64); the CLIP arm uses 81
SETTINGS_GRID = "quickstart_methods"  # method settings, budget (and, without --paper, the tokenizer) come from here
PROFILE_STEPS = 3


@dataclass
class PerfSettings:
    backbone: str = "minilm"
    methods: tuple[str, ...] = ()  # default: every registered method
    points: int | None = None  # default: 128, or 1024 with ``paper``
    batch: int = 16
    paper: bool = False
    device: str = "cpu"
    precision: str | None = None  # default: bf16 on CUDA, fp32 on the CPU
    compile: bool = False
    steps: int = 20
    warmup: int = 3
    profile: int = 0  # > 0: also profile (torch.profiler): the floor's top ops, each method's top extra ops
    full_size: bool = False
    weights: str = "random"
    threads: int = 0
    num_classes: int = 15
    seed: int = 0
    attention: str | None = None  # default: "sdpa" on CUDA, the backbone's own default on the CPU

    def __post_init__(self) -> None:
        from peft3d.core.errors import ConfigError

        if self.points is None:
            self.points = PAPER_POINTS if self.paper else 128
        if self.precision is None:
            self.precision = "bf16" if self.device.startswith("cuda") else "fp32"
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"--precision must be fp32 or bf16, got {self.precision!r}")
        from peft3d.methods import METHODS, floor_method

        floor = floor_method()
        chosen = tuple(self.methods) or tuple(METHODS.names())
        self.methods = (floor, *[m for m in chosen if m != floor])  # the floor first, always measured
        if self.profile < 0:
            raise ConfigError(f"--profile must be >= 0 (the number of operators to list), got {self.profile}")
        if self.steps < 1 or self.batch < 2 or self.warmup < 1:
            raise ConfigError("--steps and --warmup must be >= 1 (the first warm-up step is timed apart) and "
                              "--batch >= 2 (BatchNorm needs 2 samples)")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device visible to torch; fix: --device cpu")
        if self.full_size:
            from peft3d.backbones import BACKBONES

            BACKBONES.check(self.backbone)
            if BACKBONES.meta(self.backbone).get("test"):
                raise ConfigError(f"--full-size: {self.backbone} is a tiny test backbone; fix: name a paper "
                                  "backbone (bench ls backbones) or drop --full-size")
            self.weights = "random"


@dataclass
class MethodRun:
    name: str
    preset: str | None
    model: nn.Module
    step: Callable[[], None]
    loss: Callable[[], torch.Tensor]
    times: list[float] = field(default_factory=list)
    peak_mb: float | None = None
    first_s: float | None = None  # the first step: with --compile, torch.compile's compile time is in it


def tokenizer_cfg(s: PerfSettings):
    from peft3d.core.spec import TokenizerCfg, from_mapping
    from peft3d.grids.loader import load_grid

    if s.paper:
        return TokenizerCfg(k=PAPER_K)
    return from_mapping(TokenizerCfg, load_grid(SETTINGS_GRID)["tokenizer"], f"{SETTINGS_GRID} tokenizer")


def method_cfg(s: PerfSettings, method: str) -> tuple[str | None, dict[str, Any]]:
    """The settings grid's entry for ``method``: its preset (formatted for this backbone; with ``--paper``
    the backbone's ``paper_<backbone>_scan`` preset where there is one) and its ``method_cfg`` overrides
    (without ``--paper``). A method the grid does not list runs with its defaults."""
    from peft3d.grids.loader import load_grid
    from peft3d.methods import config_class

    grid = load_grid(SETTINGS_GRID)
    entries = {(m if isinstance(m, str) else m["name"]): (None if isinstance(m, str) else m.get("preset"))
               for m in grid.get("methods", [])}
    cls = config_class(method)
    template = entries.get(method)
    tag = "scan" if s.paper else "synthetic"
    candidates = ([f"paper_{s.backbone}_scan"] if s.paper and template else []) + \
        ([template.format(backbone=s.backbone, dataset=tag, dataset_tag=tag)] if template else [])
    preset = next((p for p in candidates if p in cls.presets), None)
    overrides = None if s.paper and preset else dict((grid.get("method_cfg") or {}).get(method) or {})
    return preset, cls.resolve(overrides, preset, where=f"method {method}").to_dict()


def perf_budget(s: PerfSettings):
    """The budget whose step is timed: the settings grid's (with ``--paper``: the paper pipeline's schedule
    and clipping). Its lr does not change the step time; its clipping, label smoothing and schedule are part
    of the step."""
    from peft3d.core.spec import Budget, from_mapping
    from peft3d.grids.loader import load_grid

    grid = load_grid("_pipeline_paper" if s.paper else SETTINGS_GRID)
    return from_mapping(Budget, grid.get("budget"), f"{SETTINGS_GRID} budget")


def timed_steps(s: PerfSettings) -> int:
    """Scheduler length for timing: every step ``bench perf`` takes (warm-up, timed, profiled) stays inside
    the schedule (OneCycleLR refuses to step past its end)."""
    return s.warmup + s.steps + 2 * PROFILE_STEPS + 1  # the floor is profiled twice (top ops, then the baseline)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_run(s: PerfSettings, method: str, xyz: torch.Tensor, labels: torch.Tensor) -> MethodRun:
    from peft3d.core.spec import RunSpec
    from peft3d.methods.build import build_model

    preset, cfg = method_cfg(s, method)
    spec = RunSpec(backbone=s.backbone, method=method, weights=s.weights, method_cfg=cfg, preset=preset,
                   tokenizer=tokenizer_cfg(s), num_points=s.points, seed=s.seed, budget=perf_budget(s))
    model, _ = build_model(spec, s.num_classes, device=s.device, attention=s.attention)
    model.to(s.device).train()
    trainer = Trainer.for_budget(model, spec.budget, timed_steps(s), s.device, s.precision,
                                 forward=torch.compile(model) if s.compile else None)

    def step() -> None:
        training_step.train_step(trainer, xyz, labels)  # the step training takes, not a copy of it

    return MethodRun(method, preset, model, step, lambda: trainer.loss(xyz, labels)[0])


class CudaPeak:
    """CUDA ``max_memory_allocated`` inside the context, above what was allocated when it started (MB)."""

    def __enter__(self) -> "CudaPeak":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc: object) -> None:
        torch.cuda.synchronize()
        self.mb = (torch.cuda.max_memory_allocated() - self.base) / 2**20


def estimated_peak_mb(model: nn.Module, forward: Callable[[], torch.Tensor]) -> float:
    """CPU estimate of a training step's peak (the CPU allocator keeps no statistics and RSS does not fall
    when tensors are freed): weights and buffers + gradients + AdamW's two moments of every trainable
    parameter + the activations autograd saves during one forward (unique storages, parameters excluded)."""
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in own:
            saved[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return (size + 3 * trainable + sum(saved.values())) / 2**20


def timed(fn: Callable[[], None], device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def tokenizer_step(model: nn.Module, xyz: torch.Tensor, s: PerfSettings) -> Callable[[], None]:
    """Forward + backward of the tokenizer alone (the part of every step that is not the transformer)."""
    tok = model.tokenizer

    def step() -> None:
        with autocast(s.device, s.precision):
            tokens, _ = tok(xyz)
        tokens.float().square().mean().backward()
        tok.zero_grad(set_to_none=True)

    return step


def count_flops(fn: Callable[[], None]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_flops_per_s(rows: int, width: int, device: str, dtype: torch.dtype, repeats: int = 5) -> float:
    """Achieved FLOP/s of a plain ``(rows, width) @ (width, width)`` matmul: the machine's reference rate for
    arithmetic shaped like the tokenizer's 1x1 convolutions."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(rows, width, device=device, dtype=dtype, generator=g)
    b = torch.randn(width, width, device=device, dtype=dtype, generator=g)
    torch.matmul(a, b)
    t = statistics.median(timed(lambda: torch.matmul(a, b), device) for _ in range(repeats))
    return 2 * rows * width * width / t


def measure(s: PerfSettings, log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Build every method, warm it up (measuring its memory), alternate timed steps, return the summary."""
    from peft3d.backbones import BACKBONES
    from peft3d.core.errors import ConfigError
    from peft3d.methods import METHODS

    BACKBONES.check(s.backbone)
    for m in s.methods:
        METHODS.check(m)
    if s.threads:
        torch.set_num_threads(s.threads)
    if s.device == "cpu":
        from peft3d.core.allocator import set_in_process

        set_in_process()  # the training workers' allocator settings: comparable timings, bounded memory
    if s.points % 2 ** tokenizer_cfg(s).num_stages:
        raise ConfigError(f"--points {s.points} must be divisible by 2**num_stages")
    g = torch.Generator().manual_seed(s.seed)
    xyz = (torch.rand(s.batch, s.points, 3, generator=g) * 2 - 1).to(s.device)
    labels = torch.randint(0, s.num_classes, (s.batch,), generator=g).to(s.device)
    for m in s.methods:  # import every module first: the first build must not pay for imports in its memory
        METHODS.get(m)
    BACKBONES.get(s.backbone)
    runs: dict[str, MethodRun] = {}
    for m in s.methods:
        log(f"building {m}")
        if s.device.startswith("cuda"):
            with CudaPeak() as mem:
                run = build_run(s, m, xyz, labels)
                warm_up(run, s)
            run.peak_mb = mem.mb
        else:
            run = build_run(s, m, xyz, labels)
            warm_up(run, s)
            run.peak_mb = estimated_peak_mb(run.model, run.loss)
        runs[m] = run
    tok = tokenizer_step(runs[s.methods[0]].model, xyz, s)
    tok_times: list[float] = []
    for _ in range(s.warmup):
        tok()
    log(f"timing {s.steps} alternated steps")
    for _ in range(s.steps):
        for run in runs.values():
            run.times.append(timed(run.step, s.device))
        tok_times.append(timed(tok, s.device))
    out = summarise(s, runs, tok, tok_times)
    if s.profile:
        out["profile"] = profile_step(runs[s.methods[0]].step, s.device, s.profile)
        floor_ops = op_times(runs[s.methods[0]].step, s.device)
        out["extra_ops"] = {m: extra_ops(run.step, floor_ops, s.device, s.profile)
                            for m, run in runs.items() if m != s.methods[0]}
    return out


def warm_up(run: MethodRun, s: PerfSettings) -> None:
    """The warm-up steps, the first one timed: it holds the one-off costs (torch.compile's compilation and
    its cache lookup with --compile, lazy initialisations), which a run pays once."""
    run.first_s = timed(run.step, s.device)
    for _ in range(s.warmup - 1):
        run.step()


def op_times(step: Callable[[], None], device: str, steps: int = PROFILE_STEPS) -> dict[str, tuple[float, float]]:
    """``{operator: (self ms per step, calls per step)}`` of ``step`` under torch.profiler (device time on
    CUDA, CPU time elsewhere)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.startswith("cuda")
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        sync(device)
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    return {e.key: (getattr(e, key) / 1000 / steps, e.count / steps) for e in prof.key_averages()
            if getattr(e, key, 0) > 0}


def profile_step(step: Callable[[], None], device: str, top: int) -> list[dict[str, Any]]:
    """The ``top`` operators of ``step`` by self time, per step, with their share of the step's total self
    time: where the floor's remaining cost goes."""
    ops = op_times(step, device)
    total = sum(ms for ms, _ in ops.values()) or 1.0
    ranked = sorted(ops.items(), key=lambda kv: kv[1][0], reverse=True)[:top]
    return [{"op": op, "self_ms": round(ms, 3), "share": round(ms / total, 4), "calls": round(calls, 1)}
            for op, (ms, calls) in ranked]


def extra_ops(step: Callable[[], None], floor: dict[str, tuple[float, float]], device: str, top: int
              ) -> list[dict[str, Any]]:
    """What a method's step spends beyond the floor's, operator by operator: the ``top`` operators by extra
    self time per step (method minus floor; negative where the method spends less)."""
    ops = op_times(step, device)
    rows = [(op, ops.get(op, (0.0, 0.0)), floor.get(op, (0.0, 0.0))) for op in set(ops) | set(floor)]
    rows.sort(key=lambda r: r[1][0] - r[2][0], reverse=True)
    return [{"op": op, "extra_ms": round(m[0] - f[0], 3), "self_ms": round(m[0], 3), "floor_ms": round(f[0], 3),
             "calls": round(m[1], 1), "floor_calls": round(f[1], 1)} for op, m, f in rows[:top]]


def summarise(s: PerfSettings, runs: dict[str, MethodRun], tok: Callable[[], None],
              tok_times: list[float]) -> dict[str, Any]:
    from peft3d.models.geometry import geometry_backend

    budget = perf_budget(s)
    floor = statistics.median(runs[s.methods[0]].times)  # the floor method comes first (PerfSettings)
    tok_s = statistics.median(tok_times)
    cfg = tokenizer_cfg(s)
    flops = count_flops(tok)
    dtype = torch.bfloat16 if s.precision == "bf16" else torch.float32
    rows = s.batch * (s.points // 2) * cfg.k  # grouped rows of the first stage
    ref = matmul_flops_per_s(rows, 2 * cfg.embed_dim, s.device, dtype)
    methods = {}
    for name, run in runs.items():
        ms = 1000 * statistics.median(run.times)
        methods[name] = {"ms": round(ms, 3), "ratio": round(ms / (1000 * floor), 4),
                         "peak_mb": None if run.peak_mb is None else round(run.peak_mb, 1),
                         "samples_per_s": round(s.batch / (ms / 1000), 2), "preset": run.preset,
                         "min_ms": round(1000 * min(run.times), 3), "first_step_s": round(run.first_s, 2)}
    return {
        "floor_ms": round(1000 * floor, 3),
        "tokenizer_ms": round(1000 * tok_s, 3),
        "tokenizer_share": round(tok_s / floor, 4),
        "tokenizer_gflop": round(flops / 1e9, 3),
        "tokenizer_gflop_per_s": round(flops / tok_s / 1e9, 2),
        "matmul_gflop_per_s": round(ref / 1e9, 2),
        "matmul_shape": [rows, 2 * cfg.embed_dim, 2 * cfg.embed_dim],
        "tokenizer_efficiency": round(flops / tok_s / ref, 4),
        "methods": methods,
        "settings": {"backbone": s.backbone, "points": s.points, "batch": s.batch, "paper": s.paper,
                     "k": cfg.k, "device": s.device, "precision": s.precision, "compile": s.compile,
                     "steps": s.steps, "warmup": s.warmup, "weights": s.weights, "full_size": s.full_size,
                     "attention": s.attention or "backbone default", "threads": torch.get_num_threads(),
                     "torch": torch.__version__, "geometry": geometry_backend(s.device, s.points),
                     "step": f"{training_step.train_step.__module__}.train_step",
                     "budget": {k: getattr(budget, k) for k in ("schedule", "grad_clip", "label_smoothing")}},
        "memory": "CUDA max_memory_allocated during build + warm-up, above the pre-build level"
                  if s.device.startswith("cuda") else "CPU estimate: weights + buffers + gradients + AdamW "
                  "moments + autograd-saved activations of one forward (no allocator statistics on CPU)",
    }
