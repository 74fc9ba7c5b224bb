"""``bench tune --progress``: per cell, the trials counted, the tuned runs done and the core-hours behind them, read
from the Optuna storage and the result files of a tune driven by a fake executor (no training)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_tune import result_for
from test_tune_pooled import FOLDS, FoldExecutor, study_specs

from peft3d.core.result import RunResult, write_result
from peft3d.grids.plan import TuningPlan
from peft3d.tuning.budget import TuneOptions
from peft3d.tuning.progress import Spent, grid_progress, progress_lines
from peft3d.tuning.tune import Tuner

PLAN = TuningPlan(trials=2, sampler="qmc", space="shared", objective_variants=FOLDS, seed=100)
TRIAL_S, FINAL_S = 60.0, 100.0


def timed(result: dict, wall_s: float, finished_at: str) -> RunResult:
    return RunResult.from_dict({**result, "time": {"total_s": wall_s / 2, "wall_s": wall_s},
                                "finished_at": finished_at})


class TimedExecutor(FoldExecutor):
    """FoldExecutor whose results cost TRIAL_S each and finish a minute apart."""

    def __call__(self, spec, root, report):
        r, pruned = super().__call__(spec, root, report)
        minute = len(self.calls)
        r = timed(r.to_dict(), TRIAL_S, f"2026-12-05T10:{minute:02d}:00+0000")
        write_result(root, r)
        return r, pruned


def write_finals(root):
    def run_final(todo, blocks):
        for s in todo:
            write_result(root, timed(result_for(s, [0.5]), FINAL_S, "2026-12-05T12:00:00+0000"))
    return run_final


@pytest.fixture
def tuner(tmp_path):
    o = TuneOptions(n_trials=PLAN.trials, storage=f"sqlite:///{tmp_path / 'optuna.db'}", plan=PLAN)
    return Tuner("study", study_specs(), tmp_path, o, execute=TimedExecutor(), echo=lambda s: None)


def test_progress_of_a_half_done_study_counts_trials_finals_hours_and_what_is_left(tmp_path, tuner):
    tuner.prepare()
    tuner.tune_cell(tuner.cells[0], 1)  # the first cell's trials only: no final run anywhere yet
    stray = tmp_path / "tune" / tuner.cells[0].slug / "runs" / "0000000000ff.json"
    stray.write_text('{"status": "success"}')  # JSON, but no result (no run_id, no spec): not a run
    p = grid_progress("study", tuner.cells, tmp_path, tuner.opts.storage, PLAN.trials)
    first, second = p["cells"][0], p["cells"][1]
    assert first["cell"] == "test_bert[pretrained]/linear"
    assert (first["trials"]["counted"], first["trials"]["runs"]) == (2, 2 * len(FOLDS))
    assert first["trials"]["core_hours"] == pytest.approx(6 * TRIAL_S / 3600, abs=1e-3)
    assert first["trials"]["began"] == "2026-12-05T10:00:00+00:00"  # the first run ended at 10:01 after 60 s
    assert first["trials"]["ended"] == "2026-12-05T10:06:00+00:00"
    assert first["trials"]["busy_hours"] == pytest.approx(6 / 60, abs=1e-3)  # back to back, a minute each
    assert first["best"]["params"]["lr"] > 0 and first["final"] == {"of": 15, "may_add": 0, "runs": 0,
                                                                     "core_hours": 0.0, "began": None, "ended": None,
                                                                     "busy_hours": 0.0}
    assert second["trials"]["counted"] == 0 and second["best"] is None
    total = p["total"]
    # three cells' trials (2 × 3 folds each) and every cell's 15 tuned runs are left
    assert total["runs_left_at_most"] == 3 * 2 * 3 + 4 * 15
    assert total["core_hours_left_at_most"] == pytest.approx(78 * TRIAL_S / 3600, abs=0.05)
    assert (total["runs"], total["cells_done"]) == (6, 0)
    assert total["median_run_s"] == TRIAL_S
    # priced: test_bert linear's finals at their own median; test_bert adapter at test_bert's linear median (a lower
    # bound); the test_dinov2 cells, with no linear run on their backbone, at the overall median
    assert total["runs_left_by_rule"] == {"own": 15, "ratio": 0, "perf": 0, "floor": 2 * 3 + 15,
                                          "overall": 2 * (2 * 3 + 15)}


class CostlyExecutor(TimedExecutor):
    """A run on test_dinov2 costs twice one on test_bert, an adapter's three times the linear probe's."""

    def __call__(self, spec, root, report):
        r, pruned = super().__call__(spec, root, report)
        cost = TRIAL_S * (2 if spec.backbone == "test_dinov2" else 1) * (3 if spec.method == "adapter" else 1)
        r = timed(r.to_dict(), cost, r.sections["finished_at"])
        write_result(root, r)
        return r, pruned


def costly_tuner(tmp_path, *cells):
    o = TuneOptions(n_trials=PLAN.trials, storage=f"sqlite:///{tmp_path / 'optuna.db'}", plan=PLAN)
    t = Tuner("study", study_specs(), tmp_path, o, execute=CostlyExecutor(), echo=lambda s: None)
    t.prepare()
    for i in cells:  # 0: test_bert linear, 1: test_bert adapter, 2: test_dinov2 linear, 3: test_dinov2 adapter
        t.tune_cell(t.cells[i], i + 1)
    return t


def test_a_method_new_to_a_backbone_is_priced_by_its_cost_ratio_on_the_others(tmp_path):
    t = costly_tuner(tmp_path, 0, 1, 2)
    p = grid_progress("study", t.cells, tmp_path, t.opts.storage, PLAN.trials)
    total = p["total"]
    # each tuned cell's 15 finals at its own median; test_dinov2 adapter's 2 trials x 3 folds + 15 finals at
    # test_dinov2's linear median (120 s) x the adapter's ratio on test_bert (3): 360 s, not the 180 s it costs there
    assert total["runs_left_by_rule"] == {"own": 45, "ratio": 21, "perf": 0, "floor": 0, "overall": 0}
    want = (15 * TRIAL_S + 15 * 3 * TRIAL_S + 15 * 2 * TRIAL_S + 21 * 6 * TRIAL_S) / 3600
    assert total["core_hours_left_at_most"] == pytest.approx(want, abs=0.05)
    assert total["core_hours_left_by_method"] == {  # rounded to 0.1 h
        "linear": pytest.approx((15 * TRIAL_S + 15 * 2 * TRIAL_S) / 3600, abs=0.051),
        "adapter": pytest.approx((15 * 3 * TRIAL_S + 21 * 6 * TRIAL_S) / 3600, abs=0.051)}
    line, by_method = progress_lines(p)[-2:]
    assert by_method.startswith("core-hours left by method (without extra seeds): linear 0.8, adapter 2.9")
    assert "45 at the median of their backbone × method × labels" in line
    assert "21 scaled from the linear probe by the method's cost ratio on other backbones" in line


def test_a_method_that_never_ran_is_priced_by_bench_perf_else_at_the_linear_floor(tmp_path):
    t = costly_tuner(tmp_path, 0, 2)  # the linear probe on both backbones, no adapter anywhere
    perf = {("test_dinov2", "adapter"): 2.5}  # a bench perf record of test_dinov2 only
    p = grid_progress("study", t.cells, tmp_path, t.opts.storage, PLAN.trials, perf_ratios=perf)
    total = p["total"]
    assert total["runs_left_by_rule"] == {"own": 30, "ratio": 0, "perf": 21, "floor": 21, "overall": 0}
    want = (15 * TRIAL_S + 15 * 2 * TRIAL_S + 21 * 2.5 * 2 * TRIAL_S + 21 * TRIAL_S) / 3600
    assert total["core_hours_left_at_most"] == pytest.approx(want, abs=0.05)
    assert "21 at the linear probe's median on their backbone (a lower bound" in progress_lines(p)[-2]


def test_progress_of_a_finished_study_and_its_lines(tmp_path, tuner):
    tuner.run(run_final=write_finals(tmp_path))
    p = grid_progress("study", tuner.cells, tmp_path, tuner.opts.storage, PLAN.trials)
    assert all(r["final"]["runs"] == r["final"]["of"] == 15 for r in p["cells"])
    total = p["total"]
    assert (total["cells_done"], total["runs_left_at_most"]) == (4, 0)
    assert total["runs"] == 4 * (6 + 15)
    assert total["core_hours"] == pytest.approx(4 * (6 * TRIAL_S + 15 * FINAL_S) / 3600, abs=0.01)
    lines = progress_lines(p)
    assert lines[1].startswith("test_bert[pretrained]/linear") and " 15/15 " in lines[1]
    assert lines[-1].startswith("4/4 cells done; 84 runs")


def test_a_result_from_before_wall_s_counts_its_total_s():
    s = Spent()
    s.add({"time": {"total_s": 42.0}, "finished_at": "2026-12-05T10:00:42+0000"})
    s.add({"time": {"total_s": 10.0, "wall_s": 30.0}})  # no finished_at: counted, no place in time
    assert (s.runs, s.seconds) == (2, 72.0)
    assert s.as_dict()["began"] == "2026-12-05T10:00:00+00:00"


@pytest.mark.parametrize("option,line", [
    (["--perf", "."], "--perf prices what is left: it goes with --progress"),
    (["--json"], "--json prints the progress or the studies as JSON: it goes with --progress or --dry-run")])
def test_a_progress_option_without_progress_is_one_line_and_exit_2(tmp_path, option, line):
    r = subprocess.run([sys.executable, "-m", "peft3d", "tune", "--grid", "transfer_study", "--results",
                        str(tmp_path), *option], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and line in r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_progress_without_a_storage_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "peft3d", "tune", "--grid", "transfer_study", "--results",
                        str(tmp_path), "--progress"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "no tuning storage at" in r.stderr
    assert "fix: pass the --results" in r.stderr
    assert not (tmp_path / "optuna.db").exists()


def test_busy_hours_leave_out_the_gap_between_sessions_and_count_overlaps_once():
    s = Spent()
    s.add({"time": {"wall_s": 3600.0}, "finished_at": "2026-12-05T11:00:00+0000"})  # 10:00-11:00
    s.add({"time": {"wall_s": 1800.0}, "finished_at": "2026-12-05T10:45:00+0000"})  # 10:15-10:45, inside it
    s.add({"time": {"wall_s": 3600.0}, "finished_at": "2026-12-05T11:30:00+0000"})  # 10:30-11:30, overlaps
    s.add({"time": {"wall_s": 1800.0}, "finished_at": "2026-12-06T09:30:00+0000"})  # next session: 09:00-09:30
    d = s.as_dict()
    assert d["busy_hours"] == pytest.approx(2.0)  # 10:00-11:30 and 09:00-09:30, not the 23.5 h span
    assert (d["began"], d["ended"]) == ("2026-12-05T10:00:00+00:00", "2026-12-06T09:30:00+00:00")
    assert s.seconds / 3600 == pytest.approx(3.0)  # core-hours: every run counted


def test_dry_run_lists_each_study_with_its_lr_range_as_text_or_json(tmp_path):
    args = [sys.executable, "-m", "peft3d", "tune", "--grid", "transfer_study", "--results", str(tmp_path),
            "--dry-run"]
    text = subprocess.run(args, capture_output=True, text=True, timeout=120)
    as_json = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=120)
    assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
    rows = json.loads(as_json.stdout)
    assert len(rows) == 31 and len(text.stdout.splitlines()) == 31
    low = [r for r in rows if "/full/" in r["study"] or "/lora/" in r["study"]]  # the weight-changing methods
    assert len(low) == 9 and {r["lr"] for r in low} == {"log-uniform [3e-05, 0.003]"}
    assert {r["lr"] for r in rows if r not in low} == {"log-uniform [0.0003, 0.03]"}
    assert {r["tuning_seed"] for r in rows} == {100}
    first = rows[0]
    assert text.stdout.splitlines()[0] == (f"  {first['study']}  ({first['runs']} runs, trials at seed 100, "
                                          f"lr {first['lr']})")
    assert list(tmp_path.iterdir()) == []  # a listing writes nothing


def test_a_best_lr_at_the_edge_of_its_range_is_said_when_the_tuned_runs_start_and_in_progress(tmp_path):
    """Range 3e-4..3e-2 (lr 3e-3 ÷/× 10): both trials of the first cell forced to 3.1e-4 (the outer tenth), the
    second cell's to 3e-3 (the middle). Only the first is named, once, before its tuned runs, and marked §."""
    from peft3d.tuning.cells import lr_edge_note

    said: list[str] = []
    o = TuneOptions(n_trials=PLAN.trials, storage=f"sqlite:///{tmp_path / 'optuna.db'}", plan=PLAN)
    tuner = Tuner("study", study_specs(), tmp_path, o, execute=TimedExecutor(), echo=said.append)
    tuner.prepare()
    edge, middle = tuner.cells[0], tuner.cells[1]
    for cell, lr in ((edge, 3.1e-4), (middle, 3e-3)):
        for wd in (1e-3, 1e-2):
            tuner.studies[cell.study_name].enqueue_trial({"lr": lr, "weight_decay": wd})
        tuner.tune_cell(cell, 1)
    tuner.finish([edge, middle], write_finals(tmp_path))
    notes = [s for s in said if s.startswith("§ ")]
    assert notes == [f"§ {edge.study_name}: its best lr 3.10e-04 lies at the edge of its range (log-uniform "
                     "[0.0003, 0.03]), so the optimum may lie outside it: look at the trials (bench report --tuned) "
                     "before trusting the cell"]
    assert said.index(notes[0]) < next(i for i, s in enumerate(said) if s.startswith("tuned runs of"))
    assert lr_edge_note(middle, 3e-3) is None and lr_edge_note(middle, None) is None
    assert lr_edge_note(middle, 2.9e-2) is not None  # the upper tenth too
    lines = progress_lines(grid_progress("study", tuner.cells, tmp_path, o.storage, PLAN.trials))
    rows = {line.split()[0]: line for line in lines[1:5]}
    assert "3.10e-04 §" in rows["test_bert[pretrained]/linear"]
    assert "3.00e-03 §" not in rows[f"{middle.base.backbone}[{middle.base.weights}]/{middle.base.method}"]
    assert notes[0] in lines
