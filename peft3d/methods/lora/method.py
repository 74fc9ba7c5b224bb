from __future__ import annotations

from peft3d.core.errors import ConfigError
from peft3d.methods.base import Method
from peft3d.methods.lora.config import LoRAConfig


class LoRA(Method):
    name, prefix, config_cls = "lora", "lora_", LoRAConfig

    def attach(self, model, cfg: LoRAConfig) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        bb = model.backbone
        names = []
        for i, blk in enumerate(bb.blocks):
            declared = bb.lora_targets(i)
            if cfg.targets:
                inner = [n for n, _ in blk.named_modules() if n and any(
                    n == t or n.endswith("." + t) for t in cfg.targets)]
                if not inner:
                    raise ConfigError(f"lora targets {list(cfg.targets)} match nothing in {bb.spec.name} block {i}; "
                                      f"its attention projections are {declared}")
            else:
                inner = declared
            names += [f"{i}.{n}" for n in inner]  # full names inside backbone.blocks: exact matches only
        lcfg = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=names)
        inject_adapter_in_model(lcfg, bb.blocks)
        for n, p in bb.blocks.named_parameters():
            p.requires_grad_("lora_" in n)
