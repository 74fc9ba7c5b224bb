"""``bench reproduce``: recorded runs re-trained with today's code compare exactly, a changed number is found,
the sample is stratified by code commit and reproducible, and bad input is one line with exit 2."""
import json
import os
import subprocess
import sys

import pytest

from peft3d.core.result import RunResult, write_result
from peft3d.grids.loader import expand
from peft3d.training import reproduce as rep

BENCH = [sys.executable, "-m", "peft3d"]


def bench(*args):
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                          timeout=600)


def metrics(**change):
    m = {"val_acc": 0.5, "test_acc": 0.4, "selected_epoch": 2,
         "curves": {"epoch": [1, 2, 3], "val_acc": [0.25, 0.5, 0.5], "train_loss": [2.0, 1.5, 1.25]}}
    for k, v in change.items():
        if k in m["curves"]:
            m["curves"][k] = v
        else:
            m[k] = v
    return m


def test_identical_metrics_have_no_differences():
    assert rep.compare(metrics(), metrics()) == []


def test_a_changed_curve_is_named_with_its_first_epoch_and_largest_gap():
    out = rep.compare(metrics(), metrics(train_loss=[2.0, 1.5, 1.0], val_acc=[0.25, 0.5, 0.5, 0.75]))
    assert out == ["curves.train_loss: differs from epoch 3 (max |Δ| 0.25; 3 epochs recorded, 3 now)",
                   "curves.val_acc: differs from epoch 4 (max |Δ| 0; 3 epochs recorded, 4 now)"]  # longer, same prefix


def test_a_changed_scalar_is_named():
    assert rep.compare(metrics(), metrics(selected_epoch=3)) == ["selected_epoch: 2 recorded, 3 now"]


def result(run_id: str, sha: str | None) -> RunResult:
    env = {"git_sha": sha} if sha else {}
    return RunResult(run_id=run_id, status="success", spec={}, sections={"environment": env})


def test_the_sample_takes_one_run_per_commit_in_turn_and_is_fixed_by_its_seed():
    runs = [result(f"a{i}", "a" * 40) for i in range(6)] + [result("b0", "b" * 40)] + [result("u0", None)]
    chosen = rep.pick(runs, 3, seed=0)
    assert sorted(rep.commit_of(r) for r in chosen) == ["a" * 12, "b" * 12, "unknown"]
    assert [r.run_id for r in rep.pick(runs, 5, seed=0)] == [r.run_id for r in rep.pick(runs, 5, seed=0)]
    assert len({r.run_id for r in rep.pick(runs, 5, seed=0)}) == 5
    assert {r.run_id for r in rep.pick(runs, 20, seed=1)} == {r.run_id for r in runs}  # capped at what exists
    draws = {tuple(r.run_id for r in rep.pick(runs, 4, seed=s)) for s in range(6)}
    assert len(draws) > 1  # the seed, not the file order, decides within a commit


def test_environment_changes_that_can_move_numbers_are_listed():
    then = {"packages": {"torch": "2.14.1", "numpy": "2.4.6"}, "torch_threads": 1, "device": "cpu",
            "platform": "Linux-a"}
    now = {"packages": {"torch": "2.15.0", "numpy": "2.4.6"}, "torch_threads": 1, "device": "cpu",
           "platform": "Linux-b"}
    assert rep.environment_changes(then, now) == ["packages.torch: 2.14.1 recorded, 2.15.0 now"]


def test_another_cpu_is_named_and_an_unrecorded_one_is_said():
    base = {"packages": {"torch": "2.14.1"}, "torch_threads": 1, "device": "cpu"}
    avx2, avx512 = "AMD EPYC 7B13 (torch kernels: AVX2)", "Intel(R) Xeon(R) Processor (torch kernels: AVX512)"
    assert rep.environment_changes({**base, "cpu": avx2}, {**base, "cpu": avx512}) == [
        f"cpu: {avx2} recorded, {avx512} now"]
    assert rep.environment_changes({**base, "cpu": avx512}, {**base, "cpu": avx512}) == []
    assert rep.environment_changes(base, {**base, "cpu": avx512}) == [
        f"cpu: not recorded, {avx512} now (another kind of CPU trains differently)"]


