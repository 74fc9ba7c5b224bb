"""k-fold cross-validation in tables: the folds of a declared partition (``fold_groups``) are replicates of one
dataset cell, the replicate unit is (fold, seed), and the noise floor is the pooled test set's. Every expected
number is recomputed here from the result files the fixture wrote."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from study_fixture import BLOCKS, N_TEST, accuracies, chosen_wd, fold_corrected_p, study_specs, write_study

from peft3d.analysis import formatting as fm
from peft3d.core.errors import ConfigError
from peft3d.core.result import read_result
from peft3d.datasets import DATASETS, fold_group_of, fold_groups
from peft3d.reporting import layouts
from peft3d.reporting.tables import lr_at_edge, paired_frame, params_table, render_markdown, runs_frame, summarize
from peft3d.reporting.transfer import transfer_frame, transfer_table

POOLED = sum(N_TEST.values())  # 451: every model tested once over the five folds


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    specs, manifest = write_study(root)
    return root, specs, runs_frame(specs, root)


def test_sweethome3d_declares_its_partitions():
    groups = fold_groups("sweethome3d")
    assert groups["cv5"].folds == ("f0", "f1", "f2", "f3", "f4") and groups["cv5"].per_class is None
    assert groups["cv5_n10"].per_class == 10 and groups["cv5_n10"].subsample_of == "cv5"
    assert fold_group_of("sweethome3d", "f3_n20").dataset == "sweethome3d/cv5_n20"
    assert fold_group_of("sweethome3d", "s0") is None  # hold-out splits are separate datasets
    assert fold_group_of("synthetic", "scan") is None and fold_group_of("not_registered", "f0") is None


@pytest.mark.parametrize("decl,message", [
    ({"cv2": {"folds": ["a"]}}, "at least two distinct variants"),
    ({"cv2": {"folds": ["a", "zz"]}}, "folds ['zz'] are not variants"),
    ({"cv2": {"folds": ["a", "b"]}, "other": {"folds": ["b", "c"]}}, "is a fold of both"),
    ({"cv2": {"folds": ["a", "b"], "per_class": 0}}, "per_class must be a whole number"),
    ({"cv2": {"folds": ["a", "b"], "subsample_of": "cv9"}}, "subsample_of names no group"),
    ({"a": {"folds": ["b", "c"]}}, "the group name 'a' is also a variant"),
])
def test_a_malformed_declaration_is_one_line_naming_the_dataset(monkeypatch, decl, message):
    _register_toy(monkeypatch, decl)
    with pytest.raises(ConfigError, match="dataset 'toy_kfold'") as e:
        fold_groups("toy_kfold")
    assert message in str(e.value) and "\n" not in str(e.value)


def _register_toy(monkeypatch, fold_groups_decl):
    """A user's k-fold dataset, as a plugin would register it (removed again after the test)."""
    monkeypatch.setitem(DATASETS._targets, "toy_kfold", "toy.module:Toy")
    monkeypatch.setitem(DATASETS._origin, "toy_kfold", "toy-plugin 0.1 (entry point toy_kfold)")
    monkeypatch.setitem(DATASETS._meta, "toy_kfold", {"variants": ("a", "b", "c"), "default_variant": "a",
                                                      "classes": 3, "needs_root": True, "summary": "toy",
                                                      "fold_groups": fold_groups_decl})


def test_folds_are_replicates_of_one_cell(study):
    root, specs, df = study
    s = summarize(df).set_index(["backbone", "weights", "method", "dataset"])
    assert set(s.index.get_level_values("dataset")) == {"sweethome3d/cv5", "sweethome3d/cv5_n5",
                                                       "sweethome3d/cv5_n10", "sweethome3d/cv5_n20"}
    cell = s.loc[("minilm", "pretrained", "linear", "sweethome3d/cv5")]
    acc = accuracies(root, specs, backbone="minilm", weights="pretrained", method="linear")
    acc = acc[[f in N_TEST for f, _ in acc.index]]
    assert cell["n"] == cell["n_expected"] == 15 and len(acc) == 15
    assert math.isclose(cell["mean"], acc.mean()) and math.isclose(cell["std"], acc.std(ddof=1))
    assert cell["ci_low"] < acc.mean() < cell["ci_high"]
    assert cell["n_test"] == POOLED
    p = cell["mean"] / 100
    assert math.isclose(cell["binom_se"], 100 * math.sqrt(p * (1 - p) / POOLED))


def test_paired_comparisons_pair_over_fold_and_seed(study):
    root, specs, df = study
    pf = paired_frame(df, "linear").set_index(["backbone", "weights", "dataset"])
    row = pf.loc[("dinov2_small", "random", "sweethome3d/cv5")]
    a = accuracies(root, specs, backbone="dinov2_small", weights="random", method="any2point")
    b = accuracies(root, specs, backbone="dinov2_small", weights="random", method="linear")
    b = b[a.index]
    assert row["n_pairs"] == 15 and math.isclose(row["delta"], (a - b).mean())


