"""Registry, RunSpec identity, grids: the torch-free core."""
import subprocess
import sys

import pytest

from peft3d.core.errors import ConfigError
from peft3d.core.registry import Registry, RegistryError
from peft3d.core.spec import Budget, RunSpec, TokenizerCfg
from peft3d.grids.loader import expand


def test_registry_duplicate_and_unknown_with_suggestion():
    r = Registry("widget")
    r.register("adapter", "x.y:Z")
    with pytest.raises(RegistryError, match=r"widget 'adapter' is registered twice: by peft3d \(built-in\) and by "
                                            r"peft3d \(built-in\)"):
        r.register("adapter", "x.y:W")
    with pytest.raises(RegistryError, match=r"unknown widget 'adaptr'; did you mean 'adapter'\?"):
        r.check("adaptr")
    with pytest.raises(RegistryError, match="pkg.module:Attr"):
        r.register("bad", "no_colon")
    with pytest.raises(RegistryError, match="must be letters, digits"):
        r.register("peft:x", "x.y:Z")


def test_registry_is_lazy():
    r = Registry("thing")
    r.register("mod", "json:dumps")
    assert "json" in sys.modules  # (json is imported by everyone; check identity instead)
    assert r.get("mod") is __import__("json").dumps


def test_run_id_stable_and_sensitive():
    a = RunSpec(backbone="minilm", method="lora", method_cfg={"r": 8, "targets": ()}, seed=1)
    b = RunSpec(backbone="minilm", method="lora", method_cfg={"targets": [], "r": 8}, seed=1)
    assert a.run_id == b.run_id  # key order and tuple/list spelling do not matter
    assert len(a.run_id) == 12
    # machine-specific fields do not change the identity; scientific ones do
    assert a.replace(data_root="/elsewhere", device="cuda", grid="g").run_id == a.run_id
    assert a.replace(seed=2).run_id != a.run_id
    assert a.replace(budget=Budget(epochs=11)).run_id != a.run_id
    assert a.replace(tokenizer=TokenizerCfg(k=16)).run_id != a.run_id
    assert a.replace(evaluate_test=False).run_id != a.run_id  # a test-less record never stands in for a run
    assert a.replace(evaluate_test=True).run_id == a.run_id  # the default leaves earlier ids as they were
    # pinned: the same spec hashes to the same id on any machine and in any later session
    assert RunSpec(backbone="minilm", method="linear").run_id == RunSpec.from_dict(
        RunSpec(backbone="minilm", method="linear").to_dict()).run_id


def test_run_id_is_pinned_across_processes():
    """A literal id: a change to RunSpec's canonical form or hash orphans every stored result and fails here."""
    # the paper's pipeline spelled out: the id every such run has had since ids were first published
    code = ("from peft3d.core.spec import Budget, PipelineCfg, RunSpec, TokenizerCfg; print(RunSpec("
            "backbone='minilm', method='adapter', method_cfg={'bottleneck': 8}, pipeline=PipelineCfg('mlp', True, "
            "'paper'), tokenizer=TokenizerCfg(out_norm=True), budget=Budget(schedule='cosine', grad_clip=10.0))"
            ".run_id)")
    ids = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PYTHONHASHSEED": str(s), "PATH": ""}).stdout.strip() for s in (1, 2)}
    assert ids == {"138d3c228330"}
    assert RunSpec(backbone="minilm", method="linear").run_id == "096a01d74192"  # today's default pipeline


def test_spec_rejects_unknown_and_bad_values():
    with pytest.raises(ConfigError, match="unknown key"):
        RunSpec.from_dict({"backbone": "x", "method": "y", "budget": {"epoch": 3}})
    with pytest.raises(ValueError, match="warmup_epochs"):
        Budget(epochs=2, warmup_epochs=5)
    with pytest.raises(ValueError, match="lga_blocks"):
        TokenizerCfg(num_stages=2, lga_blocks=(1, 1, 1))


