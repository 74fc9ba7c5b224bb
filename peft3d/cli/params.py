"""``bench params``: the parameter breakdown of one backbone x method model.

``--full-size`` builds the model on the ``meta`` device: shapes only, no weights read, no memory used, so the
full-size backbones can be counted on any machine. Without it the model is really built on the CPU with
``--weights`` (default ``random``; ``pretrained`` or ``path:/...`` load and check the weights first), which is
the quick mode for the tiny ``test_*`` backbones. The counts are the same either way; both use the paper's
settings (default tokenizer, ``--num-classes`` 15 as in ScanObjectNN).
"""
from __future__ import annotations

import json
from typing import Any

import typer

from peft3d.cli.app import app, fail
from peft3d.core.errors import Peft3dError
from peft3d.core.registry import RegistryError

PIPELINES = ("default", "paper")


def pipeline_of(name: str):
    """(PipelineCfg, TokenizerCfg) of the harness default or of the paper's preset (``_pipeline_paper.yaml``):
    the cls token, the head and the token norm change the counts."""
    from peft3d.core.errors import ConfigError
    from peft3d.core.spec import PipelineCfg, TokenizerCfg, from_mapping
    from peft3d.grids.loader import GRID_DIR, load_grid

    if name not in PIPELINES:
        raise ConfigError(f"--pipeline must be one of {PIPELINES}, got {name!r}")
    if name == "default":
        return PipelineCfg(), TokenizerCfg()
    g = load_grid(str(GRID_DIR / "_pipeline_paper.yaml"))
    return from_mapping(PipelineCfg, g["pipeline"], "pipeline"), from_mapping(TokenizerCfg, g["tokenizer"], "tokenizer")


def count_params(backbone: str, method: str, preset: str | None = None, full_size: bool = False,
                 weights: str = "random", num_classes: int = 15, pipeline: str = "default") -> dict[str, Any]:
    """Build the model and return its parameter groups (:func:`peft3d.models.model.param_groups`)."""
    from peft3d.backbones import BACKBONES
    from peft3d.core.spec import RunSpec
    from peft3d.methods import METHODS, config_class
    from peft3d.methods.build import build_model
    from peft3d.models.model import param_groups

    BACKBONES.check(backbone)
    METHODS.check(method)
    cfg = config_class(method).resolve(None, preset, where=f"method {method}")
    pipe, tok = pipeline_of(pipeline)
    spec = RunSpec(backbone=backbone, method=method, weights="random" if full_size else weights,
                   method_cfg=cfg.to_dict(), preset=preset, pipeline=pipe, tokenizer=tok)
    model, m = build_model(spec, num_classes, device="meta" if full_size else "cpu")
    g = param_groups(model, m.prefix)
    return {"backbone": backbone, "method": method, "preset": preset, "pipeline": pipeline, "full_size": full_size,
            "device": "meta" if full_size else "cpu", "weights": spec.weights, "blocks": g["blocks"],
            "method_params": g["method"], "shared": g["shared"],
            "trainable_excluding_head": g["trainable_excluding_head"], "head": g["head"],
            "trainable": g["trainable"], "total": g["total"]}


@app.command("params")
def params(backbone: str = typer.Option(..., "--backbone", "-b", help="backbone name (bench ls backbones)"),
           method: str = typer.Option(..., "--method", "-m", help="method name (bench ls methods)"),
           preset: str | None = typer.Option(None, "--preset", help="method preset (bench ls presets)"),
           full_size: bool = typer.Option(False, "--full-size",
                                          help="build on the meta device: no weights read, no memory used"),
           weights: str = typer.Option("random", "--weights",
                                       help="without --full-size: random | pretrained | path:/dir_or_file"),
           num_classes: int = typer.Option(15, "--num-classes"),
           pipeline: str = typer.Option("default", "--pipeline",
                                        help="default | paper (the paper's cls token, head and token norm: "
                                             "the paper's counts)"),
           as_json: bool = typer.Option(False, "--json", help="print one JSON object")) -> None:
    """Parameter breakdown: backbone blocks, method, shared (tokenizer, positional encoding, cls, final norm),
    head, trainable and total."""
    try:
        r = count_params(backbone, method, preset, full_size, weights, num_classes, pipeline)
    except (Peft3dError, RegistryError) as e:
        fail(str(e))
        return
    if as_json:
        print(json.dumps(r))
        return
    how = "meta device, full size, no weights read" if r["full_size"] else f"cpu, weights {r['weights']}"
    print(f"{r['backbone']} x {r['method']}{f' [{preset}]' if preset else ''} ({how})")
    rows = [("backbone blocks (pretrained)", r["blocks"]), ("method", r["method_params"]),
            ("shared: tokenizer, pos. enc., cls, final norm", r["shared"]),
            ("trainable excluding head", r["trainable_excluding_head"]), ("head", r["head"]),
            ("trainable", r["trainable"]), ("total", r["total"])]
    for label, n in rows:
        print(f"  {label:<48}{n:>14,}")
