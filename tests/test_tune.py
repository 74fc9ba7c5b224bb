"""``bench tune``: equal trial budgets, pruning, resume after interruption, nested MLflow runs, tuned runs.

Fast tests drive the Tuner with a fake trial executor (no training, same bookkeeping); the slow test runs the
real ``bench tune`` on the smoke grid with 3 trials per method, interrupts it with Ctrl-C and kill -9, and
resumes it.
"""
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peft3d.core.errors import ConfigError
from peft3d.core.owners import owner_alive, owner_token
from peft3d.core.result import RunResult, read_result, write_result
from peft3d.grids.loader import expand
from peft3d.tuning.budget import counts
from peft3d.tuning.cells import cells_of, suggest
from peft3d.tuning.final import read_manifest, tuned_specs
from peft3d.tuning.tune import TuneOptions, Tuner


def result_for(spec, vals):
    return {"schema": 1, "run_id": spec.run_id, "status": "success", "error": None, "spec": spec.to_dict(),
            "label": spec.label,
            "metrics": {"val_acc": max(vals), "test_acc": max(vals) - 0.01, "test_acc_best_test": max(vals),
                        "test_acc_last": vals[-1], "selected_epoch": vals.index(max(vals)) + 1, "n_test": 240,
                        "curves": {"epoch": list(range(1, len(vals) + 1)), "val_acc": vals,
                                   "test_acc": [v - 0.01 for v in vals]}},
            "params": {"method": 1, "trainable_excluding_head": 10, "trainable": 20},
            "backbone": {"pretrain_modality": "none"}}


class FakeExecutor:
    """Stands in for the worker process: a validation curve per trial, reported epoch by epoch."""

    def __init__(self, curve=None, fail=None, interrupt_at=None):
        self.calls, self.curve, self.fail, self.interrupt_at = [], curve, fail, interrupt_at

    def __call__(self, spec, root, report):
        self.calls.append(spec)
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        if self.fail and self.fail(spec, len(self.calls)):
            r = {"schema": 1, "run_id": spec.run_id, "status": "failed", "spec": spec.to_dict(),
                 "error": "FloatingPointError: non-finite training loss"}
            write_result(root, RunResult.from_dict(r))
            return RunResult.from_dict(r), False
        lr_quality = -abs(math.log10(spec.budget.lr) - math.log10(3e-3)) / 10
        vals = self.curve(spec, len(self.calls)) if self.curve else [
            0.3 + lr_quality + 0.05 * e for e in range(spec.budget.epochs)]
        for e, v in enumerate(vals, 1):
            if report({"epoch": e, "val_acc": v, "train_loss": 1.0 / e}):
                return None, True  # terminated: a killed worker writes nothing
        r = RunResult.from_dict(result_for(spec, vals))
        write_result(root, r)
        return r, False


def fake_final(root):
    def run(todo, blocks):
        for s in todo:
            write_result(root, RunResult.from_dict(result_for(s, [0.4, 0.5])))
    return run


def smoke_specs(methods=None):
    specs = expand("smoke")
    return [s for s in specs if methods is None or s.method in methods]


def opts(tmp_path, n, mlflow=True, pruner="median"):
    return TuneOptions(n_trials=n, storage=f"sqlite:///{tmp_path / 'optuna.db'}", pruner=pruner,
                       mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}" if mlflow else None)


def mlflow_runs(tmp_path, experiment="peft3d/smoke/tune"):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client, (client.search_runs([exp.experiment_id], max_results=10000) if exp else [])


