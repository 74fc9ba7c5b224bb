"""``bench tune`` with a grid's ``tuning:`` block: a cell pooled over the folds of a k-fold split (one study, a
trial = one run per objective variant at the tuning seed, the objective their mean validation accuracy, pruned
between runs), the shared lr / weight-decay space, the seeded Sobol sampler (the same points for every arm) and
the manifest's trial records. Driven with a fake executor: no training."""
from __future__ import annotations

import numpy as np
import pytest
from test_tune import result_for

from peft3d.core.errors import ConfigError
from peft3d.core.result import RunResult, write_result
from peft3d.core.spec import Budget, RunSpec
from peft3d.core.studies import objective_variants_of
from peft3d.grids.plan import TuningPlan, parse_plan
from peft3d.tuning.budget import TuneOptions
from peft3d.tuning.cells import cells_of
from peft3d.tuning.tune import Tuner

FOLDS = ("f0", "f1", "f2")
PLAN = TuningPlan(trials=4, sampler="qmc", space="shared", objective_variants=FOLDS, seed=100)


def study_specs() -> list[RunSpec]:
    budget = Budget(epochs=3, lr=3e-3, schedule="constant", patience=2)
    return [RunSpec(backbone=b, method=m, dataset="sweethome3d", variant=v, seed=s, num_points=64, budget=budget)
            for b in ("test_bert", "test_dinov2") for m in ("linear", "adapter") for v in (*FOLDS, "f3", "f4")
            for s in (0, 1, 2)]


class FoldExecutor:
    """A fake worker: validation accuracy depends on the fold (f0 high, f2 low) and the lr (best near 3e-3);
    above ``bad_lr_above`` it collapses (as a diverging run would)."""

    def __init__(self, bad_lr_above: float | None = None):
        self.calls: list[RunSpec] = []
        self.bad_lr_above = bad_lr_above

    def value(self, spec: RunSpec) -> float:
        import math

        base = {"f0": 0.8, "f1": 0.7, "f2": 0.6}[spec.variant]
        if self.bad_lr_above is not None and spec.budget.lr > self.bad_lr_above:
            return 0.05  # far below every other trial: pruned after its first run
        return base - abs(math.log10(spec.budget.lr / 3e-3)) / 10

    def __call__(self, spec, root, report):
        self.calls.append(spec)
        v = self.value(spec)
        for e in range(1, 4):
            report({"epoch": e, "val_acc": v})
        r = RunResult.from_dict(result_for(spec, [v - 0.02, v, v - 0.01]))
        write_result(root, r)
        return r, False


def tuner(tmp_path, executor, plan=PLAN, specs=None) -> Tuner:
    o = TuneOptions(n_trials=plan.trials, storage=f"sqlite:///{tmp_path / 'optuna.db'}", plan=plan)
    return Tuner("study", specs or study_specs(), tmp_path, o, execute=executor, echo=lambda s: None)


def test_pooled_cells_span_folds_and_seeds_and_trials_run_at_the_tuning_seed():
    cells = cells_of(study_specs(), "study", FOLDS, 100)
    assert len(cells) == 4  # backbone × method: the folds and seeds of a cell share one study
    c = cells[0]
    assert len(c.specs) == 15 and (c.base.variant, c.base.seed) == ("f0", 100)
    assert "sweethome3d:f0+f1+f2" in c.study_name
    assert objective_variants_of(c.study_name) == ("f0", "f1", "f2")  # the tables read them back from the name
    assert objective_variants_of(cells_of(study_specs(), "study")[0].study_name) == ("f0",)  # one variant each
    assert objective_variants_of("a study named by hand") == ()
    tried = c.base.replace(budget=Budget(epochs=3, lr=1e-3))
    assert [(s.variant, s.seed, s.budget.lr) for s in c.trial_specs(tried)] == [
        ("f0", 100, 1e-3), ("f1", 100, 1e-3), ("f2", 100, 1e-3)]


def test_pooled_objective_is_the_mean_over_folds_and_finals_cover_every_fold_and_seed(tmp_path):
    ex = FoldExecutor()
    t = tuner(tmp_path, ex)
    finals: list[RunSpec] = []

    def run_final(todo, blocks):
        finals.extend(todo)
        for s in todo:
            write_result(tmp_path, RunResult.from_dict(result_for(s, [0.5])))

    manifest = t.run(run_final=run_final)
    assert {s.seed for s in ex.calls} == {100} and {s.variant for s in ex.calls} == set(FOLDS)
    for study in t.studies.values():
        done = [tr for tr in study.trials if tr.state.name == "COMPLETE"]
        for tr in done:
            lr = tr.params["lr"]
            want = sum(FoldExecutor().value(RunSpec(backbone="x", method="linear", variant=v,
                                                    budget=Budget(lr=lr))) for v in FOLDS) / 3
            assert tr.value == pytest.approx(want)
        assert {k for tr in study.trials for k in tr.params} == {"lr", "weight_decay"}  # shared: no adapter knobs
    assert len(finals) == 4 * 15 and {s.seed for s in finals} == {0, 1, 2}  # never the tuning seed
    assert {s.variant for s in finals} == {*FOLDS, "f3", "f4"}
    studies = manifest["studies"].values()
    assert all(len(s["trials"]) == 4 and s["cell"]["variants"] == list(FOLDS) for s in studies)
    assert all("mean over the variants" in s["objective"] and s["tuning_seed"] == 100 for s in studies)


