"""Every layout renders from a fixed set of result JSONs (tests/golden/results.json) exactly as its golden file.

Refresh the goldens after an intended change: ``PEFT3D_UPDATE_GOLDEN=1 python -m pytest tests/test_layouts.py``
(then read the diff).
"""
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from peft3d.reporting import layouts
from peft3d.reporting.tables import runs_frame

GOLDEN = Path(__file__).parent / "golden"
VERSUS = "any2point"  # the golden fixture's grid compares with Any2Point (a grid's compare_to)
UPDATE = os.environ.get("PEFT3D_UPDATE_GOLDEN") == "1"
EXT = {"md": "md", "csv": "csv", "latex": "tex"}


def golden_module():
    if "peft3d_golden" not in sys.modules:
        spec = importlib.util.spec_from_file_location("peft3d_golden", GOLDEN / "make_results.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["peft3d_golden"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["peft3d_golden"]


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    return runs_frame(golden_module().load_into(root), root)


CASES = [(layout, fmt, None) for layout in layouts.LAYOUTS for fmt in layouts.FORMATS]
CASES += [(layout, "md", "paper") for layout in ("default", "main", "peft", "modality")]
CASES += [("main", "csv", "paper"), ("peft", "latex", "paper")]


@pytest.mark.parametrize("layout,fmt,reference", CASES)
def test_layout_matches_golden(frame, layout, fmt, reference):
    text = layouts.render_layout("golden", frame, layout, fmt, reference=reference, versus=VERSUS)
    path = GOLDEN / f"{layout}{'.paper' if reference else ''}.{EXT[fmt]}"
    if UPDATE or not path.exists():
        path.write_text(text)
        if not UPDATE:
            pytest.fail(f"golden file {path.name} was missing: written; check it and re-run")
    assert text == path.read_text(), f"{path.name} changed (PEFT3D_UPDATE_GOLDEN=1 to accept)"


def test_failed_and_missing_cells_are_blanks_with_reasons(frame):
    peft = layouts.render_layout("golden", frame, "peft", "md", dataset="modelnet40", versus=VERSUS)
    assert "(n=2/3)" in peft  # ssast/lora/modelnet40 lost one seed to a failure: the mean uses the other two
    main = layouts.build("main", frame, method="lora")
    assert "84.7 ± 0.3 (n=2/3)" in main.display.to_string()
    runs = layouts.build("runs", frame)
    bad = runs.display[runs.display["status"] != "success"]
    assert set(bad["status"]) == {"failed", "missing"} and set(bad["test"]) == {"—"}
    assert "CUDA out of memory" in " ".join(bad["error"])


def test_paper_reference_shows_the_papers_figures(frame):
    main = layouts.render_layout("golden", frame, "main", "md", reference="paper", versus=VERSUS)
    for fig in ("91.9", "94.3", "87.7", "93.2", "87.0", "92.7", "89.7", "87.3", "87.1", "90.6"):  # §7.1 + §7.5
        assert fig in main
    assert "| paper " in main and "best-epoch-on-test" in main
    peft = layouts.render_layout("golden", frame, "peft", "md", reference="paper", versus=VERSUS)
    for delta in ("−2.8", "−2.3", "−5.6"):  # Any2Point minus prompt / adapter / LoRA on PB-T50-RS (§7.5)
        assert delta in peft
    mn = layouts.render_layout("golden", frame, "peft", "md", reference="paper", dataset="modelnet40", versus=VERSUS)
    for delta in ("−1.3", "−1.8", "−2.6"):
        assert delta in mn
    modality = layouts.render_layout("golden", frame, "modality", "md", reference="paper", versus=VERSUS)
    assert "91.9‡ (clip_text), 89.7‡ (roberta)" in modality


def test_paper_rows_sit_beside_ours(frame):
    d = layouts.build("main", frame, reference="paper", versus=VERSUS).display
    ours = d.index[(d["source"] == "ours") & (d["Backbone"] == "clip_text")][0]
    assert d.loc[ours + 1, "source"] == "paper" and d.loc[ours + 1, "Backbone"] == "clip_text"


def test_modality_ranking_orders_language_first(frame):
    num = layouts.build("modality", frame, versus=VERSUS).numeric
    assert list(num["modality"]) == ["language", "vision", "audio"]
    assert (num["scanobjectnn/pb_t50_rs:ci_low"] <= num["scanobjectnn/pb_t50_rs:mean"]).all()


def test_peft_delta_is_method_minus_any2point(frame):
    num = layouts.build("peft", frame, versus=VERSUS).numeric.set_index("method")
    assert num.loc["linear", "clip_text:delta"] == pytest.approx(
        num.loc["linear", "clip_text:mean"] - num.loc["any2point", "clip_text:mean"])
    assert num.loc["linear", "clip_text:p_permutation"] == pytest.approx(0.25)  # 3 paired seeds, all worse


def test_unknown_names_are_user_errors(frame):
    from peft3d.core.errors import ConfigError

    with pytest.raises(ConfigError, match="not in this grid"):
        layouts.build("peft", frame, dataset="shapenet")
    with pytest.raises(ValueError, match="unknown layout"):
        layouts.render_layout("g", frame, "nope", "md")
    with pytest.raises(ValueError, match="unknown format"):
        layouts.render_layout("g", frame, "main", "docx")


# ---- the CLI, on fake results for the smoke grid (no training) ------------------------------------------------

def fake_smoke_results(root: Path) -> list:
    """Success results for every smoke-grid spec, taken from the golden fixture's shape."""
    from peft3d.core.result import RunResult, write_result
    from peft3d.grids.loader import expand

    template = json.loads((GOLDEN / "results.json").read_text())["results"][0]
    specs = expand("smoke", seeds=[0, 1, 2])
    for i, s in enumerate(specs):
        r = json.loads(json.dumps(template))
        acc = 0.5 + 0.01 * (i % 7)
        r.update(run_id=s.run_id, spec=s.to_dict(), label=s.label)
        r["metrics"].update(test_acc=acc, val_acc=acc, test_acc_best_test=acc + 0.01, test_acc_last=acc, n_test=240)
        r["backbone"]["pretrain_modality"] = "none"
        write_result(root, RunResult.from_dict(r))
    return specs


def test_bench_table_layouts_cli(tmp_path):
    from typer.testing import CliRunner

    from peft3d.cli.app import _mount, app

    _mount()
    fake_smoke_results(tmp_path)
    runner = CliRunner()
    for layout in layouts.LAYOUTS:
        for fmt in layouts.FORMATS:
            out = runner.invoke(app, ["table", "--grid", "smoke", "--results", str(tmp_path), "--seeds", "0,1,2",
                                      "--layout", layout, "--format", fmt, "--reference", "paper"])
            assert out.exit_code == 0, (layout, fmt, out.output)
    assert (tmp_path / "tables" / "smoke.modality.paper.tex").exists()
    out = runner.invoke(app, ["table", "--grid", "smoke", "--results", str(tmp_path), "--seeds", "0,1,2"])
    assert out.exit_code == 0 and "Paired comparisons vs" in out.output and "Friedman" in out.output
    bad = runner.invoke(app, ["table", "--grid", "smoke", "--results", str(tmp_path), "--layout", "wide"])
    assert bad.exit_code == 2 and "--layout must be one of" in bad.output


def test_write_tables_names_files_by_what_they_show_and_states_the_footer(tmp_path):
    """The one table writer: the grid's own table is <name>.md + the runs as <name>.csv; any other rendering is
    <name>.<layout>[.paper].<ext> and leaves the grid's own table alone; a footer is stated under md and LaTeX and
    kept out of CSV (which stays data)."""
    import pandas as pd

    from peft3d.reporting.output import write_tables

    specs = fake_smoke_results(tmp_path)
    tdir = tmp_path / "tables"
    own = write_tables("smoke", specs, tmp_path, versus="linear", footer="Tuning: a stated budget.")
    assert own.paths == [tdir / "smoke.md", tdir / "smoke.csv"] and own.not_succeeded == 0
    assert own.text.rstrip().endswith("Tuning: a stated budget.") and (tdir / "smoke.md").read_text() == own.text
    runs = pd.read_csv(tdir / "smoke.csv")
    assert sorted(runs["run_id"]) == sorted(s.run_id for s in specs) and set(runs["status"]) == {"success"}
    other = write_tables("smoke", specs, tmp_path, versus="lora", variant=True, footer="x")
    assert other.paths == [tdir / "smoke.default.md"] and (tdir / "smoke.md").read_text() == own.text
    tex = write_tables("smoke", specs, tmp_path, "peft", "latex", reference="paper", footer="Tuning: stated.")
    assert tex.paths == [tdir / "smoke.peft.paper.tex"] and tex.text.endswith("% Tuning: stated.\n")
    csv = write_tables("smoke", specs, tmp_path, "runs", "csv", footer="Tuning: stated.")
    assert csv.paths == [tdir / "smoke.runs.csv"] and "Tuning" not in csv.text
    missing = write_tables("smoke", [*specs, specs[0].replace(seed=99)], tmp_path, versus="linear")
    assert missing.not_succeeded == 1 and "not run yet" in missing.text