def test_equal_budgets_recorded_everywhere(tmp_path):
    specs = smoke_specs()
    tuner = Tuner("smoke", specs, tmp_path, opts(tmp_path, 3), execute=FakeExecutor(), echo=lambda s: None)
    manifest = tuner.run(run_final=fake_final(tmp_path))
    n_cells = len(cells_of(specs, "smoke"))
    assert manifest["equal_budget"] is True and manifest["n_trials"] == 3
    assert len(manifest["studies"]) == n_cells == len({s.method for s in specs})
    for name, st in manifest["studies"].items():
        assert st["counted"] == 3 and st["n_trials"] == 3 and st["best_params"] and "lr" in st["best_params"]
        assert tuner.studies[name].user_attrs["peft3d.n_trials"] == 3
        assert "FAIL" in tuner.studies[name].user_attrs["peft3d.counting"]
    tuned = tuned_specs("smoke", tmp_path)
    assert len(tuned) == len(specs)
    for t in tuned:
        r = read_result(tmp_path, t.run_id).to_dict()
        assert r["tuning"]["n_trials"] == 3 and r["tuning"]["study"] in manifest["studies"]
        assert r["tuning"]["best_params"]["lr"] == pytest.approx(t.budget.lr)
        base = next(s for s in specs if s.method == t.method and s.seed == t.seed)
        assert t.run_id != base.run_id  # tuned runs never overwrite the grid's own runs
        same = {k: v for k, v in t.identity().items() if k not in ("method_cfg", "budget")}
        assert same == {k: v for k, v in base.identity().items() if k not in ("method_cfg", "budget")}
    # trials live under results/tune/<study>/, not among the grid's runs
    trial_files = list((tmp_path / "tune").glob("*/runs/*.json"))
    assert len(trial_files) == 3 * n_cells
    client, runs = mlflow_runs(tmp_path)
    parents = [r for r in runs if r.data.tags.get("peft3d.role") == "study"]
    trials = [r for r in runs if r.data.tags.get("peft3d.role") == "trial"]
    assert len(parents) == n_cells and len(trials) == 3 * n_cells
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {p.info.run_id for p in parents}
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all("curve.val_acc" in r.data.metrics for r in trials)


def test_the_manifest_lists_a_cells_tuned_runs_before_they_start(tmp_path):
    """`bench status --tuned` reads the manifest: a cell whose tuned runs are under way must be in it, or its
    running runs are invisible until the whole cell has finished (hours on a CPU)."""
    specs = smoke_specs(["linear", "lora"])
    listed_when_started = []

    def run(todo, blocks):
        listed = {s.run_id for s in tuned_specs("smoke", tmp_path)}
        listed_when_started.append(all(s.run_id in listed for s in todo))
        fake_final(tmp_path)(todo, blocks)

    Tuner("smoke", specs, tmp_path, opts(tmp_path, 2, mlflow=False), execute=FakeExecutor(),
          echo=lambda s: None).run(run_final=run)
    assert listed_when_started and all(listed_when_started)


def test_pruned_and_failed_trials_count_against_the_budget(tmp_path):
    curves = {1: [0.5, 0.6], 2: [0.6, 0.7], 3: [0.1, 0.9], 5: [0.55, 0.65]}  # trial 3 is pruned at epoch 1
    ex = FakeExecutor(curve=lambda s, i: curves[i], fail=lambda s, i: i == 4)
    tuner = Tuner("smoke", smoke_specs(["linear"]), tmp_path, opts(tmp_path, 5, mlflow=False), execute=ex,
                  echo=lambda s: None)
    manifest = tuner.run(run_final=fake_final(tmp_path))
    (st,) = manifest["studies"].values()
    assert (st["complete"], st["pruned"], st["failed"], st["counted"]) == (3, 1, 1, 5)
    assert st["best_value"] == pytest.approx(0.7)
    pruned = [json.loads(p.read_text()) for p in (tmp_path / "tune").glob("*/runs/*.json")]
    assert sorted(r["status"] for r in pruned) == ["failed", "pruned", "success", "success", "success"]


