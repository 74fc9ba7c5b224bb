"""Claims and device slots: several schedulers on one results folder run every run exactly once."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from peft3d.core.errors import ConfigError
from peft3d.core.result import RunResult, write_result
from peft3d.grids.loader import GRID_DIR, expand
from peft3d.schedule import claims
from peft3d.schedule.devices import parse_devices


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write_claim(root, run_id, **info):
    claims.claims_dir(root).mkdir(parents=True, exist_ok=True)
    (claims.claims_dir(root) / f"{run_id}.json").write_text(json.dumps(info))


def test_a_live_claim_is_exclusive_and_released(tmp_path):
    held = claims.claim(tmp_path, "abc", slot="cpu0")
    assert held is not None and held.info["slot"] == "cpu0" and held.info["pid"] == os.getpid()
    assert claims.claim(tmp_path, "abc") is None  # held by a live process (this one)
    assert claims.holder(tmp_path, "abc")["owner"] == held.info["owner"]
    held.beat(epoch=3)
    assert claims.holder(tmp_path, "abc")["epoch"] == 3
    held.release()
    assert claims.holder(tmp_path, "abc") is None
    again = claims.claim(tmp_path, "abc")
    assert again is not None
    again.release()
    assert [e["event"] for e in claims.claim_log(tmp_path)] == ["claim", "claim"]


def test_a_done_run_is_not_claimed(tmp_path):
    write_result(tmp_path, RunResult.from_dict({"run_id": "abc", "status": "success", "spec": {},
                                                "metrics": {"test_acc": 0.5, "val_acc": 0.5}}))
    assert claims.claim(tmp_path, "abc") is None


def test_dead_owner_on_this_host_is_taken_over(tmp_path):
    dead = f"{socket.gethostname()}/{_dead_pid()}/1"
    _write_claim(tmp_path, "abc", owner=dead, heartbeat=time.time())
    assert claims.holder(tmp_path, "abc") is None
    held = claims.claim(tmp_path, "abc")
    assert held is not None
    (entry,) = claims.claim_log(tmp_path)
    assert entry["event"] == "takeover" and entry["previous"] == dead
    held.release()


def test_another_hosts_claim_is_stale_only_after_the_grace_period(tmp_path):
    _write_claim(tmp_path, "fresh", owner="node-7/123/456", heartbeat=time.time() - 10)
    _write_claim(tmp_path, "old", owner="node-7/124/456", heartbeat=time.time() - claims.GRACE_S - 60)
    assert claims.claim(tmp_path, "fresh") is None
    assert claims.holder(tmp_path, "old") is None
    held = claims.claim(tmp_path, "old")
    assert held is not None
    assert set(claims.live_claims(tmp_path)) == {"fresh", "old"}
    held.release()


def test_a_taken_over_claim_is_lost_for_its_old_owner(tmp_path):
    held = claims.claim(tmp_path, "abc")
    _write_claim(tmp_path, "abc", owner="node-7/1/1", heartbeat=time.time())  # someone else took it over
    held.beat()
    assert held.lost
    held.release()  # does not remove the new owner's claim
    assert claims.holder(tmp_path, "abc")["owner"] == "node-7/1/1"


def test_device_slots(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    slots = parse_devices("cuda:0,cuda:2", per_device=2)
    assert [s.name for s in slots] == ["cuda:4#0", "cuda:4#1", "cuda:6#0", "cuda:6#1"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in slots] == ["4", "4", "6", "6"]
    assert {s.device for s in slots} == {"cuda"}
    assert [s.name for s in parse_devices("auto", want_cuda=True)] == ["cuda:4", "cuda:5", "cuda:6"]
    cpu = parse_devices("auto", want_cuda=False)
    assert len(cpu) == len(os.sched_getaffinity(0)) and all(s.threads == 1 and not s.env for s in cpu)
    assert [s.name for s in parse_devices(None, jobs=3)] == ["cpu0", "cpu1", "cpu2"]
    with pytest.raises(ConfigError, match="only 3 GPU"):
        parse_devices("cuda:3")
    with pytest.raises(ConfigError, match="--devices expects"):
        parse_devices("gpu0")
    with pytest.raises(ConfigError, match="twice"):
        parse_devices("cuda:1,cuda:1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError, match="no GPU is visible"):
        parse_devices("auto", want_cuda=True)


@pytest.mark.slow  # ~1-3 min on 2 shared cores; .ci/run runs it with the services tests
def test_three_bench_runs_on_one_folder_train_every_run_once(tmp_path):
    grid = tmp_path / "three.yaml"
    grid.write_text(f"include: {GRID_DIR / 'smoke.yaml'}\nmethods: [linear, prompt, lora]\n"
                    "budget: {epochs: 1, batch_size: 32, eval_batch_size: 128, lr: 0.001, warmup_epochs: 1}\n")
    root = tmp_path / "res"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "peft3d", "run", "--grid", str(grid), "--results", str(root), "--jobs", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for _ in range(3)]  # started together, on a fresh folder (MLflow's database does not exist yet)
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n=====\n".join(o[-2000:] for o in outs)
    specs = expand(str(grid))
    log = claims.claim_log(root)
    assert sorted(e["run_id"] for e in log) == sorted(s.run_id for s in specs)  # each run claimed (trained) once
    assert all(e["event"] == "claim" for e in log)
    for s in specs:
        r = json.loads((root / "runs" / f"{s.run_id}.json").read_text())
        assert r["status"] == "success" and r["resumed_from"] == []
    assert all(f"{len(specs)}/{len(specs)} runs succeeded" in o for o in outs)  # each waits for all, then tables
    assert not list(claims.claims_dir(root).glob("*.json"))  # every claim released
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("peft3d/three")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["peft3d.run_id"] for r in runs) == sorted(s.run_id for s in specs)  # once each