def test_pretrained_vs_control_pairs_over_fold_and_seed(study):
    root, specs, df = study
    tf = transfer_frame(df)
    row = tf[(tf["backbone"] == "minilm") & (tf["control"] == "") & (tf["method"] == "linear") &
             (tf["dataset"] == "sweethome3d/cv5")].iloc[0]
    a = accuracies(root, specs, backbone="minilm", weights="pretrained", method="linear")
    b = accuracies(root, specs, backbone="minilm", weights="random", method="linear")
    full = [i for i in a.index if i[0] in N_TEST]
    assert row["vs_random:pairs"] == 15 and math.isclose(row["vs_random:delta"], (a[full] - b[full]).mean())
    assert row["vs_random:of"] == ""  # its own random init
    assert row["vs_none:pairs"] == 15


def test_fold_comparisons_carry_the_corrected_t_test_beside_the_permutation_p(study):
    root, specs, df = study
    tf = transfer_frame(df).set_index(["dataset", "method", "backbone", "weights"])
    row = tf.loc[("sweethome3d/cv5", "linear", "dinov2_small", "pretrained")]
    a = accuracies(root, specs, backbone="dinov2_small", weights="pretrained", method="linear")
    b = accuracies(root, specs, backbone="dinov2_small", weights="random", method="linear")
    full = [i for i in a.index if i[0] in N_TEST]
    assert row["vs_random:p_folds"] == pytest.approx(fold_corrected_p(a[full], b[full]))
    assert row["vs_random:p_folds"] > row["vs_random:p"]  # 5 fold differences, not 15 independent pairs
    few = tf.loc[("sweethome3d/cv5_n10", "linear", "dinov2_small", "pretrained")]
    f10 = [i for i in a.index if i[0].endswith("_n10")]
    assert few["vs_random:p_folds"] == pytest.approx(fold_corrected_p(a[f10], b[f10]))  # the partition's 1/(k-1)
    pf = paired_frame(df, "linear").set_index(["backbone", "weights", "dataset"])
    a2p = accuracies(root, specs, backbone="minilm", weights="random", method="any2point")
    lin = accuracies(root, specs, backbone="minilm", weights="random", method="linear")
    assert pf.loc[("minilm", "random", "sweethome3d/cv5"), "p_folds"] == pytest.approx(fold_corrected_p(a2p, lin))
    shown = transfer_table(df).set_index(["dataset", "method", "backbone", "weights"])
    cell = shown.loc[("sweethome3d/cv5", "linear", "dinov2_small", "pretrained"), "Δ vs random"]
    assert f"; p (folds) {fm.p_relation(row['vs_random:p_folds'])})" in cell
    text = render_markdown("transfer_study.tuned", df, "linear")
    assert re.search(r"\|\s*p \(folds\)\s*\|", text) and "Nadeau & Bengio" in text
    from peft3d.reporting.transfer import note

    assert note(df).count("(") == note(df).count(")")  # the note's asides all close


def test_the_transfer_section_states_how_large_a_gap_the_fold_test_could_resolve(study):
    from scipy import stats as sps

    from peft3d.reporting.transfer import resolution_note

    root, specs, df = study
    tf = transfer_frame(df)
    row = tf.set_index(["dataset", "method", "backbone", "weights"]).loc[
        ("sweethome3d/cv5", "linear", "minilm", "pretrained")]
    a = accuracies(root, specs, backbone="minilm", weights="pretrained", method="linear")
    b = accuracies(root, specs, backbone="minilm", weights="random", method="linear")
    full = [i for i in a.index if i[0] in N_TEST]
    d = (a[full] - b[full]).groupby(level=0).mean()  # from scratch: seeds averaged per fold, five folds
    assert row["vs_random:lsd"] == pytest.approx(sps.t.ppf(0.975, 4) * math.sqrt((1 / 5 + 1 / 4) * d.var(ddof=1)))
    cv5 = tf[(tf["dataset"] == "sweethome3d/cv5") & (tf["control"] == "")]["vs_random:lsd"]
    note = resolution_note(tf)
    assert (f"sweethome3d/cv5: vs random init {cv5.min():.1f} to {cv5.max():.1f} points (median "
            f"{cv5.median():.1f}, {len(cv5)} comparisons)") in note
    assert note.count("sweethome3d/cv5") == 4  # the full partition and each few-label group
    assert note in render_markdown("transfer_study.tuned", df, "linear")