def test_interrupted_tune_resumes_with_the_same_budget(tmp_path):
    specs = smoke_specs(["linear", "lora"])
    quiet = lambda s: None  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        Tuner("smoke", specs, tmp_path, opts(tmp_path, 3), execute=FakeExecutor(interrupt_at=5), echo=quiet).run(
            run_final=fake_final(tmp_path))
    client, runs = mlflow_runs(tmp_path)
    assert "RUNNING" not in {r.info.status for r in runs}  # Ctrl-C leaves nothing running
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert {r.data.tags["peft3d.role"] for r in killed} == {"trial", "study"}
    assert not (tmp_path / "tune" / "smoke.json").exists()  # no tuned runs from an unfinished tune
    tuner = Tuner("smoke", specs, tmp_path, opts(tmp_path, 3), execute=FakeExecutor(), echo=quiet)
    manifest = tuner.run(run_final=fake_final(tmp_path))
    assert manifest["equal_budget"] and {s["counted"] for s in manifest["studies"].values()} == {3}
    lora = next(st for n, st in tuner.studies.items() if "/lora/" in n)
    c = counts(lora)
    assert c["interrupted"] == 1 and c["counted"] == 3
    interrupted = next(t for t in lora.trials if t.user_attrs.get("peft3d.interrupted"))
    retry = next(t for t in lora.trials if t.user_attrs.get("peft3d.retry_of") == interrupted.number)
    assert retry.params == interrupted.params  # the interrupted configuration is tried again
    _, runs = mlflow_runs(tmp_path)
    assert "RUNNING" not in {r.info.status for r in runs}


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_owner_tokens():
    assert owner_alive(owner_token())
    assert not owner_alive(f"{socket.gethostname()}/{_dead_pid()}/1")
    assert owner_alive("some-other-host/1/1")  # not ours to declare dead
    assert not owner_alive(None) and not owner_alive("garbage")
    assert not owner_alive(f"{socket.gethostname()}/{os.getpid()}/0")  # pid reused by another process


