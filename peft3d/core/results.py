"""Result files: one JSON per run, written atomically; the only source tables are built from."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from peft3d.core.atomic import atomic_write

SCHEMA = 1


def results_dir(override: str | os.PathLike | None = None) -> Path:
    return Path(override or os.environ.get("PEFT3D_RESULTS", "results")).resolve()


def run_path(root: Path, run_id: str) -> Path:
    return root / "runs" / f"{run_id}.json"


def atomic_write_text(path: Path, text: str) -> None:
    """Readers see all of ``text`` or the previous file, never a part."""
    atomic_write(path, lambda f: f.write(text))


def write_result(root: Path, result: dict[str, Any]) -> Path:
    path = run_path(root, result["run_id"])
    atomic_write_text(path, json.dumps(result, indent=1, sort_keys=True, allow_nan=False))
    return path


def read_result(root: Path, run_id: str) -> dict[str, Any] | None:
    path = run_path(root, run_id)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # unreadable = absent: the run is redone, never tabulated
    return data if isinstance(data, dict) and data.get("run_id") == run_id else None


def succeeded(root: Path, run_id: str) -> bool:
    r = read_result(root, run_id)
    return bool(r and r.get("status") == "success")


def load_results(root: Path, run_ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    return {rid: read_result(root, rid) for rid in run_ids}


def failure_result(spec_dict: dict[str, Any], run_id: str, error: str, **extra: Any) -> dict[str, Any]:
    return {"schema": SCHEMA, "run_id": run_id, "status": "failed", "error": error, "spec": spec_dict, **extra}