def test_a_dataset_without_folds_has_no_corrected_p(tmp_path):
    from study_fixture import result_json

    from peft3d.core.result import RunResult, write_result
    from peft3d.core.spec import RunSpec

    rng = np.random.default_rng(11)
    specs = [RunSpec(backbone="minilm", method=m, dataset="synthetic", variant="scan", seed=s)
             for m in ("linear", "lora") for s in (0, 1, 2)]
    for s in specs:
        write_result(tmp_path, RunResult.from_dict(result_json(s, float(rng.uniform(0.5, 0.9)), 240,
                                                               {"method": 0}, "language")))
    df = runs_frame(specs, tmp_path)
    assert paired_frame(df, "linear")["p_folds"].isna().all()
    text = render_markdown("quickstart", df, "linear")
    assert "p (folds)" not in text and "Nadeau" not in text


def test_markdown_names_the_pooled_cell_and_says_what_replicates_mean(study):
    _, _, df = study
    text = render_markdown("transfer_study.tuned", df, "linear")
    assert "sweethome3d/cv5 " in text and "sweethome3d/cv5_n5" in text
    assert "| sweethome3d/f3 " not in text  # no fold is a dataset row
    assert "paired by (fold, seed)" in text and "over (fold, seed) replicates" in text
    assert "sweethome3d/cv5 ≈ " in text and f"n_test = {POOLED}" in text
    assert "share its test models" in text and "binomial SE of the pooled test set" in text
    assert "(fold, seed)" in transfer_table(df).columns
    for name in ("main", "peft", "modality"):  # the paper layouts say what their ± and CIs are over
        assert "over (fold, seed) replicates" in " ".join(layouts.build(name, df, versus="linear").notes), name


def test_the_run_level_layout_lists_each_fold(study):
    _, specs, df = study
    runs = layouts.build("runs", df).display
    assert set(runs["dataset"]) >= {f"sweethome3d/f{i}" for i in range(5)} | {"sweethome3d/f2_n10"}
    assert len(runs) == len(specs)


def test_a_grid_with_some_folds_of_a_partition_names_them(tmp_path):
    specs = [s for s in study_specs(few=False) if s.variant in ("f0", "f1")]
    write_study(tmp_path, few=False)
    df = runs_frame(specs, tmp_path)
    assert set(df["dataset"]) == {"sweethome3d/cv5[f0+f1]"}
    assert summarize(df)["n_test"].max() == N_TEST["f0"] + N_TEST["f1"]


def test_a_users_kfold_dataset_gets_the_same_treatment(monkeypatch, tmp_path):
    from study_fixture import result_json

    from peft3d.core.result import RunResult, write_result
    from peft3d.core.spec import RunSpec

    _register_toy(monkeypatch, {"cv3": {"folds": ["a", "b", "c"]}})
    rng = np.random.default_rng(7)
    specs = [RunSpec(backbone="minilm", method=m, dataset="toy_kfold", variant=v, seed=s)
             for m in ("linear", "lora") for v in "abc" for s in (0, 1)]
    for s in specs:
        write_result(tmp_path, RunResult.from_dict(result_json(s, float(rng.uniform(0.5, 0.9)), 40,
                                                               {"method": 0}, "language")))
    df = runs_frame(specs, tmp_path)
    s = summarize(df)
    assert list(s["dataset"].unique()) == ["toy_kfold/cv3"] and list(s["n"]) == [6, 6]
    assert list(s["n_test"]) == [120, 120]
    assert paired_frame(df, "linear")["n_pairs"].tolist() == [6]


def test_tuned_cells_show_their_chosen_lr_and_weight_decay(study):
    root, specs, df = study
    shown = transfer_table(df)
    row = shown[(shown["backbone"] == "dinov2_small") & (shown["weights"] == "random") &
                (shown["method"] == "linear") & (shown["dataset"] == "sweethome3d/cv5")].iloc[0]
    assert row["lr / wd"] == f"{fm.sci(5e-3)} / {fm.sci(0.02)}"
    few = shown[(shown["dataset"] == "sweethome3d/cv5_n5") & (shown["backbone"] == "dinov2_small") &
                (shown["weights"] == "random")]
    assert list(few["lr / wd"]) == [row["lr / wd"]]  # the few-label folds run the arm's configuration
    text = render_markdown("transfer_study.tuned", df, "linear")
    assert "## Tuned configuration per cell" in text and "2.0e-03" in text
    assert "test labels of another fold" in text  # the caveat of tuning on pooled folds, stated with the table


