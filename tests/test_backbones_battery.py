"""The shared battery: every registered tiny backbone x every registered method.

Parametrized over the registries, so a new backbone (``test=True``) or a new method is covered without
editing this file. Nothing here skips: a method that needs something a backbone lacks must fail.
The methods include every tuner of the installed peft that the catalog found working (``peft:<tuner>``).
"""
from __future__ import annotations

import pytest
import torch
from fixtures_backbones import one_thread  # noqa: F401  (autouse fixture)

from peft3d.backbones import BACKBONES
from peft3d.core.spec import RunSpec, TokenizerCfg
from peft3d.methods import METHODS, config_class
from peft3d.methods.build import build_model
from peft3d.methods.peft_tuner import catalog
from peft3d.methods.peft_tuner.method import peft_config_for
from peft3d.models.model import param_groups

TINY_BACKBONES = [n for n in BACKBONES.names() if BACKBONES.meta(n).get("test")]
PEFT_TUNERS = catalog.working()
ALL_METHODS = METHODS.names() + PEFT_TUNERS
# 64 points -> 32 tokens of width 32
TINY_TOKENIZER = TokenizerCfg(num_stages=1, embed_dim=16, k=8, lga_blocks=(1,), last_bottleneck=8)


def _spec(backbone: str, method: str, seed: int = 0) -> RunSpec:
    return RunSpec(backbone=backbone, method=method, weights="random", tokenizer=TINY_TOKENIZER, seed=seed,
                   head_hidden=16)


def test_registry_has_a_tiny_variant_of_each_family():
    assert {"test_bert", "test_clip_text", "test_roberta", "test_dinov2", "test_deit", "test_imagebind_audio",
            "test_ssast"} <= set(TINY_BACKBONES)


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_method_trains_only_its_parameters(backbone, method):
    model, m = build_model(_spec(backbone, method), num_classes=3)
    groups = param_groups(model, m.prefix)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = {n: b.clone() for n, b in model.backbone.named_buffers()}
    # the method's own parameters: trainable inside the backbone (but the shared final norm), or carrying its
    # prefix anywhere in the model (modules a method keeps at model level, e.g. ones with BatchNorm statistics)
    own = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and (
        (n.startswith("backbone.") and not n.startswith("backbone.final_norm."))
        or (m.prefix and any(part.startswith(m.prefix) for part in n.split("."))))}
    assert (groups["method"] > 0) == (method != "linear"), groups
    assert bool(own) == (method != "linear")
    assert sum(p.numel() for p in own.values()) == groups["method"]

    torch.manual_seed(1)
    model.train()
    xyz, label = torch.rand(4, 64, 3), torch.tensor([0, 1, 2, 0])
    logits = model(xyz)
    assert logits.shape == (4, 3) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, label).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in trainable)
    torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.05).step()

    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"frozen {n} changed"
    for n, b in model.backbone.named_buffers():  # positional tables are never trained, not even by full
        assert torch.equal(b, buffers[n]), f"buffer {n} changed"
    changed = [n for n, p in model.named_parameters() if n in own and not torch.equal(p, own[n])]
    assert bool(changed) == (method != "linear"), "the method's own parameters did not train"
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(xyz)).all()


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_state_dict_round_trip(backbone, method):
    model, _ = build_model(_spec(backbone, method), num_classes=3)
    other, _ = build_model(_spec(backbone, method, seed=1), num_classes=3)
    other.load_state_dict(model.state_dict(), strict=True)
    model.eval(), other.eval()
    xyz = torch.rand(2, 64, 3)
    with torch.no_grad():
        assert torch.equal(model(xyz), other(xyz))


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_ffn_site_delta_joins_the_residual(backbone):
    """A hook's delta reaches the block output: unchanged through pre-LN blocks (after any layer scale,
    applied once), through the output LayerNorm in post-LN blocks. With no hooks the site is exact."""
    torch.manual_seed(0)
    bb = BACKBONES.get(backbone)(weights="random").eval()
    x = torch.randn(2, 5, bb.spec.width)
    seen = {}

    ramp = torch.linspace(-1, 1, bb.spec.width)  # not constant over channels: LayerNorm would remove that

    class Ramp(torch.nn.Module):
        def forward(self, ffn_in: torch.Tensor, ffn_out: torch.Tensor) -> torch.Tensor:
            seen["in"], seen["out"] = ffn_in.shape, ffn_out.shape
            return ramp.expand_as(ffn_out)

    with torch.no_grad():
        before = bb.blocks[0](x)
        bb.ffn_site(0).add_hook(Ramp())
        after = bb.blocks[0](x)
    assert seen["in"] == seen["out"] == x.shape
    if bb.spec.family == "pre_ln":
        assert torch.allclose(after - before, ramp.expand_as(x), atol=1e-5)
    else:
        assert not torch.allclose(after, before)


@pytest.mark.parametrize("method", PEFT_TUNERS)
@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_peft_tuner_counts_agree_with_peft(backbone, method):
    """Our accounting of the tuner's parameters equals peft's own ``get_nb_trainable_parameters()`` on a
    PeftModel built from the same backbone and the same peft config."""
    from peft import get_peft_model

    model, m = build_model(_spec(backbone, method), num_classes=3)
    torch.manual_seed(0)
    bb = BACKBONES.get(backbone)(weights="random")
    pcfg = peft_config_for(bb, config_class(method).resolve(None))
    trainable, _ = get_peft_model(bb.blocks, pcfg).get_nb_trainable_parameters()
    assert param_groups(model, m.prefix)["method"] == trainable > 0


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_ffn_targets_are_the_ffn_projections(backbone):
    """Each block declares two FFN projections: up (width -> hidden) then down (hidden -> width)."""
    bb = BACKBONES.get(backbone)(weights="random")
    for i, blk in enumerate(bb.blocks):
        mods = dict(blk.named_modules())
        up, down = (mods[n] for n in bb.ffn_targets(i))
        hidden = up.out_features
        assert (up.in_features, down.in_features, down.out_features) == (bb.spec.width, hidden, bb.spec.width)
        assert hidden > bb.spec.width


@pytest.mark.parametrize("name", BACKBONES.names())
def test_no_backbone_has_stochastic_depth(name):
    """PointModel.train() silences the pretrained nn.Dropout modules only; it relies on no backbone carrying a
    drop-path module (each is built with rate 0 or nn.Identity)."""
    device = "cpu" if BACKBONES.meta(name).get("test") else "meta"
    bb = BACKBONES.get(name)(weights="random", device=device)
    stochastic = sorted({type(m).__name__ for m in bb.modules() if "droppath" in type(m).__name__.lower()
                         or "stochasticdepth" in type(m).__name__.lower()})
    assert not stochastic, f"{name}: {stochastic}"
