"""Any2Point in the model: parameter counts at full paper size (``bench params``), the fixed / as_released
variants on tiny backbones, wiring (one geometry per forward, cls untouched, parameter groups), presets and
the grids that use them."""
from __future__ import annotations

import json

import pytest
import torch
from fixtures_backbones import one_thread  # noqa: F401  (autouse fixture)
from typer.testing import CliRunner

from peft3d.backbones import BACKBONES
from peft3d.core.errors import ConfigError
from peft3d.core.spec import PipelineCfg, RunSpec, TokenizerCfg
from peft3d.methods.any2point.config import FLAGS, PRESET_DOCS, Any2PointConfig
from peft3d.methods.build import build_model
from peft3d.models.model import param_groups

TINY_TOKENIZER = TokenizerCfg(num_stages=1, embed_dim=16, k=8, lga_blocks=(1,), last_bottleneck=8)  # 64 -> 32

# Paper-size trainable parameters without the head (any2point.md §4): Point-PN 276,672, cls token + cls pos +
# final LN 3,072, six shared local attentions + LNs 235,224, per block adapter (25,360 at r = 16, 13,064 at
# r = 8) + 7 BatchNorms 10,752; plus the tokenizer's output BatchNorm (1,536) that the harness adds.
SHARED = 276_672 + 1_536 + 3_072
EXPECTED = {"clip_text": (16, 0.95e6, SHARED + 235_224 + 12 * (25_360 + 10_752)),
            "dinov2": (8, 0.80e6, SHARED + 235_224 + 12 * (13_064 + 10_752)),
            "imagebind_audio": (8, 0.80e6, SHARED + 235_224 + 12 * (13_064 + 10_752))}


@pytest.mark.parametrize("backbone", list(EXPECTED))
def test_full_size_trainable_parameters_match_the_paper(backbone):
    from peft3d.cli import params as cli_params  # noqa: F401  (registers the command)
    from peft3d.cli.app import app

    r, paper, exact = EXPECTED[backbone]
    for tag in ("scan", "mn40"):
        preset = f"paper_{backbone}_{tag}"
        assert Any2PointConfig.presets[preset]["bottleneck"] == r
        res = CliRunner().invoke(app, ["params", "--backbone", backbone, "--method", "any2point", "--preset", preset,
                                       "--full-size", "--pipeline", "paper", "--json"])
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)
        assert out["trainable_excluding_head"] == exact, out
        assert abs(out["trainable_excluding_head"] - paper) / paper < 0.03
        assert out["shared"] == SHARED and out["method_params"] == exact - SHARED
        assert out["head"] == 463_631  # the paper's head for 15 classes (bench params' default)


def test_imagebind_r12_would_not_match_the_reported_count():
    """The released ImageBind-Scan script passes r = 12, but the paper's 0.8M needs r = 8 (preset docstring)."""
    assert "r = 8" in PRESET_DOCS["paper_imagebind_audio_scan"] and "12" in PRESET_DOCS["paper_imagebind_audio_scan"]
    cfg = Any2PointConfig.resolve({"bottleneck": 12}, "paper_imagebind_audio_scan").to_dict()
    spec = RunSpec(backbone="imagebind_audio", method="any2point", weights="random", method_cfg=cfg,
                   pipeline=PAPER_PIPELINE, tokenizer=TokenizerCfg(out_norm=True))
    model, method = build_model(spec, num_classes=15, device="meta")
    n = param_groups(model, method.prefix)["trainable_excluding_head"]
    assert n == EXPECTED["imagebind_audio"][2] + 12 * 4 * (768 + 1 + 768) == 876_072  # 4 more units per block
    assert abs(n - 0.8e6) / 0.8e6 > 0.09


# The released code's pipeline (cls token, BatchNorm tokens): these tests compare with it.
PAPER_PIPELINE = PipelineCfg(pos_encoding="mlp", cls_token=True, head="paper")


def _model(backbone: str, seed: int = 0, pipeline: PipelineCfg = PAPER_PIPELINE, **cfg):
    spec = RunSpec(backbone=backbone, method="any2point", weights="random", seed=seed, head_hidden=16,
                   tokenizer=TokenizerCfg(**{**TINY_TOKENIZER.__dict__, "out_norm": True}),
                   method_cfg=Any2PointConfig(**cfg).to_dict(), pipeline=pipeline)
    model, method = build_model(spec, num_classes=3)
    return model, method


