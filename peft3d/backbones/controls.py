"""Controls a modality claim needs (protocol.md "Controls"), for every backbone alike.

- ``weights: random``: the backbone's own library initialisation (for BERT-family and ViT-family models in
  transformers: N(0, 0.02) weights, zero biases, unit LayerNorms). In a post-LN encoder each such block is close
  to the identity (its LayerNorm re-normalises a residual that the small random branch barely moves), so this
  control is nearer "no transformer" than "the same network without pretraining".
- ``weights: shuffled`` (or ``shuffled:<seed>``): the pretrained weights, every tensor's entries permuted with a
  fixed seed — each tensor keeps its multiset of values (so its mean, spread and scale) and loses its learned
  structure.
- backbone ``none``: no blocks at all (tokenizer -> embedding LayerNorm -> head).
- ``pipeline.blocks: N``: keep the backbone's first N blocks (matched-depth comparisons across backbones).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from peft3d.backbones.base import Backbone, BackboneSpec, PosTable, state_checksum
from peft3d.backbones.sources import shuffle_seed
from peft3d.core.errors import ConfigError, WeightsError

NONE_WIDTH = 384  # MiniLM-L6's width: the none control stands beside the default backbone


def build_backbone(name: str, weights: str, device: str = "cpu", blocks: int | None = None) -> Backbone:
    """The registered backbone ``name`` with ``weights`` (incl. the ``shuffled`` control), cut to ``blocks``."""
    from peft3d.backbones import BACKBONES

    seed = shuffle_seed(weights)
    bb = BACKBONES.get(name)(weights="pretrained" if seed is not None else weights, device=device)
    if seed is not None:
        shuffle_tensors_(bb, seed)
        bb.weights_info = dict(bb.weights_info, source=weights, control="shuffled", shuffle_seed=seed,
                               state_sha256=state_checksum(bb) if device != "meta" else "meta")
    if blocks is not None:
        keep_blocks(bb, blocks)
    return bb


@torch.no_grad()
def shuffle_tensors_(module: nn.Module, seed: int) -> None:
    """Permute the entries of every floating-point tensor (parameters and buffers) of ``module`` in place.

    Each tensor gets its own permutation from one generator seeded with ``seed``, visited in sorted name
    order, so the result depends only on the weights and the seed. Tied tensors (one storage under two
    names) are permuted once.
    """
    gen = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    for _, t in sorted(module.state_dict(keep_vars=True).items()):
        if not t.is_floating_point() or t.numel() < 2 or t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        perm = torch.randperm(t.numel(), generator=gen).to(t.device)
        flat = t.data.reshape(-1)
        t.data.copy_(flat[perm].reshape(t.shape))


def keep_blocks(bb: Backbone, n: int) -> None:
    """Keep the first ``n`` blocks (``n`` <= depth); the spec's depth follows."""
    depth = len(bb.blocks)
    if n > depth:
        raise ConfigError(f"pipeline.blocks={n} but backbone {bb.spec.name} has only {depth} blocks; "
                          f"fix: use blocks <= {depth}")
    bb.blocks = nn.ModuleList(list(bb.blocks)[:n])
    bb.spec = dataclasses.replace(bb.spec, depth=n)


NONE_SPEC = BackboneSpec(
    name="none", modality="none", pretrain_modality="none", width=NONE_WIDTH, depth=0, heads=0,
    family="none", source="no transformer (control)", licence="n/a", get_weights="nothing to load")


class NoBlocks(Backbone):
    """Zero blocks: tokens pass through a LayerNorm (the embedding norm every post-LN encoder has) only."""

    def __init__(self, width: int = NONE_WIDTH) -> None:
        super().__init__(dataclasses.replace(NONE_SPEC, width=width))
        self.embed_norm = nn.LayerNorm(width)

    def pos_table(self) -> PosTable:
        raise ConfigError("backbone none has no positional table; fix: pipeline.pos_encoding: mlp or none")


def build_none(weights: str = "random", device: str = "cpu") -> Backbone:
    if weights != "random":
        raise WeightsError(f"none: the no-transformer control has no weights to load, got weights={weights!r}; "
                           "fix: weights: random")
    with torch.device(device):
        bb = NoBlocks()
    bb.weights_info = {"source": "random", "control": "none",
                       "state_sha256": state_checksum(bb) if device != "meta" else "meta"}
    return bb
