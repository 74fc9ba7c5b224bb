"""Checks of one run's combination (backbone x weights x method x pipeline) at validate time, torch-free, so a
combination that cannot work fails with one line before any run starts rather than mid-grid."""
from __future__ import annotations

import dataclasses

from peft3d.core.errors import ConfigError
from peft3d.core.spec import PipelineCfg


def cell_pipeline(backbone: str, method: str, pipeline: PipelineCfg, explicit: bool) -> PipelineCfg:
    """The pipeline one cell runs with. A cell that cannot use the default positional encoding -- a method that
    installs its own (Any2Point: ``mlp`` is its slot), a backbone without a table when the default is ``table``
    -- runs with ``mlp`` instead, unless the grid set ``pipeline.pos_encoding`` itself (then
    :func:`check_combination` refuses the combination in one line). The run's id and label show the encoding
    it ran with."""
    from peft3d.backbones import BACKBONES
    from peft3d.methods import config_class

    if explicit or pipeline.pos_encoding == "mlp":
        return pipeline
    no_table = pipeline.pos_encoding == "table" and BACKBONES.meta(backbone).get("modality") not in ("1d", "2d")
    if no_table or config_class(method).sets_pos_encoding:
        return dataclasses.replace(pipeline, pos_encoding="mlp")
    return pipeline


def check_combination(backbone: str, weights: str, method: str, pipeline: PipelineCfg, where: str) -> None:
    from peft3d.backbones import BACKBONES
    from peft3d.backbones.sources import check_weights, shuffle_seed
    from peft3d.methods import config_class

    try:
        check_weights(weights)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    meta = BACKBONES.meta(backbone)
    if shuffle_seed(weights) is not None and meta.get("weights_check") == "random":
        raise ConfigError(f"{where}: backbone {backbone} has no pretrained weights to shuffle; "
                          "fix: weights: random for it")
    if meta.get("control") and weights != "random":
        raise ConfigError(f"{where}: backbone {backbone} is the no-transformer control and has no weights; "
                          "fix: weights: random for it")
    depth = meta.get("depth")
    if pipeline.blocks is not None and depth is not None and pipeline.blocks > depth:
        raise ConfigError(f"{where}: pipeline.blocks={pipeline.blocks} but backbone {backbone} has {depth} "
                          f"blocks; fix: blocks <= {depth}")
    blocks = pipeline.blocks if pipeline.blocks is not None else depth
    cfg = config_class(method)
    if blocks == 0 and cfg.needs_blocks:
        raise ConfigError(f"{where}: method {method} needs transformer blocks and backbone {backbone} runs with "
                          "none; fix: use a method that works without blocks (linear) or a backbone with blocks")
    if pipeline.pos_encoding == "table" and meta.get("modality") not in ("1d", "2d"):
        raise ConfigError(f"{where}: pipeline.pos_encoding=table needs a positional table and backbone "
                          f"{backbone} has none; fix: pos_encoding mlp or none")
    if cfg.sets_pos_encoding and pipeline.pos_encoding != "mlp":
        raise ConfigError(f"{where}: method {method} installs its own positional encoding; "
                          f"fix: leave pipeline.pos_encoding at mlp for it (got {pipeline.pos_encoding})")
