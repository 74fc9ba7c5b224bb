"""Several tuning workers on one Optuna study: the equal budget holds exactly, stale trials are retried.

Fast tests: two processes on one sqlite storage with a fake trial executor; a trial whose heartbeat stopped (a
worker on another host) is failed, not counted, and retried with its parameters; the budget places. The test with
real ``bench tune`` workers on PostgreSQL (one killed with -9) is in tests/test_services.py.
"""
import multiprocessing
import os
import time

import optuna
import pytest
from optuna.trial import TrialState
from test_tune import FakeExecutor, fake_final, opts, smoke_specs

from peft3d.core.owners import owner_token
from peft3d.tuning.budget import counts
from peft3d.tuning.cells import cells_of
from peft3d.tuning.sharing import StaleRetry, give_back, open_storage, place_of
from peft3d.tuning.tune import Tuner


class SlowExecutor(FakeExecutor):
    """Each trial takes a while, so that the two workers' trials overlap."""

    def __call__(self, spec, root, report):
        time.sleep(0.3)
        return super().__call__(spec, root, report)


def _worker(tmp_path, methods, n, barrier):
    barrier.wait()  # both workers start their first study together: the race the budget must survive
    o = opts(tmp_path, n, mlflow=False, pruner="none")
    o.heartbeat_s = 1
    tuner = Tuner("smoke", smoke_specs(methods), tmp_path, o, execute=SlowExecutor(), echo=lambda s: None)
    tuner.prepare()
    for i, cell in enumerate(tuner.cells, 1):
        tuner.tune_cell(cell, i)


def _trials_by_study(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}", 1)
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage)}


def test_two_processes_share_the_studies_and_the_budget_holds_exactly(tmp_path):
    methods, n = ["linear", "lora"], 4
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_worker, args=(tmp_path, methods, n, barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    studies = _trials_by_study(tmp_path)
    assert len(studies) == len(cells_of(smoke_specs(methods), "smoke"))
    owners = set()
    for name, study in studies.items():
        c = counts(study)
        assert (c["counted"], c["complete"], c["running"]) == (n, n, 0), (name, c)
        done = [t for t in study.trials if t.state == TrialState.COMPLETE]
        assert len({t.number for t in done}) == n  # each counted once
        owners |= {t.user_attrs["peft3d.owner"] for t in done}
        over = [t for t in study.trials if t.user_attrs.get("peft3d.over_budget")]
        assert all(t.state == TrialState.FAIL for t in over)  # a give-back never counts
    assert len(owners) == 2  # both workers ran counted trials
    runs = list((tmp_path / "tune").glob("*/runs/*.json"))
    assert len(runs) == n * len(studies)


def test_a_trial_whose_heartbeat_stopped_is_retried_and_not_counted(tmp_path):
    specs = smoke_specs(["linear"])
    o = opts(tmp_path, 2, mlflow=False, pruner="none")
    o.heartbeat_s = 1
    tuner = Tuner("smoke", specs, tmp_path, o, execute=FakeExecutor(), echo=lambda s: None)
    tuner.prepare()
    (study,) = tuner.studies.values()
    from peft3d.tuning.cells import suggest

    lost = study.ask()  # a worker on another machine asked, beat once, and vanished
    suggest(lost, tuner.cells[0].base)
    lost.set_user_attr("peft3d.owner", "a-host-far-away/4242/1")
    tuner.storage.record_heartbeat(lost._trial_id)
    time.sleep(3.5)  # > grace period (3 × 1 s)
    tuner.tune_cell(tuner.cells[0], 1)
    trials = {t.number: t for t in study.trials}
    assert trials[lost.number].state == TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == lost.number]
    assert len(retries) == 1 and retries[0].params == lost.params and retries[0].state == TrialState.COMPLETE
    assert retries[0].user_attrs["peft3d.owner"] == owner_token()
    assert tuner.retry.retried == [lost.number]
    c = counts(study)
    assert (c["counted"], c["interrupted"], c["running"]) == (2, 1, 0)


