"""The "does pretraining transfer?" section that opens a table when a grid ran controls."""
import numpy as np
import pandas as pd

from peft3d.reporting.transfer import has_controls, transfer_frame, transfer_markdown


def _runs(rows):
    """rows: (backbone, weights, control, modality, method, [test accuracies by seed 0..])."""
    out = []
    for bb, w, ctl, mod, method, accs in rows:
        for seed, a in enumerate(accs):
            out.append(dict(status="success", dataset="synthetic/scan", method=method, backbone=bb, weights=w,
                            control=ctl, modality=mod, seed=seed, test_acc=a, val_acc=a - 0.01,
                            late_selection=seed == 0))
    return pd.DataFrame(out)


ROWS = [("minilm", "pretrained", "", "language", "linear", [0.80, 0.82, 0.84]),
        ("dinov2_small", "pretrained", "", "2d_vision", "linear", [0.70, 0.71, 0.75]),
        ("minilm", "random", "random init", "none (random init)", "linear", [0.75, 0.80, 0.79]),
        ("none", "random", "no transformer", "none (no transformer)", "linear", [0.60, 0.62, 0.61])]


def test_pretrained_rows_are_ranked_and_paired_with_each_control_by_seed():
    tf = transfer_frame(_runs(ROWS))
    real = tf[tf["control"] == ""].set_index("backbone")
    assert real.loc["minilm", "rank"] == 1 and real.loc["dinov2_small", "rank"] == 2
    assert np.isclose(real.loc["minilm", "mean"], 82.0)
    # MiniLM vs its own random init: (5 + 2 + 5) / 3 points, paired by seed; p of 3 same-sign pairs is 0.25
    assert np.isclose(real.loc["minilm", "vs_random:delta"], 4.0) and real.loc["minilm", "vs_random:of"] == ""
    assert np.isclose(real.loc["minilm", "vs_random:p"], 0.25) and real.loc["minilm", "vs_random:pairs"] == 3
    # DINOv2 has no random run of its own: paired with MiniLM's, and the table says so
    assert real.loc["dinov2_small", "vs_random:of"] == "minilm"
    assert np.isclose(real.loc["dinov2_small", "vs_none:delta"], (10 + 9 + 14) / 3)
    assert tf["rank"].isna().sum() == 2  # controls are not ranked as modalities
    assert list(tf["control"])[:2] == ["", ""]  # pretrained rows first


def test_the_section_opens_the_markdown_only_when_controls_ran():
    df = _runs(ROWS)
    assert has_controls(df) and not has_controls(df[df["control"] == ""])
    text = "\n".join(transfer_markdown(df))
    assert "Modality ranking against the controls" in text
    assert "+4.0 (p = 0.250, n=3)" in text and "vs minilm" in text and "control: no transformer" in text
    assert "82.0 ± 2.0 ‡" in text  # seed 0 selected a late epoch
    assert "Resolution of p (folds)" not in text  # seeds only: no fold test, so no resolution to state


def test_a_control_run_under_another_method_is_named():
    rows = [("minilm", "pretrained", "", "language", "lora", [0.8, 0.8, 0.9]),
            ("none", "random", "no transformer", "none (no transformer)", "linear", [0.6, 0.6, 0.6])]
    real = transfer_frame(_runs(rows)).set_index("backbone").loc["minilm"]
    assert real["vs_none:of"] == "none, linear" and np.isclose(real["vs_none:delta"], 100 * (0.8 + 0.8 + 0.9) / 3 - 60)


def test_a_planned_own_control_not_finished_yet_is_not_replaced_by_another_backbones():
    # the grid plans DINOv2's random twin; its runs have not finished: MiniLM's twin must not stand in for it
    df = _runs(ROWS)
    planned = pd.DataFrame([dict(status="missing", dataset="synthetic/scan", method="linear", backbone="dinov2_small",
                                 weights="random", control="random init", modality="none (random init)", seed=s,
                                 test_acc=np.nan, val_acc=np.nan, late_selection=False) for s in range(3)])
    tf = transfer_frame(pd.concat([df, planned], ignore_index=True))
    real = tf[tf["control"] == ""].set_index("backbone")
    assert np.isnan(real.loc["dinov2_small", "vs_random:delta"]) and real.loc["dinov2_small", "vs_random:pending"]
    assert np.isclose(real.loc["minilm", "vs_random:delta"], 4.0)  # a finished own twin is still paired
    assert np.isclose(real.loc["dinov2_small", "vs_none:delta"], (10 + 9 + 14) / 3)  # other controls unaffected
    text = "\n".join(transfer_markdown(pd.concat([df, planned], ignore_index=True)))
    dino = next(line for line in text.splitlines() if "| dinov2_small | pretrained" in line)
    assert "— (its own not run yet)" in dino and "vs minilm" not in dino
    # once one seed of the twin succeeds, it is paired with its own (1 pair), not MiniLM's
    planned.loc[0, ["status", "test_acc", "val_acc"]] = ["success", 0.65, 0.64]
    real = transfer_frame(pd.concat([df, planned], ignore_index=True)).set_index(["backbone", "weights"])
    row = real.loc[("dinov2_small", "pretrained")]
    assert row["vs_random:of"] == "" and row["vs_random:pairs"] == 1 and np.isclose(row["vs_random:delta"], 5.0)


def test_the_report_opens_with_the_same_section():
    from peft3d.reporting.report import _transfer_html

    html = "\n".join(_transfer_html(_runs(ROWS)))
    assert "Does pretraining transfer?" in html and "Δ vs random" in html and "Δ vs none" in html
    assert html.index("language") < html.index("2d_vision")  # ranked
