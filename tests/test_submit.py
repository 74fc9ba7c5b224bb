"""``bench submit`` / ``bench status`` through submitit: every run once, a preempted task requeued and resumed
from its checkpoint with the metrics of an uninterrupted run. The local executor runs the same path as SLURM
(RunTask, submitit's signal handling and requeue); the real SLURM test is in test_services.py."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from peft3d.grids.loader import GRID_DIR, expand
from peft3d.schedule.claims import claim_log, claims_dir
from peft3d.training.train import train_run

BENCH = [sys.executable, "-m", "peft3d"]


def bench(*args):
    """Run bench; output through files, not pipes: local submitit controllers outlive ``bench submit`` and
    would hold a pipe open until their tasks end."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        code = subprocess.run([*BENCH, *args], stdout=out, stderr=err, stdin=subprocess.DEVNULL, text=True,
                              env=env, timeout=300).returncode
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(args, code, out.read(), err.read())


def tiny_grid(tmp_path: Path, epochs: int = 4) -> Path:
    grid = tmp_path / "tiny.yaml"
    grid.write_text(f"include: {GRID_DIR / 'smoke.yaml'}\nmethods: [linear, lora]\ncheckpoint_every: 1\n"
                    f"budget: {{epochs: {epochs}, batch_size: 32, eval_batch_size: 128, lr: 0.001, "
                    "warmup_epochs: 1}\n")
    return grid


def wait_for(cond, what: str, timeout: float = 600, log=lambda: ""):
    t0 = time.time()
    while True:
        value = cond()
        if value:
            return value
        assert time.time() - t0 < timeout, f"timed out waiting for {what}\n{log()}"
        time.sleep(0.3)