def test_a_killed_tune_leaves_no_running_runs_after_the_next_start(tmp_path):
    """kill -9 leaves a RUNNING trial and RUNNING MLflow runs; the next tune marks them FAIL / KILLED."""
    import optuna

    specs = smoke_specs(["linear"])
    o = opts(tmp_path, 2)
    tuner = Tuner("smoke", specs, tmp_path, o, execute=FakeExecutor(), echo=lambda s: None)
    tuner.prepare()
    (study,) = tuner.studies.values()
    dead = f"{socket.gethostname()}/{_dead_pid()}/1"
    trial = study.ask()
    suggest(trial, tuner.cells[0].base)
    trial.set_user_attr("peft3d.owner", dead)
    client = tuner.tracker.client
    ghost = client.create_run(tuner.tracker.exp_id, tags={"peft3d.owner": dead, "peft3d.role": "trial"})
    alive = client.create_run(tuner.tracker.exp_id, tags={"peft3d.owner": owner_token(), "peft3d.role": "other"})
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING
    old = optuna.create_study(storage=o.storage, study_name="smoke/an/older/cell", direction="maximize")
    old.ask().set_user_attr("peft3d.owner", dead)  # a cell whose config has since changed (new study name)
    again = Tuner("smoke", specs, tmp_path, o, execute=FakeExecutor(), echo=lambda s: None)
    again.prepare()
    assert client.get_run(ghost.info.run_id).info.status == "KILLED"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"  # a live owner's run is left alone
    (study,) = again.studies.values()
    c = counts(study)
    assert c["running"] == 0 and c["interrupted"] == 1 and c["waiting"] == 1 and c["counted"] == 0
    old = optuna.load_study(study_name="smoke/an/older/cell", storage=o.storage)
    assert [t.state for t in old.trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    client.set_terminated(alive.info.run_id)
    manifest = again.run(run_final=fake_final(tmp_path))
    assert manifest["equal_budget"] and counts(again.studies[next(iter(again.studies))])["counted"] == 2


def test_budget_cannot_shrink_but_can_grow_for_everyone(tmp_path):
    specs = smoke_specs(["linear", "prompt"])
    quiet = lambda s: None  # noqa: E731
    Tuner("smoke", specs, tmp_path, opts(tmp_path, 2, mlflow=False), execute=FakeExecutor(), echo=quiet).run(
        run_final=fake_final(tmp_path))
    with pytest.raises(ConfigError, match="equal budgets"):
        Tuner("smoke", specs, tmp_path, opts(tmp_path, 1, mlflow=False), execute=FakeExecutor(),
              echo=quiet).prepare()
    m = Tuner("smoke", specs, tmp_path, opts(tmp_path, 3, mlflow=False), execute=FakeExecutor(), echo=quiet).run(
        run_final=fake_final(tmp_path))
    assert m["n_trials"] == 3 and {s["counted"] for s in m["studies"].values()} == {3}
    for t in tuned_specs("smoke", tmp_path):
        assert read_result(tmp_path, t.run_id).sections["tuning"]["n_trials"] == 3


def test_every_method_declares_a_usable_search_space():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for cell in cells_of(expand("smoke"), "smoke"):
        study = optuna.create_study(direction="maximize")
        for _ in range(3):
            spec = suggest(study.ask(), cell.base)
            assert spec.budget.lr != cell.base.budget.lr and 1e-4 <= spec.budget.weight_decay <= 0.1
            assert spec.identity()["tokenizer"] == cell.base.identity()["tokenizer"]  # only method + budget vary
            assert set(spec.method_cfg) == set(cell.base.method_cfg)


def test_cli_tune_dry_run_and_table_without_tune(tmp_path):
    from typer.testing import CliRunner

    from peft3d.cli.app import _mount, app

    _mount()
    out = CliRunner().invoke(app, ["tune", "--grid", "smoke", "--trials", "2", "--dry-run", "--results",
                                   str(tmp_path)])
    assert out.exit_code == 0 and out.output.count("smoke/test_bert[random]") == len(cells_of(expand("smoke"), "s"))
    out = CliRunner().invoke(app, ["table", "--grid", "smoke", "--tuned", "--results", str(tmp_path)])
    assert out.exit_code != 0 and "bench tune" in str(out.exception or out.output)
    with pytest.raises(ConfigError, match="bench tune"):
        read_manifest(tmp_path, "smoke")


# ---- the real thing: worker processes, Ctrl-C, kill -9, resume ------------------------------------------------

def _start_tune(root: Path, log: Path, trials: int = 3) -> subprocess.Popen:  # one log per start
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "peft3d", "tune", "--grid", "smoke", "--trials", str(trials),
                             "--results", str(root)], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _wait_for(log: Path, pattern: str, count: int, proc: subprocess.Popen, timeout: float = 600) -> None:
    t0 = time.time()
    while log.read_text().count(pattern) < count:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() - t0 < timeout, f"timed out waiting for {pattern!r}: {log.read_text()[-2000:]}"
        time.sleep(0.5)


@pytest.mark.slow
def test_tune_smoke_grid_interrupted_twice_resumes_with_equal_budgets(tmp_path):
    root = tmp_path / "results"
    n_cells = len(cells_of(expand("smoke"), "smoke"))
    # 1) Ctrl-C (SIGINT to the process group, as a terminal does) during the second trial
    log = tmp_path / "tune1.log"
    p = _start_tune(root, log)
    _wait_for(log, " trial ", 1, p)
    time.sleep(3)
    os.killpg(p.pid, signal.SIGINT)
    assert p.wait(timeout=120) == 130, log.read_text()[-2000:]
    _, runs = mlflow_runs(root)
    assert runs and "RUNNING" not in {r.info.status for r in runs}
    # 2) kill -9 of the tune process in a later trial: its worker dies with it (PR_SET_PDEATHSIG)
    log = tmp_path / "tune2.log"
    p = _start_tune(root, log)
    _wait_for(log, " trial ", 2, p)
    time.sleep(3)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=60)
    _, runs = mlflow_runs(root)
    assert "RUNNING" in {r.info.status for r in runs}  # what a kill -9 leaves behind ...
    # 3) resume to the end
    log = tmp_path / "tune3.log"
    p = _start_tune(root, log)
    assert p.wait(timeout=1800) == 0, log.read_text()[-3000:]
    text = log.read_text()
    assert "marked" in text and "KILLED" in text  # ... is reaped by the next start
    _, runs = mlflow_runs(root)
    assert "RUNNING" not in {r.info.status for r in runs}
    manifest = read_manifest(root, "smoke")
    assert manifest["equal_budget"] and len(manifest["studies"]) == n_cells
    studies = manifest["studies"].values()
    assert {s["counted"] for s in studies} == {3} and sum(s["interrupted"] for s in studies) >= 1
    for t in tuned_specs("smoke", root):
        r = read_result(root, t.run_id)
        assert r.status == "success" and r.sections["tuning"]["n_trials"] == 3
    assert "Tuning: 3 Optuna trials per cell" in (root / "tables" / "smoke.tuned.md").read_text()
    assert not list((root / "runs").glob(".*tmp"))


