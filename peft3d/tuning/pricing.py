"""What a tuned grid's remaining runs will cost (``bench tune --progress``): each run priced from the finished runs
most like it.

A run's wall time depends on its backbone (DINOv2-S steps cost ~3x Whisper-tiny's), its method (Any2Point ~2x the
linear probe) and how many models it trains on (a 5-per-class fold trains on a fifth of the data); its weights
and seed do not change it. So a remaining run is priced, in this order, by
1. ``own``: the median of the finished runs with its backbone, method, dataset and labels per class;
2. ``ratio``: the floor method's (the linear probe's, :func:`peft3d.methods.floor_method`) median on its backbone
   (same dataset and labels) times the method's median cost ratio to the floor measured on the other backbones
   (e.g. Any2Point on a third backbone, from the two where both ran);
3. ``perf``: the same floor median times the method's step-time ratio to the floor in a ``bench perf --json``
   record of that backbone (``--perf``), i.e. assuming as many epochs as the floor;
4. ``floor``: the floor median alone, a lower bound (no method's step is cheaper than the floor's);
5. ``overall``: the median of every finished run (the rough part, counted apart).
Trial runs skip the test split (about a tenth of a final run's time) and are pooled with the final runs.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from peft3d.core.errors import ConfigError
from peft3d.core.spec import RunSpec
from peft3d.datasets.base import few_label_parts
from peft3d.methods import floor_method

CostKey = tuple[str, str, str, int | None]  # backbone, method, dataset, labelled models per class (None: all)
RULES = ("own", "ratio", "perf", "floor", "overall")


def cost_key(spec: RunSpec | Mapping[str, Any]) -> CostKey:
    """What a run's cost depends on: backbone, method, dataset and its labels per class (not weights or seed)."""
    get = spec.get if isinstance(spec, Mapping) else lambda k: getattr(spec, k)
    return get("backbone"), get("method"), get("dataset"), few_label_parts(get("variant"))[1]


@dataclass(frozen=True)
class Pricer:
    """Prices runs by the rules of this module from the median seconds of the finished runs of each cost key, the
    median of all of them, and the step-time ratios of ``bench perf`` records, {(backbone, method): ratio to the
    floor method}. Built once by :meth:`of`: every price is then dictionary look-ups."""

    medians: dict[CostKey, float]
    overall: float | None
    perf_ratios: dict[tuple[str, str], float] = field(default_factory=dict)
    floor: str = field(default_factory=floor_method)

    @classmethod
    def of(cls, runs: Iterable[tuple[CostKey, float]],
           perf_ratios: Mapping[tuple[str, str], float] | None = None) -> "Pricer":
        """From the (cost key, wall seconds) of every finished run."""
        seen: dict[CostKey, list[float]] = {}
        for key, seconds in runs:
            seen.setdefault(key, []).append(seconds)
        every = [s for group in seen.values() for s in group]
        return cls({k: statistics.median(v) for k, v in seen.items()},
                   statistics.median(every) if every else None, dict(perf_ratios or {}))

    def price(self, key: CostKey) -> tuple[float | None, str]:
        """(seconds, rule) for one run of ``key``; seconds None only when no run has finished anywhere."""
        own = self.medians.get(key)
        if own is not None:
            return own, "own"
        backbone, method, dataset, labels = key
        floor = self.medians.get((backbone, self.floor, dataset, labels))
        if floor is not None:
            ratios = self._ratios_elsewhere(key)
            if ratios:
                return floor * statistics.median(ratios), "ratio"
            if (backbone, method) in self.perf_ratios:
                return floor * self.perf_ratios[backbone, method], "perf"
            return floor, "floor"
        return self.overall, "overall"

    def _ratios_elsewhere(self, key: CostKey) -> list[float]:
        """The method's median-run ratio to the floor method on every other backbone where both ran (same dataset
        and labels)."""
        backbone, method, dataset, labels = key
        out = []
        for other in {k[0] for k in self.medians} - {backbone}:
            m, floor = self.medians.get((other, method, dataset, labels)), self.medians.get((other, self.floor,
                                                                                           dataset, labels))
            if m is not None and floor:
                out.append(m / floor)
        return out


def read_perf_ratios(path: Path) -> dict[tuple[str, str], float]:
    """{(backbone, method): step-time ratio to the floor method} from a ``bench perf --json`` file, or from every
    ``*.json`` in a folder of them (a later file overrides an earlier one's backbone, in name order)."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise ConfigError(f"--perf {path}: no bench perf record there; fix: pass a `bench perf --json` output file "
                          "or a folder of them (e.g. benchmarks/results/perf_cpu)")
    ratios: dict[tuple[str, str], float] = {}
    for f in files:
        ratios.update(_perf_record(f))
    return ratios


def _perf_record(f: Path) -> dict[tuple[str, str], float]:
    try:
        rec = json.loads(f.read_text())
        backbone = rec["settings"]["backbone"]
        out = {(backbone, m): float(v["ratio"]) for m, v in rec["methods"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"--perf {f}: not a `bench perf --json` record ({type(e).__name__}: {e}); fix: pass "
                          "the JSON that `bench perf --json` printed") from None
    if not isinstance(backbone, str) or any(not r > 0 for r in out.values()):
        raise ConfigError(f"--perf {f}: a record needs a backbone name and positive ratios; fix: pass the JSON "
                          "that `bench perf --json` printed")
    return out