def test_a_tuned_lr_at_the_edge_of_its_range_is_marked(tmp_path):
    """A chosen lr in the outer tenth (log scale) of the searched range is marked §: the arm's optimum may lie
    outside the range. Here the no-transformer arm's runs record a range whose top is just above its lr."""
    import json

    assert lr_at_edge(3.2e-4, "log-uniform [0.0003, 0.03]") and lr_at_edge(2.9e-2, "log-uniform [0.0003, 0.03]")
    assert not lr_at_edge(1e-2, "log-uniform [0.0003, 0.03]")  # 76% of the way up: inside
    assert lr_at_edge(1e-3, "uniform [0.0001, 0.1]") is None and lr_at_edge(None, "log-uniform [1, 2]") is None
    specs, _ = write_study(tmp_path, few=False)
    for s in specs:
        if s.backbone == "none":
            path = tmp_path / "runs" / f"{s.run_id}.json"
            r = json.loads(path.read_text())
            r["tuning"]["space"]["lr"] = "log-uniform [0.0001, 0.0105]"
            path.write_text(json.dumps(r))
    shown = transfer_table(runs_frame(specs, tmp_path)).set_index(["backbone", "weights", "method"])
    wd = fm.sci(chosen_wd("none", "random", "linear"))
    assert shown.loc[("none", "random", "linear"), "lr / wd"] == f"{fm.sci(1e-2)} § / {wd}"
    assert not shown.drop(("none", "random", "linear"))["lr / wd"].str.contains("§").any()
    text = render_markdown("transfer_study.tuned", runs_frame(specs, tmp_path), "linear")
    assert f"| {fm.sci(1e-2)} § |" in text and "§: the chosen lr lies in the outer tenth" in text
    from peft3d.reporting.tables import tuned_table  # each cell's own searched range beside its chosen lr

    df = runs_frame(specs, tmp_path)
    t = tuned_table(summarize(df))
    none = t["backbone"] == "none"
    assert set(t.loc[none, "lr range"]) == {"1.0e-04..1.1e-02"} and none.sum() >= 1
    assert set(t.loc[~none, "lr range"]) == {"3.0e-04..3.0e-02"}


def test_the_tuning_objective_is_re_measured_at_the_reported_seeds(study):
    """The chosen configuration's objective (mean validation accuracy over f0-f2, the study's objective variants)
    recomputed per reported seed from the result files; the table's mean ± SD and optimism follow from them."""
    from peft3d.analysis import stats
    from peft3d.reporting.tables import tuned_table

    root, specs, df = study
    per_seed = {}
    for s in specs:
        if (s.backbone, s.weights, s.method) == ("minilm", "random", "any2point") and s.variant in ("f0", "f1", "f2"):
            per_seed.setdefault(s.seed, []).append(100 * read_result(root, s.run_id).metrics.val_acc)
    assert sorted(len(v) for v in per_seed.values()) == [3, 3, 3]
    mean, sd = stats.mean_std([float(np.mean(v)) for v in per_seed.values()])
    t = tuned_table(summarize(df), df)
    row = t[(t["backbone"] == "minilm") & (t["weights"] == "random") & (t["method"] == "any2point")].iloc[0]
    assert row["re-measured (reported seeds)"] == f"{mean:.1f} ± {sd:.1f} (n = 3)"
    best = read_result(root, next(s.run_id for s in specs if (s.backbone, s.weights, s.method) ==
                                  ("minilm", "random", "any2point"))).section("tuning")["best_value"]
    assert row["optimism"] == fm.signed(100 * best - mean)
    assert "optimism" not in tuned_table(summarize(df)).columns  # without the runs: the chosen values alone


def test_each_methods_own_parameters_and_their_share_of_the_backbone(study):
    _, _, df = study
    t = params_table(summarize(df)).set_index("backbone")
    assert t.loc["minilm", "linear"] == "0 (0%)"
    assert t.loc["minilm", "any2point"] == f"30.0k ({fm.share(30_000, BLOCKS['minilm'])})" == "30.0k (0.14%)"
    assert t.loc["none", "linear"] == "0" and t.loc["none", "any2point"] == fm.MISSING  # no blocks: no share
    assert t.loc["minilm", "backbone params"] == "21.28M" and t.loc["minilm", "head"] == "7.3k"
    assert t.loc["minilm", "shared (tokenizer, norms)"] == "41.3k"


def test_bench_table_tuned_pools_the_folds_and_states_the_budget(tmp_path):
    from typer.testing import CliRunner

    from peft3d.cli.app import _mount, app

    _mount()
    write_study(tmp_path)
    out = CliRunner().invoke(app, ["table", "--grid", "transfer_study", "--results", str(tmp_path), "--tuned"])
    assert out.exit_code == 0, out.output
    text = (tmp_path / "tables" / "transfer_study.tuned.md").read_text()
    assert "| sweethome3d/cv5 " in text and "| sweethome3d/f0 " not in text
    assert "lr / wd" in text and "Tuning: 8 Optuna trials per cell" in text
    runs = CliRunner().invoke(app, ["table", "--grid", "transfer_study", "--results", str(tmp_path), "--tuned",
                                    "--layout", "runs"])
    assert runs.exit_code == 0, runs.output
    assert "sweethome3d/f4_n20" in (tmp_path / "tables" / "transfer_study.tuned.runs.md").read_text()
