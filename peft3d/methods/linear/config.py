from dataclasses import dataclass

from peft3d.methods.base import MethodConfig


@dataclass(frozen=True)
class LinearConfig(MethodConfig):
    """No knobs: the backbone stays frozen; the shared parts and the head train."""