def test_every_result_records_its_cpu_and_kernel_instruction_set():
    import torch

    from peft3d.core.environment import environment

    cpu = environment("cpu")["cpu"]
    assert cpu.endswith(f"(torch kernels: {torch.backends.cpu.get_cpu_capability()})")
    assert not cpu.startswith(" (")  # a processor name precedes it


def test_the_cpu_is_named_with_its_family_and_model_from_cpuinfo():
    from peft3d.core.environment import model_from_cpuinfo

    two = ("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
           "model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx512f\n\n"
           "processor\t: 1\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7B13\n")
    assert model_from_cpuinfo(two) == "Intel(R) Xeon(R) Processor, family 6 model 143"  # the first processor's
    assert model_from_cpuinfo("processor\t: 0\nmodel name\t: Some CPU\n") == "Some CPU"
    assert model_from_cpuinfo("processor\t: 0\nFeatures\t: fp asimd\n") is None  # e.g. an ARM kernel: no name


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One tiny run trained and written like a worker writes it."""
    import torch

    from peft3d.training.train import train_run

    root = tmp_path_factory.mktemp("recorded")
    spec = next(s for s in expand("smoke") if s.method == "linear")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        write_result(root, train_run(spec))
    finally:
        torch.set_num_threads(threads)
    return root, spec.run_id


def test_a_recorded_run_retrains_identically_and_nothing_is_written(recorded):
    root, run_id = recorded
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    out = bench("reproduce", "--results", str(root), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    [row] = json.loads(out.stdout)
    assert row["run_id"] == run_id and row["identical"] is True and row["differences"] == []
    assert row["environment_changes"] == []  # the CPU is recorded and the same
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_a_changed_number_in_a_result_file_is_found_and_exits_1(recorded, tmp_path):
    root, run_id = recorded
    data = json.loads((root / "runs" / f"{run_id}.json").read_text())
    data["metrics"]["curves"]["train_loss"][1] += 0.125
    tampered = tmp_path / "tampered"
    (tampered / "runs").mkdir(parents=True)
    (tampered / "runs" / f"{run_id}.json").write_text(json.dumps(data))
    out = bench("reproduce", "--results", str(tampered), "--run", run_id)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "DIFFERS" in out.stdout and "curves.train_loss: differs from epoch 2 (max |Δ| 0.125" in out.stdout
    assert out.stdout.strip().endswith("0 of 1 identical; 1 differ")


def test_same_cpu_draws_only_runs_recorded_on_this_cpu(recorded, tmp_path):
    root, run_id = recorded
    out = bench("reproduce", "--results", str(root), "--same-cpu")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("re-training 1 of 1 runs recorded on this CPU (from 1 code commit(s))")
    data = json.loads((root / "runs" / f"{run_id}.json").read_text())
    data["environment"]["cpu"] = "Another CPU (torch kernels: AVX2)"
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "runs").mkdir(parents=True)
    (elsewhere / "runs" / f"{run_id}.json").write_text(json.dumps(data))
    out = bench("reproduce", "--results", str(elsewhere), "--same-cpu")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stdout + out.stderr
    assert "--same-cpu: no run in" in out.stderr and "was recorded on this CPU (" in out.stderr


@pytest.mark.parametrize("args,message", [
    (["--same-cpu", "--run", "x"], "--same-cpu chooses the sample, --run names the runs: give one of them"),
    (["--run", "nosuchrun"], "--run nosuchrun: no successful result in"),
    (["--sample", "0"], "--sample must be at least 1, got 0"),
])
def test_bad_input_is_one_line_with_exit_2(recorded, args, message):
    root, _ = recorded
    out = bench("reproduce", "--results", str(root), *args)
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_an_empty_results_folder_is_refused(tmp_path):
    out = bench("reproduce", "--results", str(tmp_path))
    assert out.returncode == 2 and "holds no successful run result" in out.stderr
