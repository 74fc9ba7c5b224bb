"""Full-size architectures on the meta device (no weights, no memory): parameter counts match the published
architectures exactly (backbones.md), positional tables have the published shapes, and ``bench params``
reports the same numbers."""
from __future__ import annotations

import json

import pytest
from fixtures_backbones import one_thread  # noqa: F401  (autouse fixture)
from typer.testing import CliRunner

from peft3d.backbones import BACKBONES

PLAIN, EXTRA = 85_054_464, 85_072_896  # 12 x 7,087,872; + 12 x 1,536 (layer scale / bias_k, bias_v)
PUBLISHED = {  # name: (block params, pos table shape, canvas, patch)
    "minilm": (10_646_784, (512, 384), None, None),  # 6 x 1,774,464 (all-MiniLM-L6-v2: 384 wide, 1536 FFN)
    "clip_text": (PLAIN, (77, 768), None, None),
    "roberta": (PLAIN, (512, 768), None, None),
    "dinov2": (EXTRA, (37, 37, 768), (518, 518), (14, 14)),
    "deit": (PLAIN, (14, 14, 768), (224, 224), (16, 16)),
    "imagebind_audio": (EXTRA, (12, 19, 768), (128, 204), (10, 10)),
    "ssast": (PLAIN, (8, 64, 768), (128, 1024), (16, 16)),
    # ViT-S/14 block 1,775,232 (qkv 443,520 + proj 147,840 + fc1 591,360 + fc2 590,208 + 2 LN 1,536 + layer scale)
    "dinov2_small": (12 * 1_775_232, (37, 37, 384), (518, 518), (14, 14)),
    "minilm_l3": (3 * 1_774_464, (512, 384), None, None),  # MiniLM-L6's block, 3 of them
    # Whisper tiny block 1,774,080: q, v, out 3 x 147,840 + k (no bias) 147,456 + fc1 + fc2 + 2 LN
    "whisper_tiny": (4 * 1_774_080, (1500, 384), None, None),
}
ARCH = {"minilm": (384, 6, 12), "dinov2_small": (384, 12, 6), "minilm_l3": (384, 3, 12),
        "whisper_tiny": (384, 4, 6)}  # (width, depth, heads); the others 768 x 12 x 12
REAL = [n for n in BACKBONES.names() if not BACKBONES.meta(n).get("test")]


def test_every_real_backbone_has_a_published_size():
    assert set(REAL) <= set(PUBLISHED), f"no published size for {sorted(set(REAL) - set(PUBLISHED))}"


@pytest.mark.parametrize("name", REAL)
def test_full_size_block_params_on_meta(name):
    bb = BACKBONES.get(name)(weights="random", device="meta")
    assert bb.block_param_count() == BACKBONES.meta(name)["params"]
    assert bb.weights_info["state_sha256"] == "meta"
    if name in PUBLISHED:
        params, shape, canvas, patch = PUBLISHED[name]
        assert bb.block_param_count() == params
        pt = bb.pos_table()
        assert tuple(pt.table.shape) == shape and pt.canvas == canvas and pt.patch == patch
        size = ARCH.get(name, (768, 12, 12))
        assert (bb.spec.width, bb.spec.depth, bb.spec.heads) == size
        assert len(bb.blocks) == size[1] and "position_table" in dict(bb.named_buffers())
        assert all(not n.startswith("position_table") for n, _ in bb.named_parameters())


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_bench_params_full_size_json(name):
    from peft3d.cli import params as cli_params  # noqa: F401  (registers the command)
    from peft3d.cli.app import app

    r = CliRunner().invoke(app, ["params", "--backbone", name, "--method", "lora", "--full-size", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["backbone"] == name and out["method"] == "lora" and out["blocks"] == PUBLISHED[name][0]
    width, depth = PUBLISHED[name][1][-1], ARCH.get(name, (768, 12, 12))[1]
    # per block and unit of r: q, k, v, o as four width x width LoRAs (8 w) or fused qkv + o (6 w) (pitfall 8)
    per_block = 6 * width if name in ("imagebind_audio", "ssast") else 8 * width
    assert out["method_params"] == depth * per_block * 8  # r = 8
    assert out["trainable_excluding_head"] == out["method_params"] + out["shared"]
    assert out["trainable"] == out["trainable_excluding_head"] + out["head"]
    assert out["total"] >= out["blocks"] + out["trainable"]  # + frozen non-block parts (embed norm)


def test_bench_params_errors_and_text_output():
    from peft3d.cli import params as cli_params  # noqa: F401
    from peft3d.cli.app import app

    runner = CliRunner()
    r = runner.invoke(app, ["params", "--backbone", "dinov3", "--method", "linear"])
    assert r.exit_code == 2 and "did you mean 'dinov2'" in r.output
    r = runner.invoke(app, ["params", "--backbone", "test_deit", "--method", "lora", "--preset", "nope"])
    assert r.exit_code == 2 and "unknown preset" in r.output
    r = runner.invoke(app, ["params", "--backbone", "test_deit", "--method", "adapter"])
    assert r.exit_code == 0 and "backbone blocks" in r.stdout and "17,088" in r.stdout
