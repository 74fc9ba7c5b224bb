"""Rows for ``bench ls``; torch-free."""
from __future__ import annotations

from typing import Any

# Columns that only ``--json`` shows (too long for a terminal table).
JSON_ONLY = {"looked_in"}


def _weights_status(name: str) -> tuple[str, str]:
    from peft3d.backbones import sources

    ok, where = sources.weights_available(name)
    return ("yes" if ok else "no"), where


def rows(what: str) -> list[dict[str, Any]]:
    if what == "backbones":
        from peft3d.backbones import BACKBONES

        out = []
        for n in BACKBONES.names():
            m = BACKBONES.meta(n)
            here, where = _weights_status(n)
            out.append({"name": n, "modality": m.get("modality"), "pretrain": m.get("pretrain"),
                        "size": f"{m.get('width')}×{m.get('depth')}",
                        "block_params": f"{m['params'] / 1e6:.1f}M" if m.get("params") else "tiny",
                        "source": m.get("source"), "weights_here": here, "looked_in": where})
        return out
    if what == "methods":
        from peft3d.methods import METHODS

        return [{"name": n, "summary": METHODS.meta(n).get("summary", "")} for n in METHODS.names()]
    if what == "datasets":
        from peft3d.datasets import DATASETS

        return [{"name": n, "variants": ", ".join(DATASETS.meta(n).get("variants", ())),
                 "classes": DATASETS.meta(n).get("classes"), "summary": DATASETS.meta(n).get("summary", "")}
                for n in DATASETS.names()]
    if what == "grids":
        from peft3d.grids.loader import list_grids, load_grid

        return [{"name": g, "description": " ".join(str(load_grid(g).get("description", "")).split())}
                for g in list_grids()]
    if what == "presets":
        from peft3d.methods import METHODS, config_class

        return [{"method": n, "presets": ", ".join(sorted(config_class(n).presets)) or "—"} for n in METHODS.names()]
    raise ValueError(f"unknown listing {what!r}; choose backbones, methods, datasets, grids or presets")
