"""Real services (started by .ci/run through .ci/services.sh): a one-node SLURM cluster, PostgreSQL, an MLflow
tracking server. Each test skips, with the reason, only when its service is not running here."""
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from test_submit import bench, claim_at_epoch, statuses, tiny_grid, wait_for

from peft3d.grids.loader import expand
from peft3d.schedule.claims import claim_log

pytestmark = [pytest.mark.services, pytest.mark.slow]  # .ci/run starts the services, then runs these


def slurm_up() -> str | None:
    """None when a SLURM controller answers; else why not."""
    if not shutil.which("sinfo"):
        return "sinfo not installed (Debian slurm-wlm; .ci/run installs and starts it)"
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    if out.returncode != 0 or not out.stdout.strip():
        return f"no SLURM controller answers (sinfo: {out.stderr.strip()[:200]}); start it with .ci/slurm.sh start"
    return None


def slurm_logs(root: Path) -> str:
    return "\n".join(f"== {p.name}\n{p.read_text()[-1500:]}" for p in sorted((root / "submitit").glob("*/*log.*")))


def test_slurm_array_every_run_once_and_scontrol_requeue_resumes(tmp_path):
    why = slurm_up()
    if why:
        pytest.skip(why)
    grid, root = tiny_grid(tmp_path, epochs=8), tmp_path / "res"  # a wide window between epoch 2 and the end
    specs = expand(str(grid))
    out = bench("submit", "--grid", str(grid), "--results", str(root), "--executor", "slurm", "--time", "00:30:00",
                "--cpus-per-task", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    subs = {json.loads(x)["run_id"]: json.loads(x) for x in (root / "submissions.jsonl").read_text().splitlines()}
    assert sorted(subs) == sorted(s.run_id for s in specs)
    assert len({s["job_id"].split("_")[0] for s in subs.values()}) == 1  # one job array
    lora = next(s for s in specs if s.method == "lora")
    info = wait_for(lambda: claim_at_epoch(root, lora.run_id, 2), "lora at epoch 2", log=lambda: slurm_logs(root))
    job = subs[lora.run_id]["job_id"]
    req = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    assert req.returncode == 0, req.stderr
    wait_for(lambda: set(statuses(grid, root).values()) == {"done"}, "every run done", timeout=900,
             log=lambda: slurm_logs(root))
    events = claim_log(root)
    print("\n".join(f"{e['event']:8} run {e['run_id']} by {e['slot']} pid {e['pid']} restart "
                    f"{e.get('slurm_restart_count', '0')}" for e in events))  # the closing note's log
    ran = [e for e in events if e["run_id"] == lora.run_id]
    assert len(ran) == 2 and ran[1].get("slurm_restart_count") == "1", events
    assert all(len([e for e in events if e["run_id"] == s.run_id]) == 1 for s in specs if s is not lora)
    result = json.loads((root / "runs" / f"{lora.run_id}.json").read_text())
    print(f"lora claimed at epoch {info['epoch']}, requeued; resumed_from {result['resumed_from']}")
    assert result["resumed_from"] and result["resumed_from"][0] >= 2
    import torch

    from peft3d.training.train import train_run

    torch.set_num_threads(1)
    reference = train_run(lora).to_dict()
    assert result["metrics"] == json.loads(json.dumps(reference["metrics"]))


# ---- MLflow tracking server ---------------------------------------------------------------------------------

MLFLOW_URI = os.environ.get("PEFT3D_TEST_MLFLOW_URI", "http://127.0.0.1:5055")


def mlflow_up() -> str | None:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{MLFLOW_URI}/health", timeout=5) as r:
            return None if r.status == 200 else f"{MLFLOW_URI}/health answered {r.status}"
    except OSError as e:
        return f"no MLflow server at {MLFLOW_URI} ({e}); start it with .ci/services.sh start"


def test_runs_are_logged_to_a_tracking_server(tmp_path):
    why = mlflow_up()
    if why:
        pytest.skip(why)
    import mlflow

    grid = tmp_path / f"srv{int(time.time() * 1000)}.yaml"  # a fresh experiment name on a shared server
    grid.write_text(tiny_grid(tmp_path, epochs=1).read_text())
    root = tmp_path / "res"
    out = bench("run", "--grid", str(grid), "--results", str(root), "--jobs", "2", "--tracking-uri", MLFLOW_URI)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    client = mlflow.MlflowClient(MLFLOW_URI)
    exp = client.get_experiment_by_name(f"peft3d/{grid.stem}")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["peft3d.run_id"] for r in runs) == sorted(s.run_id for s in expand(str(grid)))
    assert not (root / "mlflow.db").exists()


