"""docs/extending.md cannot rot, and plugins work as it says: its code blocks ARE a plugin distribution.

The blocks named ``# <file>`` are written into a temporary site folder, with a real ``*.dist-info`` (METADATA
and an ``entry_points.txt`` made from the page's ``pyproject.toml`` block, as pip writes them); ``bench`` then
runs in subprocesses with that folder on ``PYTHONPATH`` -- no mock of importlib.metadata. The page's ``bench``
lines run as written (the real-size grid is validated, not run; the scans' root is a seeded temporary folder).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "extending.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)
NOT_RUN = ("bitfit_vs_peft",)  # real backbones at real size: validated here, run by users


def doc_blocks() -> list[tuple[str, str]]:
    return [(lang, body) for lang, body in BLOCK.findall(DOC.read_text())]


def doc_files() -> dict[str, str]:
    """``{relative path: text}`` of the blocks that start with ``# <path>``; ``(continued)`` blocks append."""
    files: dict[str, str] = {}
    for lang, body in doc_blocks():
        first, _, rest = body.partition("\n")
        m = re.fullmatch(r"# ([\w./-]+)( \(continued\))?", first.strip())
        if lang in ("python", "toml", "yaml") and m:
            files[m.group(1)] = files.get(m.group(1), "") + ("\n" if m.group(2) else "") + rest
    return files


def doc_commands() -> list[str]:
    lines = [line.split("#")[0].strip() for lang, body in doc_blocks() if lang == "bash" for line in body.splitlines()]
    return [line for line in lines if line.startswith("bench ")]


def install(site: Path, project: Path) -> None:
    """What ``pip install`` leaves behind: the package and its ``<name>-<version>.dist-info``."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    dist = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    (dist / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
        for group, eps in meta["entry-points"].items()))
    (dist / "INSTALLER").write_text("tests/test_extending.py\n")
    for pkg in {p.parts[0] for p in (q.relative_to(project) for q in project.rglob("*.py"))}:
        (site / pkg).symlink_to(project / pkg)


def bench(site: Path, *args: str, cwd: Path, check_torch: bool = False) -> subprocess.CompletedProcess:
    """``bench ARGS`` in a fresh interpreter with the plugin's site folder first on the path."""
    env = dict(os.environ, HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")]))
    code = ("import sys; sys.argv = ['bench', *sys.argv[1:]]\nfrom peft3d.cli.app import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code or 0\nelse:\n    code = 0\n"
            "print('torch imported:', 'torch' in sys.modules, file=sys.stderr); sys.exit(code)")
    cmd = [sys.executable, "-c", code, *args] if check_torch else [sys.executable, "-m", "peft3d", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)


def write_scans(root: Path, classes: int = 3, per_class: tuple[int, int] = (6, 3)) -> None:
    """A seeded folder in the page's layout: a sphere, a box and a rod, 200-300 noisy points each."""
    rng = np.random.default_rng(0)
    scale = np.array([[1.0, 1.0, 1.0], [1.0, 0.5, 0.2], [0.1, 0.1, 1.0]])
    for split, n in zip(("train", "test"), per_class, strict=True):
        for c in range(classes):
            (root / split / f"class{c}").mkdir(parents=True)
            for i in range(n):
                v = rng.normal(size=(int(rng.integers(200, 300)), 3))
                xyz = v / np.linalg.norm(v, axis=1, keepdims=True) * scale[c] + rng.normal(0, 0.02, (len(v), 3))
                np.savetxt(root / split / f"class{c}" / f"{i}.xyz", xyz, fmt="%.5f")


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    base = tmp_path_factory.mktemp("plugin")
    project, site = base / "project", base / "site"
    for rel, text in doc_files().items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text)
    install(site, project)
    write_scans(base / "my_scans")
    return site, base


def test_the_page_describes_a_whole_distribution():
    files = doc_files()
    assert {"pyproject.toml", "peft3d_bitfit/__init__.py", "peft3d_bitfit/bitfit.py", "peft3d_bitfit/vit.py",
            "peft3d_bitfit/xyz.py", "peft3d_bitfit/grids/bitfit_smoke.yaml"} <= set(files)
    groups = tomllib.loads(files["pyproject.toml"])["project"]["entry-points"]
    assert set(groups) == {"peft3d.methods", "peft3d.backbones", "peft3d.datasets", "peft3d.grids"}
    for cmd in doc_commands():
        assert shlex.split(cmd)[1] in ("ls", "validate", "run", "table", "tune"), cmd


def test_plugin_names_are_listed_without_torch(plugin):
    site, base = plugin
    rows = {}
    for kind in ("methods", "backbones", "datasets", "grids", "presets"):
        out = bench(site, "ls", kind, "--json", cwd=base, check_torch=True)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "torch imported: False" in out.stderr, f"bench ls {kind} imported torch"
        rows[kind] = {r.get("name", r.get("method")): r for r in json.loads(out.stdout)}
    origin = "distribution peft3d-bitfit 0.1.0 (entry point peft3d.methods: bitfit = peft3d_bitfit:bitfit)"
    assert rows["methods"]["bitfit"]["from"] == origin and rows["methods"]["linear"]["from"] == "peft3d (built-in)"
    assert rows["methods"]["bitfit"]["kind"] == "plugin peft3d-bitfit 0.1.0"
    assert rows["backbones"]["test_timm_vit"]["size"] == "32×2"
    assert rows["backbones"]["timm_vit_small"]["weights_here"] == "no"  # the checkpoint is not on this machine
    assert rows["datasets"]["xyz_folder"]["classes"] == 3
    assert {"bitfit_smoke", "bitfit_scans", "bitfit_vs_peft"} <= set(rows["grids"])
    assert rows["grids"]["bitfit_smoke"]["from"].startswith("distribution peft3d-bitfit 0.1.0")
    assert rows["presets"]["bitfit"]["presets"] == "—"  # its config class was imported, without torch


