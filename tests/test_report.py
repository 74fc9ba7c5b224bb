"""``bench report``: a self-contained HTML file that a real headless browser renders, containing every run.

The browser test needs Debian's ``chromium`` (installed by ``.ci/run``); it is skipped, with that reason, only
when no Chromium binary exists on the machine.
"""
import base64
import io
import re
import shutil
import subprocess

import pytest
from study_fixture import trials_of, write_study
from test_layouts import fake_smoke_results, golden_module

from peft3d.reporting.figures import cliques, pareto_front
from peft3d.reporting.report import write_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    specs = golden_module().load_into(root)
    path = write_report("golden", specs, root, reference="paper")
    return path, specs


@pytest.fixture(scope="module")
def study_report(tmp_path_factory):
    """A tuned k-fold transfer study with few-label folds (tests/study_fixture.py), reported with its manifest."""
    root = tmp_path_factory.mktemp("study_report")
    specs, manifest = write_study(root)
    path = write_report("transfer_study.tuned", specs, root, versus="linear", manifest=manifest)
    return path, specs


def test_report_written_where_documented(report):
    path, _ = report
    assert path.name == "golden.html" and path.parent.name == "report"


def test_report_contains_every_run(report):
    path, specs = report
    text = path.read_text()
    for s in specs:
        assert f'id="run-{s.run_id}"' in text, s.run_id
    assert "CUDA out of memory" in text and "not run yet" in text  # the failed and the missing run, with reasons


def test_report_is_self_contained(report):
    text = report[0].read_text()
    assert "<script" not in text and "<link" not in text and "@import" not in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", text)
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', text)
    alts = {a for a, _ in imgs}
    assert {"accuracy vs trainable parameters", "modality ranking with confidence intervals",
            "learning curves per method (validation dashed, test solid)", "critical-difference diagram"} <= alts
    for _, data in imgs:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_has_tables_and_statistics(report):
    text = report[0].read_text()
    for heading in ("Method table", "Per-cell statistics", "Paired comparisons and Friedman test",
                    "Main table", "Modality ranking", "PEFT methods", "All runs (96)"):
        assert heading in text
    assert "Nemenyi" in text and "91.9" in text  # statistics and the paper's figures (--reference paper)


def test_pareto_front_and_cliques():
    assert pareto_front([(1, 80), (2, 79), (3, 85), (3, 84), (5, 85), (6, 90)]) == [(1, 80), (3, 85), (6, 90)]
    import pandas as pd

    ranks = pd.Series({"a": 1.0, "b": 1.5, "c": 3.0, "d": 3.2})
    assert cliques(ranks, 1.0) == [(0, 1), (2, 3)]
    assert cliques(ranks, 5.0) == [(0, 3)]


def _browser() -> str | None:
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def _chromium(browser: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120)


def test_a_tuned_kfold_study_report_has_its_sections(study_report):
    text = study_report[0].read_text()
    for heading in ("Does pretraining transfer?", "Learning-rate sensitivity", "Data efficiency: accuracy vs "
                    "labelled models per class", "Tuned configuration per cell", "Trainable parameters"):
        assert heading in text, heading
    alts = set(re.findall(r'<img alt="([^"]+)"', text))
    assert {"learning-rate sensitivity per arm", "data-efficiency curve", "accuracy vs trainable parameters",
            "modality ranking with confidence intervals"} <= alts  # (two methods: no critical-difference diagram)
    assert "Overlapping labels" not in text and "Plot failed" not in text
    assert "sweethome3d/cv5_n5" in text and "paired by (fold, seed)" in text
    assert "binomial SE of the pooled test set" in text
    assert "; p (folds) " in text and "Nadeau &amp; Bengio" in text  # the conservative p beside each Δ, explained
    assert "<th>p_folds</th>" in text  # and in the paired comparisons between methods
    assert "Resolution of p (folds): the least significant difference" in text  # how large a gap it could see
    # the sensitivity table counts, at the (lr, wd) points both studies completed, where pretrained led
    pre, rnd = trials_of("minilm", "pretrained", "linear"), trials_of("minilm", "random", "linear")
    shared = [(a, b) for a, b in zip(pre, rnd, strict=True)
              if a["params"] == b["params"] and a["state"] == b["state"] == "COMPLETE"]
    ahead = sum(a["value"] > b["value"] for a, b in shared)
    assert 0 < ahead < len(shared)  # the fixture's arms peak at different learning rates: the lead depends on it
    assert re.search(rf"<td>linear</td>\s*<td>sweethome3d/cv5</td>\s*<td>minilm</td>\s*"
                     rf"<td>{ahead}/{len(shared)} shared points</td>", text)
    # the data-efficiency table: one row per arm with a few-label point, points in order
    assert text.index("5 per class") < text.index("10 per class") < text.index("20 per class")


