"""The one loader of every backbone family.

A family declares only what is its own (a :class:`Family`): how to build its original model from a config
(``construct``), the :class:`~peft3d.backbones.base.Backbone` view of that model (``backbone``: blocks, FFN
sites, LoRA targets, positional table), and the checkpoint formats it reads, each with its key map from the
original names to the model's (:class:`HFFolder`, :class:`StateDictFile`, :class:`OnnxFile`,
:class:`CT2File`). A registered backbone is a :class:`Variant`: a family, a :class:`BackboneSpec` and a
config. Everything else is done here, the same way for all: the weights choice (``random``: the library's
initialisation; ``pretrained``: looked for where the registry's ``weights_check`` says; ``path:``), the
format that reads the file, the digests (published ones checked), the strict load, the default attention
(``Backbone.set_attention``), and the ``weights_info`` every result records. The ``shuffled`` control and the
block cut are applied on top by :func:`peft3d.backbones.controls.build_backbone`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from peft3d.backbones.base import Backbone, BackboneSpec, state_checksum
from peft3d.backbones.checkpoints import (
    hf_weight_digests,
    load_strict,
    read_state_dict,
    resolve_weights,
    strict_hf_load,
    timm_folder_file,
    verify_digest,
)
from peft3d.backbones.sources import packaged_info, parse_weights
from peft3d.core.errors import WeightsError

Config = dict[str, Any]
Tensors = dict[str, torch.Tensor]
Unused = tuple[str, ...] | Callable[[str], bool]  # key prefixes, or a predicate, of checkpoint keys not used
Locate = Callable[[], Path | None]


class CheckpointProblem(Exception):
    """Raised by a family's key map or check: what is wrong with the checkpoint, in words (the loader names the
    backbone and the file)."""


class Format:
    """One checkpoint format a family reads: which files it takes and how they become the family's model."""

    what: ClassVar[str]  # for the error naming what a family accepts

    def reads(self, form: str, path: Path) -> bool:
        raise NotImplementedError

    def load(self, family: Family, name: str, cfg: Config, path: Path) -> nn.Module:
        raise NotImplementedError


@dataclass(frozen=True)
class HFFolder(Format):
    """A Hugging Face folder (``save_pretrained``) read by the transformers class ``model``; its config is checked
    against ``arch`` (the keys of the family's config that define the architecture, plus ``model_type``)."""

    model: str  # the transformers class, e.g. "Dinov2Model"
    unused: tuple[str, ...] = ()
    arch: tuple[str, ...] = ()
    model_type: str | None = None
    kwargs: Config = field(default_factory=dict)  # e.g. add_pooling_layer=False
    what: ClassVar[str] = "a Hugging Face folder (config.json + model.safetensors)"

    def construct(self, cfg: Config, device: str) -> nn.Module:
        """The model with the library's random initialisation (a family's ``construct``)."""
        import transformers

        cls = getattr(transformers, self.model)
        config = cls.config_class(**cfg)
        config._attn_implementation = "eager"  # deterministic CPU numerics; the parity tests compare against it
        with torch.device(device):
            return cls(config, **self.kwargs)

    def reads(self, form: str, path: Path) -> bool:
        return form == "dir"

    def load(self, family: Family, name: str, cfg: Config, path: Path) -> nn.Module:
        import transformers

        arch = {**({"model_type": self.model_type} if self.model_type else {}), **{k: cfg[k] for k in self.arch}}
        return strict_hf_load(getattr(transformers, self.model), path, name, self.unused, arch, **self.kwargs)


