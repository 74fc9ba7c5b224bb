"""A seeded synthetic transfer study on the k-fold Sweet Home 3D variants, as result JSONs and the manifest
``bench tune`` writes: MiniLM-L6 and DINOv2-S, pretrained and random init, plus the no-transformer control, under
the linear probe and Any2Point, on folds f0..f4 x seeds 0, 1, 2; optionally the few-label folds (5, 10, 20
training models per class, linear probe) and each cell's tuning block and trials.

Accuracies are drawn from a seeded generator around fixed arm, method, fold and few-label effects and rounded to
a whole number of correct test models; the tests recompute every statistic from the written files themselves.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peft3d.core.result import RunResult, atomic_write_text, read_result, write_result
from peft3d.core.spec import Budget, RunSpec

FOLDS = ("f0", "f1", "f2", "f3", "f4")
N_TEST = {"f0": 91, "f1": 90, "f2": 90, "f3": 90, "f4": 90}  # 451 models, each tested once over the folds
SEEDS = (0, 1, 2)
FEW = (5, 10, 20)
# (backbone, weights) -> (pretraining modality, accuracy effect in points, best lr of its study)
ARMS = {("minilm", "pretrained"): ("language", 0.0, 1e-3), ("minilm", "random"): (None, -3.0, 3e-3),
        ("dinov2_small", "pretrained"): ("vision", -1.0, 2e-3), ("dinov2_small", "random"): (None, -4.0, 5e-3),
        ("none", "random"): (None, -8.0, 1e-2)}
SPACE = {"lr": "log-uniform [0.0003, 0.03]", "weight_decay": "log-uniform [0.0001, 0.1]"}  # as bench tune records it
METHODS = {"linear": (0.0, 0), "any2point": (2.0, 30_000)}  # accuracy effect, the method's own parameters
BLOCKS = {"minilm": 21_283_584, "dinov2_small": 21_302_016, "none": 0}
SHARED, HEAD = 41_328, 7_315
FOLD_EFFECT = {"f0": 1.0, "f1": -1.0, "f2": 0.5, "f3": -0.5, "f4": 0.0}
TRIALS = 8


def few_effect(weights: str, k: int) -> float:
    """Fewer labels cost the random init more than the pretrained backbone (points)."""
    return -(20 - k) * (0.8 if weights == "random" else 0.4) - 4.0


def study_specs(few: bool = True, tuned: bool = True) -> list[RunSpec]:
    """The grid's runs (with each arm's chosen lr / weight decay when ``tuned``)."""
    out = []
    for (bb, w), (_, _, lr) in ARMS.items():
        for m in METHODS:
            if bb == "none" and m != "linear":
                continue
            budget = Budget(epochs=30, patience=5, lr=lr if tuned else 3e-3, weight_decay=chosen_wd(bb, w, m)
                            if tuned else 0.05)
            out += [RunSpec(backbone=bb, method=m, dataset="sweethome3d", variant=f, seed=s, weights=w, budget=budget,
                            grid="transfer_study.tuned") for f in FOLDS for s in SEEDS]
            if few and m == "linear" and bb != "none":
                out += [RunSpec(backbone=bb, method=m, dataset="sweethome3d", variant=f"{f}_n{k}", seed=s, weights=w,
                                budget=budget, grid="transfer_study.tuned") for k in FEW for f in FOLDS for s in SEEDS]
    return out


def fold_of(spec: RunSpec) -> str:
    return spec.variant.split("_")[0]


def per_class(spec: RunSpec) -> int | None:
    return int(spec.variant.split("_n")[1]) if "_n" in spec.variant else None


def accuracy(spec: RunSpec, rng: np.random.Generator) -> float:
    """A whole number of correct test models out of the fold's test set, as a fraction."""
    _, arm, _ = ARMS[(spec.backbone, spec.weights)]
    k = per_class(spec)
    points = 70 + arm + METHODS[spec.method][0] + FOLD_EFFECT[fold_of(spec)] + rng.normal(0, 1.5)
    points += few_effect(spec.weights, k) if k else 0.0
    n = N_TEST[fold_of(spec)]
    return round(points / 100 * n) / n


def result_json(spec: RunSpec, acc: float, n_test: int, params: dict[str, int], modality: str | None,
                epochs: int = 12, tuning: dict | None = None) -> dict[str, Any]:
    """One success result: curves that rise to ``acc`` and stop early at ``epochs``."""
    test = [round(acc - 0.2 / (e + 1), 4) for e in range(epochs - 1)] + [acc]
    val = [round(t + 0.01, 4) for t in test]
    r = {"schema": 1, "run_id": spec.run_id, "status": "success", "error": None, "spec": spec.to_dict(),
         "label": spec.label,
         "metrics": {"selected_epoch": epochs, "val_acc": val[-1], "test_acc": acc, "test_acc_best_test": acc,
                     "best_test_epoch": epochs, "test_acc_last": acc, "n_val": 36, "n_test": n_test,
                     "curves": {"epoch": list(range(1, epochs + 1)), "val_acc": val, "test_acc": test,
                                "train_acc": [round(v + 0.05, 4) for v in val]}},
         "params": params, "backbone": {"name": spec.backbone, "pretrain_modality": modality},
         "time": {"total_s": 60.0, "step_ms": 20.0}, "stopping": {"stopped_early": True, "patience": 5}}
    if tuning:
        r["tuning"] = tuning
    return r


