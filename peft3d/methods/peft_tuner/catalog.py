"""Which tuners of the installed peft work with this harness, found by trying each one.

A tuner works when, with peft's default settings, on every tiny test backbone: it attaches, the model runs
forward and backward, every parameter it trains receives a gradient, and its state dict reloads into a
model built with another seed to give the same output (the checks the test battery then repeats in full).
Token-id tuners (prompt learning, adaption prompt, trainable tokens) are not tried:
point tokens have no ids. ``bench ls methods --probe`` runs the probe (~half a minute); the answer is cached in
``$PEFT3D_CACHE/peft_tuners.json`` (default ``$XDG_CACHE_HOME/peft3d``, else ``~/.cache/peft3d``) under a key
made of the installed peft and torch versions, the source of the code that decides it (this package and the
backbones) and the tiny backbones it ran on. Installing another peft or torch, or editing that code, changes the
key: the cached answer is then ignored (never shown) until the next ``--probe``. The key is computed from
package metadata and file bytes, so reading the cache imports neither peft nor torch.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

from peft3d.methods.peft_tuner.config import PREFIX, installed_tuners, needs_token_ids, peft_version

# 64 points -> 32 tokens of width 32 (the test battery's tiny setting)
TINY_POINTS = 64


def cache_path() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "peft3d"
    return Path(os.environ.get("PEFT3D_CACHE") or default) / "peft_tuners.json"


def cache_key() -> str:
    """What the probe's answer depends on, computed without importing torch or peft."""
    from importlib.metadata import version

    import peft3d.backbones
    import peft3d.methods.peft_tuner
    from peft3d.backbones import BACKBONES

    h = hashlib.sha256(f"peft {peft_version()} torch {version('torch')}".encode())
    for pkg in (peft3d.methods.peft_tuner, peft3d.backbones):
        for f in sorted(Path(pkg.__file__).parent.glob("*.py")):
            h.update(f.name.encode() + f.read_bytes())
    for name in tiny_backbones():  # plugins may add tiny backbones: the probe runs on them too
        h.update(f"{name}={BACKBONES.origin(name)}".encode())
    return h.hexdigest()[:16]


def cached() -> list[dict[str, Any]] | None:
    """The cached probe answer for this installation, or None when there is none (or it is stale)."""
    path = cache_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # none yet, or unreadable: the next --probe rewrites it
    return data.get("tuners") if isinstance(data, dict) and data.get("key") == cache_key() else None


def tiny_backbones() -> list[str]:
    from peft3d.backbones import BACKBONES

    return [n for n in BACKBONES.names() if BACKBONES.meta(n).get("test")]


def try_tuner(method: str, backbone: str) -> None:
    """Attach ``method`` (peft's defaults) to a tiny backbone, run forward and backward; raises on failure."""
    import torch

    from peft3d.core.spec import RunSpec, TokenizerCfg
    from peft3d.methods import config_class
    from peft3d.methods.build import build_model

    tok = TokenizerCfg(num_stages=1, embed_dim=16, k=8, lga_blocks=(1,), last_bottleneck=8)
    cfg = config_class(method).resolve(None, where=method)
    spec = RunSpec(backbone=backbone, method=method, weights="random", tokenizer=tok, head_hidden=16,
                   method_cfg=cfg.to_dict())
    model, _ = build_model(spec, num_classes=3)
    model.train()
    torch.manual_seed(0)
    xyz = torch.rand(2, TINY_POINTS, 3)
    logits = model(xyz)
    logits.sum().backward()
    if not torch.isfinite(logits).all():
        raise ValueError("non-finite output")
    idle = [n for n, p in model.backbone.named_parameters() if p.requires_grad and p.grad is None]
    if idle:
        raise ValueError(f"trained parameters get no gradient (the tuned module is bypassed): {idle[:2]}")
    other, _ = build_model(spec.replace(seed=1), num_classes=3)
    other.load_state_dict(model.state_dict(), strict=True)
    model.eval(), other.eval()
    with torch.no_grad():
        if not torch.equal(model(xyz), other(xyz)):
            raise ValueError("its state dict does not reload: a model built with another seed and loaded from it "
                             "computes something else (state kept outside the state dict)")


def probe(tuner: str) -> dict[str, Any]:
    """``{"name", "works", "why"}`` for one tuner."""
    row = {"name": PREFIX + tuner, "works": False, "why": ""}
    why = needs_token_ids(installed_tuners()[tuner])
    if why:
        row["why"] = why
        return row
    for backbone in tiny_backbones():
        try:
            # peft and its tuners print progress bars and warnings while attaching: keep the listing clean
            with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
                    contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                try_tuner(PREFIX + tuner, backbone)
        except Exception as e:  # noqa: BLE001  (any failure is the answer: recorded, not raised)
            msg = str(e).splitlines()[0] if str(e) else ""
            row["why"] = f"fails with peft's defaults on {backbone}: {type(e).__name__}: {msg}"[:300]
            return row
    row["works"] = True
    return row


def status(refresh: bool = False) -> list[dict[str, Any]]:
    """One row per installed tuner: ``name`` (``peft:<tuner>``), ``works``, ``why`` (empty when it works)."""
    from peft3d.core.atomic import atomic_write

    path, key = cache_path(), cache_key()
    if not refresh and (found := cached()) is not None:
        return found
    import torch

    with torch.random.fork_rng():
        rows = [probe(t) for t in installed_tuners()]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: json.dump({"key": key, "peft": peft_version(), "tuners": rows}, f, indent=1))
    return rows


def working() -> list[str]:
    return [r["name"] for r in status() if r["works"]]
