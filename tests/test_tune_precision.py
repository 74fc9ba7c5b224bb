"""Seeds until precise (``tuning.precision``): a tuned cell whose table CI is wider than the grid's target gets
the next extra seed on every fold, in order, until it is precise or out of seeds; the decision is read from the
result files alone, is the table's own CI, and is counted by the manifest, the tables and ``--progress``.
Driven with fake executors: no training."""
from __future__ import annotations

import numpy as np
import pytest
from test_tune import result_for
from test_tune_pooled import FOLDS, FoldExecutor, study_specs

from peft3d.core.errors import ConfigError
from peft3d.core.result import RunResult, write_result
from peft3d.core.spec import Budget, RunSpec
from peft3d.grids.plan import Precision, TuningPlan, parse_plan
from peft3d.reporting.tables import runs_frame, summarize
from peft3d.tuning.budget import TuneOptions
from peft3d.tuning.final import budget_line
from peft3d.tuning.precision import extra_runs, half_width
from peft3d.tuning.progress import grid_progress, progress_lines
from peft3d.tuning.tune import Tuner

CV5 = ("f0", "f1", "f2", "f3", "f4")
RULE = Precision(ci_half_width=3.0, extra_seeds=(3, 4, 5), datasets=("sweethome3d/cv5",))


def cell_specs(seeds=(0, 1, 2), folds=CV5) -> list[RunSpec]:
    budget = Budget(epochs=3, lr=3e-3, schedule="constant", patience=2)
    return [RunSpec(backbone="test_bert", method="linear", dataset="sweethome3d", variant=v, seed=s,
                    num_points=64, budget=budget) for v in folds for s in seeds]


def write(root, specs, accuracy):
    """A success result per spec whose test accuracy is ``accuracy(spec)`` (a fraction)."""
    for s in specs:
        d = result_for(s, [0.5])
        d["metrics"]["test_acc"] = accuracy(s)
        write_result(root, RunResult.from_dict(d))


def noisy(spread: float, seed: int = 0):
    """Test accuracies around 0.7 with a seeded per-run spread (fraction): a wide or a narrow CI."""
    rng = np.random.default_rng(seed)
    table: dict[str, float] = {}
    return lambda s: table.setdefault(s.run_id, float(np.clip(0.7 + spread * rng.standard_normal(), 0, 1)))


def test_a_precise_cell_gets_no_extra_seed(tmp_path):
    specs = cell_specs()
    write(tmp_path, specs, lambda s: 0.70 + 0.001 * s.seed)
    assert extra_runs(specs, RULE, tmp_path) == ([], 0)


def test_a_noisy_cell_gets_the_next_seed_on_every_fold_then_the_next_until_out_of_seeds(tmp_path):
    specs = cell_specs()
    acc = noisy(0.15)
    write(tmp_path, specs, acc)
    extra, open_runs = extra_runs(specs, RULE, tmp_path)
    assert [(s.variant, s.seed) for s in extra] == [(v, 3) for v in CV5]
    assert open_runs == 2 * 5  # seeds 4 and 5 wait on seed 3's results
    assert all(s.replace(seed=0).run_id in {t.run_id for t in specs} for s in extra)  # only the seed differs
    write(tmp_path, extra, acc)
    extra, open_runs = extra_runs(specs, RULE, tmp_path)
    assert {s.seed for s in extra} == {3, 4} and len(extra) == 10 and open_runs == 5
    write(tmp_path, extra, acc)
    extra, open_runs = extra_runs(specs, RULE, tmp_path)
    assert {s.seed for s in extra} == {3, 4, 5} and open_runs == 0  # the last seed is asked for: nothing left
    write(tmp_path, extra, acc)
    extra, open_runs = extra_runs(specs, RULE, tmp_path)
    assert len(extra) == 15 and open_runs == 0  # out of seeds: the cell stays as wide as it is


def test_the_rule_stops_once_the_cell_is_precise(tmp_path):
    specs = cell_specs()
    write(tmp_path, specs, lambda s: 0.70 + (0.09 if s.seed == 0 else -0.045))  # wide on 3 seeds
    extra, _ = extra_runs(specs, RULE, tmp_path)
    assert {s.seed for s in extra} == {3}
    write(tmp_path, extra, lambda s: 0.70)  # seed 3 agrees with the mean: narrow enough now
    accs = [100 * (0.70 + (0.09 if s.seed == 0 else -0.045)) for s in specs] + [70.0] * 5
    assert half_width(accs) <= 3.0
    assert extra_runs(specs, RULE, tmp_path) == (extra, 0)