def write_grid(tmp_path, text, name="g.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_grid_include_and_expand(tmp_path):
    write_grid(tmp_path, "backbones: [test_bert]\nweights: [random]\ndatasets: [synthetic]\n"
                         "budget: {epochs: 3}\nseeds: [0, 1]\n", "base.yaml")
    g = write_grid(tmp_path, "include: base.yaml\nmethods: [linear, {name: lora, cfg: {r: 2}}]\n"
                             "budget: {batch_size: 8}\n")
    specs = expand(g)
    assert len(specs) == 4
    assert {s.method for s in specs} == {"linear", "lora"}
    assert all(s.budget.epochs == 3 and s.budget.batch_size == 8 for s in specs)  # mappings merge
    lora = [s for s in specs if s.method == "lora"][0]
    assert lora.method_cfg["r"] == 2 and lora.method_cfg["alpha"] == 16.0  # defaults filled in
    assert lora.variant == "scan"


@pytest.mark.parametrize("text,match", [
    ("backbones: [minilmm]\nmethods: [linear]\ndatasets: [synthetic]\n", "did you mean 'minilm'"),
    ("backbones: [minilm]\nmethods: [lorra]\ndatasets: [synthetic]\n", "did you mean 'lora'"),
    ("backbones: [minilm]\nmethods: [linear]\ndatasets: [synthetic/noisy]\n", "no variant 'noisy'"),
    ("backbones: [minilm]\nmethods: [linear]\ndatasets: [synthetic]\nepochs: 3\n", "unknown key"),
    ("backbones: [minilm]\nmethods: [{name: lora, cfg: {rank: 4}}]\ndatasets: [synthetic]\n", "unknown key"),
    ("backbones: [minilm]\nmethods: [{name: lora, cfg: {r: 0}}]\ndatasets: [synthetic]\n", "r must be >= 1"),
    ("backbones: [minilm]\nmethods: [{name: lora, preset: nope}]\ndatasets: [synthetic]\n", "unknown preset"),
    ("backbones: [minilm\nmethods: [linear]\n", "not valid YAML"),
    ("methods: [linear]\ndatasets: [synthetic]\n", "'backbones' is required"),
    ("backbones: [minilm]\nmethods: [linear]\ndatasets: [synthetic]\nbudget: {epochs: 0}\n", "epochs"),
])
def test_bad_grids_fail_before_training(tmp_path, text, match):
    with pytest.raises((ConfigError, RegistryError), match=match):
        expand(write_grid(tmp_path, text))


def test_unknown_grid_name_suggests():
    with pytest.raises(ConfigError, match="did you mean 'quickstart'"):
        expand("quickstrat")


def test_cli_errors_are_one_line_exit_2(tmp_path):
    g = write_grid(tmp_path, "backbones: [minilmm]\nmethods: [linear]\ndatasets: [synthetic]\n")
    out = subprocess.run([sys.executable, "-m", "peft3d", "validate", "--grid", g], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "did you mean 'minilm'" in out.stderr
    assert not (tmp_path / "results").exists()


def test_ls_and_validate_do_not_import_torch():
    code = ("import sys; from peft3d.cli import ls as listing; from peft3d.grids.loader import expand; "
            "[listing.rows(w) for w in ('backbones','methods','datasets','grids','presets')]; "
            "expand('quickstart'); expand('smoke'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("what", ["backbones", "methods", "datasets", "grids", "presets"])
@pytest.mark.parametrize("as_json", [False, True])
def test_bench_ls_never_imports_torch(what, as_json):
    """The real command (rendering included), in a fresh interpreter: torch must not be in sys.modules after it."""
    code = ("import atexit, sys; atexit.register(lambda: print('torch' in sys.modules, file=sys.stderr))\n"
            "sys.argv = ['bench', *sys.argv[1:]]\nfrom peft3d.cli.app import main\nmain()\n")
    out = subprocess.run([sys.executable, "-c", code, "ls", what, *(["--json"] if as_json else [])],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == "False", f"bench ls {what} imported torch"


def test_bench_ls_json():
    import json

    out = subprocess.run([sys.executable, "-m", "peft3d", "ls", "methods", "--json"], capture_output=True,
                         text=True, check=True)
    names = [r["name"] for r in json.loads(out.stdout)]
    assert {"linear", "full", "prompt", "adapter", "lora"} <= set(names)


def test_compare_to_comes_from_the_grid(tmp_path):
    from peft3d.grids.loader import compare_to

    base = "backbones: [test_bert]\nweights: [random]\ndatasets: [synthetic]\nmethods: [lora, prompt, linear]\n"
    assert compare_to(write_grid(tmp_path, base, "first.yaml")) == "lora"  # default: the grid's first method
    assert compare_to(write_grid(tmp_path, base + "compare_to: prompt\n", "named.yaml")) == "prompt"
    bad = write_grid(tmp_path, base + "compare_to: adapter\n", "bad.yaml")
    with pytest.raises(ConfigError, match="compare_to 'adapter' is not one of its methods"):
        expand(bad)
    assert compare_to("smoke") == "any2point" and compare_to("paper_any2point") == "any2point"
    # an including grid that lists its own methods does not inherit the included grid's comparison
    child = write_grid(tmp_path, "include: named.yaml\nmethods: [linear, lora]\n", "child.yaml")
    assert compare_to(child) == "linear"
    kept = write_grid(tmp_path, "include: named.yaml\nseeds: [3]\n", "kept.yaml")
    assert compare_to(kept) == "prompt"


def test_bench_ls_grids_one_line_each_and_long():
    from peft3d.grids.loader import list_grids

    run = lambda *a: subprocess.run([sys.executable, "-m", "peft3d", "ls", "grids", *a], capture_output=True,  # noqa: E731
                                    text=True, check=True).stdout.splitlines()
    short, long = run(), run("--long")
    assert [line.split()[0] for line in short] == list_grids()
    smoke = next(line for line in short if line.startswith("smoke "))
    assert smoke.endswith("Tiny models, few points, two epochs — the test suite's end-to-end grid (< 1 minute).")
    assert len(long) > len(short) and any("docs/any2point.md" in line for line in long)


def test_readme_and_grid_descriptions_cite_only_files_in_the_repository():
    import re
    from pathlib import Path

    from peft3d.grids.loader import list_grids, load_grid

    repo = Path(__file__).resolve().parents[1]
    texts = {"README.md": (repo / "README.md").read_text()}
    texts.update({f"grid {g}": str(load_grid(g).get("description", "")) for g in list_grids()})
    for where, text in texts.items():
        assert "../" not in text and "/shared" not in text, where
        for ref in re.findall(r"[\w./-]+\.md\b", text):
            assert (repo / ref).is_file(), f"{where} cites {ref}, which is not a file of the repository"
