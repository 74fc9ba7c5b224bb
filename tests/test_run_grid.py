"""End to end: `bench run` on the smoke grid in worker processes, resume, tables from JSONs, failures."""
import json
import os
import subprocess
import sys

import pytest

from peft3d.grids.loader import expand
from peft3d.reporting.tables import render_markdown, runs_frame

BENCH = [sys.executable, "-m", "peft3d"]


def bench(*args, cwd=None, check=False):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, cwd=cwd, env=env, check=check)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    out = bench("run", "--grid", "smoke", "--results", str(root), "--jobs", "2")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return root, out


def test_smoke_grid_runs_every_cell(smoke):
    root, out = smoke
    specs = expand("smoke")
    files = sorted(p.stem for p in (root / "runs").glob("*.json"))
    assert files == sorted(s.run_id for s in specs)
    for s in specs:
        r = json.loads((root / "runs" / f"{s.run_id}.json").read_text())
        assert r["status"] == "success" and r["spec"]["method"] == s.method
        assert r["frozen_weights_unchanged"] is True
    md = (root / "tables" / "smoke.md").read_text()
    n = len(specs)
    assert "| test_bert" in md and f"{n}/{n} runs succeeded" in md
    assert "binomial SE" in md
    assert (root / "tables" / "smoke.csv").read_text().count("\n") == n + 1
    assert (root / "mlflow.db").exists()
    assert not list((root / "runs").glob(".*tmp"))  # no temp files left behind


def test_rerun_trains_nothing(smoke):
    root, _ = smoke
    before = {p: p.stat().st_mtime_ns for p in (root / "runs").glob("*.json")}
    out = bench("run", "--grid", "smoke", "--results", str(root), "--no-mlflow")
    assert out.returncode == 0
    n = len(expand("smoke"))
    assert f"{n} already done, 0 to run" in out.stdout
    assert {p: p.stat().st_mtime_ns for p in (root / "runs").glob("*.json")} == before


def test_mlflow_mirror_has_every_run(smoke):
    import mlflow

    root, _ = smoke
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("peft3d/smoke")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["peft3d.run_id"] for r in runs) == sorted(s.run_id for s in expand("smoke"))
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all("test_acc" in r.data.metrics for r in runs)


def test_failed_and_missing_cells_are_blank_with_reason(smoke, tmp_path):
    root, _ = smoke
    specs = expand("smoke")
    # copy the results, then turn one into a failure and delete another
    for p in (root / "runs").glob("*.json"):
        (tmp_path / "runs").mkdir(exist_ok=True)
        (tmp_path / "runs" / p.name).write_text(p.read_text())
    lora = next(s for s in specs if s.method == "lora")
    prompt = next(s for s in specs if s.method == "prompt")
    r = json.loads((tmp_path / "runs" / f"{lora.run_id}.json").read_text())
    r.update(status="failed", error="RuntimeError: out of memory")
    (tmp_path / "runs" / f"{lora.run_id}.json").write_text(json.dumps(r))
    (tmp_path / "runs" / f"{prompt.run_id}.json").unlink()
    df = runs_frame(specs, tmp_path)
    assert df.loc[df.method == "lora", "test_acc"].isna().all()  # the failed run's number is not used
    md = render_markdown("smoke", df)
    assert "— (RuntimeError: out of memory)" in md and "— (not run yet)" in md
    n = len(specs)
    assert f"{n - 2}/{n} runs succeeded" in md


def test_a_failing_run_costs_one_cell(tmp_path):
    grid = tmp_path / "bad.yaml"
    grid.write_text("backbones: [test_bert]\nweights: [random]\nmethods: [linear]\ndatasets: [synthetic]\n"
                    "num_points: 2048\nbudget: {epochs: 1}\n"
                    "tokenizer: {num_stages: 2, embed_dim: 8, k: 8, lga_blocks: [1, 1]}\n")
    out = bench("run", "--grid", str(grid), "--results", str(tmp_path / "res"), "--no-mlflow")
    assert out.returncode == 1
    (res,) = (tmp_path / "res" / "runs").glob("*.json")
    r = json.loads(res.read_text())
    assert r["status"] == "failed" and "num_points=2048 exceeds the 1024 points" in r["error"]
    assert "— (user error: num_points=2048" in (tmp_path / "res" / "tables" / "bad.md").read_text()