@pytest.mark.parametrize("injection", ["once", "every_block"])
@pytest.mark.parametrize("backbone", ["test_clip_text", "test_dinov2"])
def test_any2point_without_a_cls_token_trains(backbone, injection):
    """The harness default has no cls token: the encoding then enters every token, nothing is prepended."""
    model, _ = _model(backbone, pipeline=PipelineCfg(), pe_injection=injection)
    assert model.num_prefix == 0 and not hasattr(model, "cls_token")
    x = torch.rand(4, 64, 3, generator=torch.Generator().manual_seed(0))
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert torch.isfinite(loss) and model.tokenizer.raw[0].weight.grad is not None


def _batch_dependence(model) -> float:
    """Largest change of sample 0's logits when it is evaluated alone instead of with three others."""
    torch.manual_seed(1)
    model.train()
    model(torch.rand(4, 64, 3))  # a training step's forward: BatchNorm running statistics become non-trivial
    model.eval()
    xyz = torch.rand(4, 64, 3)
    with torch.no_grad():
        return (model(xyz)[:1] - model(xyz[:1])).abs().max().item()


@pytest.mark.parametrize("backbone", ["test_clip_text", "test_bert", "test_dinov2", "test_imagebind_audio"])
def test_fixed_sample_output_does_not_depend_on_its_batch(backbone):
    model, _ = _model(backbone)
    assert not any(model.a2p_flags.values())
    assert _batch_dependence(model) < 1e-5


def test_as_released_clip_attends_over_the_batch():
    model, _ = _model("test_clip_text", variant="as_released")
    assert model.a2p_flags["batch_attention"] and model.a2p_flags["line_rotations"]
    assert _batch_dependence(model) > 1e-3
    only, _ = _model("test_clip_text", batch_attention=True)  # the one flag alone
    assert _batch_dependence(only) > 1e-3


def test_as_released_flags_follow_the_released_code_per_family():
    cfg = Any2PointConfig(variant="as_released")
    clip, dino, audio = (cfg.flags(BACKBONES.meta(b)["a2p_arm_quirks"])
                         for b in ("clip_text", "dinov2", "test_imagebind_audio"))
    assert clip["batch_attention"] and not dino["batch_attention"] and not audio["batch_attention"]
    assert audio["misshaped_grid"] and not dino["misshaped_grid"]
    assert all(dino[f] for f in FLAGS if f not in ("batch_attention", "misshaped_grid"))
    assert not any(Any2PointConfig().flags(("batch_attention",)).values())
    assert Any2PointConfig(variant="as_released", wrap=False).flags()["wrap"] is False
    assert Any2PointConfig(scrambled_pe=True).flags() == dict.fromkeys(FLAGS, False) | {"scrambled_pe": True}


def test_one_geometry_per_forward_and_cls_passes_through(monkeypatch):
    model, method = _model("test_dinov2")
    calls = []
    compute = type(model.pos_embed)._compute
    monkeypatch.setattr(type(model.pos_embed), "_compute", lambda self, c: calls.append(1) or compute(self, c))
    seen = {}
    blk = model.backbone.blocks[0]
    blk.register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out, inner=m.block(args[0])))
    model.eval()
    with torch.no_grad():
        model(torch.rand(2, 64, 3))
    assert len(calls) == 1  # computed by the positional encoding, reused by both blocks
    assert torch.equal(seen["y"][:, :1], seen["inner"][:, :1])  # the cls token is not aggregated
    assert not torch.allclose(seen["y"][:, 1:], seen["inner"][:, 1:])
    groups = param_groups(model, method.prefix)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith("a2p_guided.local.") for n in names)
    assert all("pos_embed" not in n for n in names)  # the virtual projection has no weights
    assert groups["method"] == sum(p.numel() for n, p in model.named_parameters()
                                   if p.requires_grad and ("a2p_" in n or n.startswith("backbone.blocks.")))