def params_of(spec: RunSpec) -> dict[str, int]:
    own = METHODS[spec.method][1]
    blocks = BLOCKS[spec.backbone]
    return {"method": own, "shared": SHARED, "head": HEAD, "trainable_excluding_head": own + SHARED,
            "trainable": own + SHARED + HEAD, "total": blocks + own + SHARED + HEAD, "blocks": blocks}


def trial_points(n: int = TRIALS) -> list[tuple[float, float]]:
    """The (lr, weight decay) points every study tries (a seeded stand-in for the shared Sobol points)."""
    rng = np.random.default_rng(100)
    return [(float(10 ** rng.uniform(-3.5, -1.5)), float(10 ** rng.uniform(-4, -1))) for _ in range(n)]


def trial_value(bb: str, w: str, method: str, lr: float) -> float:
    _, arm, best_lr = ARMS[(bb, w)]
    return (75 + arm + METHODS[method][0] - 8 * abs(math.log10(lr / best_lr))) / 100


def trials_of(bb: str, w: str, method: str) -> list[dict[str, Any]]:
    """Trials at the shared points plus the arm's own best lr (the chosen one); trial 5 pruned, trial 7 failed."""
    points = trial_points()
    points[3] = (ARMS[(bb, w)][2], chosen_wd(bb, w, method))
    out = []
    for i, (lr, wd) in enumerate(points):
        v = trial_value(bb, w, method, lr)
        state = "PRUNED" if i == 5 else "FAIL" if i == 7 else "COMPLETE"
        out.append({"number": i, "state": state, "params": {"lr": lr, "weight_decay": wd},
                    "value": v if state == "COMPLETE" else None, "last_step": 1 if state == "PRUNED" else 3,
                    "last_value": (v - 0.05) if state == "PRUNED" else None if state == "FAIL" else v})
    return out


def chosen_wd(bb: str, w: str, method: str) -> float:
    return 0.01 if w == "pretrained" else 0.02


def manifest_of(specs: list[RunSpec]) -> dict[str, Any]:
    studies = {}
    for (bb, w), _ in ARMS.items():
        for m in METHODS:
            if bb == "none" and m != "linear":
                continue
            trials = trials_of(bb, w, m)
            best = max((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: t["value"])
            name = f"transfer_study/{bb}[{w}]/sweethome3d:f0+f1+f2/{m}/0000"
            studies[name] = {"study": name, "n_trials": TRIALS, "counted": TRIALS, "complete": 6, "pruned": 1,
                             "failed": 1, "best_trial": best["number"], "best_value": best["value"],
                             "best_params": best["params"], "space": dict(SPACE),
                             "cell": {"backbone": bb, "weights": w, "method": m, "dataset": "sweethome3d",
                                      "variants": ["f0", "f1", "f2"]}, "trials": trials}
    return {"grid": "transfer_study", "n_trials": TRIALS, "counting": "counted = COMPLETE + PRUNED + FAIL",
            "equal_budget": True, "storage": "sqlite:///optuna.db", "studies": studies,
            "cells_without_a_complete_trial": [], "runs": [s.to_dict() for s in specs]}


def tuning_block(manifest: dict[str, Any], spec: RunSpec) -> dict[str, Any] | None:
    for s in manifest["studies"].values():
        c = s["cell"]
        if (c["backbone"], c["weights"], c["method"]) == (spec.backbone, spec.weights, spec.method):
            return {k: v for k, v in s.items() if k not in ("cell", "trials")}
    return None


def write_study(root: Path, few: bool = True, tuned: bool = True, seed: int = 20250601) -> tuple[list, dict]:
    """Write the study's results (and, when ``tuned``, its manifest) under ``root``; (specs, manifest)."""
    specs = study_specs(few, tuned)
    manifest = manifest_of(specs) if tuned else {}
    rng = np.random.default_rng(seed)
    for s in specs:
        modality = ARMS[(s.backbone, s.weights)][0]
        # as bench tune does: one study per arm pooled over the variants, whose configuration every fold runs,
        # the few-label folds included
        block = tuning_block(manifest, s) if tuned else None
        epochs = 10 + (s.seed + int(fold_of(s)[1])) % 5
        r = result_json(s, accuracy(s, rng), N_TEST[fold_of(s)], params_of(s), modality, epochs, block)
        write_result(root, RunResult.from_dict(r))
    if tuned:
        atomic_write_text(root / "tune" / "transfer_study.json", json.dumps(manifest, indent=1, sort_keys=True))
    return specs, manifest


def accuracies(root: Path, specs: list[RunSpec], **where: Any) -> pd.Series:
    """Test accuracy (points) of the runs matching ``where``, indexed by (fold, seed), read straight from the
    files the fixture wrote (what the tests recompute the tables' statistics from)."""
    out = {(s.variant, s.seed): 100 * read_result(root, s.run_id).metrics.test_acc
           for s in specs if all(getattr(s, k) == v for k, v in where.items())}
    return pd.Series(out).sort_index()


def fold_corrected_p(a: pd.Series, b: pd.Series) -> float:
    """The corrected resampled t-test of ``a`` − ``b`` recomputed from scratch for the 5-fold partition: seeds
    averaged per fold, variance × (1/J + 1/4) for J folds, t with J − 1 degrees of freedom."""
    from scipy import stats as sps

    common = a.index.intersection(b.index)
    d = (a[common] - b[common]).groupby(level=0).mean().to_numpy()
    t = d.mean() / math.sqrt((1 / len(d) + 1 / 4) * d.var(ddof=1))
    return float(2 * sps.t.sf(abs(t), len(d) - 1))
