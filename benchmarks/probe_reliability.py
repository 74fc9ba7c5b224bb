"""Hostile-user probes of the ``bench`` CLI (what a careless or adversarial user types), each run as a real
subprocess, counted by outcome.

    python benchmarks/probe_reliability.py [--tree PATH] [--json OUT] [--slow]

``--tree`` is the checkout whose peft3d is probed (default: this one), so the same probes measure an older
commit too: ``git worktree add /tmp/old <commit>`` then ``--tree /tmp/old``. ``--slow`` adds the probes that
train (a killed ``bench run``, ``bench tune`` on a grid named ``o'neil.yaml``; about a minute each on 2 cores).

Outcomes: ``traceback`` (a Python traceback reached the user), ``accepted`` (a bad input passed: exit 0, or a
bad result counted as a success), ``clean`` (non-zero exit, no traceback), ``valid`` (a genuinely valid input
accepted) and ``refused-valid`` (a valid input rejected). Only the CLI is used, so any commit can be probed.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

BAD_GRIDS = [
    "budget: {lr: .nan}", "budget: {lr: .inf}", 'budget: "fast"', "head: {hidden: wide}", "head: {dropout: 1.5}",
    "num_points: lots", "num_points: -64", "seeds: [a]", "seeds: [-1]", 'methods: [{name: lora, cfg: "r=4"}]',
    "methods: [{preset: x}]", "budget: {epochs: 1.5}", "budget: {epochs: .inf}", "budget: {epochs: 1e12}",
    "budget: {batch_size: 1e12}", "budget: {batch_size: 0}", "budget: {lr: -1}", "budget: {weight_decay: high}",
    "device: banana", "weights: [nonsense]", "backbones: [123]", "method_cfg: {lora: {r: four}}",
    "method_cfg: {lora: {alpha: .nan}}", "method_cfg: {lora: 4}", "tokenizer: {k: 0.5}",
    "tokenizer: {out_norm: maybe}", "protocol: [plain]", "description: [a]", "budget: [1, 2]", "head: 5",
]
VALID_GRIDS = ["budget: {lr: 1e-3}", "budget: {lr: 5.0e-4, min_lr: 1e-7}", "seeds: [0, 1]"]


@dataclass
class Probe:
    kind: str
    name: str
    outcome: str
    line: str


def bench(tree: Path, args: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> tuple[int, str]:
    """``python -m peft3d ARGS`` from ``tree``; ``cwd`` is a scratch folder, since ``-m`` puts the working folder
    ahead of PYTHONPATH and a checkout's root would shadow ``tree``."""
    e = dict(os.environ, PYTHONPATH=str(tree), HF_HUB_OFFLINE="1", COLUMNS="200", **(env or {}))
    p = subprocess.run([sys.executable, "-m", "peft3d", *args], cwd=cwd, env=e, capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout + p.stderr


def classify(code: int, out: str, bad: bool, accepted: bool | None = None) -> str:
    if "Traceback (most recent call last)" in out:
        return "traceback"
    ok = code == 0 if accepted is None else accepted
    if bad:
        return "accepted" if ok else "clean"
    return "valid" if ok else "refused-valid"


def last_line(out: str) -> str:
    lines = [x for x in out.strip().splitlines() if x.strip()]
    return lines[-1][:160] if lines else ""


def grid_probes(tree: Path, work: Path) -> list[Probe]:
    smoke = tree / "peft3d" / "grids" / "files" / "smoke.yaml"
    if not smoke.exists():
        smoke = tree / "peft3d" / "bench" / "grids" / "smoke.yaml"
    out = []
    for i, body in enumerate(BAD_GRIDS + VALID_GRIDS):
        g = work / f"grid{i}.yaml"
        g.write_text(f"include: {smoke}\n{body}\n")
        code, text = bench(tree, ["validate", "--grid", str(g)], work)
        out.append(Probe("grid", body, classify(code, text, body in BAD_GRIDS), last_line(text)))
    return out


def _smoke_results(tree: Path, root: Path) -> list[str]:
    """Success results for the smoke grid, written as plain JSON in the long-standing layout (schema 1)."""
    code = (
        "import json, sys\n"
        "from peft3d.grids.loader import expand\n"
        "print(json.dumps([[s.run_id, s.to_dict(), s.label] for s in expand('smoke')]))\n")
    p = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(tree)), capture_output=True,
                       text=True, check=False, cwd=root.parent)  # never the caller's folder: it may hold a peft3d/
    if p.returncode:  # the old layout
        code = code.replace("peft3d.grids.loader", "peft3d.bench.grids")
        p = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(tree)),
                           capture_output=True, text=True, check=True, cwd=root.parent)
    template = json.loads((HERE / "tests" / "golden" / "results.json").read_text())["results"][0]
    (root / "runs").mkdir(parents=True, exist_ok=True)
    ids = []
    for rid, spec, label in json.loads(p.stdout):
        r = dict(template, run_id=rid, spec=spec, label=label)
        r["backbone"] = {"pretrain_modality": "none"}
        (root / "runs" / f"{rid}.json").write_text(json.dumps(r, indent=1, sort_keys=True))
        ids.append(rid)
    return ids