def test_sobol_points_are_the_same_in_every_study(tmp_path):
    t = tuner(tmp_path, FoldExecutor())
    t.run(run_final=lambda todo, blocks: None)
    sequences = {tuple(round(tr.params["lr"], 12) for tr in sorted(s.trials, key=lambda tr: tr.number))
                 for s in t.studies.values()}
    assert len(sequences) == 1  # every arm tried the same learning rates in the same order


def test_trials_skip_the_test_split_and_reuse_trials_that_evaluated_it(tmp_path):
    """Trials never evaluate test. A study rebuilt over trial results written before that (same training, test
    evaluated, so another run_id) reuses them instead of training again."""
    import json

    from peft3d.core.result import parse_result

    specs = [s for s in study_specs() if s.backbone == "test_bert" and s.method == "linear"]
    first = FoldExecutor()
    original = tuner(tmp_path / "a", first, specs=specs)
    original.run(run_final=lambda todo, blocks: None)
    assert first.calls and all(s.evaluate_test is False for s in first.calls)
    # the same trial results as an older peft3d stored them: evaluate_test true, under that spec's run_id
    legacy = tmp_path / "b"
    for path in (tmp_path / "a" / "tune").rglob("runs/*.json"):
        r = parse_result(path).to_dict()
        old = RunSpec.from_dict(r["spec"]).replace(evaluate_test=True)
        r.update(run_id=old.run_id, spec=old.to_dict())
        dest = legacy / path.parent.relative_to(tmp_path / "a") / f"{old.run_id}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(r))
    rebuilt = FoldExecutor()
    t = tuner(legacy, rebuilt, specs=specs)
    t.run(run_final=lambda todo, blocks: None)
    assert rebuilt.calls == []  # every trial replayed from the legacy results
    values = [[(tr.state.name, tr.value) for tr in sorted(s.trials, key=lambda tr: tr.number)]
              for s in (*original.studies.values(), *t.studies.values())]
    assert values[0] == values[1]  # the same trials, states and objectives


def test_a_bad_trial_is_pruned_between_folds(tmp_path):
    ex = FoldExecutor(bad_lr_above=5e-3)
    plan = TuningPlan(trials=8, sampler="qmc", space="shared", objective_variants=FOLDS, seed=100)
    specs = [s for s in study_specs() if s.backbone == "test_bert" and s.method == "linear"]
    t = tuner(tmp_path, ex, plan, specs)
    t.run(run_final=lambda todo, blocks: None)
    (study,) = t.studies.values()
    trials = sorted(study.trials, key=lambda tr: tr.number)
    pruned = [tr for tr in trials if tr.state.name == "PRUNED"]
    bad = [tr for tr in trials if tr.number >= 3 and tr.params["lr"] > 5e-3]
    assert bad and all(tr in pruned for tr in bad), "a collapsed trial is pruned after its first fold"
    for tr in pruned:
        assert list(tr.intermediate_values) == [1] and tr.number >= 3  # after the 3 trials that set the reference
        assert sum(1 for s in ex.calls if s.budget.lr == tr.params["lr"]) == 1  # no further fold ran
        done = [t.intermediate_values[1] for t in trials[:tr.number] if t.state.name == "COMPLETE"]
        assert tr.intermediate_values[1] < np.percentile(done, 25)  # in the bottom quarter: kept are the top 75%
    assert sum(tr.state.name == "COMPLETE" for tr in trials) >= 5  # most trials reach the pooled objective


def test_plan_errors_are_one_line():
    with pytest.raises(ConfigError, match=r"tuning has unknown key\(s\) \['folds'\]"):
        parse_plan({"folds": 5}, "grid g")
    with pytest.raises(ConfigError, match="tuning.sampler must be one of"):
        parse_plan({"sampler": "grid"}, "grid g")
    with pytest.raises(ConfigError, match="tuning.trials must be a whole number"):
        parse_plan({"trials": 0}, "grid g")
    assert parse_plan(None, "g") == TuningPlan() and not TuningPlan().pooled
    with pytest.raises(ConfigError, match="tuning.finish_cells must be true or false, got 'yes'"):
        parse_plan({"finish_cells": "yes"}, "grid g")
    assert parse_plan({"finish_cells": True}, "g").finish_cells and not TuningPlan().finish_cells


