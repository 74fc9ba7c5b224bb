"""Several ``bench tune`` workers on one Optuna study (other processes, other machines, SLURM tasks).

- Storage: Optuna's RDB storage (sqlite on one machine, PostgreSQL/MySQL across machines) with heartbeats: a
  RUNNING trial whose heartbeat is older than the grace period is failed by the next worker that looks
  (``optuna.storages.fail_stale_trials``) and retried through Optuna's retry callback (the same parameters,
  queued as a WAITING trial whose system attributes name the original: ``retried_trial_number``).
- Optuna beats only inside ``Study.optimize``; our trials are ask/tell (the training runs in a worker process
  that reports back), so :class:`Heartbeat` records them for the trial we hold.
- On this host a dead owner (pid gone) is known at once, without waiting for the grace period (:func:`recover`).
- Equal budgets, exactly: a trial holds a *place* in the budget while WAITING, RUNNING, COMPLETE, PRUNED or
  FAIL with a recorded error; an interrupted trial (FAIL without an error: Ctrl-C, kill, stale heartbeat, given
  back) holds none. Trial numbers are assigned under a lock on the study row, so after ``ask()`` a worker keeps
  its trial only if fewer than N lower-numbered trials hold a place (:func:`place_of`); otherwise it gives the
  trial back (:func:`give_back`). A place, once held, is only ever released (FAIL is final, a new trial always
  gets a higher number), so a kept trial can never be pushed out later and no worker can run the (N+1)-th.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from peft3d.core.errors import ConfigError
from peft3d.core.owners import owner_alive

GRACE_FACTOR = 3  # a trial is stale after 3 missed heartbeats
MAX_RETRY = 3  # a configuration whose worker dies every time is not retried for ever


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Optuna flags heartbeats as experimental and warns that they are meant for optimize(); both are known."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


class StaleRetry:
    """The storage's failed-trial callback: Optuna's retry callback, except for a trial that had recorded a real
    error (it failed, it counts, it is not retried). The retry gets only ``peft3d.retry_of`` as user attribute
    (not the dead owner's token or run ids). Remembers the numbers it retried, for the log."""

    def __init__(self) -> None:
        import optuna

        cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
            optuna.storages.RetryFailedTrialCallback  # the same callback, renamed in Optuna 4.9
        with quiet():
            self.optuna_retry = cls(max_retry=MAX_RETRY)
        self.retried: list[int] = []

    def __call__(self, study: Any, trial: Any) -> None:
        if "peft3d.error" in trial.user_attrs:
            return
        clean = copy.deepcopy(trial)
        clean.user_attrs = {"peft3d.retry_of": trial.number}
        self.optuna_retry(study, clean)
        self.retried.append(trial.number)


def with_driver(url: str) -> str:
    """``postgresql://`` means psycopg (v3) to SQLAlchemy >= 2.1 but psycopg2 before; use whichever is installed."""
    import importlib.util

    if not url.startswith("postgresql://"):
        return url
    for module, scheme in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module):
            return scheme + url[len("postgresql"):]
    raise ConfigError("--storage postgresql://…: no PostgreSQL driver installed; pip install psycopg2-binary")


def open_storage(url: str, heartbeat_s: int = 60, retry: StaleRetry | None = None) -> Any:
    """Optuna's RDB storage with heartbeats (interval ``heartbeat_s``, grace ``GRACE_FACTOR`` × interval)."""
    import optuna
    import sqlalchemy.exc
    from filelock import FileLock

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    engine: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 60}}
    else:
        engine = {"pool_pre_ping": True}  # a server-side connection dropped during a long trial is reopened
    params = inspect.signature(optuna.storages.RDBStorage).parameters
    callback_kw = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params \
        else "failed_trial_callback"
    kwargs = {"engine_kwargs": engine, "heartbeat_interval": heartbeat_s, "grace_period": GRACE_FACTOR * heartbeat_s,
              callback_kw: retry or StaleRetry()}
    # Workers starting together would each create the schema (measured: sqlite's alembic_version UNIQUE error):
    # on one machine a file lock serialises it; on a server the loser of the race finds the schema on a retry.
    lock = FileLock(f"{url[len('sqlite:///'):]}.lock", timeout=120) if url.startswith("sqlite:///") \
        else contextlib.nullcontext()
    for attempt in range(3):
        try:
            with lock, quiet():
                return optuna.storages.RDBStorage(with_driver(url), **kwargs)
        except sqlalchemy.exc.DBAPIError:
            if attempt == 2:
                raise
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