def _result_cases(template: dict) -> dict[str, object]:
    def metric(**kw):
        r = json.loads(json.dumps(template))
        r["metrics"].update(kw)
        return json.dumps(r).encode()

    no_metrics = json.loads(json.dumps(template))
    del no_metrics["metrics"]
    return {
        "non-UTF-8 bytes": b"\xff\xfe{}", "a directory at runs/<id>.json": "dir", "torn JSON": b'{"status": "succ',
        "a JSON list": b"[1]", '"metrics": "oops"': json.dumps(dict(template, metrics="oops")).encode(),
        "success without metrics": json.dumps(no_metrics).encode(), "test_acc 2.0": metric(test_acc=2.0),
        'test_acc "high"': metric(test_acc="high"), "test_acc NaN": metric(test_acc=float("nan")),
        "val_acc Infinity": metric(val_acc=float("inf")), "test_acc -0.1": metric(test_acc=-0.1),
        "n_test 2.5": metric(n_test=2.5), "schema 99": json.dumps(dict(template, schema=99)).encode(),
        "status great": json.dumps(dict(template, status="great")).encode(),
    }


def result_probes(tree: Path, work: Path) -> list[Probe]:
    out = []
    for i, name in enumerate(_result_cases(json.loads((HERE / "tests/golden/results.json").read_text())["results"][0])):
        root = work / f"res-{i}"
        ids = _smoke_results(tree, root)
        path = root / "runs" / f"{ids[0]}.json"
        content = _result_cases(json.loads(path.read_text()))[name]  # the run's own good record, spoiled
        path.unlink()
        if content == "dir":
            path.mkdir()
        else:
            assert isinstance(content, bytes)
            path.write_bytes(content)
        for args in (["table", "--grid", "smoke"], ["run", "--grid", "smoke", "--dry-run"]):
            code, text = bench(tree, [*args, "--results", str(root)], work)
            counted = f"{len(ids)}/{len(ids)} runs succeeded" in text or " 0 to run" in text
            out.append(Probe(f"results:{args[0]}", name, classify(code, text, True, accepted=counted),
                             last_line(text)))
    return out


def store_probes(tree: Path, work: Path) -> list[Probe]:
    out = []
    f = work / "results-is-a-file"
    f.write_text("")
    code, text = bench(tree, ["table", "--grid", "smoke", "--results", str(f)], work)
    out.append(Probe("store", "results path is a file", classify(code, text, True), last_line(text)))
    ro = work / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                             capture_output=True).returncode == 0
    if mounted:
        try:
            for args in (["table", "--grid", "smoke"], ["report", "--grid", "smoke"]):
                code, text = bench(tree, [*args, "--results", str(ro)], work)
                out.append(Probe("store", f"read-only results folder: {args[0]}", classify(code, text, True),
                                 last_line(text)))
        finally:
            subprocess.run(["umount", str(ro)], check=False)
    return out