@dataclass(frozen=True)
class StateDictFile(Format):
    """A checkpoint file of the original code (``torch.save``, TorchScript or safetensors) under its own names."""

    key_map: Callable[[Tensors, Config], Tensors] | None = None  # original names -> the model's names
    unused: Unused = ()
    check: Callable[[Tensors, Config], None] | None = None  # raises CheckpointProblem: not the expected checkpoint
    cfg: Config = field(default_factory=dict)  # where the original differs from the family's config (an eps)
    what: ClassVar[str] = "a checkpoint file (.pt, .pth, .safetensors)"

    def reads(self, form: str, path: Path) -> bool:
        return form == "file" and path.suffix != ".onnx"

    def load(self, family: Family, name: str, cfg: Config, path: Path) -> nn.Module:
        raw = read_state_dict(name, path)
        if self.check is not None:
            self.check(raw, cfg)
        sd = self.key_map(raw, cfg) if self.key_map is not None else raw
        module = family.construct({**cfg, **self.cfg}, "cpu")
        load_strict(name, path, module, sd, self.unused)
        return module


@dataclass(frozen=True)
class OnnxFile(Format):
    """An exported ONNX graph: its initialisers (:func:`peft3d.backbones.onnx_weights.named_weights`, ``strip``
    removed from the front of every name) through the family's key map."""

    key_map: Callable[[dict[str, np.ndarray], Config], Tensors]
    strip: str = ""
    unused: Unused = ()
    assign: bool = False  # build on the meta device and take every tensor from the file (no random init)
    what: ClassVar[str] = "an ONNX file (.onnx)"

    def reads(self, form: str, path: Path) -> bool:
        return form == "file" and path.suffix == ".onnx"

    def load(self, family: Family, name: str, cfg: Config, path: Path) -> nn.Module:
        from peft3d.backbones.onnx_weights import named_weights

        sd = self.key_map(named_weights(name, path, self.strip), cfg)
        module = family.construct(cfg, "meta" if self.assign else "cpu")
        load_strict(name, path, module, sd, self.unused, assign=self.assign)
        return module


@dataclass(frozen=True)
class CT2File(Format):
    """A CTranslate2 ``model.bin`` holding the model spec ``spec`` (only variables under ``prefix`` are read)."""

    spec: str  # e.g. "WhisperSpec"
    key_map: Callable[[dict[str, np.ndarray], Config], Tensors]
    prefix: str = ""
    unused: Unused = ()
    what: ClassVar[str] = "a CTranslate2 model.bin file"

    def reads(self, form: str, path: Path) -> bool:
        return form == "file" and path.suffix != ".onnx"

    def load(self, family: Family, name: str, cfg: Config, path: Path) -> nn.Module:
        from peft3d.backbones.ct2_format import read_ct2

        module = family.construct(cfg, "cpu")
        m = read_ct2(name, path, prefix=self.prefix)
        if m.spec != self.spec:
            raise CheckpointProblem(f"holds a CTranslate2 {m.spec}, not a {self.spec}")
        load_strict(name, path, module, self.key_map(m.variables, cfg), self.unused)
        return module


