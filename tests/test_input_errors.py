"""What a newcomer meets on the newer surfaces: each mistake is one line naming the thing and the fix, exit 2,
and nothing written (the results folder is never created)."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from peft3d.cli import app as cli

GRID = "backbones: [test_bert]\nweights: [random]\ndatasets: [synthetic]\n"


def bench(monkeypatch, capsys, *argv) -> tuple[int, str]:
    """``bench`` in this process through its real entry point (the handler that turns errors into exit 2)."""
    monkeypatch.setattr(sys, "argv", ["bench", *argv])
    with pytest.raises(SystemExit) as e:
        cli.main()
    return e.value.code, capsys.readouterr().err


def one_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("url, says", [
    ("foo://host/db", "not a database URL SQLAlchemy can open (Can't load plugin: sqlalchemy.dialects:foo)"),
    ("postgres://user@host/db", "sqlalchemy.dialects:postgres"),  # the old alias SQLAlchemy dropped
    ("not a url", "Could not parse SQLAlchemy URL"),
])
def test_tune_storage_with_an_unknown_scheme(monkeypatch, capsys, tmp_path, url, says):
    code, err = bench(monkeypatch, capsys, "tune", "--grid", "smoke", "--trials", "1", "--results",
                      str(tmp_path / "res"), "--storage", url)
    assert code == 2 and says in one_line(err) and "fix: use sqlite:///" in err
    assert not (tmp_path / "res").exists()


@pytest.mark.skipif(importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is None,
                    reason="no PostgreSQL driver installed (the test extra installs psycopg2-binary)")
def test_tune_storage_with_an_unreachable_postgresql(monkeypatch, capsys, tmp_path):
    # port 1 on the loopback: refused at once, nothing listens there
    code, err = bench(monkeypatch, capsys, "tune", "--grid", "smoke", "--trials", "1", "--results",
                      str(tmp_path / "res"), "--storage", "postgresql://someone:secret@127.0.0.1:1/optuna")
    assert code == 2 and "--storage postgresql://***@127.0.0.1:1/optuna: cannot connect" in one_line(err)
    assert "secret" not in err and "fix: start the database server" in err
    assert not (tmp_path / "res").exists()


def test_submit_tune_checks_the_storage_scheme(monkeypatch, capsys, tmp_path):
    code, err = bench(monkeypatch, capsys, "submit", "--grid", "smoke", "--tune", "--trials", "1", "--executor",
                      "local", "--results", str(tmp_path / "res"), "--storage", "foo://host/db")
    assert code == 2 and "--storage foo://host/db: not a database URL" in one_line(err)
    assert not (tmp_path / "res").exists()


def test_a_grid_file_that_is_not_utf8(monkeypatch, capsys, tmp_path):
    grid = tmp_path / "latin1.yaml"
    grid.write_bytes(GRID.encode() + "description: café au lait\nmethods: [linear]\n".encode("latin-1"))
    code, err = bench(monkeypatch, capsys, "validate", "--grid", str(grid))
    assert code == 2 and f"grid {grid}: line 4 is not UTF-8 text (byte b'\\xe9')" in one_line(err)
    assert "fix: save the file as UTF-8" in err


def test_validate_refuses_weights_path_pointing_at_nothing(monkeypatch, capsys, tmp_path):
    missing = tmp_path / "no_such_checkpoint.pt"
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID.replace("[random]", f"['path:{missing}']") + "methods: [linear]\n")
    code, err = bench(monkeypatch, capsys, "validate", "--grid", str(grid))
    assert code == 2 and f"weights path:{missing}: no such file or folder; fix: point path: at" in one_line(err)
    missing.write_bytes(b"")  # once the file is there, validation passes (loading it is the run's job)
    code, err = bench(monkeypatch, capsys, "validate", "--grid", str(grid))
    assert code in (0, None) and err == ""


@pytest.mark.parametrize("cfg, says", [
    ('{name: "peft:lora", cfg: {r: -4}}', "`r` should be a positive integer value but the value passed is -4"),
    ('{name: "peft:loha", cfg: {r: 0}}', "`r` should be a positive integer value but the value passed is 0"),
])
def test_validate_refuses_a_peft_config_the_tuner_rejects(monkeypatch, capsys, tmp_path, cfg, says):
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID + f"methods: [linear, {cfg}]\n")
    code, err = bench(monkeypatch, capsys, "validate", "--grid", str(grid))
    assert code == 2 and says in one_line(err) and "peft " in err and "rejects this configuration" in err


def test_a_peft_config_the_tuner_takes_still_validates(monkeypatch, capsys, tmp_path):
    """The toy build must not refuse good settings (nor any tuner whose defaults it cannot judge)."""
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID + 'methods: [{name: "peft:lora", cfg: {r: 2}}, {name: "peft:vera", cfg: {r: 4}}, '
                           '"peft:ia3"]\n')
    code, err = bench(monkeypatch, capsys, "validate", "--grid", str(grid))
    assert code in (0, None) and err == ""


def test_run_on_a_gpu_that_is_not_there_refuses_up_front(monkeypatch, capsys, tmp_path):
    import torch

    if not torch.cuda.is_available():  # the machine has no CUDA at all
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        code, err = bench(monkeypatch, capsys, "run", "--grid", "smoke", "--devices", "cuda:0", "--results",
                          str(tmp_path / "res"))
        assert code == 2 and "--devices cuda:0: this machine has no CUDA device" in one_line(err)
        assert "fix: --devices auto or cpu" in err and not (tmp_path / "res").exists()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # CUDA hidden: the same refusal on any machine
    code, err = bench(monkeypatch, capsys, "run", "--grid", "smoke", "--devices", "cuda:0", "--results",
                      str(tmp_path / "res"))
    assert code == 2 and "--devices cuda:0: only 0 GPU(s) visible" in one_line(err) and "fix:" in err
    assert not (tmp_path / "res").exists()
