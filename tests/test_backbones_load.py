"""Strict loading of every backbone from tiny checkpoints in the original formats, numerical parity with the
original modules, and the errors for missing, corrupt and mismatched weights."""
from __future__ import annotations

import os
from pathlib import Path

import fixtures_backbones as fx
import pytest
import torch
import torch.nn.functional as F
from fixtures_backbones import one_thread  # noqa: F401  (autouse fixture)
from torch import nn

from peft3d.backbones import BACKBONES, bert, clip, hf_vit, imagebind, ssast
from peft3d.backbones.base import state_checksum
from peft3d.backbones.sources import weights_available
from peft3d.core.digest import file_sha256
from peft3d.core.errors import WeightsError

TOL = 1e-5


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpts")
    return {
        "clip_hf": fx.write_clip_hf(d / "clip_hf"),
        "clip_openai": fx.write_clip_openai(d / "clip_openai.pt"),
        "roberta_hf": fx.write_roberta_hf(d / "roberta_hf"),
        "dinov2_hf": fx.write_dinov2_hf(d / "dinov2_hf"),
        "deit_hf": fx.write_deit_hf(d / "deit_hf"),
    }


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert (a - b).abs().max().item() < TOL


def attend_all(x: torch.Tensor) -> torch.Tensor:
    """The additive ``(B, 1, T, T)`` mask transformers' encoder modules take: 0 everywhere, every token attends
    to every token (passed explicitly so the reference never rests on what the library does without one)."""
    return torch.zeros(x.shape[0], 1, x.shape[1], x.shape[1], dtype=x.dtype)


def _info_ok(bb, path: Path) -> None:
    info = bb.weights_info
    assert info["path"] == str(path)
    if path.is_file():
        assert info["file_sha256"] == file_sha256(str(path))
    assert info["state_sha256"] == state_checksum(bb)


# -- strict loads + parity ---------------------------------------------------------------------------

def test_clip_hf_dir_loads_strictly_and_matches_encoder(ckpts):
    from transformers import CLIPTextModel

    bb = clip.build(clip.TEST_CLIP_TEXT_SPEC, clip.TINY_TEXT, f"path:{ckpts['clip_hf']}", "cpu")
    _info_ok(bb, ckpts["clip_hf"])
    ref = CLIPTextModel.from_pretrained(str(ckpts["clip_hf"]), attn_implementation="eager").eval()
    x = torch.randn(2, 7, 32)
    with torch.no_grad():  # the encoder without the causal mask CLIPTextModel.forward would add: an explicit
        # additive all-zero mask (every token attends to every token), not the library's default for a missing one
        _close(bb(x), ref.final_layer_norm(ref.encoder(inputs_embeds=x, attention_mask=attend_all(x))
                                           .last_hidden_state))
    assert torch.equal(bb.pos_table().table, ref.embeddings.position_embedding.weight)


