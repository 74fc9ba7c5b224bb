"""Method registry: ``name -> "peft3d.methods.<name>.method:<Class>"``. Adding a method = a folder + a line.

``config`` metadata names the (torch-free) config class so ``bench validate`` can check method settings
without importing torch.
"""
from peft3d.core.registry import Registry

METHODS = Registry("method")


def register(name: str, cls: str, config: str, summary: str, **meta) -> None:
    METHODS.register(name, f"peft3d.methods.{name}.method:{cls}",
                     config=f"peft3d.methods.{name}.config:{config}", summary=summary, **meta)


def floor_method() -> str:
    """The cheapest training step every other method is measured against (``bench perf``)."""
    return next(n for n in METHODS.names() if METHODS.meta(n).get("floor"))


register("linear", "Linear", "LinearConfig",
         "frozen backbone; only tokenizer, positional encoding, cls, final norm and head train", floor=True)
register("full", "Full", "FullConfig", "every weight trains (reference)")
register("prompt", "Prompt", "PromptConfig", "VPT-deep: P learnable tokens per block")
register("adapter", "Adapter", "AdapterConfig", "AdaptFormer: bottleneck adapter parallel to each FFN")
register("lora", "LoRA", "LoRAConfig", "Hugging Face peft LoRA on attention projections")
register("any2point", "Any2Point", "Any2PointConfig",
         "Any2Point: virtual-projection positional encoding + any-to-3D guided adapter in every block")


def config_class(name: str):
    """The method's config dataclass, imported without torch."""
    import importlib

    module, attr = METHODS.meta(name)["config"].split(":")
    return getattr(importlib.import_module(module), attr)
