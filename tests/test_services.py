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
    grid, root = tiny_grid(tmp_path, epochs=5), tmp_path / "res"
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
