"""Every report figure stays legible on adversarial data: many arms, near-equal parameter counts, long method,
backbone and modality names. Legibility is measured, not eyeballed: :func:`peft3d.reporting.canvas.collisions`
compares the rendered boxes of every text a figure draws, and each figure must have none. The first tests show
the check catches the defects it exists for (the old tick and category layouts collide)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from study_fixture import result_json

from peft3d.core.result import RunResult, load_results, write_result
from peft3d.core.spec import RunSpec
from peft3d.reporting import efficiency, figures, sensitivity
from peft3d.reporting.canvas import collisions, figure, img
from peft3d.reporting.tables import runs_frame, summarize

METHODS = [f"method_{i}_with_a_rather_long_configuration_name" for i in range(10)]
ARMS = [("text_encoder_with_a_long_registry_name", "pretrained", "language"),
        ("vision_transformer_small_patch14_reg4", "pretrained", "vision"),
        ("audio_spectrogram_transformer_base", "pretrained", "audio"),
        ("self_supervised_point_backbone", "pretrained", "point clouds (self-supervised, long modality)"),
        ("text_encoder_with_a_long_registry_name", "random", None),
        ("text_encoder_with_a_long_registry_name", "shuffled", None),
        ("none", "random", None)]
DATASETS = [("synthetic", "scan"), ("synthetic", "clean")]


@pytest.fixture(scope="module")
def crowded(tmp_path_factory):
    """10 methods x 7 arms x 2 datasets x 2 seeds; trainable counts within 2% of each other."""
    root = tmp_path_factory.mktemp("crowded")
    rng = np.random.default_rng(11)
    specs = [RunSpec(backbone=bb, method=m, dataset=d, variant=v, seed=s, weights=w)
             for bb, w, _ in ARMS for m in METHODS for d, v in DATASETS for s in (0, 1)]
    modality = {(bb, w): mod for bb, w, mod in ARMS}
    for s in specs:
        own = 300_000 + 600 * METHODS.index(s.method)
        params = {"method": own, "shared": 40_000, "head": 5_000, "trainable_excluding_head": own + 40_000,
                  "trainable": own + 45_000, "blocks": 21_000_000}
        epochs = 8 + int(rng.integers(0, 6))
        write_result(root, RunResult.from_dict(result_json(s, float(rng.uniform(0.6, 0.9)), 240, params,
                                                           modality[(s.backbone, s.weights)], epochs)))
    df = runs_frame(specs, root)
    return df, summarize(df), load_results(root, list(df["run_id"]))


def test_the_check_catches_the_old_log_axis_on_near_equal_counts():
    fig = figure(5.2, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([3.01e5, 3.03e5, 3.06e5], [80, 81, 82], "o")
    ax.set_xscale("log")  # matplotlib's default: one label per minor tick inside one decade
    ax.set_xlim(2.9e5, 3.8e5)
    assert collisions(fig)
    fig = figure(5.2, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([3.01e5, 3.03e5, 3.06e5], [80, 81, 82], "o")
    figures.log_axis(ax, "x", [3.01e5, 3.03e5, 3.06e5], str)
    assert not collisions(fig) and len(ax.get_xticks()) >= 2


def test_the_check_catches_overlapping_category_labels_and_the_report_says_so():
    fig = figure(5.2, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    names = ["none (random init)", "none (no transformer)", "none (shuffled)", "language", "vision", "audio"]
    ax.bar(range(6), [1] * 6)
    ax.set_xticks(range(6), names, fontsize=8)  # the old modality chart: unwrapped labels at 5.2 in
    clash = collisions(fig)
    assert clash and all(a in names and b in names for a, b in clash)
    assert "Overlapping labels in this figure" in img(fig, "x")


def test_ticks_outside_the_view_and_hidden_axes_are_not_counted():
    fig = figure(4, 3)
    ax = fig.add_subplot(1, 1, 1)
    ax.text(0.5, 0.5, "alone")
    ax.axis("off")  # its tick labels exist as objects but are never drawn
    assert collisions(fig) == []


def test_accuracy_vs_parameters_is_legible(crowded):
    _, summary, _ = crowded
    fig = figures.pareto_figure(summary)
    assert collisions(fig) == []
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert ticks and all(len(t) <= 6 for t in ticks)  # short units (e.g. 0.50M), never 3.1×10⁵ per minor tick
    # linear probe to full fine-tuning: counts over three decades, each method at its own
    spread = dict(zip(METHODS, np.geomspace(4e4, 2.1e7, len(METHODS)), strict=True))
    assert collisions(figures.pareto_figure(summary.assign(params=summary["method"].map(spread)))) == []


def test_modality_ranking_is_legible(crowded):
    df, _, _ = crowded
    assert collisions(figures.modality_figure(df)) == []


def test_learning_curves_are_legible(crowded):
    df, _, results = crowded
    fig = figures.curves_figure(df, results)
    assert collisions(fig) == [] and len(fig.axes) == len(METHODS) * len(DATASETS)


def test_critical_difference_diagram_is_legible(crowded):
    _, summary, _ = crowded
    fig, why = figures.cd_figure(summary)
    assert why is None and collisions(fig) == []


def _manifest(backbones: list[str], methods: list[str], lrs: list[float]) -> dict:
    studies = {}
    for bb in backbones:
        for w in ("pretrained", "random"):
            for m in methods:
                trials = [{"number": i, "state": "PRUNED" if i == 2 else "COMPLETE",
                           "params": {"lr": lr, "weight_decay": 0.01 * (i + 1)},
                           "value": None if i == 2 else 0.7 + 0.01 * i * (w == "pretrained"),
                           "last_value": 0.6} for i, lr in enumerate(lrs)]
                studies[f"{bb}/{w}/{m}"] = {"cell": {"backbone": bb, "weights": w, "method": m,
                                                     "dataset": "sweethome3d", "variants": ["f0", "f1", "f2"]},
                                            "trials": trials, "best_trial": 1}
    return {"studies": studies}


@pytest.mark.parametrize("lrs", [list(np.geomspace(3e-4, 3e-2, 8)), list(np.linspace(1.0e-3, 1.05e-3, 8))],
                         ids=["two-decades", "near-equal"])
def test_learning_rate_sensitivity_is_legible(lrs):
    manifest = _manifest([name for name, _, _ in ARMS[:4]], METHODS[:3], lrs)
    trials = sensitivity.trials_frame(manifest)
    assert set(trials["dataset"]) == {"sweethome3d/cv5"}  # the arm's k-fold cell, tuned on three of its folds
    assert collisions(sensitivity.sensitivity_figure(trials)) == []


def test_only_a_study_that_spent_its_budget_has_a_chosen_configuration():
    """A study still short of trials (2 of 8 counted) shows its best so far without the ring of a choice, and
    the pretrained − random gap at the chosen configurations waits for both arms; a full study keeps both."""
    lrs = list(np.geomspace(3e-4, 3e-2, 4))
    manifest = _manifest(["bb"], ["full"], lrs)
    for w, counted in (("pretrained", 2), ("random", 8)):
        manifest["studies"][f"bb/{w}/full"].update(counted=counted, n_trials=8)
    trials = sensitivity.trials_frame(manifest)
    chosen = trials[trials["best"]]
    assert list(chosen["weights"]) == ["random"] and list(chosen["number"]) == [1]
    flips = sensitivity.flips_frame(trials)
    assert len(flips) == 1 and flips.loc[0, "points"] == 3 and math.isnan(flips.loc[0, "delta_chosen"])
    manifest["studies"]["bb/pretrained/full"]["counted"] = 8
    flips = sensitivity.flips_frame(sensitivity.trials_frame(manifest))
    assert flips.loc[0, "delta_chosen"] == pytest.approx(1.0)  # trial 1: 71 % pretrained against 70 % random


def test_data_efficiency_curve_is_legible(crowded):
    import pandas as pd

    rows = []
    for bb, w, _ in ARMS[:4] + ARMS[4:5]:
        for m in METHODS[:3]:
            for order, k in enumerate([5, 10, 20, None]):
                rows.append({"full_dataset": "sweethome3d/cv5", "method": m, "backbone": bb, "weights": w,
                             "control": "", "point": str(k) if k else "all", "order": order, "per_class": k,
                             "n": 15, "mean": 60 + order * 3, "ci_low": 58 + order * 3, "ci_high": 62 + order * 3})
    frame = pd.DataFrame(rows, columns=efficiency.COLUMNS)
    fig = efficiency.efficiency_figure(frame)
    assert collisions(fig) == [] and not math.isnan(frame["mean"].mean())


def _legend_colors(fig) -> dict[str, tuple]:
    """Backbone name -> colour of its legend entry (the legend below the panels)."""
    (legend,) = fig.legends
    pairs = zip(legend.get_texts(), legend.legend_handles, strict=True)
    return {t.get_text(): tuple(h.get_color()) for t, h in pairs if h.get_marker() == "o" and h.get_linestyle() == "-"}


def test_a_backbone_has_one_colour_in_every_arm_figure():
    """The sensitivity plot and the data-efficiency curve list the backbones in different orders (studies vs
    grid); a reader compares them, so each backbone keeps its colour in both."""
    import pandas as pd

    manifest = _manifest(["whisper_tiny", "minilm", "dinov2_small"], ["linear"], [1e-3, 3e-3, 1e-2])
    sens = _legend_colors(sensitivity.sensitivity_figure(sensitivity.trials_frame(manifest)))
    rows = [{"full_dataset": "sweethome3d/cv5", "method": "linear", "backbone": bb, "weights": "pretrained",
             "control": "", "point": "all", "order": 0, "per_class": None, "n": 15, "mean": 70.0, "ci_low": 68.0,
             "ci_high": 72.0} for bb in ["minilm", "dinov2_small", "whisper_tiny"]]
    eff = _legend_colors(efficiency.efficiency_figure(pd.DataFrame(rows, columns=efficiency.COLUMNS)))
    assert set(sens) == set(eff) == {"minilm", "dinov2_small", "whisper_tiny"}
    assert sens == eff and len(set(sens.values())) == 3
