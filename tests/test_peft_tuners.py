"""``peft:<tuner>``: any tuner of the installed Hugging Face peft by name — resolution, validation, search
space, run identity and listing. (The test battery trains every working tuner on every tiny backbone.)"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from peft3d.core.errors import ConfigError
from peft3d.core.registry import RegistryError
from peft3d.grids.loader import expand
from peft3d.methods import METHODS, config_class
from peft3d.methods.peft_tuner import catalog
from peft3d.methods.peft_tuner.config import installed_tuners


def write_grid(tmp_path, text: str) -> str:
    p = tmp_path / "g.yaml"
    p.write_text(text)
    return str(p)


GRID = ("backbones: [test_bert]\nweights: [random]\ndatasets: [synthetic/scan]\nnum_points: 64\n"
        "tokenizer: {num_stages: 2, embed_dim: 8, k: 8, lga_blocks: [1, 1], last_bottleneck: 8}\n")


def test_every_installed_tuner_resolves_from_peft_registry():
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    assert set(installed_tuners()) == {str(t.value).lower() for t in PEFT_TYPE_TO_CONFIG_MAPPING}
    assert {"ia3", "loha", "lokr", "vera", "boft", "oft", "prompt_tuning"} <= set(installed_tuners())
    assert config_class("peft:loha").peft_class().__name__ == "LoHaConfig"
    assert "peft:ia3" in METHODS and METHODS.check("peft:ia3") == "peft:ia3"
    assert METHODS.get("peft:ia3").prefix == "ia3_"


def test_unknown_tuner_suggests_installed_ones():
    with pytest.raises(RegistryError, match=r"unknown peft tuner 'peft:loh'; did you mean 'peft:loha'"):
        METHODS.check("peft:loh")


def test_token_id_tuners_are_refused_with_the_reason():
    for name in ("prompt_tuning", "prefix_tuning", "p_tuning"):
        with pytest.raises(ConfigError, match="cannot run on point tokens .prompt learning"):
            config_class(f"peft:{name}")
    with pytest.raises(ConfigError, match="trainable tokens"):
        config_class("peft:trainable_tokens")


def test_config_is_peft_own_class_validated():
    ia3 = config_class("peft:ia3")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['rr'\]; allowed: \['targets', 'fan_in_fan_out', "
                                          r"'init_ia3_weights'\]"):
        ia3.resolve({"rr": 3}, where="grid g: method peft:ia3")
    with pytest.raises(ConfigError, match="set by the harness from the backbone's declared projections"):
        ia3.resolve({"target_modules": ["query"]})
    with pytest.raises(ConfigError, match="targets must be one of"):
        ia3.resolve({"targets": "everything"})
    with pytest.raises(ConfigError, match="peft tuners have no presets"):
        ia3.resolve(None, preset="paper")
    assert config_class("peft:loha").resolve({"r": 4}).to_dict() == {"targets": "attention", "r": 4}
    assert ia3.resolve(None).to_dict() == {"targets": "all"}  # IA3 has feedforward modules: attention + FFN
    assert config_class("peft:ln_tuning").resolve(None).to_dict() == {"targets": "norms"}


def test_peft_config_targets_the_declared_projections():
    from peft3d.backbones import BACKBONES
    from peft3d.methods.peft_tuner.method import peft_config_for

    bb = BACKBONES.get("test_bert")(weights="random")
    pcfg = peft_config_for(bb, config_class("peft:ia3").resolve(None))
    ffn = {"0.intermediate.dense", "0.output.output.dense", "1.intermediate.dense", "1.output.output.dense"}
    assert set(pcfg.feedforward_modules) == ffn
    assert set(pcfg.target_modules) == ffn | {f"{i}.attention.{p}" for i in (0, 1) for p in (
        "self.query", "self.key", "self.value", "output.dense")}
    bb = BACKBONES.get("test_imagebind_audio")(weights="random")  # fused attention: unfused for LoHa
    pcfg = peft_config_for(bb, config_class("peft:loha").resolve(None))
    assert sorted(pcfg.target_modules)[:4] == ["0.attn.k_proj", "0.attn.out_proj", "0.attn.q_proj", "0.attn.v_proj"]


def test_search_space_per_knob_family():
    import optuna

    trial = optuna.trial.FixedTrial({"r": 16, "alpha_ratio": 2, "rank_dropout": 0.1, "lora_dropout": 0.1})
    assert config_class("peft:loha").search_space(trial) == {"r": 16, "alpha": 32.0, "rank_dropout": 0.1}
    assert config_class("peft:lora").search_space(trial) == {"r": 16, "lora_alpha": 32.0, "lora_dropout": 0.1}
    assert config_class("peft:ia3").search_space(trial) == {}  # no rank, alpha or dropout: lr / wd only
    sampled = config_class("peft:loha").resolve(config_class("peft:loha").search_space(trial))
    assert sampled.to_dict()["r"] == 16


def test_grid_expands_with_peft_tuners_and_distinct_run_ids(tmp_path):
    g = write_grid(tmp_path, GRID + 'methods: [linear, "peft:ia3", {name: "peft:loha", cfg: {r: 4}}, '
                                    '{name: "peft:loha", cfg: {r: 8}}, "peft:vera"]\n')
    specs = expand(g)
    assert [s.method for s in specs] == ["linear", "peft:ia3", "peft:loha", "peft:loha", "peft:vera"]
    assert [dict(s.method_cfg) for s in specs[2:4]] == [{"targets": "attention", "r": 4},
                                                         {"targets": "attention", "r": 8}]
    assert len({s.run_id for s in specs}) == 5
    assert expand(g)[2].run_id == specs[2].run_id  # stable


def test_the_peft_tuners_grid_names_three_tuners_beside_built_in_methods():
    methods = [s.method for s in expand("peft_tuners")]
    assert sum(m.startswith("peft:") for m in methods) == 3 and {"linear", "lora", "adapter"} <= set(methods)


@pytest.mark.parametrize("cfg,msg", [
    ('{name: "peft:ia3", cfg: {bogus: 1}}', "unknown key(s) ['bogus']; allowed: ['targets', 'fan_in_fan_out'"),
    ('"peft:prompt_tuning"', "cannot run on point tokens (prompt learning"),
    ('"peft:lohaa"', "did you mean 'peft:loha'"),
])
def test_validate_bad_peft_entries_one_line_exit_2(tmp_path, cfg, msg):
    g = write_grid(tmp_path, GRID + f"methods: [{cfg}]\n")
    out = subprocess.run([sys.executable, "-m", "peft3d", "validate", "--grid", g], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0 and msg in out.stderr, out.stderr


def test_catalog_lists_every_tuner_with_works_and_why():
    rows = {r["name"]: r for r in catalog.status()}
    assert set(rows) == {f"peft:{t}" for t in installed_tuners()}
    working = {n for n, r in rows.items() if r["works"]}
    # fourierft is left out: its default n_frequency (1000) exceeds 24 x 24, the projections of the 24-wide
    # tiny twins (test_dinov2_small, test_minilm_l3, test_whisper_tiny), so the probe reports it as size-limited.
    assert {"peft:ia3", "peft:loha", "peft:lokr", "peft:vera", "peft:boft", "peft:oft", "peft:lora",
            "peft:hra", "peft:ln_tuning"} <= working
    for n, r in rows.items():
        assert bool(r["why"]) == (not r["works"]), n
    assert "prompt learning" in rows["peft:prompt_tuning"]["why"]
    assert "trainable tokens" in rows["peft:trainable_tokens"]["why"]


def test_catalog_is_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog, "cache_path", lambda: tmp_path / "peft_tuners.json")
    monkeypatch.setattr(catalog, "installed_tuners", lambda: {"prompt_tuning": installed_tuners()["prompt_tuning"]})
    first = catalog.status()
    assert [r["name"] for r in first] == ["peft:prompt_tuning"] and not first[0]["works"]
    assert json.loads((tmp_path / "peft_tuners.json").read_text())["tuners"] == first
    monkeypatch.setattr(catalog, "probe", lambda t: pytest.fail("probed again despite the cache"))
    assert catalog.status() == first


def test_bench_ls_methods_lists_peft_tuners():
    out = subprocess.run([sys.executable, "-m", "peft3d", "ls", "methods", "--json", "--probe"], capture_output=True,
                         text=True, check=True)
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["lora"]["kind"] == "built-in"
    assert rows["peft:ia3"]["works"] == "yes" and rows["peft:ia3"]["kind"].startswith("peft ")
    assert rows["peft:prompt_tuning"]["works"] == "no" and "point tokens have no ids" in rows["peft:prompt_tuning"][
        "summary"]


def test_ls_methods_reads_the_probe_cache_without_torch(tmp_path):
    """Without --probe, `bench ls methods` shows the cached answer for this installation, or says how to get
    one; either way without importing torch. A cache written under another key (another peft, torch or harness
    code) is not shown."""
    import os

    code = ("import sys, json; sys.argv = ['bench', 'ls', 'methods', '--json']\nfrom peft3d.cli.app import main\n"
            "main()\n")
    check = "import atexit, sys; atexit.register(lambda: print('torch' in sys.modules, file=sys.stderr))\n"
    env = dict(os.environ, PEFT3D_CACHE=str(tmp_path))

    def listed() -> tuple[dict, str]:
        out = subprocess.run([sys.executable, "-c", check + code], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        return {r["name"]: r for r in json.loads(out.stdout)}, out.stderr.strip().splitlines()[-1]

    rows, torch_imported = listed()
    assert torch_imported == "False" and rows["peft:<tuner>"]["works"] == "?"
    assert "bench ls methods --probe" in rows["peft:<tuner>"]["summary"]
    monkey_rows = [{"name": "peft:ia3", "works": True, "why": ""}, {"name": "peft:xyz", "works": False, "why": "no"}]
    subprocess.run([sys.executable, "-c", "import json, sys; from peft3d.methods.peft_tuner import catalog\n"
                    f"json.dump({{'key': catalog.cache_key(), 'tuners': {monkey_rows!r}}}, "
                    "open(catalog.cache_path(), 'w'))"], check=True, env=env)
    rows, torch_imported = listed()
    assert torch_imported == "False" and rows["peft:ia3"]["works"] == "yes" and rows["peft:xyz"]["summary"] == "no"
    cached = json.loads((tmp_path / "peft_tuners.json").read_text())
    (tmp_path / "peft_tuners.json").write_text(json.dumps(dict(cached, key="another-installation")))
    rows, _ = listed()
    assert "peft:ia3" not in rows and "peft:<tuner>" in rows


def test_a_grid_with_peft_tuners_runs_end_to_end(tmp_path):
    """bench run trains a peft tuner beside a built-in method; its result and table carry it."""
    import os

    grid = write_grid(tmp_path, GRID + 'methods: [linear, {name: "peft:loha", cfg: {r: 2}}]\n'
                                       "budget: {epochs: 1, batch_size: 32, eval_batch_size: 128, lr: 0.001, "
                                       "warmup_epochs: 0}\nhead: {hidden: 16}\n")
    root = tmp_path / "results"
    out = subprocess.run([sys.executable, "-m", "peft3d", "run", "--grid", grid, "--results", str(root), "--jobs", "1",
                          "--no-mlflow"], capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    spec = next(s for s in expand(grid) if s.method == "peft:loha")
    result = json.loads(next(root.rglob(f"{spec.run_id}.json")).read_text())
    assert result["method"]["name"] == "peft:loha" and result["method"]["cfg"] == {"targets": "attention", "r": 2}
    # LoHa r=2 on test_bert's 8 attention projections (32 x 32): 4 factors of 2 x 32 each = 256 per projection
    assert result["params"]["method"] == 8 * 4 * 2 * 32
    table = (root / "tables" / "g.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| backbone"))
    assert "| linear" in header and "| peft:loha" in header


@pytest.mark.parametrize("batch_first", [True, False])
def test_unfused_attention_computes_the_fused_function(batch_first):
    """ImageBind-style attention (add_bias_kv) as four Linear projections: same output, same frozen weights."""
    import torch
    from torch import nn

    from peft3d.methods.peft_tuner.mha import unfuse

    torch.manual_seed(0)
    holder = nn.Module()
    holder.attn = nn.MultiheadAttention(32, 4, bias=True, add_bias_kv=True, batch_first=batch_first).eval()
    nn.init.normal_(holder.attn.bias_k), nn.init.normal_(holder.attn.bias_v)
    nn.init.normal_(holder.attn.in_proj_bias)
    x = torch.randn(3, 7, 32)
    with torch.no_grad():
        before = holder.attn(x, x, x, need_weights=False)[0]
        new = unfuse(holder, "attn").eval()
        after = new(x, x, x, need_weights=False)[0]
    assert torch.allclose(before, after, atol=1e-6)
    assert [type(m) for m in (new.q_proj, new.k_proj, new.v_proj, new.out_proj)] == [nn.Linear] * 4
    assert sum(p.numel() for p in new.parameters()) == 4 * 32 * 32 + 4 * 32 + 2 * 32
