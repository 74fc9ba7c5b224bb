"""Modality against modality: every two pretrained backbones of a dataset × method, paired on accuracy and on
transfer gain (each against its own random-init twin). Expected numbers are recomputed here from the runs."""
import math

import numpy as np
import pandas as pd
import pytest
from study_fixture import accuracies, fold_corrected_p, write_study

from peft3d.analysis import stats
from peft3d.reporting.modalities import modality_frame, modality_markdown, modality_table
from peft3d.reporting.tables import render_markdown, runs_frame


def _runs(rows):
    """rows: (backbone, weights, control, modality, method, [test accuracies by seed 0..])."""
    return pd.DataFrame([dict(status="success", dataset="synthetic/scan", method=method, backbone=bb, weights=w,
                              control=ctl, modality=mod, seed=seed, test_acc=a, val_acc=a, late_selection=False)
                         for bb, w, ctl, mod, method, accs in rows for seed, a in enumerate(accs)])


# per seed: language 80/82/84, its twin 75/80/79 (gain 5, 2, 5); vision 70/71/75, its twin 60/66/61 (gain 10, 5, 14)
ROWS = [("minilm", "pretrained", "", "language", "linear", [0.80, 0.82, 0.84]),
        ("dinov2_small", "pretrained", "", "vision", "linear", [0.70, 0.71, 0.75]),
        ("minilm", "random", "random init", "none (random init)", "linear", [0.75, 0.80, 0.79]),
        ("dinov2_small", "random", "random init", "none (random init)", "linear", [0.60, 0.66, 0.61]),
        ("none", "random", "no transformer", "none (no transformer)", "linear", [0.60, 0.62, 0.61])]


def test_accuracy_and_transfer_gain_are_paired_by_seed_higher_mean_first():
    row = modality_frame(_runs(ROWS)).iloc[0]
    assert (row["a"], row["b"]) == ("minilm", "dinov2_small")  # 82.0 before 72.0
    assert row["acc:pairs"] == 3 and math.isclose(row["acc:delta"], (10 + 11 + 9) / 3)
    assert math.isclose(row["acc:p"], 0.25)  # 3 same-sign pairs: the smallest p of 3 seeds
    # gains: language (5, 2, 5), vision (10, 5, 14); the language − vision difference (−5, −3, −9)
    assert row["gain:pairs"] == 3 and math.isclose(row["gain:delta"], -17 / 3)
    assert math.isnan(row["acc:p_folds"])  # not a k-fold dataset


def test_a_backbone_without_its_own_twin_has_no_gain_and_the_cell_says_so():
    rows = [r for r in ROWS if not (r[0] == "dinov2_small" and r[1] == "random")]
    mf = modality_frame(_runs(rows))
    assert not math.isnan(mf.iloc[0]["acc:delta"]) and "gain:delta" not in mf
    shown = modality_table(_runs(rows)).iloc[0]
    assert shown["comparison"] == "language (minilm) − vision (dinov2_small)"
    assert shown["Δ transfer gain (each vs its own random init)"] == "— (a random-init twin not run)"
    assert shown["Δ accuracy"] == "+10.0 (p = 0.250, n=3)"


def test_three_backbones_make_three_comparisons_and_one_backbone_none():
    third = ("whisper_tiny", "pretrained", "", "audio", "linear", [0.76, 0.78, 0.77])
    mf = modality_frame(_runs([*ROWS, third]))
    assert list(zip(mf["a"], mf["b"], strict=True)) == [("minilm", "whisper_tiny"), ("minilm", "dinov2_small"),
                                                        ("whisper_tiny", "dinov2_small")]
    assert modality_markdown(_runs([r for r in ROWS if r[0] != "dinov2_small"])) == []
    text = "\n".join(modality_markdown(_runs([*ROWS, third])))
    assert "## Modality against modality" in text and "0.05 / m (Bonferroni)" in text


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    specs, _ = write_study(root)
    return root, specs, runs_frame(specs, root)


def test_k_fold_cells_pair_over_fold_and_seed_with_the_corrected_p(study):
    root, specs, df = study
    mf = modality_frame(df).set_index(["dataset", "method"])
    row = mf.loc[("sweethome3d/cv5", "any2point")]
    acc = {(bb, w): accuracies(root, specs, backbone=bb, weights=w, method="any2point")
           for bb in ("minilm", "dinov2_small") for w in ("pretrained", "random")}
    first = "minilm" if acc[("minilm", "pretrained")].mean() > acc[("dinov2_small", "pretrained")].mean() \
        else "dinov2_small"
    other = {"minilm": "dinov2_small", "dinov2_small": "minilm"}[first]
    assert row["a"] == first and row["acc:pairs"] == 15
    d = acc[(first, "pretrained")] - acc[(other, "pretrained")]
    assert row["acc:delta"] == pytest.approx(d.mean())
    assert row["acc:p"] == pytest.approx(stats.paired_permutation_p(acc[(first, "pretrained")].to_numpy(),
                                                                    acc[(other, "pretrained")].to_numpy()))
    assert row["acc:p_folds"] == pytest.approx(fold_corrected_p(d, 0 * d))
    gain = {bb: acc[(bb, "pretrained")] - acc[(bb, "random")] for bb in (first, other)}
    g = gain[first] - gain[other]
    assert row["gain:delta"] == pytest.approx(g.mean())
    assert row["gain:p_folds"] == pytest.approx(fold_corrected_p(gain[first], gain[other]))
    # the fixture's arms: DINOv2 pretrained 1 point below MiniLM, its twin 1 below MiniLM's: equal true gains,
    # so the gain difference is noise (SE ≈ 0.8 over 15 pairs) while the pretrained rows differ by about a point
    assert abs(row["gain:delta"]) < 2.5 and np.isfinite(row["gain:p"])


def test_the_table_and_the_report_carry_the_section_after_the_ranking(study):
    _, _, df = study
    text = render_markdown("transfer_study.tuned", df, "linear")
    assert text.index("Modality ranking against the controls") < text.index("## Modality against modality")
    from peft3d.reporting.report import _transfer_html

    html = "\n".join(_transfer_html(df))
    assert "Modality against modality" in html and "Δ transfer gain" in html
