from dataclasses import dataclass
from typing import ClassVar

from peft3d.methods.base import MethodConfig


@dataclass(frozen=True)
class LinearConfig(MethodConfig):
    """No knobs: the backbone stays frozen; the shared parts and the head train."""

    needs_blocks: ClassVar[bool] = False  # on zero blocks it is the "no transformer" control