def test_a_tune_is_logged_to_a_tracking_server(tmp_path):
    why = mlflow_up()
    if why:
        pytest.skip(why)
    import mlflow

    grid = tmp_path / f"tunesrv{int(time.time() * 1000)}.yaml"
    grid.write_text(tiny_grid(tmp_path, epochs=1).read_text().replace("methods: [linear, lora]", "methods: [linear]"))
    root = tmp_path / "res"
    out = bench("tune", "--grid", str(grid), "--results", str(root), "--trials", "1", "--tracking-uri", MLFLOW_URI)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    client = mlflow.MlflowClient(MLFLOW_URI)
    exp = client.get_experiment_by_name(f"peft3d/{grid.stem}/tune")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags.get("peft3d.role") for r in runs) == ["study", "trial"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert not (root / "mlflow.db").exists()


# ---- PostgreSQL: tuning workers sharing the studies -----------------------------------------------------------

PG_URL = os.environ.get("PEFT3D_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:54329/peft3d")


def postgres_up() -> str | None:
    try:
        import psycopg2
    except ImportError:
        return "psycopg2 not installed (pip install -e '.[test]')"
    try:
        psycopg2.connect(PG_URL, connect_timeout=5).close()
    except psycopg2.OperationalError as e:
        why = " ".join(str(e).split())[:150]
        return f"no PostgreSQL at {PG_URL} ({why}); start it with .ci/services.sh start postgres"
    return None


def fresh_database() -> str:
    """A new database on the test server (studies of earlier test runs must not count)."""
    import psycopg2

    name = f"tune{int(time.time() * 1000)}"
    conn = psycopg2.connect(PG_URL)
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    conn.close()
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def start_tune_worker(root: Path, storage: str, log: Path) -> subprocess.Popen:
    import sys

    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "peft3d", "tune", "--grid", "smoke", "--trials", "3", "--results",
                             str(root), "--storage", storage, "--heartbeat", "2", "--no-mlflow", "--pruner", "none"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def test_two_tune_workers_on_postgres_equal_budgets_and_a_killed_workers_trial_is_retried(tmp_path):
    why = postgres_up()
    if why:
        pytest.skip(why)
    import signal

    import optuna
    from optuna.trial import TrialState

    from peft3d.tuning.budget import counts
    from peft3d.tuning.cells import cells_of
    from peft3d.tuning.final import read_manifest
    from peft3d.tuning.sharing import open_storage

    storage_url = fresh_database()
    root = tmp_path / "res"
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    a, b = (start_tune_worker(root, storage_url, log) for log in logs)
    storage = open_storage(storage_url, 2)

    def running_of(proc):  # the trial worker b holds, once it has one that it has started training
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
            st = optuna.load_study(study_name=s.study_name, storage=storage)
            for t in st.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if f"/{proc.pid}/" in t.user_attrs.get("peft3d.owner", "") and "peft3d.run_id" in t.user_attrs:
                    return s.study_name, t.number
        return None

    try:
        killed = wait_for(lambda: running_of(b) if " trial " in logs[1].read_text() else None,
                          "worker b in its second trial", timeout=600, log=lambda: logs[1].read_text()[-2000:])
        os.killpg(b.pid, signal.SIGKILL)  # the worker and its training process
        b.wait(timeout=60)
        # 18 trials + 6 tuned runs: ~5 min on 2 idle cores; measured 30 min on 2 cores shared with 6 others
        assert a.wait(timeout=2700) == 0, logs[0].read_text()[-3000:]
    finally:
        for p in (a, b):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    text_a = logs[0].read_text()
    print(f"killed worker b (pid {b.pid}) in trial {killed[1]} of {killed[0]}")
    studies = {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
               for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    assert len(studies) == len(cells_of(expand("smoke"), "smoke"))
    owners = set()
    for name, st in studies.items():
        c = counts(st)
        counted = [t for t in st.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                   or (t.state == TrialState.FAIL and "peft3d.error" in t.user_attrs)]
        print(f"{name}: {c}")
        assert c["counted"] == 3 and len(counted) == 3 and c["running"] == 0, (name, c)
        assert len({t.user_attrs["peft3d.run_id"] for t in counted}) == 3  # no configuration counted twice
        owners |= {t.user_attrs["peft3d.owner"].split("/")[1] for t in counted}
    assert owners == {str(a.pid), str(b.pid)}  # both workers counted trials
    dead = {t.number: t for t in studies[killed[0]].trials}
    assert dead[killed[1]].state == TrialState.FAIL and "peft3d.error" not in dead[killed[1]].user_attrs
    retries = [t for t in dead.values() if t.system_attrs.get("failed_trial") == killed[1]]
    print(f"retried trial {killed[1]} as trial(s) {[t.number for t in retries]} by pid "
          f"{[t.user_attrs['peft3d.owner'].split('/')[1] for t in retries]}: {[t.state.name for t in retries]}")
    assert len(retries) == 1 and retries[0].params == dead[killed[1]].params
    assert retries[0].state == TrialState.COMPLETE and f"/{a.pid}/" in retries[0].user_attrs["peft3d.owner"]
    assert f"[{killed[1]}]" in text_a and "retried" in text_a
    manifest = read_manifest(root, "smoke")
    assert manifest["equal_budget"] and {s["counted"] for s in manifest["studies"].values()} == {3}
