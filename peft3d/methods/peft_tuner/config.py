"""Config of a Hugging Face peft tuner used by name (``peft:<tuner>``): peft's own config class, validated.

A grid entry ``{name: "peft:loha", cfg: {r: 8}}`` passes ``cfg`` to ``LoHaConfig`` (the class peft registers
for the tuner). The harness owns the targeting fields (``target_modules``, ``feedforward_modules``, ...): it
fills them from the backbone's declared projections, chosen by ``targets``:

- ``attention``: the attention projections (``Backbone.lora_targets``) — the default, as for built-in LoRA;
- ``ffn``: the FFN projections (``Backbone.ffn_targets``);
- ``all``: both. Tuners whose config has ``feedforward_modules`` (IA3) default to ``all`` and get the FFN
  projections as their feed-forward modules (IA3 scales their inputs rather than their outputs).

``ln_tuning`` is the one tuner with its own targets: it tunes LayerNorms, so it targets every ``nn.LayerNorm``
inside the blocks (``targets: norms``); pointing it at projections would silently make it a partial full
fine-tune.

Importing this module does not import peft (nor torch); :meth:`PeftTunerConfig.resolve` does.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from peft3d.core.errors import ConfigError
from peft3d.methods.base import MethodConfig

PREFIX = "peft:"
TARGET_SETS = ("attention", "ffn", "all", "norms")
# Tuners whose targets are not projections (see the module docstring); every other tuner targets projections.
SPECIAL_TARGETS = {"ln_tuning": "norms"}
# Fields the harness sets from the backbone's declarations; a grid chooses them through ``targets``.
HARNESS_FIELDS = ("target_modules", "feedforward_modules", "exclude_modules", "modules_to_save",
                  "target_parameters", "layers_to_transform", "layers_pattern", "task_type", "peft_type",
                  "inference_mode", "base_model_name_or_path", "revision")
# Search space, declared once per knob family and applied to every tuner whose config has the knob
# (lr and weight decay are searched by the harness for every method).
RANK_FIELDS, RANKS = ("r",), [4, 8, 16, 32]
ALPHA_FIELDS, ALPHA_RATIOS = ("lora_alpha", "alpha"), [1, 2, 4]  # alpha = ratio x rank
DROPOUTS = [0.0, 0.1]  # on the first field whose name ends in "dropout"


def tuner_name(method: str) -> str:
    return method[len(PREFIX):]


@functools.cache
def installed_tuners() -> dict[str, type]:
    """``{tuner: peft config class}`` from peft's own registry (``PEFT_TYPE_TO_CONFIG_MAPPING``), so every
    tuner of the installed version is usable by name without a list to maintain here."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return {str(t.value).lower(): cls for t, cls in sorted(PEFT_TYPE_TO_CONFIG_MAPPING.items(),
                                                            key=lambda kv: str(kv[0].value))}


def peft_version() -> str:
    from importlib.metadata import version

    return version("peft")


def needs_token_ids(cls: type) -> str | None:
    """Why a tuner cannot run on point tokens, if it is one of peft's token-id tuners: prompt learning
    (virtual tokens prepended to the ids of a transformers model), adaption prompt (Llama's attention) or
    trainable tokens (rows of an embedding matrix); ``None`` otherwise."""
    from peft import PromptLearningConfig

    if issubclass(cls, PromptLearningConfig):
        return "prompt learning: prepends virtual tokens to the token ids of a transformers model; point tokens " \
               "have no ids"
    names = {f.name for f in dataclasses.fields(cls)}
    if "adapter_layers" in names and "adapter_len" in names:
        return "adaption prompt: rewrites Llama-style attention of a transformers model and needs its token ids"
    if "token_indices" in names:
        return "trainable tokens: trains rows of a token-embedding matrix chosen by token id; point tokens have no ids"
    return None


def check_tuner(method: str) -> str:
    """``peft:<tuner>`` -> the tuner, or a one-line error naming the installed ones."""
    import difflib

    from peft3d.core.registry import RegistryError

    name, tuners = tuner_name(method), installed_tuners()
    if name not in tuners:
        close = difflib.get_close_matches(name, list(tuners), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(PREFIX + c) for c in close)}?" if close else ""
        raise RegistryError(f"unknown peft tuner {method!r}{hint} (peft {peft_version()} has: "
                            f"{', '.join(tuners)})")
    why = needs_token_ids(tuners[name])
    if why:
        raise ConfigError(f"method {method}: cannot run on point tokens ({why})")
    return name