@pytest.mark.parametrize("backbone", [n for n in BACKBONES.names() if BACKBONES.meta(n).get("test")])
def test_as_released_trains_on_every_tiny_backbone(backbone):
    model, _ = _model(backbone, pool="maxmean", variant="as_released")
    model.train()
    logits = model(torch.rand(3, 64, 3))
    logits.sum().backward()
    assert torch.isfinite(logits).all()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("a2p_guided.local.")]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_presets_cover_every_backbone_and_dataset_tag():
    presets = Any2PointConfig.presets
    for name in ("paper_clip_text_scan", "paper_clip_text_mn40", "paper_dinov2_scan", "paper_dinov2_mn40",
                 "paper_imagebind_audio_scan", "paper_imagebind_audio_mn40"):
        assert name in PRESET_DOCS and Any2PointConfig.resolve(None, name)
    for backbone in BACKBONES.names():
        if BACKBONES.meta(backbone).get("control"):  # the no-transformer control: Any2Point needs blocks
            continue
        for tag in ("scan", "mn40", "synthetic"):
            assert f"{backbone}_{tag}" in presets, f"{backbone}_{tag}"
            Any2PointConfig.resolve(None, f"{backbone}_{tag}")
    p = presets
    assert (p["paper_dinov2_scan"]["coef"], p["paper_dinov2_scan"]["camera_distance"]) == (0.7, 1.8)
    assert p["paper_dinov2_mn40"]["pool"] == p["paper_imagebind_audio_mn40"]["pool"] == "maxmean"
    assert (p["paper_clip_text_scan"]["voxel"], p["paper_clip_text_scan"]["line_dir"]) == (0.08, (-1.0, 0.0, 1.0))
    assert p["paper_dinov2_scan"]["cell_2d"] * 14 == pytest.approx(26)  # 26 px cells of 14 px patches
    assert p["paper_imagebind_audio_scan"]["cell_2d"] == 1  # 16 px cells of 16 px patches


@pytest.mark.parametrize("bad,match", [({"variant": "released"}, "variant"), ({"pool": "max"}, "pool"),
                                       ({"attn_dim": 10}, "divisible"), ({"line_dir": (0, 0, 0)}, "line_dir"),
                                       ({"wrap": "yes"}, "wrap"), ({"views": 0}, "views")])
def test_bad_configs_fail(bad, match):
    with pytest.raises(ConfigError, match=match):
        Any2PointConfig.resolve(bad)


def test_more_than_six_cube_views_fail_on_2d():
    with pytest.raises(ConfigError, match="cube-face views"):
        _model("test_dinov2", views=7)
    model, _ = _model("test_bert", views=8)  # 1D: any number of distinct lines
    assert model.pos_embed.lines.shape == (8, 3)


def test_grids_use_any2point():
    from peft3d.grids.loader import expand

    tags = {"scanobjectnn": "scan", "modelnet40": "mn40"}
    cells = {(s.backbone, s.dataset): s for s in expand("paper_any2point")}
    assert len(cells) == 6
    assert all(s.preset == f"paper_{s.backbone}_{tags[s.dataset]}" for s in cells.values())
    k = {("clip_text", "scan"): 81, ("dinov2", "scan"): 64, ("imagebind_audio", "scan"): 64,
         ("clip_text", "mn40"): 64, ("dinov2", "mn40"): 81, ("imagebind_audio", "mn40"): 81}  # any2point.md §1.1
    for (backbone, tag), kk in k.items():
        (spec,) = [s for s in expand(f"paper_any2point_{backbone}_{tag}") if s.seed == 0]
        assert spec.tokenizer.k == kk and spec.preset == f"paper_{backbone}_{tag}" and spec.num_points == 1024
        assert spec.tokenizer.group_norm == ("scan" if tag == "scan" else "std")
        assert spec.budget.epochs == 300 and spec.budget.lr == 5e-4
    quick = [s for s in expand("quickstart_methods") if s.method == "any2point"]
    assert {s.preset for s in quick} == {"minilm_synthetic"} and len(quick) == 2
    (smoke,) = [s for s in expand("smoke") if s.method == "any2point"]
    assert smoke.method_cfg["bottleneck"] == 4
