"""The one place that hashes things: files, arrays, JSON-able values, and the labels that name cache files.

Every digest is sha256 (hashlib); callers cut the hex to the length they store. numpy is imported lazily so
that ``core`` stays import-light (``bench ls`` and ``bench validate`` use it).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def json_sha256(value: Any) -> str:
    """sha256 of ``value``'s canonical JSON (sorted keys, no spaces): the same on every machine."""
    return text_sha256(json.dumps(value, sort_keys=True, separators=(",", ":")))


def parts_sha256(*parts: object) -> str:
    """sha256 of the parts' string forms, in order (a NUL between parts, so ("ab", "c") != ("a", "bc"))."""
    h = hashlib.sha256()
    for p in parts:
        h.update(str(p).encode())
        h.update(b"\0")
    return h.hexdigest()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def array_sha256(*arrays: Any) -> str:
    """sha256 over each array's shape, dtype and bytes, in order (about 1 GB/s)."""
    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(memoryview(a).cast("B") if a.ndim and a.size else a.tobytes())
    return h.hexdigest()


def safe_label(text: str, limit: int = 60) -> str:
    """``text`` usable in a file name: characters other than letters, digits, ``-``, ``_``, ``.`` become ``_``."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:limit]