def _plain(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


@dataclass(frozen=True)
class PeftTunerConfig(MethodConfig):
    """``targets`` + the explicitly set fields of the tuner's peft config (``options``; peft's defaults for
    the rest). One subclass per tuner (:func:`config_class`), with ``tuner`` set."""

    tuner: ClassVar[str] = ""
    targets: str = "attention"
    options: Mapping[str, Any] = field(default_factory=dict)

    # -- what peft's config class allows -----------------------------------------------------------------
    @classmethod
    def peft_class(cls) -> type:
        return installed_tuners()[cls.tuner]

    @classmethod
    def allowed(cls) -> list[str]:
        from peft import PeftConfig

        base = {f.name for f in dataclasses.fields(PeftConfig)}
        return sorted(f.name for f in dataclasses.fields(cls.peft_class())
                      if f.name not in base and f.name not in HARNESS_FIELDS and not f.name.startswith("_"))

    @classmethod
    def default_targets(cls) -> str:
        if cls.tuner in SPECIAL_TARGETS:
            return SPECIAL_TARGETS[cls.tuner]
        return "all" if cls.has_feedforward() else "attention"

    @classmethod
    def has_feedforward(cls) -> bool:
        return "feedforward_modules" in {f.name for f in dataclasses.fields(cls.peft_class())}

    # -- MethodConfig ------------------------------------------------------------------------------------
    @classmethod
    def resolve(cls, overrides: Mapping[str, Any] | None = None, preset: str | None = None,
                where: str = "method config") -> "PeftTunerConfig":
        if preset is not None:
            raise ConfigError(f"{where}: unknown preset {preset!r}; peft tuners have no presets (set cfg instead)")
        data = dict(overrides or {})
        targets = data.pop("targets", cls.default_targets())
        allowed_targets = [SPECIAL_TARGETS[cls.tuner]] if cls.tuner in SPECIAL_TARGETS else list(TARGET_SETS[:3])
        if targets not in allowed_targets:
            raise ConfigError(f"{where}: targets must be one of {allowed_targets}, got {targets!r}")
        owned = sorted(set(data) & set(HARNESS_FIELDS))
        if owned:
            raise ConfigError(f"{where}: {owned} are set by the harness from the backbone's declared projections; "
                              f"choose them with targets: {' | '.join(allowed_targets)}")
        allowed = cls.allowed()
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {['targets', *allowed]}")
        out = cls(targets=targets, options=_plain(data))
        out.peft_config(TOY_TARGETS, where)  # peft's config class validates what it checks itself
        problem = _layers_reject(cls.tuner, targets, json.dumps(out.options, sort_keys=True, default=str))
        if problem:
            raise ConfigError(f"{where}: peft {peft_version()} rejects this configuration ({problem}); fix the "
                              "value it names")
        return out

    def peft_config(self, declared: Mapping[str, list[str]], where: str = "method config") -> Any:
        """Peft's config object targeting ``declared[set]`` module names (full names inside the model the
        tuner wraps; sets ``attention``, ``ffn``, ``norms``)."""
        kw: dict[str, Any] = dict(self.options)
        sets = {"attention": ("attention",), "ffn": ("ffn",), "all": ("attention", "ffn"), "norms": ("norms",)}
        kw["target_modules"] = [n for s in sets[self.targets] for n in declared[s]]
        if self.targets in ("ffn", "all") and self.has_feedforward():
            kw["feedforward_modules"] = list(declared["ffn"])
        try:
            return self.peft_class()(**kw)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"targets": self.targets, **dict(self.options)}

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        names = [f.name for f in dataclasses.fields(cls.peft_class())]
        out: dict[str, Any] = {}
        rank = next((n for n in RANK_FIELDS if n in names), None)
        if rank:
            out[rank] = trial.suggest_categorical(rank, RANKS)
        alpha = next((n for n in ALPHA_FIELDS if n in names), None)
        if alpha and rank:
            out[alpha] = float(out[rank] * trial.suggest_categorical("alpha_ratio", ALPHA_RATIOS))
        dropout = next((n for n in names if n.endswith("dropout") and n in cls.allowed()), None)
        if dropout:
            out[dropout] = trial.suggest_categorical(dropout, DROPOUTS)
        return out


# The module names of :func:`_toy` by target set: what resolve() builds peft's config and layers against.
TOY_TARGETS = {"attention": ["0.q"], "ffn": ["0.fc"], "norms": ["0.norm"]}


def _toy() -> Any:
    """A one-block stand-in with one module of each target kind (8 wide)."""
    from torch import nn

    block = nn.Module()
    block.q, block.fc, block.norm = nn.Linear(8, 8), nn.Linear(8, 8), nn.LayerNorm(8)
    return nn.ModuleDict({"0": block})


@functools.lru_cache(maxsize=256)
def _layers_reject(tuner: str, targets: str, options_json: str) -> str | None:
    """Why the tuner refuses to build its layers with these options, or None. Peft checks some values only
    there (a rank <= 0, ...), so a config it accepts could still fail every run; building the tuner on a toy
    module finds that at validate time. A toy the tuner cannot take even with its defaults says nothing about
    the options: no verdict then. The global torch RNG is left as it was (a run's init must not depend on it)."""
    import torch

    from peft3d.methods.peft_tuner.inject import inject

    cls = config_class(PREFIX + tuner)

    def attempt(options: dict[str, Any]) -> str | None:
        try:
            with torch.random.fork_rng(devices=[]):
                inject(_toy(), cls(targets=targets, options=options).peft_config(TOY_TARGETS))
        except Exception as e:  # noqa: BLE001 -- any refusal is the answer, reported in one line
            return str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        return None

    problem = attempt(json.loads(options_json))
    return problem if problem and attempt({}) is None else None


@functools.cache
def config_class(method: str) -> type[PeftTunerConfig]:
    """The :class:`PeftTunerConfig` subclass of ``peft:<tuner>`` (checked against the installed peft)."""
    tuner = check_tuner(method)
    return type(f"PeftConfig_{tuner}", (PeftTunerConfig,), {"tuner": tuner, "__module__": __name__})