def test_plugin_backbone_declares_its_real_size(plugin):
    """The registered block count of the real-size ViT matches the model built on the meta device."""
    site, base = plugin
    code = ("from peft3d.backbones import BACKBONES\nbb = BACKBONES.get('timm_vit_small')('random', 'meta')\n"
            "print(bb.block_param_count(), BACKBONES.meta('timm_vit_small')['params'], bb.pos_table().table.shape)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=base, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    built, declared, shape = out.stdout.split(maxsplit=2)
    assert built == declared and shape.strip() == "torch.Size([14, 14, 384])"


def test_the_page_runs_to_a_comparison_table(plugin):
    site, base = plugin
    scans = str(base / "my_scans")
    ran = []
    for cmd in doc_commands():
        args = [a.replace("/data/my_scans", scans) for a in shlex.split(cmd)[1:]]
        if any(n in cmd for n in NOT_RUN):
            args = ["validate", *args[1:3]]  # `--grid NAME`: the real-size grid validates (no weights needed)
        if args[0] in ("run", "table"):
            args += ["--results", str(base / "results")]
        if args[0] == "run":
            args += ["--no-mlflow", "--jobs", "2"]
        out = bench(site, *args, cwd=base)
        assert out.returncode == 0, f"bench {' '.join(args)}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}"
        ran.append(args[:3])
    assert ["run", "--grid", "bitfit_smoke"] in ran and ["run", "--grid", "bitfit_scans"] in ran
    for grid in ("bitfit_smoke", "bitfit_scans"):
        table = (base / "results" / "tables" / f"{grid}.md").read_text()
        header = next(line for line in table.splitlines() if line.startswith("| backbone"))
        assert "| bitfit" in header and "| linear" in header and "2/2 runs succeeded" in table, table
    results = [json.loads(p.read_text()) for p in (base / "results" / "runs").glob("*.json")]
    fits = {r["spec"]["backbone"]: r for r in results if r["spec"]["method"] == "bitfit"}
    assert set(fits) == {"test_bert", "test_timm_vit"}
    for r in fits.values():
        assert r["status"] == "success" and r["method"]["trains_backbone"] is True
        assert r["environment"]["plugins"] == ["peft3d-bitfit 0.1.0"]  # provenance names the plugin's version
    # BitFit trains exactly the biases of test_timm_vit's 2 blocks (width 32, MLP 128): qkv 96, proj 32,
    # fc1 128, fc2 32, two LayerNorms 32 each -> 352 per block
    assert fits["test_timm_vit"]["params"]["method"] == 2 * (96 + 32 + 128 + 32 + 2 * 32)
    assert fits["test_timm_vit"]["dataset"]["counts"] == {"train": 15, "val": 3, "test": 9}


def test_a_name_clash_is_one_line_naming_both_distributions(plugin, tmp_path):
    site, base = plugin
    other = tmp_path / "other"
    (other / "clash_pkg").mkdir(parents=True)
    (other / "clash_pkg" / "__init__.py").write_text(
        "from peft3d.core.plugins import Registration\n"
        "bitfit = Registration('clash_pkg:X', config='clash_pkg:Y', summary='another bitfit')\n")
    dist = other / "clash_pkg-0.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: clash-pkg\nVersion: 0.2\n")
    (dist / "entry_points.txt").write_text("[peft3d.methods]\nbitfit = clash_pkg:bitfit\n")
    both = Path(f"{site}{os.pathsep}{other}")
    out = bench(both, "ls", "methods", cwd=base)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "method 'bitfit' is registered twice" in out.stderr
    assert "distribution clash-pkg 0.2" in out.stderr and "distribution peft3d-bitfit 0.1.0" in out.stderr
    # a plugin cannot take a built-in's name either
    (dist / "entry_points.txt").write_text("[peft3d.methods]\nlinear = clash_pkg:bitfit\n")
    out = bench(Path(str(other)), "validate", "--grid", "smoke", cwd=base)
    assert out.returncode == 2 and "method 'linear' is registered twice: by peft3d (built-in) and by " \
                                   "distribution clash-pkg 0.2" in out.stderr


def test_a_grid_clash_and_include_folders(plugin, tmp_path):
    site, base = plugin
    folder = tmp_path / "grids"
    folder.mkdir()
    (folder / "mine.yaml").write_text("description: Mine.\ninclude: bitfit_smoke\n")
    out = bench(site, "ls", "grids", "--include", str(folder), cwd=base)
    assert out.returncode == 0 and any(line.startswith("mine ") for line in out.stdout.splitlines())
    out = bench(site, "validate", "--grid", "mine", "--include", str(folder), cwd=base)
    assert out.returncode == 0 and "OK — 2 runs" in out.stdout, out.stderr
    out = bench(site, "validate", "--grid", "mine", cwd=base)  # without --include the name is unknown
    assert out.returncode == 2 and "unknown grid 'mine'" in out.stderr
    (folder / "bitfit_smoke.yaml").write_text("include: smoke\n")
    out = bench(site, "validate", "--grid", "mine", "--include", str(folder), cwd=base)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "grid 'bitfit_smoke' is defined twice: by distribution peft3d-bitfit 0.1.0" in out.stderr
    assert f"--include {folder}" in out.stderr and "rename one of them" in out.stderr
