"""Hostile inputs: every bad grid, result file or dataset gets one line naming the thing and the fix,
the right exit code, nothing half-written; no traceback reaches the user; no invalid number reaches a table."""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import h5py
import pytest

from peft3d.cli import app as cli
from peft3d.core.result import ResultInvalid, RunResult, parse_result, read_result, run_path, write_result
from peft3d.core.spec import PipelineCfg
from peft3d.grids.loader import GRID_DIR, expand

GOLDEN = Path(__file__).parent / "golden"


@dataclass
class Outcome:
    exit_code: int
    output: str  # stdout and stderr together, as a user sees them


@pytest.fixture
def bench(monkeypatch, capsys):
    """Run ``bench ARGS`` in-process through ``main()`` (the user's entry point, with its guard)."""
    def run(*args) -> Outcome:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["bench", *map(str, args)])
        monkeypatch.setenv("COLUMNS", "200")
        try:
            cli.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out = capsys.readouterr()
        return Outcome(code, out.out + out.err)
    return run


def grid_file(tmp_path: Path, body: str, name: str = "case.yaml") -> Path:
    p = tmp_path / name
    p.write_text(f"include: {GRID_DIR / 'smoke.yaml'}\n{body}\n")
    return p


# ---- grids: (yaml added to the smoke grid, a phrase the one-line error must contain) --------------------------
BAD_GRIDS = [
    ("budget: {lr: .nan}", "lr must be a finite number"),
    ("budget: {lr: .inf}", "lr must be a finite number"),
    ('budget: "fast"', "budget must be a mapping"),
    ("head: {hidden: wide}", "head.hidden must be a whole number"),
    ("head: {dropout: 1.5}", "head.dropout must be a number in [0, 1)"),
    ("num_points: lots", "num_points must be a whole number"),
    ("num_points: -64", "num_points=-64 is out of range"),
    ("seeds: [a]", "seeds must be a whole number"),
    ("seeds: [-1]", "seeds=-1 is out of range"),
    ('methods: [{name: lora, cfg: "r=4"}]', "cfg must be a mapping"),
    ("methods: [{preset: x}]", "needs 'name: <method>'"),
    ("budget: {epochs: 1.5}", "epochs must be a whole number"),
    ("budget: {epochs: .inf}", "epochs must be a finite number"),
    ("budget: {epochs: 1e12}", "epochs=1000000000000 is out of range"),
    ("budget: {batch_size: 1e12}", "batch_size=1000000000000 is out of range"),
    ("budget: {batch_size: 0}", "batch_size=0 is out of range"),
    ("budget: {lr: -1}", "lr must be a finite number in (0, 10]"),
    ("budget: {weight_decay: high}", "weight_decay must be a finite number"),
    ("device: banana", "device must be cpu, cuda, cuda:N or mps"),
    ("weights: [nonsense]", "weights must be 'pretrained', 'random', 'shuffled' (or 'shuffled:<seed>') or 'path:"),
    ("backbones: [123]", "backbones must list names"),
    ("method_cfg: {lora: {r: four}}", "r must be a whole number"),
    ("method_cfg: {lora: {alpha: .nan}}", "alpha must be a finite number"),
    ("method_cfg: {lora: 4}", "method_cfg.lora must be a mapping"),
    ("tokenizer: {k: 0.5}", "k must be a whole number"),
    ("tokenizer: {out_norm: maybe}", "out_norm must be one of ('batchnorm', 'layernorm', 'none')"),
    ("protocol: [plain]", "protocol must be a string or a mapping"),
    ("description: [a]", "description must be a string"),
]


@pytest.mark.parametrize("body,phrase", BAD_GRIDS, ids=[b for b, _ in BAD_GRIDS])
def test_bad_grid_fails_validate_and_run_with_one_line(bench, tmp_path, body, phrase):
    path = grid_file(tmp_path, body)
    for args in (["validate", "--grid", path], ["run", "--grid", path, "--dry-run", "--results", tmp_path / "r"]):
        r = bench(*args)
        assert r.exit_code == 2, (args, r.output)
        assert phrase in r.output and "Traceback" not in r.output
        assert r.output.strip().count("\n") == 0 or args[0] == "run"  # validate: exactly one line
    assert not (tmp_path / "r").exists()  # nothing written before the grid is valid


