"""On-disk cache for derived arrays (evaluation FPS indices, converted ModelNet40 text files).

Default folder ``results/cache/`` (``$PEFT3D_CACHE`` overrides). Every entry is a single ``.npy`` file whose name
is a sha256 over everything it depends on; it is written to a temporary file in the same folder and moved into
place with ``os.replace``, so a crash, a full disk or a reader error never leaves a partial entry behind.
A cache file that cannot be read is treated as missing and rewritten.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from peft3d.core.atomic import atomic_write
from peft3d.core.digest import parts_sha256, safe_label

ENV = "PEFT3D_CACHE"
DEFAULT = Path("results") / "cache"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    return Path(override or os.environ.get(ENV) or DEFAULT)


def entry_name(kind: str, label: str, detail: object, *depends_on: object) -> str:
    """The file name of a cache entry: readable (kind, label, detail) and a digest of everything it depends
    on, so that a stale or wrong label can never serve another entry's data."""
    return f"{kind}-{safe_label(label)}-{detail}-{parts_sha256(*depends_on)[:24]}.npy"


def atomic_save(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` (.npy) atomically (see :mod:`peft3d.core.atomic`)."""
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False), binary=True)


def load(path: Path) -> np.ndarray | None:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


def cached(name: str, compute: Callable[[], np.ndarray], directory: str | os.PathLike | None = None,
           check: Callable[[np.ndarray], bool] | None = None) -> np.ndarray:
    """Return the array stored under ``name`` (a file name, e.g. from :func:`entry_name`), computing and storing
    it on a miss. ``check`` rejects a stored array that does not fit (then it is recomputed)."""
    path = cache_dir(directory) / name
    if path.exists():
        got = load(path)
        if got is not None and (check is None or check(got)):
            return got
    value = compute()
    try:
        atomic_save(path, value)
    except OSError:  # a read-only or full cache folder must not fail the run: the value is still correct
        pass
    return value
