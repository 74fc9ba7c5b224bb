"""Method registry: ``name -> "peft3d.methods.<name>.method:<Class>"``. Adding a method = a folder + a line.

``config`` metadata names the (torch-free) config class so ``bench validate`` can check method settings
without importing torch.

Besides the built-in methods, every tuner of the installed Hugging Face ``peft`` resolves by name as
``peft:<tuner>`` (``peft3d.methods.peft_tuner``), read from peft's own registry when first named: there is
no list of tuners here. ``names()`` lists the built-in methods only; a grid that names a peft tuner imports
peft (and torch) when it is validated, because peft's config classes live in its torch package.
"""
from typing import Any

from peft3d.core.registry import Registry
from peft3d.methods import dapt, idpt, pointgst

PEFT_PREFIX = "peft:"


def is_peft(name: str) -> bool:
    return name.startswith(PEFT_PREFIX)


class MethodRegistry(Registry):
    """The registry plus ``peft:<tuner>`` names, resolved from the installed peft."""

    def check(self, name: str) -> str:
        if is_peft(name):
            from peft3d.methods.peft_tuner.config import check_tuner

            check_tuner(name)
            return name
        return super().check(name)

    def get(self, name: str) -> Any:
        if is_peft(name):
            from peft3d.methods.peft_tuner.method import method_class

            return method_class(name)
        return super().get(name)

    def meta(self, name: str) -> dict[str, Any]:
        if is_peft(name):
            self.check(name)
            return {"summary": f"Hugging Face peft tuner {name[len(PEFT_PREFIX):]}"}
        return super().meta(name)

    def __contains__(self, name: object) -> bool:
        return (isinstance(name, str) and is_peft(name)) or super().__contains__(name)


METHODS = MethodRegistry("method", group="method", required=("config", "summary"))


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

# The point-cloud PEFT baselines are declared the way a plugin declares a method: each folder's __init__ holds a
# Registration (torch-free), and the record enters the registry through the same call as a plugin's entry point
# (docs/extending.md uses them as worked examples; any of the folders could ship as a plugin unchanged).
for _name, _record in (("dapt", dapt.registration), ("pointgst", pointgst.registration),
                       ("idpt", idpt.registration)):
    METHODS.add(_name, _record)


def config_class(name: str):
    """The method's config dataclass, imported without torch (except for peft tuners: peft's classes)."""
    import importlib

    if is_peft(name):
        from peft3d.methods.peft_tuner.config import config_class as peft_config_class

        return peft_config_class(name)

    module, attr = METHODS.meta(name)["config"].split(":")
    return getattr(importlib.import_module(module), attr)