def test_table_and_report_of_the_tuned_runs(tmp_path):
    from typer.testing import CliRunner

    from peft3d.cli.app import _mount, app

    _mount()
    specs = smoke_specs(["linear", "lora", "any2point"])
    Tuner("smoke", specs, tmp_path, opts(tmp_path, 2, mlflow=False), execute=FakeExecutor(),
          echo=lambda s: None).run(run_final=fake_final(tmp_path))
    out = CliRunner().invoke(app, ["table", "--grid", "smoke", "--tuned", "--results", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "# smoke.tuned" in out.output and "Tuning: 2 Optuna trials per cell in all 3 studies" in out.output
    assert "3/3 runs succeeded" in out.output
    out = CliRunner().invoke(app, ["table", "--grid", "smoke", "--tuned", "--results", str(tmp_path),
                                   "--layout", "peft"])
    assert out.exit_code == 0 and "Δ to any2point" in out.output
    out = CliRunner().invoke(app, ["report", "--grid", "smoke", "--tuned", "--results", str(tmp_path)])
    assert out.exit_code == 0, out.output
    html = (tmp_path / "report" / "smoke.tuned.html").read_text()
    assert "2 Optuna trials per cell" in html and all(t.run_id in html for t in tuned_specs("smoke", tmp_path))


def test_best_configuration_is_the_earliest_of_tied_objectives():
    """Two trials whose mean fold accuracies are equal on paper but differ in the last bit (as two finished
    transfer-study trials did) tie, and the earlier one is chosen; a real difference of one model still wins."""
    import optuna

    from peft3d.tuning.final import best_spec

    spec = smoke_specs()[0]
    # two trials right on 28, 28, 31 and 31, 28, 28 of 37 validation models in folds f0, f1, f2: the same mean
    tied_sum = sum(k / 37 for k in (28, 28, 31)) / 3
    other_order = sum(k / 37 for k in (31, 28, 28)) / 3
    assert tied_sum != other_order  # the float noise this test is about

    def lr_of(number):
        return spec.budget.lr * (number + 1) / 4

    def study_with(values):
        study = optuna.create_study(direction="maximize")
        for i, v in enumerate(values):
            params = {"lr": lr_of(i), "weight_decay": 0.01}
            trial_spec = suggest(optuna.trial.FixedTrial(params), spec, shared_space=True)  # as a trial makes it
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: optuna.distributions.FloatDistribution(1e-6, 1.0) for k in params},
                value=v, user_attrs={"peft3d.core.spec": trial_spec.to_dict()}))
        return study

    low_first = study_with([0.5, min(tied_sum, other_order), max(tied_sum, other_order)])
    chosen, trial = best_spec(low_first)
    assert trial.number == 1 and chosen.budget.lr == lr_of(1)
    high_first = study_with([max(tied_sum, other_order), min(tied_sum, other_order)])
    assert best_spec(high_first)[1].number == 0
    one_model_better = study_with([tied_sum, tied_sum + 1 / 3 / 37])  # one more of 37 validation models right
    assert best_spec(one_model_better)[1].number == 1
    assert best_spec(optuna.create_study(direction="maximize")) == (None, None)
