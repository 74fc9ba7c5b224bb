"""Re-train committed runs with today's code and compare them with their result files (``bench reproduce``).

A study that runs across sessions collects its results from several commits of the code (the report lists them).
The tables may pool them only if those commits train identically. Training is deterministic for a given device,
kind of CPU (its instruction set), thread count and library versions (the resume tests rely on it), so re-running
a sample of recorded runs on the same kind of machine and comparing every metric and curve value exactly answers
the question from the files alone; an environment change that can move the numbers (another CPU included) is
printed beside the verdict. Nothing is written to the results folder.
"""
from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peft3d.core.result import ResultInvalid, RunResult, parse_result

# Recorded environment entries whose change can move the numbers (the platform string names the kernel build:
# it changes with every host, so it is not compared).
PACKAGES_THAT_COMPUTE = ("torch", "numpy", "transformers", "timm", "peft")


@dataclass
class Outcome:
    run_id: str
    label: str
    commit: str
    seconds: float
    differences: list[str]
    environment_changes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences


def successful_runs(root: Path) -> tuple[list[RunResult], list[str]]:
    """The successful results in ``root/runs`` and the names of the files that could not be read."""
    good, unreadable = [], []
    for path in sorted((root / "runs").glob("*.json")):
        try:
            result = parse_result(path, path.stem)
        except ResultInvalid:
            unreadable.append(path.name)
            continue
        if result.ok and result.metrics is not None:
            good.append(result)
    return good, unreadable


def recorded_on_this_cpu(results: list[RunResult]) -> tuple[list[RunResult], str]:
    """The runs whose recorded CPU is this machine's (runs that recorded none are left out), and this CPU."""
    from peft3d.core.environment import cpu

    here = cpu()
    return [r for r in results if r.section("environment").get("cpu") == here], here


def commit_of(result: RunResult) -> str:
    sha = result.section("environment").get("git_sha")
    return sha[:12] if isinstance(sha, str) and sha else "unknown"


def pick(results: list[RunResult], n: int, seed: int) -> list[RunResult]:
    """``n`` runs, one per recorded code commit in turn (the question is whether the commits agree), chosen at
    random within each commit with ``seed``: a fixed sample anyone can re-draw, not the cheapest runs."""
    rng = random.Random(seed)
    by_commit: dict[str, list[RunResult]] = defaultdict(list)
    for r in sorted(results, key=lambda r: r.run_id):
        by_commit[commit_of(r)].append(r)
    for runs in by_commit.values():
        rng.shuffle(runs)
    chosen, commits = [], sorted(by_commit)
    while len(chosen) < n and any(by_commit.values()):
        for c in commits:
            if by_commit[c] and len(chosen) < n:
                chosen.append(by_commit[c].pop())
    return chosen


def compare(recorded: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """Every difference between two metrics dicts, one line each; empty when they are identical."""
    out = []
    for key in sorted(set(recorded) | set(fresh)):
        if key == "curves":
            continue
        if recorded.get(key) != fresh.get(key):
            out.append(f"{key}: {recorded.get(key)!r} recorded, {fresh.get(key)!r} now")
    rc, fc = recorded.get("curves") or {}, fresh.get("curves") or {}
    for key in sorted(set(rc) | set(fc)):
        a, b = rc.get(key, []), fc.get(key, [])
        if a == b:
            continue
        common = list(zip(a, b, strict=False))  # a run may have stopped at another epoch: compare the overlap
        first = next((i for i, (x, y) in enumerate(common) if x != y), len(common))
        worst = max((abs(x - y) for x, y in common), default=0.0)
        out.append(f"curves.{key}: differs from epoch {first + 1} (max |Δ| {worst:.3g}; {len(a)} epochs "
                   f"recorded, {len(b)} now)")
    return out


def environment_changes(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between the run's recorded environment and this one, among what can change the numbers."""
    pairs = [(f"packages.{p}", (recorded.get("packages") or {}).get(p), (now.get("packages") or {}).get(p))
             for p in PACKAGES_THAT_COMPUTE]
    pairs += [(k, recorded.get(k), now.get(k)) for k in ("python", "device", "cpu", "torch_threads", "precision",
                                                          "geometry", "plugins")]
    out = [f"{k}: {a} recorded, {b} now" for k, a, b in pairs if a is not None and a != b]
    if recorded.get("cpu") is None and now.get("cpu"):
        # results written before the CPU was recorded: say so, since another CPU alone changes the numbers
        out.append(f"cpu: not recorded, {now['cpu']} now (another kind of CPU trains differently)")
    return out


def reproduce(result: RunResult, data_roots: dict[str, str] | None = None) -> Outcome:
    """Re-train ``result``'s run (its recorded device and thread count) and compare the metrics."""
    import time

    import torch

    from peft3d.core.spec import RunSpec
    from peft3d.training.train import train_run

    spec = RunSpec.from_dict(result.spec)
    if data_roots and spec.dataset in data_roots:
        spec = spec.replace(data_root=data_roots[spec.dataset])
    env = result.section("environment")
    threads = torch.get_num_threads()
    torch.set_num_threads(int(env.get("torch_threads") or threads))
    try:
        t0 = time.time()
        fresh = train_run(spec)
        seconds = time.time() - t0
    finally:
        torch.set_num_threads(threads)
    now = dict(fresh.section("environment"))
    recorded = json.loads(json.dumps(result.metrics.to_dict()))
    again = json.loads(json.dumps(fresh.metrics.to_dict()))  # the same float round trip as a result file
    return Outcome(result.run_id, result.label or spec.label, commit_of(result), seconds,
                   compare(recorded, again), environment_changes(env, now))