@pytest.mark.parametrize("which", ["report", "study_report"])
def test_report_renders_in_headless_chromium(which, request, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium binary (chromium, chromium-browser, google-chrome) on this machine: "
                    "install Debian's 'chromium' (.ci/run does) to run the browser test")
    path, specs = request.getfixturevalue(which)
    png = tmp_path / "report.png"
    shot = _chromium(browser, tmp_path, f"--screenshot={png}", "--window-size=1280,2000", path.as_uri())
    assert png.exists() and png.stat().st_size > 10_000, shot.stderr[-2000:]
    from matplotlib import image

    pixels = image.imread(io.BytesIO(png.read_bytes()), format="png")[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 0.05  # not blank: text, tables and plots
    assert (pixels.mean(axis=2) < 0.5).mean() > 0.005  # a visible share of dark pixels (text)
    dom = _chromium(browser, tmp_path, "--dump-dom", path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    for s in specs:
        assert s.run_id in dom.stdout
    assert dom.stdout.count("<img") >= (4 if which == "report" else 5)
    assert "Overlapping labels" not in dom.stdout  # every figure passed the label-collision check


def test_bench_report_cli(tmp_path):
    from typer.testing import CliRunner

    from peft3d.cli.app import _mount, app

    _mount()
    specs = fake_smoke_results(tmp_path)
    out = CliRunner().invoke(app, ["report", "--grid", "smoke", "--results", str(tmp_path), "--seeds", "0,1,2"])
    assert out.exit_code == 0, out.output
    html = (tmp_path / "report" / "smoke.html").read_text()
    assert all(s.run_id in html for s in specs)
    assert "so it reads above test: compare cells by test" in html  # the val column's caveat


def test_bench_report_tuned_plots_the_manifests_trials(tmp_path):
    from typer.testing import CliRunner

    from peft3d.cli.app import _mount, app

    _mount()
    specs, _ = write_study(tmp_path, few=False)
    out = CliRunner().invoke(app, ["report", "--grid", "transfer_study", "--results", str(tmp_path), "--tuned"])
    assert out.exit_code == 0, out.output
    html = (tmp_path / "report" / "transfer_study.tuned.html").read_text()
    assert "Learning-rate sensitivity" in html and 'alt="learning-rate sensitivity per arm"' in html
    assert all(s.run_id in html for s in specs)
    assert "Data efficiency" not in html  # no few-label folds in this study


def test_the_report_names_every_commit_its_runs_ran_with():
    from test_tune import result_for

    from peft3d.core.result import RunResult
    from peft3d.core.spec import RunSpec
    from peft3d.reporting.report import code_versions

    def run(seed, sha):
        d = result_for(RunSpec(backbone="test_bert", method="linear", seed=seed), [0.5])
        return RunResult.from_dict({**d, "environment": {"git_sha": sha}})

    a, b = "a" * 40, "b" * 40 + "-dirty"
    one = {str(i): run(i, a) for i in range(3)}
    assert code_versions({**one, "missing": None}) == f"git {'a' * 12}"
    mixed = {**one, "x": run(7, b), "y": run(8, b), "z": run(9, b), "w": run(10, b)}
    assert code_versions(mixed) == f"code of 2 commits (runs each): {'b' * 12}-dirty (4), {'a' * 12} (3)"


def test_the_report_names_the_hardware_its_runs_ran_on():
    from test_tune import result_for

    from peft3d.core.result import RunResult
    from peft3d.core.spec import RunSpec
    from peft3d.reporting.report import hardware

    def run(seed, env):
        d = result_for(RunSpec(backbone="test_bert", method="linear", seed=seed), [0.5])
        return RunResult.from_dict({**d, "environment": env})

    xeon = {"device": "cpu", "cpu": "Xeon (torch kernels: AVX512)"}
    same = {str(i): run(i, xeon) for i in range(2)}
    assert hardware({**same, "missing": None}) == "ran on Xeon (torch kernels: AVX512)"
    mixed = {**same, "old1": run(5, {"device": "cpu"}), "old2": run(6, {"device": "cpu"}),
             "old3": run(7, {"device": "cpu"}), "gpu": run(8, {"device": "cuda (NVIDIA H100)", "cpu": "EPYC"})}
    assert hardware(mixed) == ("ran on 3 kinds of hardware (runs each): CPU not recorded (3), "
                               "Xeon (torch kernels: AVX512) (2), cuda (NVIDIA H100) (1)")
