"""DAPT, PointGST and IDPT (docs/point_peft.md): the behaviour that defines each, on tiny backbones, plus what the
shared battery cannot see (where tokens go, what the registration is, bit-identical resume).

The battery (tests/test_backbones_battery.py) runs all three on every tiny backbone: frozen weights unchanged,
the method's parameters counted and trained, state-dict round trip."""
from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import pytest
import torch
from fixtures_backbones import one_thread  # noqa: F401  (autouse fixture)
from torch import nn

from peft3d.backbones import BACKBONES
from peft3d.core.plugins import BUILT_IN, Registration
from peft3d.core.registry import Registry
from peft3d.core.spec import PipelineCfg, RunSpec, TokenizerCfg
from peft3d.methods import METHODS
from peft3d.methods.build import build_model
from peft3d.methods.dapt.layers import DAPTBlock, DynamicAdapter, ScaleShift
from peft3d.methods.idpt.config import IDPTConfig
from peft3d.methods.idpt.method import PromptGenerator
from peft3d.methods.pointgst import spectral
from peft3d.methods.pointgst.config import PointGSTConfig
from peft3d.methods.pointgst.method import SpectralAdapter
from peft3d.models.model import ForwardContext

NEW = ("dapt", "pointgst", "idpt")
TINY = TokenizerCfg(num_stages=1, embed_dim=16, k=8, lga_blocks=(1,), last_bottleneck=8)  # 64 points -> 32 tokens
LAYOUTS = [("test_bert", False), ("test_bert", True), ("test_clip_text", False), ("test_clip_text", True),
           ("test_imagebind_audio", True)]  # post-LN, pre-LN (causal-pretrained text tower), fused attention


def build(backbone: str, method: str, cls: bool = False, cfg: dict | None = None):
    spec = RunSpec(backbone=backbone, method=method, weights="random", tokenizer=TINY, seed=0, head_hidden=16,
                   pipeline=PipelineCfg(cls_token=cls), method_cfg=cfg or {})
    model, m = build_model(spec, num_classes=3)
    return model.eval(), m


def clouds(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 64, 3, generator=torch.Generator().manual_seed(0))


def record_inputs(modules: list[nn.Module]) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    for mod in modules:
        mod.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    return seen


def backbone_output(model: nn.Module, xyz: torch.Tensor) -> torch.Tensor:
    out = []
    handle = model.backbone.register_forward_hook(lambda _m, _a, y: out.append(y.detach().clone()))
    with torch.no_grad():
        model(xyz)
    handle.remove()
    return out[0]


# ---- DAPT -------------------------------------------------------------------------------------------------------

