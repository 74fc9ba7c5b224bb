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
    with pytest.raises(RegistryError, match="already registered"):
        r.register("adapter", "x.y:W")
    with pytest.raises(RegistryError, match=r"unknown widget 'adaptr'; did you mean 'adapter'\?"):
        r.check("adaptr")
    with pytest.raises(ValueError, match="pkg.module:Attr"):
        r.register("bad", "no_colon")


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
    # pinned: the same spec hashes to the same id on any machine and in any later session
    assert RunSpec(backbone="minilm", method="linear").run_id == RunSpec.from_dict(
        RunSpec(backbone="minilm", method="linear").to_dict()).run_id


def test_run_id_is_pinned_across_processes():
    code = ("from peft3d.core.spec import RunSpec; print(RunSpec(backbone='minilm', method='adapter', "
            "method_cfg={'bottleneck': 8}).run_id)")
    ids = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PYTHONHASHSEED": str(s), "PATH": ""}).stdout.strip() for s in (1, 2)}
    assert len(ids) == 1


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
    code = ("import sys; from peft3d.cli import listing; from peft3d.grids.loader import expand; "
            "[listing.rows(w) for w in ('backbones','methods','datasets','grids','presets')]; "
            "expand('quickstart'); expand('smoke'); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bench_ls_json():
    import json

    out = subprocess.run([sys.executable, "-m", "peft3d", "ls", "methods", "--json"], capture_output=True,
                         text=True, check=True)
    names = [r["name"] for r in json.loads(out.stdout)]
    assert {"linear", "full", "prompt", "adapter", "lora"} <= set(names)