class Heartbeat:
    """Beats for one trial every ``interval`` seconds while the ``with`` block runs (see the module note)."""

    def __init__(self, storage: Any, trial: Any, interval: float) -> None:
        self.storage, self.trial_id, self.interval = storage, trial._trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{trial.number}")

    def _beat(self) -> None:
        while not self.stop.is_set():
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as e:  # noqa: BLE001 - a missed beat must not kill the trial; the next one retries
                print(f"warning: heartbeat of trial id {self.trial_id} not recorded: {e}", file=sys.stderr)
            self.stop.wait(self.interval)

    def __enter__(self) -> Heartbeat:
        self.storage.record_heartbeat(self.trial_id)  # at once: a trial without any beat is never found stale
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def is_interrupted(t: Any, study_attrs: dict[str, Any]) -> bool:
    """For a FAIL trial: interrupted (holds no place in the budget) unless it recorded a real error."""
    return (bool(t.user_attrs.get("peft3d.interrupted")) or "peft3d.error" not in t.user_attrs
            or t.number in study_attrs.get("peft3d.interrupted_trials", []))  # (the list: older peft3d versions)


def holds_place(t: Any, study_attrs: dict[str, Any]) -> bool:
    from optuna.trial import TrialState

    if t.state == TrialState.FAIL:
        return not is_interrupted(t, study_attrs)
    return True  # WAITING, RUNNING, COMPLETE, PRUNED


def place_of(study: Any, number: int) -> tuple[int, Any]:
    """(1-based place of trial ``number`` in the budget, its FrozenTrial)."""
    trials = study.get_trials(deepcopy=False)
    attrs = study.user_attrs
    place = 1 + sum(1 for t in trials if t.number < number and holds_place(t, attrs))
    return place, next(t for t in trials if t.number == number)


def give_back(study: Any, trial: Any, frozen: Any) -> None:
    """An over-budget trial: FAIL, interrupted (not counted); a queued configuration (a retry) is queued again."""
    from optuna.trial import TrialState

    trial.set_user_attr("peft3d.interrupted", True)
    trial.set_user_attr("peft3d.over_budget", True)
    study.tell(trial, state=TrialState.FAIL)
    if "fixed_params" in frozen.system_attrs or "failed_trial" in frozen.system_attrs:
        study.enqueue_trial(dict(trial.params), user_attrs={"peft3d.retry_of": trial.number})


def fail_and_retry(study: Any, number: int, retry: StaleRetry) -> bool:
    """FAIL a RUNNING trial of a gone owner and queue its retry; False when another worker finished it first."""
    import optuna
    from optuna.trial import TrialState

    try:
        study.tell(number, state=TrialState.FAIL)
    except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
        return False
    retry(study, next(t for t in study.get_trials(deepcopy=False) if t.number == number))
    return True


def recover(study: Any, retry: StaleRetry) -> list[int]:
    """Stale RUNNING trials: heartbeat older than the grace period (any host), or owner process gone (this
    host). FAIL, not counted, retried. Returns their numbers. A trial without an owner yet (just asked) is
    left to its heartbeat."""
    import optuna
    from optuna.trial import TrialState

    before = len(retry.retried)
    with quiet():
        optuna.storages.fail_stale_trials(study)
    gone = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if "peft3d.owner" in t.user_attrs and not owner_alive(t.user_attrs["peft3d.owner"])]
    done = [n for n in gone if fail_and_retry(study, n, retry)]
    return sorted(set(retry.retried[before:]) | set(done))