def test_yaml_11_numeric_strings_are_numbers(bench, tmp_path):
    """YAML 1.1 reads ``1e-3`` as a string; it is a number in every other reader, so it is accepted as one."""
    specs = expand(str(grid_file(tmp_path, "budget: {lr: 1e-3, min_lr: 1e-7}")))
    assert {s.budget.lr for s in specs} == {0.001} and {s.budget.min_lr for s in specs} == {1e-7}
    assert bench("validate", "--grid", grid_file(tmp_path, "budget: {lr: 1e-3}")).exit_code == 0


def test_device_override_is_checked(bench, tmp_path):
    r = bench("run", "--grid", "smoke", "--device", "banana", "--dry-run", "--results", tmp_path)
    assert r.exit_code == 2 and "--device must be cpu, cuda, cuda:N or mps" in r.output


def test_integer_settings_keep_their_spelling_in_run_ids():
    """Coercion must not turn ``alpha: 8`` into 8.0: that would change every run_id and orphan stored results."""
    lora = [s for s in expand("smoke") if s.method == "lora"][0]
    assert lora.method_cfg["alpha"] == 8 and isinstance(lora.method_cfg["alpha"], int)
    # its id before the validation layer (computed on 1bde71f), when the paper's pipeline was the default
    paper = lora.replace(pipeline=PipelineCfg("mlp", True, "paper"),
                         tokenizer=dataclasses.replace(lora.tokenizer, out_norm=True),
                         budget=dataclasses.replace(lora.budget, schedule="cosine", grad_clip=10.0))
    assert paper.run_id == "4f04f4962eff"


def test_study_names_with_quotes_reach_mlflow_safely(tmp_path):
    from peft3d.tuning.tracking import TuneTracker

    t = TuneTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "peft3d/o'neil")
    rid = t.study_run("o'neil-test_bert-linear", {"n_trials": 1})
    assert t.study_run("o'neil-test_bert-linear", {"n_trials": 1}) == rid  # found again, not duplicated
    assert t.study_run("other", {"n_trials": 1}) != rid


# ---- the results store ------------------------------------------------------------------------------------------

def _golden_result() -> dict:
    return json.loads((GOLDEN / "results.json").read_text())["results"][0]


def _with_metric(**kw) -> bytes:
    r = _golden_result()
    r["metrics"].update(kw)
    return json.dumps(r).encode()


def _without(key) -> bytes:
    r = _golden_result()
    del r[key]
    return json.dumps(r).encode()


def _without_test_metrics() -> bytes:
    r = _golden_result()
    r["metrics"] = {k: v for k, v in r["metrics"].items() if not k.startswith("test_")}
    return json.dumps(r).encode()


