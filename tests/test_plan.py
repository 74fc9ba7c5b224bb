"""``bench plan``: it answers for every shipped grid (tiny twins on the CPU), its arithmetic adds up, and bad input
is one line with exit code 2."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from fixtures_backbones import one_thread  # noqa: F401  (autouse fixture)
from typer.testing import CliRunner

from peft3d.grids.loader import GRID_DIR, expand
from peft3d.training.plan import PlanSettings, cell_key, plan, run_counts

SHIPPED = sorted(p.stem for p in Path(GRID_DIR).glob("*.yaml") if not p.stem.startswith("_"))
# The two grids with dozens of 1,024-point cells take 10-35 s even with tiny twins: the slow suite covers them.
LARGE = {"modality_sweep", "peft_comparison"}


def _minutes(hms: str) -> int:
    from peft3d.cli.submit import _minutes as submit_minutes

    return submit_minutes(hms)


@pytest.mark.parametrize("grid", [pytest.param(g, marks=pytest.mark.slow) if g in LARGE else g for g in SHIPPED])
def test_plan_answers_for_every_shipped_grid(grid):
    r = plan(PlanSettings(grid=grid, tiny=True, steps=1, warmup=0, batch=2))
    specs = expand(grid)
    assert r["runs"] == len(specs) and sum(c["runs"] for c in r["cells"]) == len(specs)
    assert len(r["cells"]) == len({cell_key(s) for s in specs}) or r["tiny"]  # twins may merge cells, never split
    for c in r["cells"]:
        assert c["fits"] and c["s_per_step"] > 0 and c["peak_mb"] > 0 and c["batch"] == 2
        assert c["backbone"].startswith("test_") or c["backbone"] == "none"
    assert r["total_s"] == pytest.approx(sum(c["total_s"] for c in r["cells"]), abs=0.1 * len(r["cells"]))
    submit = r["suggested_submit"].split()
    assert submit[:4] == ["bench", "submit", "--grid", grid]
    assert _minutes(submit[submit.index("--time") + 1]) >= max(c["run_s"] for c in r["cells"]) / 60
    assert submit[submit.index("--mem") + 1].endswith("G")


def test_plan_arithmetic_per_run_and_grid():
    r = plan(PlanSettings(grid="quickstart", tiny=True, steps=1, warmup=0))
    assert r["runs"] == 15 and len(r["cells"]) == 4  # three backbones x linear, plus the none control
    by_backbone = {c["backbone"]: c for c in r["cells"]}
    assert by_backbone["none"]["runs"] == 3
    for c in r["cells"]:
        assert c["steps_per_epoch"] == (480 - 48) // 16  # synthetic: 480 train, 10% held out, batch 16
        assert c["eval_batches"] == 18  # 48 val + 240 test in batches of 16 (tiny: the training batch)
        run_s = c["epochs"] * (c["steps_per_epoch"] * c["s_per_step"] + c["eval_batches"] * c["eval_s_per_batch"]) \
            + c["build_s"]
        assert c["run_s"] == pytest.approx(run_s, rel=1e-3, abs=0.1)
        assert c["total_s"] == pytest.approx(c["runs"] * c["run_s"], abs=0.1 * c["runs"])
    assert r["device_hours"] == pytest.approx(r["total_s"] / 3600, abs=1e-3)


def test_run_counts_use_the_variant_counts_and_the_validation_split():
    spec = next(s for s in expand("paper_any2point_dinov2_scan"))
    steps, eval_samples = run_counts(spec)
    assert steps == (11416 - 1142) // spec.budget.batch_size and eval_samples == 1142 + 2882


def _cli(*args: str):
    from peft3d.cli import plan as _mount  # noqa: F401  (registers the command)
    from peft3d.cli.app import app

    return CliRunner().invoke(app, ["plan", *args])


def test_plan_cli_json_with_tiny_twins():
    res = _cli("--grid", "quickstart", "--tiny", "--steps", "1", "--warmup", "0", "--batch", "4", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["tiny"] and out["device"] == "cpu" and out["does_not_fit"] == []
    assert {c["batch"] for c in out["cells"]} == {4}


@pytest.mark.parametrize("args,message", [
    (["--device", "tpu"], "--device must be cpu, cuda, cuda:N"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--batch", "1"], "--batch >= 2"),
    (["--tiny", "--grid", "nope"], "nope"),
])
def test_plan_rejects_bad_input_in_one_line(args, message):
    res = _cli(*(["--grid", "quickstart"] if "--grid" not in args else []), *args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.output


def test_plan_cuda_without_a_gpu_is_one_line(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = _cli("--grid", "quickstart", "--device", "cuda")
    assert res.exit_code == 2 and "no CUDA device visible" in res.output and "fix: --device cpu" in res.output


def test_plan_missing_backbone_weights_is_one_line(monkeypatch, tmp_path):
    from peft3d.backbones import sources

    monkeypatch.setattr(sources, "weights_available", lambda name: (False, "the test's empty cache"))
    res = _cli("--grid", "quickstart")
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "weights not found (looked in the test's empty cache)" in lines[0]
    grid = tmp_path / "g.yaml"
    grid.write_text("backbones: [test_bert]\nweights: ['path:/nonexistent/w.pt']\nmethods: [linear]\n"
                    "datasets: [synthetic/scan]\nnum_points: 64\n"
                    "tokenizer: {num_stages: 2, embed_dim: 8, k: 8, lga_blocks: [1, 1]}\n")
    res = _cli("--grid", str(grid))  # refused when the grid is read, before anything is built
    assert res.exit_code == 2 and "weights path:/nonexistent/w.pt: no such file or folder" in res.output
    # the quickstart times fine when the weights check is waived (random weights on the tiny twins)
    res = _cli("--grid", "quickstart", "--no-weights-check", "--tiny", "--steps", "1", "--warmup", "0",
               "--batch", "2")
    assert res.exit_code == 0, res.output


def test_a_tuned_grid_s_plan_adds_its_trials_and_the_extra_seeds_it_may_run(tmp_path):
    from peft3d.tuning.cells import tune_stages as tuning_stages

    grid = tmp_path / "tuned.yaml"
    grid.write_text("backbones: [test_bert]\nmethods: [linear, adapter]\nweights: [pretrained, random]\n"
                    "num_points: 128\nseeds: [0, 1]\nbudget: {epochs: 2}\n"
                    "tokenizer: {num_stages: 3, embed_dim: 48, k: 16, lga_blocks: [1, 1, 1], last_bottleneck: 32}\n"
                    "datasets: [sweethome3d/f0, sweethome3d/f1, sweethome3d/f2, sweethome3d/f3, sweethome3d/f4]\n"
                    "tuning: {trials: 3, objective_variants: [f0, f1], seed: 100,\n"
                    "         precision: {ci_half_width: 3, extra_seeds: [5, 6, 7]}}\n")
    stages = tuning_stages(str(grid), None)
    assert list(stages) == ["tuning trials", "extra seeds (at most)"]
    assert [n for _, n in stages["tuning trials"]] == [3 * 2] * 4  # 4 cells: 3 trials x 2 objective folds
    assert [n for _, n in stages["extra seeds (at most)"]] == [3 * 5] * 4  # 3 seeds x 5 folds
    r = plan(PlanSettings(grid=str(grid), tiny=True, steps=1, warmup=0, check_weights=False), stages=stages)
    assert r["runs"] == 4 * 5 * 2  # the grid's own runs: the tuned runs
    run_s = {c["method"]: c["run_s"] for c in r["cells"]}  # weights do not change a cell's cost
    trials, extra = r["stages"]
    assert (trials["stage"], trials["runs"]) == ("tuning trials", 24)
    # a trial skips the test split: the cell's step and batch times, validation batches alone
    trial_spec = stages["tuning trials"][0][0]
    # (a tiny plan evaluates in batches of the training batch's size)
    val_batches = math.ceil(run_counts(trial_spec)[1] / trial_spec.budget.batch_size)
    assert val_batches < r["cells"][0]["eval_batches"]

    def trial_s(c):
        return c["epochs"] * (c["steps_per_epoch"] * c["s_per_step"] + val_batches * c["eval_s_per_batch"]) \
            + c["build_s"]

    trial_cost = {c["method"]: trial_s(c) for c in r["cells"]}
    # a run's cost is kept to 0.1 s: up to 0.05 s off for each of the 24 trial runs
    assert trials["total_s"] == pytest.approx(2 * 6 * (trial_cost["linear"] + trial_cost["adapter"]), abs=1.3)
    assert trials["total_s"] < 2 * 6 * (run_s["linear"] + run_s["adapter"])
    assert (extra["runs"], extra["total_s"]) == (60, pytest.approx(2 * 15 * (run_s["linear"] + run_s["adapter"]),
                                                                   abs=0.5))
    assert tuning_stages("quickstart", None) is None  # no tuning block: the grid's runs are all there is