def test_pending_or_failed_results_decide_nothing(tmp_path):
    specs = cell_specs()
    write(tmp_path, specs[:-1], noisy(0.15))
    assert extra_runs(specs, RULE, tmp_path) == ([], 3 * 5)
    failed = {"schema": 1, "run_id": specs[-1].run_id, "status": "failed", "spec": specs[-1].to_dict(),
              "error": "FloatingPointError: non-finite training loss"}
    write_result(tmp_path, RunResult.from_dict(failed))
    assert extra_runs(specs, RULE, tmp_path) == ([], 3 * 5)


def test_only_the_named_table_cells_are_covered(tmp_path):
    specs = cell_specs() + [s.replace(variant=f"{s.variant}_n5") for s in cell_specs()]
    write(tmp_path, specs, noisy(0.15))
    extra, _ = extra_runs(specs, RULE, tmp_path)
    assert {s.variant for s in extra} == set(CV5)  # the few-label partition (cv5_n5) is not covered
    everywhere = Precision(3.0, (3,))
    extra, _ = extra_runs(specs, everywhere, tmp_path)
    assert {s.variant for s in extra} == set(CV5) | {f"{v}_n5" for v in CV5}


def test_half_width_is_the_table_s_own_ci(tmp_path):
    specs = cell_specs()
    acc = noisy(0.1, seed=3)
    write(tmp_path, specs, acc)
    row = summarize(runs_frame(specs, tmp_path)).iloc[0]
    assert row["dataset"] == "sweethome3d/cv5" and row["n"] == 15
    assert half_width([100 * acc(s) for s in specs]) == pytest.approx((row["ci_high"] - row["ci_low"]) / 2)


def pooled_tuner(tmp_path, rule):
    plan = TuningPlan(trials=2, sampler="qmc", space="shared", objective_variants=FOLDS, seed=100, precision=rule)
    specs = [s for s in study_specs() if s.backbone == "test_bert"]  # 2 cells: linear and adapter, f0..f4
    o = TuneOptions(n_trials=2, storage=f"sqlite:///{tmp_path / 'optuna.db'}", plan=plan)
    return Tuner("study", specs, tmp_path, o, execute=FoldExecutor(), echo=lambda s: None)


def test_tune_runs_the_extra_seeds_and_the_manifest_tables_and_progress_count_them(tmp_path):
    t = pooled_tuner(tmp_path, Precision(3.0, (3, 4), ("sweethome3d/cv5",)))
    acc = {"linear": noisy(0.15), "adapter": lambda s: 0.7}  # the adapter is precise on its seeds
    calls: list[list[RunSpec]] = []

    def run_final(todo, blocks):
        calls.append(todo)
        write(tmp_path, todo, lambda s: acc[s.method](s))

    manifest = t.run(run_final=run_final)
    seeds = {m: sorted({s["seed"] for s in manifest["runs"] if s["method"] == m}) for m in acc}
    assert seeds == {"linear": [0, 1, 2, 3, 4], "adapter": [0, 1, 2]}
    assert [len(c) for c in calls] == [30, 5, 5]  # the grid's seeds, then one extra seed at a time
    assert "ci_half_width" not in manifest["precision"] and "exceeded 3 points" in manifest["precision"]
    assert "Seeds until precise" in budget_line(manifest)
    p = grid_progress("study", t.cells, tmp_path, t.opts.storage, 2, t.opts.plan.precision)
    finals = {r["cell"]: r["final"] for r in p["cells"]}
    assert finals["test_bert[pretrained]/linear"]["of"] == finals["test_bert[pretrained]/linear"]["runs"] == 25
    assert finals["test_bert[pretrained]/adapter"]["of"] == 15
    assert p["total"]["cells_done"] == 2 and p["total"]["extra_seed_runs_possible"] == 0
    assert not any("precision rule" in line for line in progress_lines(p))