def claim_at_epoch(root: Path, run_id: str, epoch: int):
    assert not (root / "runs" / f"{run_id}.json").exists(), "the run finished before it could be interrupted"
    try:
        info = json.loads((claims_dir(root) / f"{run_id}.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info if info.get("epoch", 0) >= epoch else None


def statuses(grid: Path, root: Path) -> dict[str, str]:
    out = bench("status", "--grid", str(grid), "--results", str(root), "--json")
    assert out.returncode == 0, out.stderr
    return {r["run_id"]: r["state"] for r in json.loads(out.stdout)}


def logs(root: Path) -> str:
    return "\n".join(p.read_text()[-1500:] for p in sorted((root / "submitit").glob("*/*log.err")))


@pytest.mark.slow  # ~1-4 min on 2 shared cores; .ci/run runs it with the services tests
def test_submit_local_every_run_once_and_a_preempted_task_resumes(tmp_path):
    grid, root = tiny_grid(tmp_path, epochs=10), tmp_path / "res"  # 8 epochs left after the signal point
    specs = expand(str(grid))
    out = bench("submit", "--grid", str(grid), "--results", str(root), "--executor", "local", "--time", "00:20:00")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 to submit (local)" in out.stdout and "submitted 2 task(s)" in out.stdout
    subs = [json.loads(line) for line in (root / "submissions.jsonl").read_text().splitlines()]
    assert sorted(s["run_id"] for s in subs) == sorted(s.run_id for s in specs)
    lora = next(s for s in specs if s.method == "lora")
    wait_for(lambda: claim_at_epoch(root, lora.run_id, 0), "lora claimed", log=lambda: logs(root))
    again = bench("submit", "--grid", str(grid), "--results", str(root), "--executor", "local")
    assert "0 to submit" in again.stdout  # running runs are not submitted twice
    # Signal as soon as epoch 2 is saved, with nothing slow in between: the later epochs (~1 s each here) are the
    # whole window, and a signal after the last step is a normal finish, not a preemption (CI once lost that race
    # when the second submit, ~5 s, sat between the wait and the kill).
    info = wait_for(lambda: claim_at_epoch(root, lora.run_id, 2), "lora at epoch 2", log=lambda: logs(root))
    os.kill(info["pid"], signal.SIGUSR2)  # submitit's preemption / time-limit signal
    wait_for(lambda: set(statuses(grid, root).values()) == {"done"}, "every run done", log=lambda: logs(root))
    events = claim_log(root)
    by_run = {s.run_id: [e for e in events if e["run_id"] == s.run_id] for s in specs}
    assert len(by_run[lora.run_id]) == 2 and by_run[lora.run_id][0]["pid"] != by_run[lora.run_id][1]["pid"]
    others = [r for r in by_run if r != lora.run_id]
    assert all(len(by_run[r]) == 1 for r in others)  # every other run executed once
    assert "Caught signal SIGUSR2" in logs(root)
    result = json.loads((root / "runs" / f"{lora.run_id}.json").read_text())
    assert result["resumed_from"] and result["resumed_from"][0] >= 2
    torch.set_num_threads(1)  # the tasks ran with --cpus-per-task 1
    reference = train_run(lora).to_dict()
    assert result["metrics"] == json.loads(json.dumps(reference["metrics"]))
    assert not list((root / "checkpoints").glob("*.pt"))
    assert "done" in bench("status", "--grid", str(grid), "--results", str(root)).stdout


def test_submit_reports_a_bad_time_in_one_line(tmp_path):
    out = bench("submit", "--grid", str(tiny_grid(tmp_path)), "--results", str(tmp_path / "r"), "--executor", "local",
                "--time", "soon")
    assert out.returncode == 2 and "--time expects HH:MM:SS" in out.stderr
    assert not (tmp_path / "r" / "submissions.jsonl").exists()


def test_status_of_a_fresh_folder_is_all_missing(tmp_path):
    grid = tiny_grid(tmp_path)
    assert set(statuses(grid, tmp_path / "none").values()) == {"missing"}


@pytest.mark.parametrize("value,minutes", [("00:10:00", 10), ("1-00:00:00", 1440), ("90", 90), ("00:00:30", 1)])
def test_time_parsing(value, minutes):
    from peft3d.cli.submit import _minutes

    assert _minutes(value) == minutes


def test_submit_tune_needs_trials_and_dry_run_shows_the_worker_command(tmp_path):
    grid = tiny_grid(tmp_path)
    out = bench("submit", "--grid", str(grid), "--results", str(tmp_path / "r"), "--executor", "local", "--tune")
    assert out.returncode == 2 and "--tune needs --trials N" in out.stderr
    out = bench("submit", "--grid", str(grid), "--results", str(tmp_path / "r"), "--executor", "local", "--tune",
                "--trials", "2", "--workers", "3", "--storage", "postgresql://u:secret@db:5432/optuna", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "3 tuning worker(s) (local) on storage postgresql://***@db:5432/optuna" in out.stdout
    assert "bench tune --grid" in out.stdout and "--trials 2" in out.stdout and "secret" not in out.stdout
    assert not (tmp_path / "r" / "submissions.jsonl").exists()
    assert "--finish-cells" not in out.stdout
    out = bench("submit", "--grid", str(grid), "--results", str(tmp_path / "r"), "--executor", "local", "--tune",
                "--trials", "2", "--finish-cells", "--dry-run")
    assert out.returncode == 0 and "--finish-cells --trials 2" in out.stdout, out.stderr
    out = bench("submit", "--grid", str(grid), "--results", str(tmp_path / "r"), "--executor", "local",
                "--finish-cells", "--dry-run")
    assert out.returncode == 2 and "--finish-cells configures tuning workers: it goes with --tune" in out.stderr


@pytest.mark.parametrize("typed,line", [
    (["--pruner", "median"], "--pruner configures tuning workers: it goes with --tune; fix: add --tune, or drop it"),
    (["--workers", "2"], "--workers configures tuning workers: it goes with --tune; fix: add --tune, or drop it"),
    (["--trials", "3", "--heartbeat", "30"],
     "--trials, --heartbeat configure tuning workers: they go with --tune; fix: add --tune, or drop them")])
def test_submit_without_tune_refuses_tuning_options_even_at_their_defaults(tmp_path, typed, line):
    # a typed tuning option without --tune would submit plain runs and drop it silently
    grid = tiny_grid(tmp_path)
    out = bench("submit", "--grid", str(grid), "--results", str(tmp_path / "r"), "--executor", "local", *typed,
                "--dry-run")
    assert out.returncode == 2, out.stdout
    assert out.stderr.strip().splitlines() == [f"error: {line}"]
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # two tuning workers as a local submitit array (the SLURM path with the local executor)
def test_submit_tune_local_workers_share_the_studies(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from peft3d.tuning.final import read_manifest
    from peft3d.tuning.sharing import open_storage

    grid = tiny_grid(tmp_path, epochs=1)
    root = tmp_path / "r"
    out = bench("submit", "--grid", str(grid), "--results", str(root), "--executor", "local", "--tune", "--trials",
                "2", "--workers", "2", "--pruner", "none", "--heartbeat", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    subs = [json.loads(x) for x in (root / "submissions.jsonl").read_text().splitlines()]
    assert sorted(s["run_id"] for s in subs) == ["tune-worker-0", "tune-worker-1"]
    wait_for(lambda: (root / "tune" / "tiny.json").exists() and len(list((root / "runs").glob("*.json"))) == 2,
             "the tuned runs", timeout=900, log=lambda: "\n".join(p.read_text()[-1500:]
                                                                  for p in (root / "submitit").glob("*/*log.*")))
    time.sleep(3)  # let the second worker finish writing the same manifest
    manifest = read_manifest(root, "tiny")
    assert manifest["equal_budget"] and {s["counted"] for s in manifest["studies"].values()} == {2}
    storage = open_storage(f"sqlite:///{root / 'optuna.db'}", 2)
    owners = set()
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        done = optuna.load_study(study_name=s.study_name, storage=storage).get_trials(states=(TrialState.COMPLETE,))
        assert len(done) == 2
        owners |= {t.user_attrs["peft3d.owner"] for t in done}
    print(f"counted trials by {len(owners)} worker(s): {sorted(owners)}")


def test_status_of_a_tuned_grid_lists_its_tuned_runs(tmp_path):
    """`bench status` of a tuned study used to report every run missing (it listed the grid's runs at the
    untuned lr, which a tuned study never runs); --tuned lists the manifest's runs, and says which cells wait."""
    from study_fixture import write_study
    from typer.testing import CliRunner

    from peft3d.cli.app import _mount, app
    from peft3d.core.result import atomic_write_text

    _mount()
    specs, manifest = write_study(tmp_path)
    status = ["status", "--grid", "transfer_study", "--results", str(tmp_path)]
    out = CliRunner().invoke(app, [*status, "--tuned"])
    assert out.exit_code == 0 and out.output.splitlines()[-1] == f"{len(specs)} done", out.output
    (tmp_path / "runs" / f"{specs[0].run_id}.json").unlink()
    first = next(iter(manifest["studies"].values()))
    first["best_params"] = None  # a cell whose trials found no configuration yet
    atomic_write_text(tmp_path / "tune" / "transfer_study.json", json.dumps(manifest))
    lines = CliRunner().invoke(app, [*status, "--tuned"]).output.splitlines()
    assert lines[-2] == f"{len(specs) - 1} done, 1 missing" and specs[0].run_id in lines[0]
    assert lines[-1].startswith(f"1 of {len(manifest['studies'])} cells have no best trial yet")
    lines = CliRunner().invoke(app, status).output.splitlines()
    assert lines[-1] == ("grid transfer_study is tuned (bench tune): the runs its tables report are listed by "
                         "bench status --grid transfer_study --tuned")
    assert "done" not in lines[-2]  # the grid's own (untuned) runs: none ran