def _openai_text_reference(sd: dict, x: torch.Tensor, depth: int, heads: int) -> torch.Tensor:
    """OpenAI clip/model.py text transformer, sequence-first, without the causal mask."""
    d = x.shape[-1]
    h = x.transpose(0, 1)
    for i in range(depth):
        p = f"transformer.resblocks.{i}."
        mha = nn.MultiheadAttention(d, heads)
        mha.load_state_dict({k[len(p) + 5:]: v for k, v in sd.items() if k.startswith(p + "attn.")})
        y = F.layer_norm(h, (d,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], 1e-5)
        h = h + mha(y, y, y, need_weights=False)[0]
        y = F.layer_norm(h, (d,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], 1e-5)
        y = F.linear(y, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"])
        h = h + F.linear(y * torch.sigmoid(1.702 * y), sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
    return F.layer_norm(h.transpose(0, 1), (d,), sd["ln_final.weight"], sd["ln_final.bias"], 1e-5)


def test_clip_openai_checkpoint_loads_strictly_and_matches(ckpts):
    path = ckpts["clip_openai"]
    bb = clip.build(clip.TEST_CLIP_TEXT_SPEC, clip.TINY_TEXT, f"path:{path}", "cpu")
    _info_ok(bb, path)
    sd = torch.load(path, weights_only=True)
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        _close(bb(x), _openai_text_reference(sd, x, 2, 2))
    assert torch.equal(bb.pos_table().table, sd["positional_embedding"])


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_clip_torchscript_archive_is_read(tmp_path):
    """ViT-L-14.pt is a TorchScript archive: torch.load(weights_only) refuses it, torch.jit.load reads it."""
    class Holder(nn.Module):
        def __init__(self, sd: dict) -> None:
            super().__init__()
            for k, v in sd.items():  # nested names like the real archive's
                mod = self
                *parents, leaf = k.split(".")
                for part in parents:
                    if not hasattr(mod, part):
                        mod.add_module(part, nn.Module())
                    mod = getattr(mod, part)
                mod.register_buffer(leaf, v)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    sd = fx.clip_openai_state()
    torch.jit.save(torch.jit.script(Holder(sd)), str(tmp_path / "clip_jit.pt"))
    bb = clip.build(clip.TEST_CLIP_TEXT_SPEC, clip.TINY_TEXT, f"path:{tmp_path / 'clip_jit.pt'}", "cpu")
    assert torch.equal(bb.pos_table().table, sd["positional_embedding"])


def test_roberta_hf_dir_loads_strictly_and_matches_model(ckpts):
    from transformers import RobertaModel

    bb = bert.build_roberta_family(bert.TEST_ROBERTA_SPEC, bert.TINY_ROBERTA, f"path:{ckpts['roberta_hf']}",
                                   "cpu")
    _info_ok(bb, ckpts["roberta_hf"])
    ref = RobertaModel.from_pretrained(str(ckpts["roberta_hf"]), add_pooling_layer=False,
                                       attn_implementation="eager").eval()
    bb.eval()
    t = torch.randn(2, 7, 32)
    table = bb.pos_table().table
    assert table.shape == (16, 32)  # rows 2..17 of an 18-row table: the padding offset of 2
    assert torch.equal(table, ref.embeddings.position_embeddings.weight[2:])
    with torch.no_grad():
        # RoBERTa(inputs_embeds=t) = blocks(LayerNorm(t + token_type[0] + position row i + 2))
        ones = torch.ones(t.shape[:2], dtype=torch.long)  # explicit: no reliance on what a missing mask means
        _close(bb(bb.embed_norm(t + table[:7])), ref(inputs_embeds=t, attention_mask=ones).last_hidden_state)
        _close(bb(t), ref.encoder(t, attention_mask=attend_all(t)).last_hidden_state)


@pytest.mark.parametrize("fam", ["dinov2", "deit"])
def test_hf_vision_dir_loads_strictly_and_matches_model(ckpts, fam):
    from transformers import Dinov2Model, ViTModel

    dinov2 = fam == "dinov2"
    spec, cfg = (hf_vit.TEST_DINOV2_SPEC, hf_vit.TINY_DINOV2) if dinov2 else (hf_vit.TEST_DEIT_SPEC,
                                                                              hf_vit.TINY_DEIT)
    folder = ckpts[f"{fam}_hf"]
    bb = hf_vit.build(spec, cfg, f"path:{folder}", "cpu", dinov2=dinov2)
    _info_ok(bb, folder)
    ref = (Dinov2Model.from_pretrained(str(folder), attn_implementation="eager") if dinov2 else
           ViTModel.from_pretrained(str(folder), add_pooling_layer=False, attn_implementation="eager")).eval()
    px = torch.randn(2, 3, *((56, 56) if dinov2 else (64, 80)))
    with torch.no_grad():
        _close(bb(ref.embeddings(px)), ref(px).last_hidden_state)
    pt = bb.pos_table()
    grid = (4, 4) if dinov2 else (4, 5)
    assert pt.table.shape == (*grid, 32) and pt.canvas == ((56, 56) if dinov2 else (64, 80))
    assert torch.equal(pt.table.reshape(-1, 32), ref.embeddings.position_embeddings[0, 1:])


@pytest.mark.parametrize("fam", ["dinov2", "deit"])
def test_timm_format_loads_strictly_and_matches_timm(tmp_path, fam):
    dinov2 = fam == "dinov2"
    path = tmp_path / f"{fam}.pth"
    v = (fx.write_dinov2_original if dinov2 else fx.write_deit_timm)(path).eval()
    spec, cfg = (hf_vit.TEST_DINOV2_SPEC, hf_vit.TINY_DINOV2) if dinov2 else (hf_vit.TEST_DEIT_SPEC,
                                                                              hf_vit.TINY_DEIT)
    bb = hf_vit.build(spec, cfg, f"path:{path}", "cpu", dinov2=dinov2)
    _info_ok(bb, path)
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        _close(bb(x), v.norm(v.blocks(x)))
    grid = (4, 4) if dinov2 else (4, 5)
    assert torch.equal(bb.pos_table().table, v.pos_embed[0, 1:].reshape(*grid, 32))


def _imagebind_reference(sd: dict, x: torch.Tensor, depth: int, heads: int) -> torch.Tensor:
    """ImageBind's BlockWithMasking as released: sequence-first nn.MultiheadAttention with bias_k/bias_v."""
    d = x.shape[-1]
    h = x.transpose(0, 1)
    for i in range(depth):
        p = f"modality_trunks.audio.blocks.{i}."
        mha = nn.MultiheadAttention(d, heads, bias=True, add_bias_kv=True)
        mha.load_state_dict({k[len(p) + 5:]: v for k, v in sd.items() if k.startswith(p + "attn.")})
        y = F.layer_norm(h, (d,), sd[p + "norm_1.weight"], sd[p + "norm_1.bias"], 1e-6)
        h = h + mha(y, y, y, need_weights=False)[0]
        y = F.layer_norm(h, (d,), sd[p + "norm_2.weight"], sd[p + "norm_2.bias"], 1e-6)
        y = F.gelu(F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        h = h + F.linear(y, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    n = "modality_heads.audio.0."
    return F.layer_norm(h.transpose(0, 1), (d,), sd[n + "weight"], sd[n + "bias"], 1e-6)


def test_imagebind_checkpoint_loads_strictly_keeps_bias_kv_and_matches(tmp_path):
    path = tmp_path / "imagebind_tiny.pth"
    sd = fx.write_imagebind(path)
    bb = imagebind.build(imagebind.TEST_IMAGEBIND_AUDIO_SPEC, imagebind.TINY_AUDIO, f"path:{path}", "cpu")
    _info_ok(bb, path)
    assert torch.equal(bb.blocks[0].attn.bias_k, sd["modality_trunks.audio.blocks.0.attn.bias_k"])
    x = torch.randn(3, 9, 32)
    with torch.no_grad():
        ref = _imagebind_reference(sd, x, 2, 2)
        _close(bb(x), ref)
        # dropping bias_k/bias_v (the released Any2Point behaviour) changes the output: they matter
        for b in bb.blocks:
            b.attn.bias_k.zero_(), b.attn.bias_v.zero_()
        assert (bb(x) - ref).abs().max() > 1e-3
    pt = bb.pos_table()
    assert pt.table.shape == (4, 5, 32) and pt.canvas == (46, 56) and pt.patch == (10, 10)
    pos = sd["modality_preprocessors.audio.pos_embedding_helper.pos_embed"]
    assert torch.equal(pt.table.reshape(-1, 32), pos[0, 1:])


def test_ssast_checkpoint_loads_strictly_and_matches_timm(tmp_path):
    from timm.models.deit import VisionTransformerDistilled

    path = tmp_path / "ssast_tiny.pth"
    sd = fx.write_ssast(path)
    bb = ssast.build(ssast.TEST_SSAST_SPEC, ssast.TINY_SSAST, f"path:{path}", "cpu")
    _info_ok(bb, path)
    v = VisionTransformerDistilled(img_size=(64, 80), patch_size=16, in_chans=1, num_classes=1000,
                                   embed_dim=32, depth=2, num_heads=2)
    v.load_state_dict({k[len("module.v."):]: t for k, t in sd.items() if k.startswith("module.v.")},
                      strict=True)
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        _close(bb(x), v.norm(v.blocks(x)))
    pt = bb.pos_table()
    assert pt.table.shape == (4, 5, 32) and pt.canvas == (64, 80) and pt.patch == (16, 16)
    assert torch.equal(pt.table.reshape(-1, 32), sd["module.v.pos_embed"][0, 2:])  # after cls + dist rows


# -- clear errors -------------------------------------------------------------------------------------

FULL = ["clip_text", "roberta", "dinov2", "deit", "imagebind_audio", "ssast"]


@pytest.fixture
def empty_machine(tmp_path, monkeypatch) -> Path:
    """No Hugging Face cache, no weights folders: nothing to find."""
    for var, sub in (("HF_HUB_CACHE", "hub"), ("PEFT3D_WEIGHTS", "weights"), ("TORCH_HOME", "torch"),
                     ("HOME", "home")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", FULL)
def test_missing_weights_name_backbone_place_and_fix(empty_machine, name):
    with pytest.raises(WeightsError) as e:
        BACKBONES.get(name)()
    msg = str(e.value)
    assert msg.startswith(f"{name}: pretrained weights not found") and "looked in" in msg and "fix:" in msg
    assert str(empty_machine) in msg
    ok, where = weights_available(name)
    assert not ok and str(empty_machine) in where


def test_weights_available_finds_files_and_hub_snapshots(empty_machine):
    (empty_machine / "weights" / "SSAST-Base-Patch-400.pth").write_bytes(b"x")
    assert weights_available("ssast") == (True, str(empty_machine / "weights" / "SSAST-Base-Patch-400.pth"))
    snap = empty_machine / "hub" / "models--facebook--dinov2-base" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    assert weights_available("dinov2")[0]
    assert weights_available("test_dinov2") == (True, "random (nothing to load)")


def test_published_digest_is_checked(empty_machine):
    (empty_machine / "weights" / "ViT-L-14.pt").write_bytes(b"not the real file")
    with pytest.raises(WeightsError,
                       match=r"clip_text: .*ViT-L-14.pt has sha256 .* expected the published b8cca3fd"):
        BACKBONES.get("clip_text")()


def test_hub_blob_digest_is_checked(empty_machine):
    repo = empty_machine / "hub" / "models--facebook--dinov2-base"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text('{"model_type": "dinov2"}')
    blob = repo / "blobs" / ("0" * 64)
    blob.write_bytes(b"truncated download")
    os.symlink(blob, snap / "model.safetensors")
    with pytest.raises(WeightsError, match="dinov2: .*expected the published 0000"):
        BACKBONES.get("dinov2")()


def _builders():
    return {
        "clip": lambda w: clip.build(clip.TEST_CLIP_TEXT_SPEC, clip.TINY_TEXT, w, "cpu"),
        "dinov2": lambda w: hf_vit.build(hf_vit.TEST_DINOV2_SPEC, hf_vit.TINY_DINOV2, w, "cpu", dinov2=True),
        "deit": lambda w: hf_vit.build(hf_vit.TEST_DEIT_SPEC, hf_vit.TINY_DEIT, w, "cpu", dinov2=False),
        "imagebind": lambda w: imagebind.build(imagebind.TEST_IMAGEBIND_AUDIO_SPEC, imagebind.TINY_AUDIO, w,
                                               "cpu"),
        "ssast": lambda w: ssast.build(ssast.TEST_SSAST_SPEC, ssast.TINY_SSAST, w, "cpu"),
    }


def _original_state(fam: str) -> dict:
    if fam == "clip":
        return fx.clip_openai_state()
    if fam == "dinov2":
        return {**fx.timm_dinov2().state_dict(), "mask_token": torch.zeros(1, 32)}
    if fam == "deit":
        return {"model": fx.timm_deit().state_dict()}
    return fx.imagebind_state() if fam == "imagebind" else fx.ssast_state()


DROP = {"clip": "transformer.resblocks.1.ln_2.bias", "dinov2": "blocks.1.ls2.gamma",
        "deit": "blocks.1.norm1.bias", "imagebind": "modality_trunks.audio.blocks.1.attn.bias_k",
        "ssast": "module.v.blocks.1.mlp.fc2.weight"}


@pytest.mark.parametrize("fam", list(DROP))
def test_corrupt_file_is_one_clear_error(tmp_path, fam):
    path = tmp_path / f"{fam}.pth"
    torch.save(_original_state(fam), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"cannot read checkpoint .*truncated or corrupt"):
        _builders()[fam](f"path:{path}")


@pytest.mark.parametrize("fam", list(DROP))
def test_mismatched_keys_are_listed(tmp_path, fam):
    sd = _original_state(fam)
    inner = sd["model"] if fam == "deit" else sd
    del inner[DROP[fam]]
    inner["bogus.extra"] = torch.zeros(1)
    path = tmp_path / f"{fam}.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError) as e:
        _builders()[fam](f"path:{path}")
    msg = str(e.value)
    assert "does not match the architecture" in msg and "missing 1" in msg and "unexpected 1" in msg
    assert "bogus.extra" in msg and ".1." in msg.split("missing 1")[1].split("]")[0]  # block 1's key


def test_ssast_grid_and_shape_mismatch(tmp_path):
    path = tmp_path / "s.pth"
    torch.save(fx.ssast_state(fdim=128, tdim=1024), path)
    with pytest.raises(WeightsError, match=r"pretrained on 128 mel bins x 1024 frames \(grid 8x64\)"):
        ssast.build(ssast.TEST_SSAST_SPEC, ssast.TINY_SSAST, f"path:{path}", "cpu")
    torch.save(fx.ssast_state(grid=(4, 6)), path)
    with pytest.raises(WeightsError, match=r"mismatched shapes 1 \['pos_embed"):
        ssast.build(ssast.TEST_SSAST_SPEC, ssast.TINY_SSAST, f"path:{path}", "cpu")


def test_hf_dir_missing_key_corrupt_file_and_wrong_architecture(tmp_path, ckpts):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "rob"
    folder.mkdir()
    src = ckpts["roberta_hf"]
    (folder / "config.json").write_text((src / "config.json").read_text())
    sd = load_file(str(src / "model.safetensors"))
    dropped = next(k for k in sd if "layer.1.output.dense.weight" in k)
    del sd[dropped]
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    def build(w):
        return bert.build_roberta_family(bert.TEST_ROBERTA_SPEC, bert.TINY_ROBERTA, w, "cpu")
    with pytest.raises(WeightsError, match=r"missing 1 \['encoder.layer.1.output.dense.weight'\]"):
        build(f"path:{folder}")
    (folder / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes()[:300])
    with pytest.raises(WeightsError, match="test_roberta: could not load weights from"):
        build(f"path:{folder}")
    with pytest.raises(WeightsError, match=r"different architecture: hidden_size=32 \(expected 768\)"):
        clip.build(clip.CLIP_TEXT_SPEC, clip.CLIP_L14_TEXT, f"path:{ckpts['clip_hf']}", "cpu")
    with pytest.raises(WeightsError, match="expects a Hugging Face folder"):
        build(f"path:{ckpts['clip_hf'] / 'config.json'}")


@pytest.mark.parametrize("name", [n for n in BACKBONES.names() if BACKBONES.meta(n).get("test")])
def test_tiny_variants_are_random_only(name, tmp_path):
    with pytest.raises(WeightsError, match="only random weights"):
        BACKBONES.get(name)(weights=f"path:{tmp_path}")