def test_tune_does_not_loop_on_runs_that_leave_no_result(tmp_path):
    t = pooled_tuner(tmp_path, RULE)
    calls = []
    t.run(run_final=lambda todo, blocks: calls.append(len(todo)))
    assert calls == [30]  # every tuned run asked once; none landed, so nothing to decide and no retry


def test_a_progress_view_before_tuning_names_what_the_rule_may_add(tmp_path):
    t = pooled_tuner(tmp_path, RULE)
    t.prepare()
    p = grid_progress("study", t.cells, tmp_path, t.opts.storage, 2, RULE)
    assert [r["final"]["may_add"] for r in p["cells"]] == [15, 15]  # 3 extra seeds × 5 folds each
    assert p["total"]["extra_seed_runs_possible"] == 30


def test_precision_block_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="tuning.precision must be a mapping with ci_half_width"):
        parse_plan({"precision": {"ci_half_width": 3}}, "grid g")
    with pytest.raises(ConfigError, match="ci_half_width must be a number of points > 0"):
        parse_plan({"precision": {"ci_half_width": 0, "extra_seeds": [3]}}, "grid g")
    with pytest.raises(ConfigError, match="extra_seeds must be a non-empty list of distinct"):
        parse_plan({"precision": {"ci_half_width": 3, "extra_seeds": [3, 3]}}, "grid g")
    assert parse_plan({"precision": {"ci_half_width": 3, "extra_seeds": [3]}}, "g").precision == Precision(3.0, (3,))
    from peft3d.grids.loader import expand_grid

    base = ("backbones: [test_bert]\nmethods: [linear]\nweights: [random]\nnum_points: 64\nseeds: [0, 1]\n"
            "datasets: [sweethome3d/f0, sweethome3d/f1]\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(base + "tuning: {seed: 7, precision: {ci_half_width: 3, extra_seeds: [1, 7, 9]}}\n")
    with pytest.raises(ConfigError, match=r"extra_seeds \[1, 7\] are already the grid's seeds or its tuning seed"):
        expand_grid(str(bad))
    with pytest.raises(ConfigError, match=r"precision.datasets \['sweethome3d/cv9'\] are not table cells of the "
                                          r"grid; its cells: \['sweethome3d/cv5'\]"):
        pooled_tuner(tmp_path, Precision(3.0, (3,), ("sweethome3d/cv9",)))


def test_a_partly_tuned_grid_states_an_equal_budget_over_the_cells_it_shows(tmp_path):
    from peft3d.tuning.final import budget_line

    manifest = {"n_trials": 8, "counting": "rule", "equal_budget": False,
                "studies": {"a": {"counted": 8}, "b": {"counted": 5}, "c": {"counted": 0}}}
    line = budget_line(manifest, reported={"a"})
    assert line.startswith("Tuning: 8 Optuna trials per cell in every study with tuned runs so far (1 of 3)")
    assert line.endswith("The other 2 are still tuning: their cells show no tuned run yet.")
    assert budget_line(manifest, reported={"a", "b"}).startswith("WARNING: the studies have different trial counts")
    assert budget_line(manifest).startswith("WARNING")  # without knowing what is shown: never claimed equal
    assert "in all 3 studies" in budget_line({**manifest, "equal_budget": True})


def test_bench_tune_refuses_an_unknown_covered_cell_before_writing_anything(tmp_path, monkeypatch, capsys):
    from test_input_errors import bench, one_line

    grid = tmp_path / "g.yaml"
    grid.write_text("backbones: [test_bert]\nmethods: [linear]\nweights: [random]\nnum_points: 64\nseeds: [0]\n"
                    "datasets: [sweethome3d/f0, sweethome3d/f1]\n"
                    "tuning: {trials: 2, precision: {ci_half_width: 3, extra_seeds: [5],\n"
                    "                                datasets: [sweethome3d/cv9]}}\n")
    out_dir = tmp_path / "out"
    code, err = bench(monkeypatch, capsys, "tune", "--grid", str(grid), "--results", str(out_dir), "--no-mlflow")
    assert code == 2
    assert "tuning.precision.datasets ['sweethome3d/cv9'] are not table cells of the grid; its cells: " \
           "['sweethome3d/cv5[f0+f1]']" in one_line(err)
    assert not out_dir.exists()
