"""Building a peft tuner on a module in place (the method's attach, and the config's check on a toy module)."""
from __future__ import annotations

import warnings
from typing import Any

from torch import nn


def inject(blocks: nn.Module, peft_cfg: Any) -> Any:
    """Build the tuner on ``blocks`` (in place), as ``peft.inject_adapter_in_model`` does. That function
    refuses tuners with state shared between layers (VeRA's projections, ...) because the state lives on the
    tuner object it discards; calling the tuner class directly keeps the object, whose extra state the caller
    then keeps in the module tree (:meth:`PeftTuner.attach`)."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft warns that a plain nn.Module has no transformers config
        return PEFT_TYPE_TO_TUNER_MAPPING[peft_cfg.peft_type](blocks, peft_cfg, adapter_name="default")