BAD_RESULTS = [  # (what the file holds, the problem named)
    (b"\xff\xfe{\"run_id\": 1}", "is not UTF-8 text"),
    ("directory", "is a directory"),
    (b"{\"status\": \"succ", "is not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (json.dumps(dict(_golden_result(), metrics="oops")).encode(), "metrics must be a JSON object"),
    (_without("metrics"), "status is success but there are no metrics"),
    (_without_test_metrics(), "metrics lack ['test_acc'] (only a run with evaluate_test: false may)"),
    (_with_metric(test_acc=2.0), "metrics.test_acc must be a finite number in [0, 1], got 2.0"),
    (_with_metric(test_acc="high"), "metrics.test_acc must be a finite number in [0, 1], got 'high'"),
    (_with_metric(test_acc=float("nan")), "contains NaN"),
    (_with_metric(val_acc=float("inf")), "contains Infinity"),
    (_with_metric(test_acc=-0.1), "metrics.test_acc must be a finite number in [0, 1]"),
    (_with_metric(test_acc=True), "metrics.test_acc must be a finite number in [0, 1]"),
    (_with_metric(n_test=2.5), "metrics.n_test must be a non-negative integer"),
    (_with_metric(curves={"test_acc": [0.5, 7.0]}), "metrics.curves.test_acc must be a finite number in [0, 1]"),
    (json.dumps(dict(_golden_result(), schema=99)).encode(), "schema version 99"),
    (json.dumps(dict(_golden_result(), status="great")).encode(), "status must be one of"),
    (json.dumps(dict(_golden_result(), run_id="000000000000")).encode(), "holds run_id '000000000000'"),
    (json.dumps(dict(_golden_result(), params={"trainable": "many"})).encode(), "params.trainable"),
]


def _plant(root: Path, run_id: str, content) -> Path:
    path = run_path(root, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    if content == "directory":
        path.mkdir()
        (path / "x").write_text("{}")
    else:
        path.write_bytes(content.replace(b"c8bc4b97db8c", run_id.encode()) if b"000000000000" not in content
                         else content)
    return path


@pytest.mark.parametrize("content,problem", BAD_RESULTS, ids=[p for _, p in BAD_RESULTS])
def test_invalid_result_is_reported_once_quarantined_and_never_tabulated(tmp_path, capsys, content, problem):
    spec = [s for s in expand("smoke") if s.method == "linear"][0]
    path = _plant(tmp_path, spec.run_id, content)
    assert read_result(tmp_path, spec.run_id) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and problem in err and str(path) in err and "quarantine" in err
    assert not path.exists() and (tmp_path / "quarantine" / path.name).exists()
    assert read_result(tmp_path, spec.run_id) is None and capsys.readouterr().err == ""  # once
    from peft3d.reporting.tables import runs_frame

    df = runs_frame(expand("smoke"), tmp_path)
    row = df.set_index("run_id").loc[spec.run_id]
    assert row["status"] == "missing" and math.isnan(row["test_acc"])  # redone by the next run, never a number


@pytest.mark.parametrize("command", [["table"], ["report"], ["table", "--tuned"], ["report", "--tuned"]])
def test_a_results_folder_that_never_held_a_run_is_one_line_and_nothing_written(bench, tmp_path, command):
    """A mistyped --results used to write a table of blanks (every run 'missing') into a folder it created."""
    where = tmp_path / "typo"
    r = bench(*command, "--grid", "smoke", "--results", where)
    assert r.exit_code == 2 and "Traceback" not in r.output
    if "--tuned" in command:
        assert "no tuned runs for grid 'smoke'" in r.output and "run 'bench tune --grid smoke' first" in r.output
    else:
        assert f"no results at {where} (it has no runs/ folder); fix: pass the --results the grid smoke ran with" \
            in r.output
    assert not where.exists()


def test_bench_table_and_report_survive_every_bad_result(bench, tmp_path):
    specs = expand("smoke")
    for s, (content, _) in zip(specs, BAD_RESULTS, strict=False):
        _plant(tmp_path, s.run_id, content)
    for args in (["table", "--grid", "smoke"], ["table", "--grid", "smoke", "--layout", "runs", "--format", "csv"]):
        r = bench(*args, "--results", tmp_path)
        assert r.exit_code == 0 and "Traceback" not in r.output, r.output
        assert "200.0" not in r.output and "nan" not in r.output.lower()
    assert len(list((tmp_path / "quarantine").iterdir())) == len(specs)
    from peft3d.reporting.tables import runs_frame

    assert runs_frame(specs, tmp_path)["test_acc"].isna().all()


def test_writer_refuses_what_a_reader_would_reject(tmp_path):
    bad = RunResult.from_dict(_golden_result())
    bad = RunResult(**{**bad.__dict__, "status": "success", "metrics": None})
    with pytest.raises(ResultInvalid, match="no metrics"):
        write_result(tmp_path, bad)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_only_a_run_that_skipped_its_test_split_may_lack_test_accuracy(tmp_path):
    r = json.loads(_without_test_metrics())
    with pytest.raises(ResultInvalid, match=r"metrics lack \['test_acc'\]"):
        RunResult.from_dict(r)
    r["spec"]["evaluate_test"] = False  # a tuning trial's record
    trial = RunResult.from_dict(r)
    assert trial.ok and trial.metrics.test_acc is None and trial.metrics.val_acc == r["metrics"]["val_acc"]
    write_result(tmp_path, trial)
    assert parse_result(run_path(tmp_path, r["run_id"])).to_dict() == r


def test_result_round_trip_is_lossless(tmp_path):
    r = _golden_result()
    write_result(tmp_path, RunResult.from_dict(r))
    assert json.loads(run_path(tmp_path, r["run_id"]).read_text()) == r
    assert parse_result(run_path(tmp_path, r["run_id"])).to_dict() == r


# ---- the CLI guard ----------------------------------------------------------------------------------------------

def _main(monkeypatch, capsys, *argv):
    monkeypatch.setattr(sys, "argv", ["bench", *argv])
    with pytest.raises(SystemExit) as e:
        cli.main()
    return e.value.code, capsys.readouterr().err


def test_unexpected_error_is_one_line_with_its_traceback_file(monkeypatch, capsys):
    import importlib

    ls = importlib.import_module("peft3d.cli.ls")  # the module (``peft3d.cli.ls`` the attribute is the command)
    monkeypatch.setattr(ls, "rows", lambda *args, **kwargs: 1 / 0)
    code, err = _main(monkeypatch, capsys, "ls", "methods")
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "bench ls failed unexpectedly: ZeroDivisionError" in err and "--debug" in err
    log = Path(err.split("traceback in ")[1].split(";")[0])
    assert "ZeroDivisionError" in log.read_text() and "Traceback" in log.read_text()
    log.unlink()
    monkeypatch.setattr(sys, "argv", ["bench", "ls", "methods", "--debug"])
    with pytest.raises(ZeroDivisionError):
        cli.main()


def test_user_error_exits_2(monkeypatch, capsys):
    code, err = _main(monkeypatch, capsys, "validate", "--grid", "no_such_grid")
    assert code == 2 and err.startswith("error: unknown grid 'no_such_grid'") and err.count("\n") == 1


def test_unwritable_results_folder_is_one_line(tmp_path, monkeypatch, capsys):
    import errno
    import tempfile

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    code, err = _main(monkeypatch, capsys, "run", "--grid", "smoke", "--results", str(tmp_path))
    assert code == 2 and err.count("\n") == 1
    assert f"results folder {tmp_path} is not writable (Read-only file system)" in err


def test_results_path_that_is_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    f = tmp_path / "results"
    f.write_text("")
    code, err = _main(monkeypatch, capsys, "run", "--grid", "smoke", "--results", str(f))
    assert code == 2 and err.count("\n") == 1 and "is not writable" in err


def test_worker_takes_its_spec_on_stdin_not_a_temp_file():
    """A killed ``bench run`` used to leave ``peft3d-<run_id>-*.json`` in the temp folder; nothing is written now."""
    import inspect

    from peft3d.schedule import runner, worker

    assert "tempfile" not in inspect.getsource(runner) and "stdin=subprocess.PIPE" in inspect.getsource(runner)
    assert "sys.stdin.read()" in inspect.getsource(worker.main)


# ---- datasets ---------------------------------------------------------------------------------------------------

@pytest.fixture
def small_synthetic(monkeypatch, tmp_path):
    from peft3d.datasets.synthetic import Synthetic

    monkeypatch.setenv("PEFT3D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(Synthetic, "TRAIN_PER_CLASS", 3)
    monkeypatch.setattr(Synthetic, "TEST_PER_CLASS", 2)


@pytest.mark.parametrize("edit,phrase", [
    (lambda m: m.pop("counts"), "'counts' must map train and test"),
    (lambda m: m.update(class_names={"0": "cube"}), "'class_names' must be a non-empty list of strings"),
    (lambda m: m.update(counts={"train": "many", "test": 1}), "'counts' must map train and test"),
])
def test_bad_export_manifest_is_one_line(bench, tmp_path, small_synthetic, edit, phrase):
    out = tmp_path / "scan"
    assert bench("data", "export", "synthetic", "--format", "scanobjectnn", "--out", out).exit_code == 0
    path = out / "peft3d_export.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))
    r = bench("data", "check", "scanobjectnn", "--root", out)
    assert r.exit_code == 2 and phrase in r.output and "Traceback" not in r.output, r.output


def test_huge_declared_h5_is_refused_before_reading(bench, tmp_path):
    from test_datasets_formats import write_scan

    from peft3d.datasets import scanobjectnn

    write_scan(tmp_path)
    sub, pattern = scanobjectnn.LAYOUT["pb_t50_rs"]
    with h5py.File(tmp_path / sub / pattern.format(split="training"), "w") as f:  # 240 GB declared, ~KB on disk
        f.create_dataset("data", shape=(10**7, 2048, 3), dtype="f4", chunks=(1, 2048, 3))
        f.create_dataset("label", shape=(10**7,), dtype="u1", chunks=(1024,))
    r = bench("data", "check", "scanobjectnn", "--root", tmp_path)
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "10000000 x 2048 x 3 float32" in r.output and "GiB of memory available" in r.output


def test_dataset_with_zero_samples_is_invalid(bench, tmp_path):
    from test_datasets_formats import write_scan

    write_scan(tmp_path, n=(0, 15))
    r = bench("data", "check", "scanobjectnn", "--root", tmp_path)
    assert r.exit_code != 0 and "INVALID" in r.output and "Traceback" not in r.output, r.output



# ---- fuzz (hypothesis): any value under any key either validates or is one ConfigError/ResultInvalid line --------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from peft3d.core.errors import ConfigError  # noqa: E402
from peft3d.core.registry import RegistryError  # noqa: E402

ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**15, max_value=10**15), st.floats(),
                      st.text(max_size=8), st.lists(st.integers(-3, 3), max_size=3),
                      st.dictionaries(st.text(max_size=4), st.integers(-3, 3), max_size=2))
GRID_KEYS = ["budget.epochs", "budget.batch_size", "budget.lr", "budget.weight_decay", "budget.warmup_epochs",
             "budget.label_smoothing", "tokenizer.k", "tokenizer.alpha", "tokenizer.lga_blocks", "head.hidden",
             "head.dropout", "num_points", "seeds", "device", "weights", "protocol", "methods",
             "method_cfg.lora.r", "method_cfg.lora.alpha", "method_cfg.prompt.num_prompts"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(GRID_KEYS), value=ANY_VALUE)
def test_fuzz_grid_values(tmp_path, key, value):
    import yaml

    *outer, last = key.split(".")
    body: dict = {}
    node = body
    for k in outer:
        node = node.setdefault(k, {})
    node[last] = value
    path = tmp_path / "fuzz.yaml"
    path.write_text(f"include: {GRID_DIR / 'smoke.yaml'}\n" + yaml.safe_dump(body))
    try:
        specs = expand(str(path))
    except (ConfigError, RegistryError) as e:  # both: one line, exit 2 in main()
        assert "\n" not in str(e) and str(e)
        return
    for s in specs:  # accepted: then every number is a real, finite, in-range setting
        b = s.budget
        assert isinstance(b.epochs, int) and 1 <= b.epochs <= 100_000 and 1 <= b.batch_size <= 65_536
        assert math.isfinite(b.lr) and 0 < b.lr <= 10 and 0 <= b.label_smoothing < 1
        assert isinstance(s.num_points, int) and s.num_points >= 1 and isinstance(s.seed, int) and s.seed >= 0
        assert s.device in ("cpu", "mps") or s.device.startswith("cuda")
        assert all(math.isfinite(v) for v in s.method_cfg.values() if isinstance(v, float))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["test_acc", "val_acc", "test_acc_best_test", "n_test", "selected_epoch", "curves"]),
       value=ANY_VALUE, status=st.sampled_from(["success", "failed", "pruned", "done", None]))
def test_fuzz_result_files(tmp_path, key, value, status):
    r = _golden_result()
    r["metrics"][key] = value
    r["status"] = status
    path = run_path(tmp_path, r["run_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r))  # NaN / Infinity written as JSON's non-standard tokens, as Python would
    got = read_result(tmp_path, r["run_id"])
    if got is None:
        assert not path.exists()  # quarantined: the run is redone
        return
    assert got.status == status and (got.metrics is not None or status != "success")
    m = got.metrics
    for acc in (m.test_acc, m.val_acc, m.test_acc_best_test):
        assert acc is None or (isinstance(acc, float) and math.isfinite(acc) and 0 <= acc <= 1)
