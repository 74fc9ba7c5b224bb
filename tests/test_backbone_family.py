"""A new backbone is one file and one registration line (docs/architecture.md "A backbone"): the family in
tests/example_backbone.py, registered here as a user would, gets the shared loader's strict load, digests,
weight report, default attention and controls, and runs under every method, with no other edit."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures_backbones import one_thread  # noqa: F401  (autouse fixture)

from peft3d.backbones import BACKBONES
from peft3d.backbones.base import state_checksum
from peft3d.backbones.controls import build_backbone
from peft3d.core.digest import file_sha256
from peft3d.core.errors import WeightsError
from peft3d.methods import METHODS

NAME = "example_vit"


def register() -> None:
    """The registration line of the example family (what a user adds to peft3d/backbones/__init__.py)."""
    BACKBONES.register(NAME, "example_backbone:build_example_vit", modality="2d", pretrain="vision", width=24,
                       depth=2, params=14_448, source="example_vit.pth (timm)", weights_check="file:example_vit.pth",
                       pos_shape=(3, 4), a2p_settings="dinov2", a2p_arm_quirks=(), a2p_pe_injection="once")


@pytest.fixture
def original(tmp_path, monkeypatch) -> tuple[torch.nn.Module, Path]:
    """The registry with the example registered (restored afterwards) and its original checkpoint in the weights
    folder: a seeded timm ViT saved with ``torch.save``, classifier included."""
    from example_backbone import TINY_VIT
    from timm.models.vision_transformer import VisionTransformer

    for attr in ("_targets", "_meta", "_cache"):
        monkeypatch.setattr(BACKBONES, attr, dict(getattr(BACKBONES, attr)))
    register()
    torch.manual_seed(0)
    vit = VisionTransformer(num_classes=5, **TINY_VIT).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # "trained": no tensor at its initial value (LayerNorms included)
        for t in vit.state_dict().values():
            t.add_(0.05 * torch.randn(t.shape, generator=g))
    (tmp_path / "weights").mkdir()
    path = tmp_path / "weights" / "example_vit.pth"
    torch.save(vit.state_dict(), path)
    monkeypatch.setenv("PEFT3D_WEIGHTS", str(tmp_path / "weights"))
    return vit, path


def test_pretrained_weights_load_strictly_and_compute_what_the_original_computes(original):
    vit, path = original
    bb = BACKBONES.get(NAME)().eval()
    info = bb.weights_info
    assert (info["source"], info["path"]) == ("pretrained", str(path))
    assert info["file_sha256"] == file_sha256(str(path)) and info["state_sha256"] == state_checksum(bb)
    x = torch.randn(2, 13, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (bb(x) - vit.norm(vit.blocks(x))).abs().max() < 1e-6
    table = bb.pos_table().table
    assert tuple(table.shape) == (*BACKBONES.meta(NAME)["pos_shape"], 24)
    assert torch.equal(table.reshape(-1, 24), vit.pos_embed[0, 1:])
    assert bb.block_param_count() == BACKBONES.meta(NAME)["params"]
    assert all(not b.attn.fused_attn for b in bb.blocks)  # the loader's default: eager (the parity reference)


def test_bad_checkpoints_and_missing_weights_are_one_clear_line(original, tmp_path, monkeypatch):
    vit, path = original
    sd = vit.state_dict()
    del sd["blocks.1.mlp.fc2.bias"]
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"example_vit: checkpoint .*bad.pth does not match the architecture: "
                                           r"missing 1 \['blocks.1.mlp.fc2.bias'\], unexpected 1 \['extra.weight'\]"):
        BACKBONES.get(NAME)(weights=f"path:{tmp_path / 'bad.pth'}")
    with pytest.raises(WeightsError, match="example_vit: expects a checkpoint file .*, got the folder"):
        BACKBONES.get(NAME)(weights=f"path:{tmp_path}")
    path.unlink()
    with pytest.raises(WeightsError, match=r"example_vit: pretrained weights not found \(looked in: "
                                           r"example_vit.pth in .*\); fix: put example_vit.pth in"):
        BACKBONES.get(NAME)()


def test_the_controls_apply_to_a_new_family(original):
    pretrained = BACKBONES.get(NAME)()
    shuffled = build_backbone(NAME, "shuffled:1")
    random = build_backbone(NAME, "random")
    for (n, a), b, r in zip(pretrained.state_dict().items(), shuffled.state_dict().values(),
                            random.state_dict().values(), strict=True):
        if a.is_floating_point() and a.numel() > 1:  # same values, other places; random: other values
            assert torch.equal(a.flatten().sort().values, b.flatten().sort().values), n
            assert not torch.equal(a, b) and not torch.equal(a, r), n
    assert shuffled.weights_info["control"] == "shuffled" and shuffled.weights_info["shuffle_seed"] == 1
    assert random.weights_info == {"source": "random", "state_sha256": state_checksum(random)}
    assert len(build_backbone(NAME, "random", blocks=1).blocks) == 1


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_trains_on_a_new_family(original, method):
    from test_backbones_battery import test_method_trains_only_its_parameters

    test_method_trains_only_its_parameters(NAME, method)