def test_dapt_adapter_output_is_zero_wherever_the_token_gate_is_zero():
    torch.manual_seed(0)
    adapter = DynamicAdapter(16, 8, dropout=0.0)
    h = torch.randn(2, 9, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        nn.init.normal_(adapter.up.weight)  # a trained, non-zero up-projection
        adapter.gate.weight.zero_()
        adapter.gate.bias.fill_(-1.0)  # every gate closed
        assert torch.count_nonzero(adapter(h)) == 0
        adapter.gate.weight[0, 3], adapter.gate.bias[0] = 1.0, 0.0  # open where normalised channel 3 is positive
        closed = adapter.norm(h)[..., 3] <= 0
        out = adapter(h)
    assert closed.any() and (~closed).any()
    assert torch.count_nonzero(out[closed]) == 0
    assert (out[~closed].abs().sum(-1) > 0).all()


def test_dapt_closed_gates_remove_the_adapter_from_the_model():
    """Closed gates give the same model as a zero up-projection, whatever the up-projection holds."""
    model, _ = build("test_bert", "dapt")
    adapters = [b.dapt_adapter for b in model.backbone.blocks]
    xyz = clouds()
    with torch.no_grad():
        for a in adapters:
            nn.init.normal_(a.up.weight)
        opened = model(xyz)
        for a in adapters:
            a.gate.weight.zero_()
            a.gate.bias.fill_(-1.0)
        closed = model(xyz)
        for a in adapters:
            a.up.weight.zero_()
        no_adapter = model(xyz)
    assert torch.equal(closed, no_adapter) and not torch.allclose(opened, closed)


@pytest.mark.parametrize("backbone,cls", LAYOUTS)
def test_dapt_adds_one_prompt_per_block_after_the_prefix_and_removes_them_at_the_end(backbone, cls):
    model, _ = build(backbone, "dapt", cls)
    blocks = list(model.backbone.blocks)
    assert all(isinstance(b, DAPTBlock) for b in blocks)
    inputs = record_inputs([b.block for b in blocks])
    prompts: list[torch.Tensor] = []
    for b in blocks[:-1]:
        b.dapt_prompt.register_forward_hook(lambda _m, _a, y: prompts.append(y.detach().clone()))
    out = backbone_output(model, clouds())
    n, G = int(cls), 32
    assert [x.shape[1] for x in inputs] == [n + i + G for i in range(len(blocks))]
    assert out.shape[1] == n + G  # the final norm and the head see [prefix; points]
    for i, prompt in enumerate(prompts):  # block i's prompt enters block i + 1 right after the prefix
        assert torch.equal(inputs[i + 1][:, n:n + 1], prompt)


@pytest.mark.parametrize("backbone", ["test_bert", "test_imagebind_audio", "test_ssast"])
def test_dapt_every_scale_shift_reaches_the_output(backbone):
    """Six points per block (attention input, each q/k/v or fused qkv output, attention output, FFN input,
    both FFN projections), and the one after the final norm, are wired: scaling any one moves the output.
    Post-LN, nn.MultiheadAttention (unfused first) and a fused qkv."""
    model, _ = build(backbone, "dapt")
    blk = model.backbone.blocks[0]
    shifts = [blk.dapt_attn_in, *blk.dapt_qkv, blk.dapt_attn_out, blk.dapt_ffn_in, blk.dapt_fc1, blk.dapt_fc2,
              model.backbone.final_norm.dapt_out]
    assert len(shifts) >= 7 and all(isinstance(s, ScaleShift) for s in shifts)
    xyz = clouds()
    base = backbone_output(model, xyz)
    for s in shifts:  # the scale, not the shift: softmax ignores a shift of every key by the same vector
        kept = s.gamma.detach().clone()
        with torch.no_grad():
            s.gamma.mul_(torch.linspace(0.5, 1.5, len(s.gamma)))
        moved = backbone_output(model, xyz)
        with torch.no_grad():
            s.gamma.copy_(kept)
        assert not torch.allclose(moved, base, atol=1e-5)
    assert torch.equal(backbone_output(model, xyz), base)


# ---- PointGST ---------------------------------------------------------------------------------------------------

def _bases() -> spectral.Bases:
    centres = torch.rand(3, 40, 3, generator=torch.Generator().manual_seed(2)) * 2 - 1
    return spectral.build(centres, local_size=16)  # 2 full runs of 16 and one of 8


def test_pointgst_bases_are_orthonormal_laplacian_eigenbases():
    b = _bases()
    assert b.glob.shape == (3, 40, 40) and b.local_full.shape == (3, 2, 16, 16) and b.local_rest.shape == (3, 8, 8)
    for U in (b.glob, b.local_full, b.local_rest):
        eye = torch.eye(U.shape[-1]).expand_as(U)
        assert U.dtype == torch.float32
        assert torch.allclose(U.transpose(-1, -2) @ U, eye, atol=1e-5)
        assert torch.allclose(U @ U.transpose(-1, -2), eye, atol=1e-5)
        # the lowest frequency of a connected graph's Laplacian is the constant vector
        assert torch.allclose(U[..., 0].abs(), torch.full(U.shape[:-1], U.shape[-1] ** -0.5), atol=1e-4)
    assert torch.equal(b.order.sort(dim=1).values, torch.arange(40).expand(3, -1))
    assert torch.equal(torch.gather(b.order, 1, b.inverse), torch.arange(40).expand(3, -1))


def test_morton_runs_are_spatially_local():
    """Consecutive centres in Morton order sit closer together than centres taken in random order."""
    p = torch.rand(2, 256, 3, generator=torch.Generator().manual_seed(3))
    ordered = torch.gather(p, 1, spectral.morton_order(p).unsqueeze(-1).expand(-1, -1, 3))
    step = (ordered[:, 1:] - ordered[:, :-1]).norm(dim=-1).mean()
    assert step < 0.5 * (p[:, 1:] - p[:, :-1]).norm(dim=-1).mean()


@pytest.mark.parametrize("as_released", [False, True])
def test_pointgst_spectral_transform_is_the_identity_at_initialisation(as_released):
    torch.manual_seed(0)
    adapter = SpectralAdapter(24, PointGSTConfig(rank=8, local_size=16, as_released=as_released), ForwardContext())
    b = _bases()
    z = torch.randn(3, 40, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        glob = adapter.spectral_step(adapter.gst_norm_global, b.glob, z)
        loc = spectral.per_run(z, b, lambda U, s: adapter.spectral_step(adapter.gst_norm_local, U, s))
        assert torch.allclose(glob, z, atol=1e-5) and torch.allclose(loc, z, atol=1e-5)
        nn.init.normal_(adapter.gst_transform.weight)  # trained: no longer the identity
        assert not torch.allclose(adapter.spectral_step(adapter.gst_norm_global, b.glob, z), z, atol=1e-3)


def test_pointgst_stays_in_fp32_under_autocast():
    """Under bf16 autocast (the CUDA default) the bases are still fp32 and the spectral round trip still returns
    its input (to fp32 rounding), in the input's dtype."""
    adapter = SpectralAdapter(24, PointGSTConfig(rank=8, local_size=16), ForwardContext())
    centres = torch.rand(2, 40, 3, generator=torch.Generator().manual_seed(7))
    z = torch.randn(2, 40, 8, generator=torch.Generator().manual_seed(8)).bfloat16()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        b = spectral.build(centres, 16)
        out = adapter.spectral_step(adapter.gst_norm_global, b.glob, z)
    assert b.glob.dtype == b.local_full.dtype == b.local_rest.dtype == torch.float32
    assert out.dtype == torch.bfloat16 and torch.allclose(out.float(), z.float(), atol=1e-5, rtol=0)


def test_pointgst_as_released_changes_the_trained_transform():
    """The released ``U x`` is not the graph Fourier transform ``U^T x``: once the spectral weights are
    non-zero the two conventions compute different functions (hence the switch)."""
    b = _bases()
    z = torch.randn(3, 40, 8, generator=torch.Generator().manual_seed(5))
    outs = []
    for as_released in (False, True):
        torch.manual_seed(0)
        a = SpectralAdapter(24, PointGSTConfig(rank=8, as_released=as_released), ForwardContext())
        with torch.no_grad():
            nn.init.normal_(a.gst_transform.weight, generator=torch.Generator().manual_seed(6))
            outs.append(a.spectral_step(a.gst_norm_global, b.glob, z))
    assert not torch.allclose(*outs, atol=1e-3)


@pytest.mark.parametrize("backbone,cls", LAYOUTS)
def test_pointgst_starts_as_the_frozen_model(backbone, cls):
    """Zero-initialised up-projections: the model with PointGST attached computes exactly the linear-probe
    model built from the same seed (12 centres per local graph: runs of 12, 12 and 8 of the 32 centres)."""
    linear, _ = build(backbone, "linear", cls)
    gst, _ = build(backbone, "pointgst", cls, {"local_size": 12})
    with torch.no_grad():
        assert torch.equal(linear(clouds()), gst(clouds()))


# ---- IDPT -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backbone,cls", LAYOUTS)
def test_idpt_adds_exactly_one_token_before_the_last_block_and_nothing_else(backbone, cls):
    linear, lin_m = build(backbone, "linear", cls)
    idpt, idpt_m = build(backbone, "idpt", cls)
    ref_in = record_inputs(list(linear.backbone.blocks))
    new_in = record_inputs([*idpt.backbone.blocks[:-1], idpt.backbone.blocks[-1].block])
    made = []
    idpt.idpt_generator.register_forward_hook(lambda _m, _a, y: made.append(y.detach().clone()))
    xyz, n = clouds(), int(cls)
    assert backbone_output(idpt, xyz).shape == backbone_output(linear, xyz).shape
    for before, after in zip(ref_in[:-1], new_in[:-1], strict=True):
        assert torch.equal(before, after)
    last, ref_last = new_in[-1], ref_in[-1]
    assert last.shape[1] == ref_last.shape[1] + 1
    assert torch.equal(last[:, :n], ref_last[:, :n]) and torch.equal(last[:, n + 1:], ref_last[:, n:])
    assert torch.equal(last[:, n:n + 1], made[0])
    trainable = {k for k, p in idpt.named_parameters() if p.requires_grad}
    assert trainable - {k for k, p in linear.named_parameters() if p.requires_grad} == \
        {k for k in trainable if k.startswith("idpt_generator.")}


@pytest.mark.parametrize("method", ["idpt", "dapt"])
def test_inserted_prompts_are_seen_by_the_tokens_before_them(method):
    """Blocks attend bidirectionally (CLIP's text tower included: no causal mask, backbones.md §1.3), so a prompt
    inserted mid-stack after the cls token changes what the cls token carries out."""
    model, _ = build("test_clip_text", method, cls=True)
    xyz = clouds()
    base = backbone_output(model, xyz)
    shift = model.idpt_generator.position if method == "idpt" else model.backbone.blocks[0].dapt_prompt.beta
    with torch.no_grad():  # not constant over channels: LayerNorm would remove that
        shift.add_(torch.linspace(-1, 1, shift.shape[-1]))
    moved = backbone_output(model, xyz)
    assert not torch.allclose(moved[:, 0], base[:, 0], atol=1e-6)


def test_idpt_generator_size_full_width_and_bottleneck():
    """The count docs/point_peft.md states: 9·D² + 9·D at full width (D = 768: 5,315,328), 2·D·h + 9·h² + 8·h + D
    with the default bottleneck h = 128 (345,856)."""
    def count(width: int, hidden: int | None) -> int:
        with torch.device("meta"):
            return sum(p.numel() for p in PromptGenerator(width, IDPTConfig(hidden=hidden)).parameters())

    assert count(768, None) == 9 * 768**2 + 9 * 768 == 5_315_328
    assert count(768, 128) == 2 * 768 * 128 + 9 * 128**2 + 8 * 128 + 768 == 345_856
    assert count(384, 512) == count(384, None)  # no narrower than the tokens: the full-width generator


# ---- registration, the backbone contract DAPT reads, resume ------------------------------------------------------

@pytest.mark.parametrize("name", NEW)
def test_built_ins_are_registered_from_plugin_records(name):
    record = importlib.import_module(f"peft3d.methods.{name}").registration
    assert isinstance(record, Registration)
    assert METHODS.origin(name) == BUILT_IN and METHODS.meta(name) == record.meta
    module, attr = record.target.split(":")
    assert METHODS.get(name) is getattr(importlib.import_module(module), attr)
    assert METHODS.get(name).prefix == {"dapt": "dapt_", "pointgst": "gst_", "idpt": "idpt_"}[name]


@pytest.mark.parametrize("name", NEW)
def test_a_method_folder_ships_as_a_plugin_unchanged(name, tmp_path, monkeypatch):
    folder = Path(importlib.import_module(f"peft3d.methods.{name}").__file__).parent
    shutil.copytree(folder, tmp_path / f"my_{name}", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.syspath_prepend(str(tmp_path))
    record = importlib.import_module(f"my_{name}").registration
    assert record.target.startswith(f"my_{name}.method:")
    registry = Registry("method", required=("config", "summary"))
    registry.add(name, record, _origin="distribution my-plugin 0.1")
    cls = registry.get(name)
    assert cls.__module__ == f"my_{name}.method" and cls is not METHODS.get(name)
    model, _ = build("test_bert", "linear")
    config_module, config_attr = record.meta["config"].split(":")
    cls().attach(model, getattr(importlib.import_module(config_module), config_attr).resolve())
    with torch.no_grad():
        assert torch.isfinite(model(clouds())).all()
    for mod in [m for m in sys.modules if m == f"my_{name}" or m.startswith(f"my_{name}.")]:
        monkeypatch.delitem(sys.modules, mod)


@pytest.mark.parametrize("backbone", [n for n in BACKBONES.names() if BACKBONES.meta(n).get("test")])
def test_attention_targets_list_the_input_projections_before_the_output(backbone):
    """DAPT reads ``lora_targets(i)`` as [input projections..., output projection]: the last one declared is
    the last one called."""
    bb = BACKBONES.get(backbone)(weights="random").eval()
    block, names = bb.blocks[0], bb.lora_targets(0)
    calls: list[str] = []
    for name in names:
        block.get_submodule(name).register_forward_hook(lambda _m, _a, _y, name=name: calls.append(name))
    with torch.no_grad():
        block(torch.randn(2, 5, bb.spec.width, generator=torch.Generator().manual_seed(0)))
    assert set(calls) == set(names) and calls[-1] == names[-1]


def _resume_is_bit_identical(method: str, tmp_path: Path) -> None:
    from test_checkpoint import Stop, comparable

    from peft3d.grids.loader import expand
    from peft3d.training import checkpoint as ckpt
    from peft3d.training.train import train_run

    spec = next(s for s in expand("smoke") if s.method == "linear").replace(method=method, method_cfg={},
                                                                          checkpoint_every=1)
    reference = train_run(spec).to_dict()
    path = tmp_path / "ck.pt"

    def crash(ev):
        if ev["epoch"] == 1:
            raise Stop

    try:
        with pytest.raises(Stop):
            train_run(spec, progress=crash, checkpoint=path)
        resumed = train_run(spec, checkpoint=path).to_dict()
    finally:
        ckpt.STOP.requested = ckpt.STOP.armed = False
    assert resumed["resumed_from"] == [1]
    assert comparable(resumed) == comparable(reference)


def test_idpt_resumes_bit_identically(tmp_path):
    """IDPT keeps BatchNorm statistics at model level: the checkpoint must carry them."""
    _resume_is_bit_identical("idpt", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dapt", "pointgst"])
def test_resume_is_bit_identical(method, tmp_path):
    _resume_is_bit_identical(method, tmp_path)