def test_the_grid_s_finish_cells_orders_every_worker_it_starts(tmp_path, monkeypatch):
    """`tuning.finish_cells` in a grid turns on --finish-cells for `bench tune` without the flag; a grid without
    it leaves the flag to decide. The transfer study sets it, so a SLURM user's workers keep its order."""
    from typer.testing import CliRunner

    from peft3d.cli import tune as _mount  # noqa: F401  (registers the command)
    from peft3d.cli.app import app
    from peft3d.grids.loader import expand_grid
    from peft3d.tuning import tune

    seen = []

    class Capture:
        def __init__(self, grid, specs, root, opts, echo):
            seen.append(opts.finish_cells)
            self.cells = []

        def run(self):  # stop here, as Ctrl-C would: nothing tuned, nothing to tabulate
            raise KeyboardInterrupt

    monkeypatch.setattr(tune, "Tuner", Capture)
    base = ("backbones: [test_bert]\nmethods: [linear]\nweights: [random]\nnum_points: 64\n"
            "datasets: [synthetic]\ntuning: {trials: 2%s}\n")
    for name, extra, flag in (("on", ", finish_cells: true", []), ("off", "", []), ("flag", "", ["--finish-cells"])):
        grid = tmp_path / f"{name}.yaml"
        grid.write_text(base % extra)
        out = CliRunner().invoke(app, ["tune", "--grid", str(grid), "--results", str(tmp_path / name),
                                       "--no-mlflow", *flag])
        assert out.exit_code == 130, out.output
    assert seen == [True, False, True]
    assert expand_grid("transfer_study").tuning.finish_cells


def test_a_grid_s_tuning_block_is_checked_against_its_datasets(tmp_path):
    from peft3d.grids.loader import expand_grid

    base = ("backbones: [test_bert]\nmethods: [linear]\nweights: [random]\nnum_points: 64\n"
            "datasets: [sweethome3d/f0, sweethome3d/f1]\n")
    ok = tmp_path / "ok.yaml"
    ok.write_text(base + "tuning: {trials: 3, sampler: qmc, objective_variants: [f0, f1], seed: 7}\n")
    plan = expand_grid(str(ok)).tuning
    assert plan == TuningPlan(3, "qmc", "with_knobs", ("f0", "f1"), 7)
    bad = tmp_path / "bad.yaml"
    bad.write_text(base + "tuning: {objective_variants: [f0, f2]}\n")
    with pytest.raises(ConfigError, match=r"objective_variants \['f2'\] are not among the grid's sweethome3d"):
        expand_grid(str(bad))


def test_a_method_s_own_lr_centre_keeps_the_width_and_the_sobol_positions_of_every_other_cell(tmp_path):
    """A grid's ``also:`` entry may move one method's lr range (full fine-tuning wants a lower lr); its cells must
    still get the same two-decade width, the same weight decays and the same points on the log scale, so the
    lr-sensitivity curves of both ranges are drawn at matching positions."""
    import optuna

    from peft3d.grids.loader import expand_grid
    from peft3d.tuning.budget import make_sampler
    from peft3d.tuning.cells import space_description, suggest

    grid = tmp_path / "moved.yaml"
    grid.write_text("backbones: [test_bert]\nmethods: [linear]\nweights: [random]\nnum_points: 64\n"
                    "datasets: [synthetic]\nbudget: {lr: 0.003}\n"
                    "tuning: {trials: 4, sampler: qmc, space: shared}\n"
                    "also:\n  - {methods: [full], budget: {lr: 0.0003}}\n")
    expanded = expand_grid(str(grid))
    cells = {c.base.method: c for c in cells_of(expanded.specs, expanded.name)}
    assert space_description(cells["linear"].base)["lr"] == "log-uniform [0.0003, 0.03]"
    assert space_description(cells["full"].base)["lr"] == "log-uniform [3e-05, 0.003]"
    drawn = {}
    for method, cell in cells.items():
        study = optuna.create_study(direction="maximize", sampler=make_sampler(expanded.tuning, cell.study_name, 0)[0])
        points = []
        for k in range(4):
            trial = study.ask()
            spec = suggest(trial, cell.base, shared_space=True)
            points.append((spec.budget.lr, spec.budget.weight_decay))
            study.tell(trial, float(k))
        drawn[method] = points
    np.testing.assert_allclose([lr for lr, _ in drawn["full"]], [lr / 10 for lr, _ in drawn["linear"]], rtol=1e-9)
    assert [wd for _, wd in drawn["full"]] == pytest.approx([wd for _, wd in drawn["linear"]], rel=1e-12)
    assert len({lr for lr, _ in drawn["linear"]}) == 4  # four distinct points, not one repeated


def test_the_transfer_study_tunes_the_weight_changing_methods_one_decade_lower_than_the_others():
    from peft3d.grids.loader import expand_grid
    from peft3d.tuning.cells import space_description

    ranges = {}
    for spec in expand_grid("transfer_study").specs:
        ranges.setdefault(spec.method, set()).add(space_description(spec)["lr"])
    assert ranges.pop("full") == {"log-uniform [3e-05, 0.003]"}
    assert ranges.pop("lora") == {"log-uniform [3e-05, 0.003]"}
    assert set(ranges) == {"linear", "any2point", "dapt", "pointgst", "idpt"}
    assert all(r == {"log-uniform [0.0003, 0.03]"} for r in ranges.values()), ranges
