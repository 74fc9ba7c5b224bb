"""Regenerate ``results.json``: a fixed, synthetic set of result JSONs for the layout and report golden tests.

Four backbones (two language, one vision, one audio) × four methods × ScanObjectNN PB-T50-RS and ModelNet40 ×
3 seeds, with accuracies drawn around plausible values from a seeded generator, plus one failed and one missing
run. The tests read each run's identity from the file (not from today's RunSpec), so the fixture stays valid
when RunSpec grows. Run: ``python tests/golden/make_results.py`` (then refresh the goldens with
PEFT3D_UPDATE_GOLDEN=1 python -m pytest tests/test_layouts.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from peft3d.core.spec import Budget, RunSpec

HERE = Path(__file__).parent
BACKBONES = {"clip_text": ("language", 0.0), "roberta": ("language", -1.0), "dinov2": ("vision", -3.0),
             "ssast": ("audio", -4.0)}
METHODS = {"linear": (-6.0, 0), "prompt": (-2.5, 92_160), "lora": (-4.0, 589_824), "any2point": (0.0, 470_000)}
DATASETS = {("scanobjectnn", "pb_t50_rs"): (89.0, 2882, 15), ("modelnet40", "auto"): (93.0, 2468, 40)}
SEEDS = (0, 1, 2)
BLOCKS = 86_000_000  # the backbone's block parameters before a method adds to them (params.blocks)
EPOCHS = 5
FAILED = ("ssast", "lora", "modelnet40", 2)  # becomes a failed run
MISSING = ("dinov2", "prompt", "scanobjectnn", 1)  # has no result file


def specs() -> list[RunSpec]:
    out = []
    for (family, variant) in DATASETS:
        for bb in BACKBONES:
            for m in METHODS:
                for seed in SEEDS:
                    out.append(RunSpec(backbone=bb, method=m, dataset=family, variant=variant, seed=seed,
                                       budget=Budget(epochs=EPOCHS), grid="golden"))
    return out


def result(spec: RunSpec, rng: np.random.Generator) -> dict:
    base, n_test, classes = DATASETS[(spec.dataset, spec.variant)]
    modality, bb_off = BACKBONES[spec.backbone]
    m_off, p_method = METHODS[spec.method]
    final = (base + bb_off + m_off + rng.normal(0, 0.5)) / 100
    test = [round(final - 0.03 / (e + 1) + rng.normal(0, 0.004), 4) for e in range(EPOCHS)]
    val = [round(t + rng.normal(0, 0.006), 4) for t in test]
    sel = int(np.argmax(val))
    shared, head = 276_672, 463_631
    return {
        "schema": 1, "run_id": spec.run_id, "status": "success", "error": None, "spec": spec.to_dict(),
        "label": spec.label,
        "metrics": {"selected_epoch": sel + 1, "val_acc": val[sel], "test_acc": test[sel],
                    "test_acc_best_test": max(test), "best_test_epoch": int(np.argmax(test)) + 1,
                    "test_acc_last": test[-1], "n_val": n_test // 5, "n_test": n_test,
                    "curves": {"epoch": list(range(1, EPOCHS + 1)), "val_acc": val, "test_acc": test,
                               "train_loss": [round(2.0 / (e + 1), 4) for e in range(EPOCHS)]}},
        "params": {"method": p_method, "shared": shared, "head": head + 768 * (classes - 15),
                   "trainable_excluding_head": shared + p_method, "trainable": shared + p_method + head,
                   "total": BLOCKS + shared + p_method + head, "blocks": BLOCKS},
        "backbone": {"name": spec.backbone, "pretrain_modality": modality},
        "time": {"total_s": round(float(rng.uniform(100, 200)), 1), "step_ms": 50.0},
    }


def main() -> None:
    rng = np.random.default_rng(20240411)
    out, missing = [], []
    for s in specs():
        key = (s.backbone, s.method, s.dataset, s.seed)
        r = result(s, rng)
        if key == MISSING:
            missing.append({"run_id": s.run_id, "spec": s.to_dict()})
            continue
        if key == FAILED:
            r = {"schema": 1, "run_id": s.run_id, "status": "failed", "spec": s.to_dict(),
                 "error": "RuntimeError: CUDA out of memory"}
        out.append(r)
    lines = ",\n".join(json.dumps(r, sort_keys=True) for r in out)
    head = json.dumps(missing, sort_keys=True)
    order = json.dumps([s.run_id for s in specs()])
    (HERE / "results.json").write_text(f'{{"missing": {head},\n"order": {order},\n"results": [\n{lines}\n]}}\n')
    print(f"wrote {len(out)} results to {HERE / 'results.json'}")


if __name__ == "__main__":
    main()


@dataclass(frozen=True)
class StoredSpec:
    """What tables need of a RunSpec, read from the fixture (identity as stored, whatever RunSpec becomes)."""

    run_id: str
    backbone: str
    weights: str
    method: str
    preset: str | None
    dataset: str
    variant: str
    seed: int
    method_cfg: dict

    @classmethod
    def of(cls, run_id: str, spec: dict) -> "StoredSpec":
        return cls(run_id, spec["backbone"], spec["weights"], spec["method"], spec["preset"], spec["dataset"],
                   spec["variant"], spec["seed"], spec.get("method_cfg") or {})


def load_into(root: Path) -> list[StoredSpec]:
    """Write the fixture's result JSONs under ``root/runs`` and return every expected run (the missing one too)."""
    from peft3d.core.result import RunResult, write_result

    data = json.loads((HERE / "results.json").read_text())
    for r in data["results"]:
        write_result(root, RunResult.from_dict(r))
    expected = [StoredSpec.of(r["run_id"], r["spec"]) for r in data["results"]]
    expected += [StoredSpec.of(m["run_id"], m["spec"]) for m in data["missing"]]
    order = {rid: i for i, rid in enumerate(data["order"])}
    return sorted(expected, key=lambda s: order[s.run_id])
