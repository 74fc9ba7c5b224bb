"""The MLflow mirror is complete: a finished run that MLflow lacks (its bench run was killed right after the
worker wrote the result, before mirroring) is mirrored by the next invocation, once."""
import os
import subprocess
import sys

import pytest

from peft3d.grids.loader import GRID_DIR, expand


def bench(*args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "peft3d", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def mirrored(root, experiment):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return sorted(r.data.tags["peft3d.run_id"] for r in client.search_runs([exp.experiment_id])) if exp else []


@pytest.mark.slow  # three bench invocations (~1-2 min on 2 shared cores); .ci/run runs it
def test_a_finished_run_missing_from_mlflow_is_backfilled_once(tmp_path):
    grid = tmp_path / "one.yaml"
    grid.write_text(f"include: {GRID_DIR / 'smoke.yaml'}\nmethods: [linear]\n"
                    "budget: {epochs: 1, batch_size: 32, eval_batch_size: 128, lr: 0.001, warmup_epochs: 1}\n")
    root = tmp_path / "res"
    (spec,) = expand(str(grid))
    # The state a kill between "result written" and "mirrored" leaves: the result on disk, nothing in MLflow.
    first = bench("run", "--grid", str(grid), "--results", str(root), "--no-mlflow")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert mirrored(root, "peft3d/one") == []
    second = bench("run", "--grid", str(grid), "--results", str(root))
    assert second.returncode == 0, second.stderr[-2000:]
    assert "1 already done, 0 to run" in second.stdout
    assert "mirrored 1 finished run(s) that MLflow lacked" in second.stdout
    assert mirrored(root, "peft3d/one") == [spec.run_id]
    third = bench("run", "--grid", str(grid), "--results", str(root))
    assert third.returncode == 0 and "mirrored" not in third.stdout  # idempotent: keyed by run_id
    assert mirrored(root, "peft3d/one") == [spec.run_id]