def data_probes(tree: Path, work: Path) -> list[Probe]:
    import h5py
    import numpy as np

    sys.path.insert(0, str(HERE / "tests"))
    from test_datasets_formats import write_scan

    out = []
    huge = write_scan(work / "huge")
    split = next((huge).rglob("training_*.h5"))
    with h5py.File(split, "w") as f:
        f.create_dataset("data", shape=(10**7, 2048, 3), dtype="f4", chunks=(1, 2048, 3))
        f.create_dataset("label", shape=(10**7,), dtype="u1", chunks=(1024,))
    empty = write_scan(work / "empty", n=(0, 15))
    cases = {"h5 declaring 10^7 x 2048 x 3": huge, "0 training samples": empty}
    for name, edit in (("manifest without counts", lambda m: m.pop("counts")),
                       ("class names as a dict", lambda m: m.update(class_names={"0": "cube"}))):
        d = work / name.replace(" ", "_")
        code, text = bench(tree, ["data", "export", "synthetic", "--format", "scanobjectnn", "--out", str(d)], work,
                           env={"PEFT3D_CACHE": str(work / "cache")})
        m = json.loads((d / "peft3d_export.json").read_text())
        edit(m)
        (d / "peft3d_export.json").write_text(json.dumps(m))
        cases[name] = d
    for name, root in cases.items():
        code, text = bench(tree, ["data", "check", "scanobjectnn", "--root", str(root)], work,
                           env={"PEFT3D_CACHE": str(work / "cache")})
        out.append(Probe("data", name, classify(code, text, True), last_line(text)))
    del np
    return out


def _has_worker(parent: int) -> bool:
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and f" {parent} " in (d / "stat").read_text().split(")")[-1][:40] and \
                    b"worker" in (d / "cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def slow_probes(tree: Path, work: Path) -> list[Probe]:
    smoke = next(p for p in (tree / "peft3d/grids/files/smoke.yaml", tree / "peft3d/bench/grids/smoke.yaml")
                 if p.exists())
    tiny = work / "tiny.yaml"
    tiny.write_text(f"include: {smoke}\nmethods: [linear]\nbudget: {{epochs: 1}}\n")
    out = []
    tmp = work / "tmp"
    tmp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(tree), HF_HUB_OFFLINE="1", TMPDIR=str(tmp))
    p = subprocess.Popen([sys.executable, "-m", "peft3d", "run", "--grid", str(tiny), "--results",
                          str(work / "killed"), "--no-mlflow"], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, cwd=work)
    deadline = time.time() + 300
    while time.time() < deadline and not _has_worker(p.pid):  # kill -9 once a run is under way
        time.sleep(0.5)
    time.sleep(1)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(2)
    left = sorted(x.name for x in tmp.glob("peft3d-*.json"))
    out.append(Probe("kill", "kill -9 during bench run: temp spec files left", "accepted" if left else "clean",
                     ", ".join(left) or "none"))
    oneil = work / "o'neil.yaml"
    oneil.write_text(tiny.read_text())
    code, text = bench(tree, ["tune", "--grid", str(oneil), "--trials", "1", "--results", str(work / "tune")], work,
                       timeout=600)
    out.append(Probe("tune", "bench tune --grid o'neil.yaml", classify(code, text, False), last_line(text)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", type=Path, default=HERE)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--slow", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="peft3d-probe-") as d:
        work = Path(d)
        probes = grid_probes(a.tree, work) + result_probes(a.tree, work) + store_probes(a.tree, work) + \
            data_probes(a.tree, work) + (slow_probes(a.tree, work) if a.slow else [])
    for p in probes:
        print(f"{p.outcome:13s} {p.kind:16s} {p.name:40s} | {p.line}")
    counts: dict[str, int] = {}
    for p in probes:
        counts[p.outcome] = counts.get(p.outcome, 0) + 1
    print(f"{len(probes)} probes: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if a.json:
        a.json.write_text(json.dumps({"counts": counts, "probes": [p.__dict__ for p in probes]}, indent=1))


if __name__ == "__main__":
    main()
