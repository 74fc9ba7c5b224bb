"""Where grids come from (built-in, --include folders) and how often a command reads them: every grid file is
parsed once and every (merged) grid checked once per command; the expanded grid is passed down."""
from __future__ import annotations

import sys
from collections import Counter

import pytest

import peft3d.grids.catalog as catalog_mod
import peft3d.grids.loader as loader
from peft3d.cli import app as cli
from peft3d.core.errors import ConfigError
from peft3d.grids.catalog import GridCatalog
from peft3d.grids.loader import expand_grid


@pytest.fixture
def counted(monkeypatch):
    """Counts of YAML parses per file and of grid checks (``check_grid`` as the loader calls it)."""
    reads, checks = Counter(), []
    real_read, real_check = catalog_mod.read_yaml, loader.check_grid

    def read(path):
        reads[path.resolve().name] += 1
        return real_read(path)

    def check(grid, name):
        checks.append(sorted(grid))
        return real_check(grid, name)

    monkeypatch.setattr(catalog_mod, "read_yaml", read)
    monkeypatch.setattr(loader, "check_grid", check)
    return reads, checks


def bench(monkeypatch, capsys, *argv) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["bench", *argv])
    try:
        cli.main()
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_run_reads_each_grid_file_once_and_checks_each_grid_once(counted, monkeypatch, capsys, tmp_path):
    import importlib

    run_module = importlib.import_module("peft3d.cli.run")
    trained = []
    monkeypatch.setattr(run_module, "_run_with_progress", lambda todo, *a: trained.extend(todo))
    reads, checks = counted
    code, out, err = bench(monkeypatch, capsys, "run", "--grid", "quickstart", "--results", str(tmp_path / "r"),
                           "--no-mlflow", "--jobs", "1")
    assert code == 1 and "run(s) did not succeed" in err  # nothing trained (patched out): the table says so
    assert len(trained) == 15 and reads == Counter({"quickstart.yaml": 1})
    assert len(checks) == 3  # the grid and each of its two `also:` variants (the controls)
    assert (tmp_path / "r" / "tables" / "quickstart.md").exists()


@pytest.mark.parametrize("argv", [["validate"], ["table", "--results", "{tmp}"], ["run", "--dry-run"],
                                  ["status", "--results", "{tmp}"], ["tune", "--dry-run", "--trials", "2"]])
def test_every_grid_command_reads_once(counted, monkeypatch, capsys, tmp_path, argv):
    """A grid with a preset include, a relative include and a variant: each file once, each grid once."""
    reads, checks = counted
    (tmp_path / "base.yaml").write_text("backbones: [test_bert]\nweights: [random]\ndatasets: [synthetic]\n"
                                        "methods: [linear, lora]\n")
    (tmp_path / "g.yaml").write_text("include: [_pipeline_paper, base.yaml]\nseeds: [0, 1]\n"
                                     "also: [{methods: [adapter]}]\n")
    args = [a.replace("{tmp}", str(tmp_path / "results")) for a in argv]
    (tmp_path / "results" / "runs").mkdir(parents=True)  # a results folder, before any run landed
    code, out, err = bench(monkeypatch, capsys, *args, "--grid", str(tmp_path / "g.yaml"))
    assert code == 0, err
    assert reads == Counter({"g.yaml": 1, "_pipeline_paper.yaml": 1, "base.yaml": 1})
    assert len(checks) == 2  # the grid, then its variant merged over it


def test_expanded_grid_carries_what_tables_need():
    g = expand_grid("smoke")
    assert g.name == "smoke" and g.compare_to == "any2point" and g.path.name == "smoke.yaml"
    assert [s.grid for s in g.specs] == ["smoke"] * len(g.specs)
    assert g.description.startswith("Tiny models")


def test_include_folder_adds_grids_and_clashes_are_one_line(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "tiny.yml").write_text("description: Mine.\ninclude: smoke\nseeds: [3]\n")
    cat = GridCatalog([folder])
    assert "tiny" in cat.names() and cat.origin("tiny") == f"--include {folder}"
    assert [s.seed for s in expand_grid("tiny", catalog=cat).specs] == [3] * 6
    with pytest.raises(ConfigError, match="unknown grid 'tiny'"):
        expand_grid("tiny")
    (folder / "smoke.yaml").write_text("include: quickstart\n")
    with pytest.raises(ConfigError, match=r"grid 'smoke' is defined twice: by peft3d \(built-in\) .* and by "
                                          rf"--include {folder} .*; rename one of them"):
        GridCatalog([folder]).names()
    with pytest.raises(ConfigError, match="--include .*nowhere: not a folder"):
        GridCatalog([tmp_path / "nowhere"])
