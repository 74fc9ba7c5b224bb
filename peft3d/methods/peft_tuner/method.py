"""Any Hugging Face peft tuner as a method: ``peft:<tuner>`` injects the tuner into ``backbone.blocks``.

The tuner's layers replace the declared target modules inside the blocks, so everything it adds is inside the
backbone and counted as method parameters by the generic accounting; peft itself marks only its own
parameters trainable there.
"""
from __future__ import annotations

import functools
from typing import Any

from torch import nn

from peft3d.methods.base import Method
from peft3d.methods.peft_tuner.config import PeftTunerConfig, config_class
from peft3d.methods.peft_tuner.inject import inject
from peft3d.methods.peft_tuner.mha import unfuse

# peft wraps a whole fused ``nn.MultiheadAttention`` only in LoRA. For every other tuner a declared
# MultiheadAttention target (ImageBind's attention) is first replaced by its unfused twin (same function,
# four Linear projections; ``mha.py``), whose projections become the attention targets.
MHA_TUNERS = ("lora",)


def declared_targets(backbone: Any, tuner: str) -> dict[str, list[str]]:
    """Full module names inside ``backbone.blocks`` of each target set the backbone declares (attention and
    FFN projections), plus the blocks' LayerNorms (found by type) for ``ln_tuning``. Unfuses declared
    ``nn.MultiheadAttention`` targets in place for tuners other than LoRA."""
    out: dict[str, list[str]] = {"attention": [], "ffn": [], "norms": []}
    for i, blk in enumerate(backbone.blocks):
        modules = dict(blk.named_modules())
        for name in backbone.lora_targets(i):
            if isinstance(modules[name], nn.MultiheadAttention) and tuner not in MHA_TUNERS:
                unfuse(blk, name)
                out["attention"] += [f"{i}.{name}.{p}_proj" for p in ("q", "k", "v", "out")]
            else:
                out["attention"].append(f"{i}.{name}")
        out["ffn"] += [f"{i}.{name}" for name in backbone.ffn_targets(i)]
        out["norms"] += [f"{i}.{n}" for n, m in blk.named_modules() if isinstance(m, nn.LayerNorm)]
    return out


def peft_config_for(backbone: Any, cfg: PeftTunerConfig, where: str = "method config") -> Any:
    """Peft's config object for ``cfg`` on this backbone (full names inside ``backbone.blocks``)."""
    return cfg.peft_config(declared_targets(backbone, cfg.tuner), where)


class PeftTuner(Method):
    """Base of the per-tuner classes made by :func:`method_class`."""

    config_cls: type[PeftTunerConfig]

    def attach(self, model, cfg: PeftTunerConfig) -> None:
        bb = model.backbone
        tuner = inject(bb.blocks, peft_config_for(bb, cfg, where=f"method {self.name}"))
        # Shared state held by the tuner object (not reachable from the adapted layers) joins the backbone,
        # so that it moves with ``.to(device)`` and is saved and loaded with the model.
        inside = {id(m) for m in bb.blocks.modules()}
        shared = {n: m for n, m in tuner.named_children() if n != "model" and id(m) not in inside}
        if shared:
            bb.peft_shared = nn.ModuleDict(shared)


@functools.cache
def method_class(method: str) -> type[PeftTuner]:
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING

    cfg_cls = config_class(method)
    prefix = next(p for t, p in PEFT_TYPE_TO_PREFIX_MAPPING.items() if str(t.value).lower() == cfg_cls.tuner)
    return type(f"Peft_{cfg_cls.tuner}", (PeftTuner,), {"name": method, "prefix": prefix, "config_cls": cfg_cls,
                                                        "__module__": __name__})