def test_budget_places_and_give_back(tmp_path):
    retry = StaleRetry()
    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}", 60, retry)
    study = optuna.create_study(storage=storage, study_name="s")
    asked = [study.ask() for _ in range(3)]  # three workers asked at once for a budget of 2
    for t in asked:
        t.suggest_float("x", 0, 1)
    assert [place_of(study, t.number)[0] for t in asked] == [1, 2, 3]
    place, frozen = place_of(study, asked[2].number)
    give_back(study, asked[2], frozen)
    study.tell(asked[0], 0.5)
    failed = study.ask()
    failed.set_user_attr("peft3d.error", "FloatingPointError")  # a real failure holds its place
    study.tell(failed, state=TrialState.FAIL)
    c = counts(study)
    assert (c["complete"], c["failed"], c["interrupted"], c["running"]) == (1, 1, 1, 1)
    # a retried configuration that has to be given back is queued again, not lost
    retry(study, next(t for t in study.trials if t.number == failed.number))  # real error: no retry
    assert counts(study)["waiting"] == 0
    study.enqueue_trial({"x": 0.25})
    queued = study.ask()
    queued.suggest_float("x", 0, 1)
    assert place_of(study, queued.number)[0] == 4
    give_back(study, queued, place_of(study, queued.number)[1])
    assert [t.system_attrs["fixed_params"] for t in study.trials if t.state == TrialState.WAITING] == [{"x": 0.25}]
    assert os.path.exists(tmp_path / "o.db")


def test_a_tune_cannot_shrink_another_workers_budget(tmp_path):
    """A second worker started with a smaller --trials is refused (equal budgets), with a clear message."""
    from peft3d.core.errors import ConfigError

    specs = smoke_specs(["linear"])
    Tuner("smoke", specs, tmp_path, opts(tmp_path, 2, mlflow=False), execute=FakeExecutor(),
          echo=lambda s: None).run(run_final=fake_final(tmp_path))
    with pytest.raises(ConfigError, match="--trials 1 is below"):
        Tuner("smoke", specs, tmp_path, opts(tmp_path, 1, mlflow=False), execute=FakeExecutor(),
              echo=lambda s: None).prepare()


def test_a_worker_tunes_the_next_cell_while_others_run_the_last_trials(tmp_path):
    """A cell whose remaining budget is all other workers' running trials is left for later: the worker tunes
    the next cell meanwhile (it used to idle for a whole trial), then finishes the first cell once it is full."""
    specs = smoke_specs(["linear", "lora"])
    o = opts(tmp_path, 1, mlflow=False, pruner="none")
    o.finish_cells = True
    lines, finals = [], []
    tuner = Tuner("smoke", specs, tmp_path, o, execute=None, echo=lines.append)
    tuner.prepare()
    first, second = tuner.cells
    study = tuner.studies[first.study_name]
    from peft3d.tuning.cells import suggest

    theirs = study.ask()  # another machine's worker runs the first cell's only trial, heartbeat fresh
    theirs.set_user_attr("peft3d.owner", "a-host-far-away/4242/1")
    theirs.set_user_attr("peft3d.core.spec", suggest(theirs, first.base).to_dict())
    tuner.storage.record_heartbeat(theirs._trial_id)
    fake = FakeExecutor()

    def execute(spec, root, report):  # our trial of the second cell; the other worker finishes meanwhile
        assert spec.method == second.base.method
        out = fake(spec, root, report)
        study.tell(theirs, 0.5)
        return out

    def run_final(todo, blocks):
        finals.append({s.method for s in todo})
        fake_final(tmp_path)(todo, blocks)

    tuner.execute = execute
    tuner.run(run_final=run_final)
    text = "\n".join(lines)
    assert f"{first.study_name}: its last 1 trial(s) run in other workers; tuning the next cell meanwhile" in text
    assert "waiting for" not in text and len(fake.calls) == 1
    assert finals[:2] == [{second.base.method}, {first.base.method}]  # each cell's runs as soon as it is full
    named = list(dict.fromkeys(x.split(": ", 1)[0] for x in lines if x.startswith("tuned runs of ")))
    assert named == [f"tuned runs of {second.study_name}", f"tuned runs of {first.study_name}",
                     "tuned runs of 2 cells"]  # each cell by name, then the closing pass over every cell
    assert all(counts(s)["counted"] == 1 for s in tuner.studies.values())
