"""Preemption-safe runs: a run stopped (by a signal, an exception, kill -9) and restarted from its checkpoint gives
bit-identical curves and metrics to an uninterrupted run; the checkpoint holds only what trains."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from peft3d.grids.loader import expand
from peft3d.schedule.claims import claim_log
from peft3d.training import checkpoint as ckpt
from peft3d.training import train as train_mod
from peft3d.training.train import train_run

TIMING = ("time", "memory", "finished_at", "environment", "resumed_from")


def spec_for(method: str = "lora", epochs: int = 3):
    s = next(s for s in expand("smoke") if s.method == method)
    return s.replace(budget=s.budget.__class__(**{**s.budget.__dict__, "epochs": epochs}), checkpoint_every=1)


def comparable(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TIMING}


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def reference():
    torch.set_num_threads(1)
    return train_run(spec_for()).to_dict()


@pytest.fixture(autouse=True)
def _reset_stop():
    yield
    ckpt.STOP.requested = False
    ckpt.STOP.armed = False


def test_resume_after_a_crash_between_epochs_is_bit_identical(tmp_path, reference):
    spec, path = spec_for(), tmp_path / "ck.pt"

    def crash(ev):
        if ev["epoch"] == 2:
            raise Stop  # like a kill right after the epoch-2 checkpoint was written

    with pytest.raises(Stop):
        train_run(spec, progress=crash, checkpoint=path)
    saved = ckpt.load(path, spec.run_id)
    assert saved["loop"]["epochs_done"] == 2 and saved["curves"]["epoch"] == [1, 2]
    assert saved["loop"]["wall_s"] > 0  # what the first segment spent, up to its checkpoint
    resumed = train_run(spec, checkpoint=path).to_dict()
    assert resumed["resumed_from"] == [2] and reference["resumed_from"] == []
    # the run's cost is both segments; total_s is this process alone
    t = resumed["time"]
    assert t["wall_s"] == pytest.approx(saved["loop"]["wall_s"] + t["total_s"], abs=0.05)
    assert reference["time"]["wall_s"] == pytest.approx(reference["time"]["total_s"], abs=0.05)
    assert resumed["metrics"]["curves"] == reference["metrics"]["curves"]
    assert comparable(resumed) == comparable(reference)


def test_stop_signal_mid_epoch_saves_and_resumes_bit_identically(tmp_path, reference, monkeypatch):
    spec, path = spec_for(), tmp_path / "ck.pt"
    calls = {"n": 0}
    batch = train_mod.TrainSampler.batch

    def batch_then_signal(self, idx, proto, rng):
        calls["n"] += 1
        if calls["n"] == 13 + 5:  # epoch 2 (13 steps per epoch), after 5 of its steps
            os.kill(os.getpid(), signal.SIGUSR1)  # what SLURM sends before a preemption
        return batch(self, idx, proto, rng)

    monkeypatch.setattr(train_mod.TrainSampler, "batch", batch_then_signal)
    old = signal.getsignal(signal.SIGUSR1)
    ckpt.STOP.install((signal.SIGUSR1,))
    try:
        with pytest.raises(ckpt.Preempted, match="epoch 2 step 5"):
            train_run(spec, checkpoint=path)
    finally:
        signal.signal(signal.SIGUSR1, old)
    saved = ckpt.load(path, spec.run_id)
    assert (saved["loop"]["epochs_done"], saved["loop"]["step"]) == (1, 5)
    ckpt.STOP.requested = False
    monkeypatch.setattr(train_mod.TrainSampler, "batch", batch)
    resumed = train_run(spec, checkpoint=path).to_dict()
    assert resumed["resumed_from"] == [1]
    assert comparable(resumed) == comparable(reference)


def test_checkpoint_holds_trainable_tensors_only(tmp_path):
    spec, path = spec_for("lora"), tmp_path / "ck.pt"
    from peft3d.methods.build import build_model

    with pytest.raises(Stop):
        train_run(spec, progress=lambda ev: (_ for _ in ()).throw(Stop()), checkpoint=path)
    saved = torch.load(path, weights_only=False)
    model, _ = build_model(spec, 15, device="cpu")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    params = {k.split(":", 1)[1] for k in saved["model"] if k.startswith("param:")}
    assert frozen and params == trainable and not params & frozen
    assert set(saved["rng"]) >= {"python", "numpy", "torch", "sampler"}


def test_a_checkpoint_of_another_run_is_ignored(tmp_path):
    spec, path = spec_for(), tmp_path / "ck.pt"
    ckpt.save(path, {"run_id": "someone-else"})
    assert ckpt.load(path, spec.run_id) is None


def test_checkpoint_every_is_not_part_of_the_run_id():
    s = spec_for()
    assert s.replace(checkpoint_every=7).run_id == s.run_id


# ---- real processes: kill -9 of a worker mid-run, restart ------------------------------------------------------

def _worker(spec, root: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PEFT3D_THREADS="1", PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "peft3d.schedule.worker", str(root)], stdin=subprocess.PIPE,
                         stdout=log.open("a"), stderr=subprocess.STDOUT, env=env, text=True)
    with p.stdin:  # the spec goes on stdin (no temp file)
        p.stdin.write(json.dumps(spec.to_dict()))
    return p


@pytest.mark.slow
def test_kill_9_mid_run_then_restart_is_bit_identical(tmp_path):
    spec = spec_for(epochs=6)
    ref_root, root, log = tmp_path / "ref", tmp_path / "res", tmp_path / "log"
    ref_root.mkdir()
    root.mkdir()
    assert _worker(spec, ref_root, log).wait(timeout=600) == 0, log.read_text()[-2000:]
    p = _worker(spec, root, log)
    path = ckpt.checkpoint_path(root, spec.run_id)
    t0 = time.time()
    while not (path.exists() and ckpt.load(path, spec.run_id)["loop"]["epochs_done"] >= 3):
        assert p.poll() is None and time.time() - t0 < 600, log.read_text()[-2000:]
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (root / "runs").exists() or not list((root / "runs").glob("*.json"))
    assert _worker(spec, root, log).wait(timeout=600) == 0, log.read_text()[-2000:]  # takes the dead claim over
    ref = json.loads((ref_root / "runs" / f"{spec.run_id}.json").read_text())
    res = json.loads((root / "runs" / f"{spec.run_id}.json").read_text())
    assert res["resumed_from"] and res["resumed_from"][0] >= 3
    assert res["metrics"]["curves"] == ref["metrics"]["curves"]
    assert comparable(res) == comparable(ref)
    assert not path.exists()  # removed after success
    assert [e["event"] for e in claim_log(root)] == ["claim", "takeover"]
