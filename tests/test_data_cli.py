"""``bench data check | info | export``: reports, exit codes, --strict, --json; corrupted files exit 2."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_datasets_formats import write_mn_dat, write_mn_txt, write_scan
from typer.testing import CliRunner

from peft3d.cli import app as cli
from peft3d.datasets.synthetic import Synthetic

cli._mount()
RUN = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFT3D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(Synthetic, "TRAIN_PER_CLASS", 3)
    monkeypatch.setattr(Synthetic, "TEST_PER_CLASS", 2)


def bench(*args: str):
    return RUN.invoke(cli.app, [str(a) for a in args])


def test_export_then_check_is_valid(tmp_path):
    out = tmp_path / "scan"
    r = bench("data", "export", "synthetic", "--format", "scanobjectnn", "--out", out)
    assert r.exit_code == 0, r.output
    assert (out / "main_split" / "training_objectdataset_augmentedrot_scale75.h5").is_file()
    r = bench("data", "check", "scanobjectnn/pb_t50_rs", "--root", out, "--strict")
    assert r.exit_code == 0, r.output
    assert "VALID" in r.output and "peft3d export of synthetic/scan" in r.output and "helix" in r.output


def test_check_json_is_one_object(tmp_path):
    bench("data", "export", "synthetic", "--out", tmp_path)
    r = bench("data", "check", "scanobjectnn", "--root", tmp_path, "--json")
    rep = json.loads(r.output)
    assert rep["valid"] and rep["exit_code"] == 0 and rep["counts"]["train"] == 36
    assert rep["per_class"]["test"] == [2] * 12 and rep["source"]["val_indices_sha256"]


def test_nonstandard_counts_warn_then_fail_with_strict(tmp_path):
    write_scan(tmp_path)  # 30 / 15 samples, 64 points: not the published 11,416 / 2,882 × 2048
    r = bench("data", "check", "scanobjectnn", "--root", tmp_path)
    assert r.exit_code == 0, r.output
    assert "WARNING" in r.output and "published count is 11,416" in r.output and "partial" in r.output
    r = bench("data", "check", "scanobjectnn", "--root", tmp_path, "--strict")
    assert r.exit_code == 2 and "[error because of --strict]" in r.output and "INVALID" in r.output


def test_missing_classes_warn(tmp_path):
    write_scan(tmp_path, label=np.zeros(30, np.int64))
    rep = json.loads(bench("data", "check", "scanobjectnn", "--root", tmp_path, "--json").output)
    assert any("14 class(es) have no samples" in f["message"] for f in rep["findings"])


def _truncate(root: Path) -> None:
    p = root / "main_split" / "training_objectdataset_augmentedrot_scale75.h5"
    p.write_bytes(p.read_bytes()[:2000])


def _nan(root: Path) -> None:
    pts = np.zeros((30, 64, 3), np.float32)
    pts[3, 1, 2] = np.nan
    write_scan(root, data=pts)


CORRUPT = {
    "truncated hdf5": (lambda r: (write_scan(r), _truncate(r)), "unreadable HDF5"),
    "wrong shape": (lambda r: write_scan(r, data=np.zeros((30, 64, 4, 1), np.float32)), "must have shape (N, P, 3)"),
    "nan points": (_nan, "NaN/Inf"),
    "labels out of range": (lambda r: write_scan(r, label=np.full(30, 20)), "outside [0, 14]"),
    "missing files": (lambda r: None, "not found; download h5_files.zip"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_scanobjectnn_exits_2(tmp_path, case):
    make, needle = CORRUPT[case]
    root = tmp_path / "h5_files"
    root.mkdir()
    make(root)
    r = bench("data", "check", "scanobjectnn/pb_t50_rs", "--root", root)
    assert r.exit_code == 2, r.output
    assert needle in " ".join(r.output.split()) and "INVALID" in r.output
    assert "hkust-vgd.github.io/scanobjectnn" in r.output  # the fix: where to download, how to lay it out
    assert not (tmp_path / "cache").exists()  # never a partial cache file


def test_corrupt_modelnet40_exits_2(tmp_path, monkeypatch):
    from peft3d.datasets import modelnet40

    monkeypatch.setattr(modelnet40, "TXT_POINTS", 20)
    txt = write_mn_txt(tmp_path / "txt", rows=20, n=(2, 2))
    (txt / "modelnet40_test.txt").unlink()
    r = bench("data", "check", "modelnet40", "--root", txt)
    assert r.exit_code == 2 and "modelnet40_test.txt not found" in r.output
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.npy"))

    dat = write_mn_dat(tmp_path / "dat")
    with open(dat / "modelnet40_train_8192pts_fps.dat", "wb") as f:
        pickle.dump([[os.getcwd], [np.zeros(1)]], f)  # a global that is not an array reconstructor
    r = bench("data", "check", "modelnet40", "--root", dat, "--json")
    rep = json.loads(r.stdout if hasattr(r, "stdout") else r.output)
    assert r.exit_code == 2 and "refuses to unpickle posix.getcwd" in rep["findings"][0]["message"]


def test_info_lists_layout_and_sources():
    r = bench("data", "info", "modelnet40")
    assert r.exit_code == 0
    for s in ("modelnet40_train_8192pts_fps.dat", "ply_data_train0.h5", "modelnet40_shape_names.txt",
              "9,843 train / 2,468 test", "Point-BERT"):
        assert s in r.output
    assert "main_split_nobg" in bench("data", "info", "scanobjectnn").output


def test_unknown_dataset_and_format_exit_2(tmp_path):
    assert bench("data", "check", "scanobjectn", "--root", tmp_path).exit_code == 2
    assert bench("data", "export", "synthetic", "--format", "ply", "--out", tmp_path).exit_code == 2
    assert bench("data", "export", "scanobjectnn", "--out", tmp_path).exit_code == 2


def test_exit_code_and_torch_free_in_subprocess(tmp_path):
    """The installed entry point maps an invalid dataset to exit 2; checking never imports torch."""
    write_scan(tmp_path, data=np.full((30, 64, 3), np.inf, np.float32))
    code = ("import sys; from peft3d.datasets import check_root; from peft3d.datasets.check import check; "
            "import peft3d.cli.data; "
            f"r = check('scanobjectnn', {str(tmp_path)!r}); assert not r.valid, r; "
            f"assert check_root('scanobjectnn', None, {str(tmp_path)!r}) is None; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([sys.executable, "-m", "peft3d", "data", "check", "scanobjectnn", "--root", str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert p.returncode == 2 and "NaN/Inf" in p.stderr and "INVALID" in p.stdout
