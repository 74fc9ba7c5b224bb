from dataclasses import dataclass

from peft3d.methods.base import MethodConfig


@dataclass(frozen=True)
class FullConfig(MethodConfig):
    """No knobs: every pretrained weight trains (the reference PEFT methods try to approach)."""