@dataclass(frozen=True)
class Family:
    """What a backbone family declares; :meth:`build` does the rest (the module docstring)."""

    construct: Callable[[Config, str], nn.Module]  # (config, device) -> the original model, randomly initialised
    backbone: Callable[[BackboneSpec, nn.Module, Config], Backbone]  # the Backbone view of a built model
    formats: tuple[Format, ...]  # the checkpoint formats it reads; a file goes to the first that takes it
    attention: str = "eager"  # its default attention (the parity tests' reference); "sdpa" where it is fused
    init: Callable[[nn.Module], None] | None = None  # the original's random init, where the library's differs
    notes: str | None = None  # what differs from the original model, recorded in weights_info

    def build(self, spec: BackboneSpec, cfg: Config, weights: str, device: str = "cpu", sha256: str | None = None,
              locate: Locate | None = None) -> Backbone:
        """The backbone ``spec`` (config ``cfg``) with ``weights`` (random | pretrained | path:...); ``sha256`` and
        ``locate``: see :class:`Variant`."""
        kind, _ = parse_weights(weights)
        info: dict[str, Any] = {"source": weights, **({"notes": self.notes} if self.notes else {})}
        if kind == "random" or device == "meta":
            module = self.construct(cfg, device)
            if self.init is not None and kind == "random" and device != "meta":
                self.init(module)
        else:
            module, found = self._pretrained(spec, cfg, weights, sha256, locate)
            info.update(found)
            module = module.to(device)
        bb = self.backbone(spec, module, cfg)
        bb.set_attention(self.attention)
        info["state_sha256"] = "meta" if device == "meta" else state_checksum(bb)
        bb.weights_info = info
        return bb

    def load(self, name: str, cfg: Config, path: Path) -> nn.Module:
        """The original model strictly loaded from ``path`` (a file or a Hugging Face folder)."""
        form = "dir" if path.is_dir() else "file"
        return self._read(self._format(name, form, path, ""), name, cfg, path)

    def variant(self, spec: BackboneSpec, cfg: Config, *, tiny: bool = False, sha256: str | None = None,
                locate: Locate | None = None) -> Variant:
        return Variant(self, spec, cfg, tiny, sha256, locate)

    def _pretrained(self, spec: BackboneSpec, cfg: Config, weights: str, sha256: str | None,
                    locate: Locate | None) -> tuple[nn.Module, dict[str, Any]]:
        name, how = spec.name, spec.get_weights
        if weights == "pretrained" and locate is not None:
            where = locate()
            if where is None:
                raise WeightsError(f"{name}: pretrained weights not found; fix: {how}")
            form = "dir" if where.is_dir() else "file"
        else:
            form, where = resolve_weights(name, weights, _weights_check(name, weights), how)
        if form == "dir" and (f := timm_folder_file(where)) is not None:
            form, where = "file", f
        fmt = self._format(name, form, where, how)
        digest = hf_weight_digests(name, where, how) if form == "dir" else verify_digest(name, where)
        if sha256 is not None and weights == "pretrained" and digest != sha256:
            raise WeightsError(f"{name}: {where} has weights with sha256 {str(digest)[:16]}…, expected the "
                               f"published {sha256[:16]}… (corrupt or modified); fix: {how}")
        return self._read(fmt, name, cfg, where), {"path": str(where), "file_sha256": digest, **packaged_info(where)}

    def _format(self, name: str, form: str, where: Path, how: str) -> Format:
        fmt = next((f for f in self.formats if f.reads(form, where)), None)
        if fmt is None:
            raise WeightsError(f"{name}: expects {' or '.join(f.what for f in self.formats)}, got the "
                               f"{'folder' if form == 'dir' else 'file'} {where}" + (f"; fix: {how}" if how else ""))
        return fmt

    def _read(self, fmt: Format, name: str, cfg: Config, where: Path) -> nn.Module:
        try:
            return fmt.load(self, name, cfg, where)
        except CheckpointProblem as e:
            raise WeightsError(f"{name}: {where}: {e}") from None


@dataclass(frozen=True)
class Variant:
    """A registered backbone: what ``BACKBONES.get(name)`` returns, called as ``(weights, device)``. A ``tiny``
    variant (the test battery's twin of a real one) has random weights only. ``sha256``: the published digest
    of the default weights file, for files whose name does not identify them (``sources.KNOWN_SHA256``).
    ``locate``: where the default weights are, for those the registry's ``weights_check`` cannot name (a
    folder inside a Python package)."""

    family: Family
    spec: BackboneSpec
    cfg: Config
    tiny: bool = False
    sha256: str | None = None
    locate: Locate | None = None

    def __call__(self, weights: str | None = None, device: str = "cpu") -> Backbone:
        weights = weights or ("random" if self.tiny else "pretrained")
        if self.tiny and weights != "random":
            raise WeightsError(f"{self.spec.name}: a tiny test model has only random weights, got "
                               f"weights={weights!r}")
        return self.family.build(self.spec, self.cfg, weights, device, self.sha256, self.locate)


def _weights_check(name: str, weights: str) -> str:
    """Where the registry says the default weights of ``name`` are (only ``pretrained`` looks)."""
    if weights != "pretrained":
        return ""
    from peft3d.backbones import BACKBONES

    return BACKBONES.meta(name).get("weights_check", "")
