"""The Method interface: one door (``attach``) through which every PEFT method enters the model.

A method is a folder with ``config.py`` (a validated frozen dataclass, its presets and search space) and
``method.py`` (a :class:`Method` subclass). ``attach(model, cfg)`` receives a model whose backbone is already
frozen (except the final norm; :func:`peft3d.models.build.point_model` freezes it), inserts the method's modules
(wrapping blocks or FFN sites, or injecting LoRA), unfreezes what it trains, and returns nothing.
Every parameter a method adds carries its prefix (``prompt_``, ``adapter_``, ``lora_``, ``a2p_``) or lives
inside the backbone, so parameter accounting is generic (:func:`peft3d.models.model.param_groups`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

from peft3d.core.errors import ConfigError
from peft3d.core.spec import from_mapping


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Base for method configs. Subclasses add fields, validate in ``__post_init__`` and declare
    ``search_space`` (Optuna) and ``presets`` (named overrides)."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    # What the method needs from the shared pipeline, checked by grid validation before any run starts.
    needs_blocks: ClassVar[bool] = True  # False: meaningful on a backbone with zero blocks (the none control)
    sets_pos_encoding: ClassVar[bool] = False  # True: installs its own positional encoding (pipeline's must be mlp)

    @classmethod
    def resolve(cls, overrides: Mapping[str, Any] | None = None, preset: str | None = None,
                where: str = "method config") -> "MethodConfig":
        data: dict[str, Any] = {}
        if preset is not None:
            if preset not in cls.presets:
                known = sorted(cls.presets) or "(no presets)"
                raise ConfigError(f"{where}: unknown preset {preset!r}; available: {known}")
            data.update(cls.presets[preset])
        data.update(overrides or {})
        return from_mapping(cls, data, where)

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Method-specific knobs for Optuna (lr and weight decay are searched by the harness for all)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Method:
    name: ClassVar[str]
    prefix: ClassVar[str]  # "" for methods that add no modules
    config_cls: ClassVar[type[MethodConfig]]
    # True when the method trains pretrained backbone weights (``full``); recorded in results.
    trains_backbone: ClassVar[bool] = False

    def attach(self, model: Any, cfg: MethodConfig) -> None:
        raise NotImplementedError
