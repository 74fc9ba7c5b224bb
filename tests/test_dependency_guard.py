"""Guards on what the backbones take from their libraries: each fails with ONE line naming the package, its
installed version and the behaviour that changed, so an upgrade (or a fresh install resolving a newer release)
is caught by name instead of as a parity test's numeric difference.

- transformers' layers, called exactly as peft3d/backbones/ calls them (hidden states only, no mask; CLIP's
  encoder layer with ``attention_mask=None``), compute bidirectional attention blocks: compared with a small
  pure-torch reference of the same maths (weights read through the backbone's declared targets), under both
  attention implementations the harness switches between (eager on the CPU, sdpa on CUDA).
- transformers names DINOv2's attention projections ``q_proj``/``k_proj``/``v_proj``/``o_proj`` (what
  peft3d/backbones/hf_vit.py maps checkpoints onto; older releases said query/key/value).
- a whole ``BertModel`` given an explicit all-ones attention mask attends over every token whatever its
  ``position_ids`` (the parity references pass that mask: without one, transformers 5.25 reads all-zero
  position ids as packed sequences). And every reference computation in the tests passes its mask explicitly.
"""
from __future__ import annotations

import ast
import math
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from peft3d.backbones import BACKBONES

TESTS = Path(__file__).resolve().parent
ACT = {"gelu": F.gelu, "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x)}
# family -> (post-LN?, activation) as each family's config states it (peft3d/backbones/*.py)
FAMILIES = {"test_bert": (True, "gelu"), "test_roberta": (True, "gelu"), "test_clip_text": (False, "quick_gelu"),
            "test_dinov2": (False, "gelu"), "test_deit": (False, "gelu")}


def guard(ok: bool, package: str, behaviour: str, fix: str) -> None:
    if not ok:
        pytest.fail(f"{package} {version(package)}: {behaviour}; {fix}", pytrace=False)


def attention(x: torch.Tensor, q: nn.Linear, k: nn.Linear, v: nn.Linear, o: nn.Linear, heads: int) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) V over every token (no mask), heads concatenated, then the output projection."""
    b, t, width = x.shape
    split = lambda y: y.view(b, t, heads, width // heads).transpose(1, 2)  # noqa: E731
    qh, kh, vh = split(q(x)), split(k(x)), split(v(x))
    weights = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(width // heads), dim=-1)
    return o((weights @ vh).transpose(1, 2).reshape(b, t, width))


def reference_block(bb, x: torch.Tensor, post_ln: bool, act: str) -> torch.Tensor:
    """Block 0 of ``bb`` recomputed from its weights with plain torch (dropout off)."""
    block = bb.blocks[0]
    modules = dict(block.named_modules())
    q, k, v, o = (modules[n] for n in bb.lora_targets(0))
    up, down = (modules[n] for n in bb.ffn_targets(0))
    norm1, norm2 = [m for m in block.modules() if isinstance(m, nn.LayerNorm)]
    scales = [p for n, p in block.named_parameters() if n.endswith("lambda1")]  # DINOv2's layer scale
    s1, s2 = scales if scales else (1.0, 1.0)
    mlp = lambda y: down(ACT[act](up(y)))  # noqa: E731
    if post_ln:
        h = norm1(x + attention(x, q, k, v, o, bb.spec.heads))
        return norm2(h + mlp(h))
    h = x + s1 * attention(norm1(x), q, k, v, o, bb.spec.heads)
    return h + s2 * mlp(norm2(h))


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_transformers_layers_compute_bidirectional_blocks(name, impl):
    post_ln, act = FAMILIES[name]
    bb = BACKBONES.get(name)("random").eval()
    bb.set_attention(impl)
    x = torch.randn(2, 9, bb.spec.width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, ref = bb.blocks[0](x), reference_block(bb, x, post_ln, act)
    err = (ours - ref).abs().max().item()
    guard(err < 1e-5, "transformers",
          f"block 0 of {name}, called as peft3d/backbones calls it ({impl} attention, no mask), no longer computes "
          f"the bidirectional {'post' if post_ln else 'pre'}-LN block (max |difference| {err:.2g} from a pure-torch "
          "reference)",
          "pin the tested release (constraints.txt) or adapt the family's block call")


def test_transformers_names_dinov2_projections_as_the_key_map_expects():
    from transformers import Dinov2Config, Dinov2Model

    from peft3d.backbones.hf_vit import TINY_DINOV2

    names = {n for n, _ in Dinov2Model(Dinov2Config(**TINY_DINOV2)).named_parameters()}
    wanted = {f"encoder.layer.0.attention.{p}.weight" for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    found = sorted(n for n in names if n.startswith("encoder.layer.0.attention.") and n.endswith(".weight"))
    guard(wanted <= names, "transformers",
          f"Dinov2Model's attention projections are named {found}, not q_proj/k_proj/v_proj/o_proj",
          "peft3d/backbones/hf_vit.py timm_to_hf writes those names: pin the tested release (constraints.txt) "
          "or update the key map")


def test_bert_model_with_an_explicit_mask_attends_over_every_token():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                 max_position_embeddings=16, vocab_size=10, attn_implementation="eager"),
                      add_pooling_layer=False).eval()
    x = torch.randn(1, 9, 32, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[0, 8] = torch.randn(32, generator=torch.Generator().manual_seed(1))  # another last token (not a shift:
    # the embedding LayerNorm would remove a constant added to every channel)
    run = lambda e: model(inputs_embeds=e, attention_mask=torch.ones(1, 9, dtype=torch.long),  # noqa: E731
                          position_ids=torch.zeros(1, 9, dtype=torch.long)).last_hidden_state
    with torch.no_grad():
        moved = (run(x)[0, 0] - run(y)[0, 0]).abs().max().item()
    guard(moved > 1e-4, "transformers",
          "BertModel given an explicit all-ones attention mask no longer lets token 0 see token 8 (with all-zero "
          "position_ids)", "the MiniLM parity reference (tests/test_training.py) rests on it: pass the mask the "
          "installed release wants or pin the tested one (constraints.txt)")


def reference_calls_without_a_mask(path: Path) -> list[str]:
    """Calls in ``path`` that run a transformers model or encoder on embeddings without an explicit mask:
    any call with ``inputs_embeds=``, and any ``.encoder(...)`` call, must pass ``attention_mask=``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        kws = {k.arg for k in node.keywords}
        encoder = isinstance(node.func, ast.Attribute) and node.func.attr == "encoder"
        if ("inputs_embeds" in kws or encoder) and "attention_mask" not in kws:
            out.append(f"{path.name}:{node.lineno}")
    return out


def test_every_reference_computation_passes_its_mask():
    bad = [hit for p in sorted(TESTS.glob("*.py")) for hit in reference_calls_without_a_mask(p)]
    assert not bad, f"reference calls that rest on the library's default mask (pass attention_mask=): {bad}"


def test_the_mask_audit_finds_what_it_looks_for(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("a = m(inputs_embeds=x)\nb = m.encoder(x)\nc = m(inputs_embeds=x, attention_mask=k)\n"
                     "d = m.encoder(x, attention_mask=z)\n")
    assert reference_calls_without_a_mask(probe) == ["probe.py:1", "probe.py:2"]
