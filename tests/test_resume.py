"""Resume and provenance for ``bench run``: Ctrl-C, kill -9 of the scheduler, kill -9 of a worker; re-running
finishes only what is missing, and no partial run ever reaches a table or stays RUNNING in MLflow."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peft3d.core.result import RunResult, run_path, write_result
from peft3d.grids.loader import GRID_DIR, expand
from peft3d.reporting.tables import render_markdown, runs_frame
from peft3d.schedule.runner import pending

METHODS = ["linear", "prompt", "lora"]


@pytest.fixture
def grid(tmp_path):
    path = tmp_path / "resume.yaml"
    path.write_text(f"include: {GRID_DIR / 'smoke.yaml'}\nmethods: [{', '.join(METHODS)}]\n")
    return path


def start(grid: Path, root: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "peft3d", "run", "--grid", str(grid), "--results", str(root),
                             "--jobs", "1", *extra], stdout=log.open("a"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def finish(grid: Path, root: Path, log: Path) -> str:
    p = start(grid, root, log)
    assert p.wait(timeout=900) == 0, log.read_text()[-3000:]
    return log.read_text()


def results(root: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (root / "runs").glob("*.json")}


def wait_until(cond, proc: subprocess.Popen | None, log: Path, timeout: float = 300) -> None:
    t0 = time.time()
    while not cond():
        assert proc is None or proc.poll() is None, log.read_text()[-3000:]
        assert time.time() - t0 < timeout, log.read_text()[-3000:]
        time.sleep(0.2)


def workers(parent: int) -> list[int]:
    """Worker processes (``peft3d.schedule.worker``) whose parent is ``parent``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if ppid == parent and b"peft3d.schedule.worker" in cmd:
            out.append(int(d.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def no_running_mlflow_runs(root: Path) -> set[str]:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("peft3d/resume")
    statuses = {r.info.status for r in client.search_runs([exp.experiment_id])} if exp else set()
    assert "RUNNING" not in statuses
    return statuses


def only_complete_files(root: Path) -> None:
    assert not list((root / "runs").glob(".*")), "temp files left behind"
    for r in results(root).values():
        assert r["status"] in ("success", "failed") and "spec" in r


# ---- fast ---------------------------------------------------------------------------------------------------

def test_partial_or_unreadable_results_never_reach_a_table(tmp_path, grid):
    specs = expand(str(grid))
    ok, torn, tmp_only = specs
    template = {"schema": 1, "status": "success", "error": None, "metrics": {"test_acc": 0.5, "val_acc": 0.5,
                "test_acc_best_test": 0.5, "test_acc_last": 0.5, "n_test": 240}, "params": {}, "backbone": {}}
    write_result(tmp_path, RunResult.from_dict(dict(template, run_id=ok.run_id, spec=ok.to_dict())))
    text = json.dumps(dict(template, run_id=torn.run_id, spec=torn.to_dict()))
    run_path(tmp_path, torn.run_id).write_text(text[: len(text) // 2])  # a torn write (not ours: we rename)
    (tmp_path / "runs" / f".{tmp_only.run_id}.json.x1y2.tmp").write_text(text)  # a write cut before its rename
    df = runs_frame(specs, tmp_path)
    assert df.set_index("run_id")["status"].to_dict() == {ok.run_id: "success", torn.run_id: "missing",
                                                          tmp_only.run_id: "missing"}
    assert df["test_acc"].notna().sum() == 1
    assert [s.run_id for s in pending(specs, tmp_path)] == [torn.run_id, tmp_only.run_id]
    assert "1/3 runs succeeded" in render_markdown("resume", df)


def test_mirror_records_only_finished_states(tmp_path, grid):
    import mlflow

    from peft3d.reporting.mirror import Mirror

    s = expand(str(grid))[0]
    m = Mirror(f"sqlite:///{tmp_path / 'mlflow.db'}", "peft3d/resume")
    fail = {"schema": 1, "run_id": s.run_id, "status": "failed", "error": "worker killed", "spec": s.to_dict()}
    rid = m.log(RunResult.from_dict(fail))
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(rid).info.status == "FAILED"


# ---- slow: real processes ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_then_resume(tmp_path, grid):
    root, log = tmp_path / "res", tmp_path / "log"
    specs = expand(str(grid))
    p = start(grid, root, log)
    wait_until(lambda: len(results(root)) >= 1 and workers(p.pid), p, log)
    os.killpg(p.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert p.wait(timeout=60) != 0
    done = results(root)
    assert 1 <= len(done) < len(specs) and all(r["status"] == "success" for r in done.values())
    only_complete_files(root)
    no_running_mlflow_runs(root)
    md = render_markdown("resume", runs_frame(specs, root))
    assert "— (not run yet)" in md  # the interrupted run is an explicit blank, never a number
    stamps = {k: run_path(root, k).stat().st_mtime_ns for k in done}
    out = finish(grid, root, log)
    assert f"{len(done)} already done, {len(specs) - len(done)} to run" in out
    assert {k: run_path(root, k).stat().st_mtime_ns for k in done} == stamps  # finished runs are not redone
    assert {r["status"] for r in results(root).values()} == {"success"} and len(results(root)) == len(specs)
    assert no_running_mlflow_runs(root) == {"FINISHED"}


@pytest.mark.slow
def test_kill_9_of_the_scheduler_then_resume(tmp_path, grid):
    root, log = tmp_path / "res", tmp_path / "log"
    specs = expand(str(grid))
    p = start(grid, root, log)
    wait_until(lambda: len(results(root)) >= 1 and workers(p.pid), p, log)
    (child,) = workers(p.pid)
    n_before = len(results(root))
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    wait_until(lambda: not alive(child), None, log, timeout=30)  # the worker dies with its scheduler
    time.sleep(1)
    assert len(results(root)) == n_before  # the orphaned run wrote nothing
    only_complete_files(root)
    no_running_mlflow_runs(root)
    out = finish(grid, root, log)
    assert f"{n_before} already done, {len(specs) - n_before} to run" in out
    assert {r["status"] for r in results(root).values()} == {"success"} and len(results(root)) == len(specs)


@pytest.mark.slow
def test_kill_9_of_a_worker_is_a_failure_then_retried(tmp_path, grid):
    root, log = tmp_path / "res", tmp_path / "log"
    specs = expand(str(grid))
    p = start(grid, root, log)
    wait_until(lambda: workers(p.pid), p, log)
    (child,) = workers(p.pid)
    time.sleep(1)
    os.kill(child, signal.SIGKILL)
    assert p.wait(timeout=900) == 1, log.read_text()[-3000:]  # the grid goes on; the run is reported failed
    failed = [r for r in results(root).values() if r["status"] == "failed"]
    assert len(failed) == 1 and "worker killed" in failed[0]["error"]
    md = (root / "tables" / "resume.md").read_text()
    assert "— (worker killed" in md and f"{len(specs) - 1}/{len(specs)} runs succeeded" in md
    assert no_running_mlflow_runs(root) == {"FINISHED", "FAILED"}
    out = finish(grid, root, log)
    assert f"{len(specs) - 1} already done, 1 to run" in out
    assert {r["status"] for r in results(root).values()} == {"success"}
