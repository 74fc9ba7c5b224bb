"""The measured-cost table of ``bench table`` / ``bench report``: per dataset × backbone × method, what the runs
spent (median step, its ratio to the floor method's, epochs, minutes per run, hours summed), from the results."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from study_fixture import result_json

from peft3d.core.result import RunResult, write_result
from peft3d.core.spec import RunSpec
from peft3d.reporting.cost import COST_TITLE, cost_table
from peft3d.reporting.report import render_report
from peft3d.reporting.tables import render_markdown, runs_frame

# (backbone, method) -> step ms; a run's wall time = step x steps per epoch (10) x epochs
STEP = {("minilm", "linear"): 100.0, ("minilm", "lora"): 150.0, ("dinov2_small", "lora"): 400.0}


def write_runs(root, rng):
    """Seeded runs: minilm linear and LoRA, DINOv2-S LoRA only (no floor there), pretrained and random, 3 seeds;
    one failed run and one run without a step time, which the table must leave out."""
    specs, epochs = [], {}
    for (bb, m), step in STEP.items():
        for w in ("pretrained", "random"):
            for seed in (0, 1, 2):
                s = RunSpec(backbone=bb, method=m, dataset="synthetic", variant="scan", seed=seed, weights=w)
                e = int(rng.integers(10, 40))
                r = result_json(s, 0.8, 240, {"method": 0}, "language", epochs=e)
                r["time"] = {"step_ms": step * (1 + 0.01 * seed), "wall_s": step * 10 * e / 1000, "total_s": 1.0}
                write_result(root, RunResult.from_dict(r))
                specs.append(s)
                epochs.setdefault((bb, m), []).append((e, r["time"]["wall_s"]))
    broken = RunSpec(backbone="minilm", method="linear", dataset="synthetic", variant="scan", seed=7)
    write_result(root, RunResult.from_dict({"schema": 1, "run_id": broken.run_id, "status": "failed",
                                            "error": "RuntimeError: boom", "spec": broken.to_dict()}))
    untimed = RunSpec(backbone="minilm", method="linear", dataset="synthetic", variant="scan", seed=8)
    r = result_json(untimed, 0.8, 240, {"method": 0}, "language")
    r.pop("time")
    write_result(root, RunResult.from_dict(r))
    return [*specs, broken, untimed], epochs


def test_each_cell_s_medians_its_floor_ratio_and_summed_hours(tmp_path):
    specs, epochs = write_runs(tmp_path, np.random.default_rng(3))
    t = cost_table(runs_frame(specs, tmp_path)).set_index(["backbone", "method"])
    assert set(t.index) == set(STEP) and len(t) == len(STEP)  # one row per backbone x method
    for (bb, m), step in STEP.items():
        row, seen = t.loc[(bb, m)], epochs[(bb, m)]
        assert row["runs"] == 6  # both weights pooled; the failed and the untimed run left out
        assert row["ms / step"] == f"{np.median([step * (1 + 0.01 * s) for s in (0, 1, 2) * 2]):.0f}"
        assert row["epochs"] == f"{np.median([e for e, _ in seen]):.0f}"
        assert row["min / run"] == f"{np.median([w for _, w in seen]) / 60:.1f}"
        assert row["hours, all runs"] == f"{sum(w for _, w in seen) / 3600:.2f}"
    assert t.loc[("minilm", "lora"), "× linear step"] == "1.50"
    assert t.loc[("minilm", "linear"), "× linear step"] == "1.00"
    assert t.loc[("dinov2_small", "lora"), "× linear step"] == "—"  # no linear probe on DINOv2-S: no ratio


def test_markdown_and_report_show_it_and_a_grid_without_step_times_does_not(tmp_path, recwarn):
    specs, _ = write_runs(tmp_path, np.random.default_rng(4))
    df = runs_frame(specs, tmp_path)
    text = render_markdown("g", df, "linear")
    assert f"## {COST_TITLE}" in text and "the fairer step ratio" in text
    html = render_report("g", df, {s.run_id: None for s in specs})
    assert f"<h2>{COST_TITLE}</h2>" in html and "× linear step" in html
    # no result carries curves here: said in one line, not drawn as empty panels (with an empty legend's warning)
    assert "No per-epoch curves in these results" in html
    assert not [w for w in recwarn if "No artists with labels" in str(w.message)]
    untimed = df.assign(step_ms=np.nan)
    assert cost_table(untimed).empty and COST_TITLE not in render_markdown("g", untimed, "linear")


def test_minutes_and_hours_come_from_the_runs_wall_time():
    df = pd.DataFrame({"status": ["success"], "step_ms": [10.0], "dataset": ["d"], "backbone": ["b"],
                       "method": ["linear"], "epochs": [5], "time_s": [7200.0]})
    row = cost_table(df).iloc[0]
    assert (row["min / run"], row["hours, all runs"]) == ("120.0", "2.00")


@pytest.mark.parametrize("wall", [None, 90.0])
def test_the_runs_frame_reads_wall_s_before_total_s(tmp_path, wall):
    s = RunSpec(backbone="minilm", method="linear", dataset="synthetic", variant="scan", seed=0)
    r = result_json(s, 0.8, 240, {"method": 0}, "language")
    r["time"] = {"total_s": 30.0, "step_ms": 5.0, **({"wall_s": wall} if wall else {})}
    write_result(tmp_path, RunResult.from_dict(r))
    assert runs_frame([s], tmp_path)["time_s"].iloc[0] == (wall or 30.0)
