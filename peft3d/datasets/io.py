"""Readers shared by the dataset families: HDF5 arrays, a restricted unpickler, array checks.

Every failure becomes one :class:`DataError` line that names the file and says how to fix it; no h5py or pickle
traceback reaches the user. Torch-free.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from peft3d.core.errors import DataError

# What a pickled numpy array needs (numpy 1.x and 2.x module paths; protocol 2-5), and nothing else.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1')
}


class _ArraysOnly(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"{self.path}: refuses to unpickle {module}.{name}: a point-cloud cache holds only arrays, "
                        "lists and numbers; the file may be malicious — delete it and re-download it from a source "
                        "you trust")

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self.path}: refuses to unpickle a persistent reference; the file may be malicious")


def _walk_check(obj: Any, path: Path, depth: int = 0) -> None:
    """Only plain containers, numbers, strings and numeric arrays may come out."""
    if depth > 4:
        raise DataError(f"{path}: unexpectedly deep nesting; not a point-cloud cache")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise DataError(f"{path}: holds an object array; a point-cloud cache holds only numeric arrays")
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            _walk_check(x, path, depth + 1)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _walk_check(k, path, depth + 1)
            _walk_check(v, path, depth + 1)
    elif not isinstance(obj, (int, float, str, bytes, np.generic, type(None))):
        raise DataError(f"{path}: holds a {type(obj).__name__}; a point-cloud cache holds only arrays")


def safe_unpickle(path: Path, fix: str) -> Any:
    """Load a pickle that may contain only numpy arrays and plain containers. Never runs foreign code:
    ``find_class`` admits the handful of numpy reconstructors above and nothing else."""
    try:
        with open(path, "rb") as fh:  # streamed: the 2 GB Point-BERT cache is never held twice in memory
            obj = _ArraysOnly(fh, path).load()
    except DataError:
        raise
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}); {fix}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError, KeyError,
            MemoryError) as e:
        raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {e}); the file is truncated or "
                        f"corrupt — {fix}") from None
    _walk_check(obj, path)
    return obj


@contextmanager
def _open_h5(path: Path, keys: tuple[str, ...], fix: str) -> Iterator[Any]:
    """An open HDF5 file holding ``keys``; truncation/corruption/missing keys -> one DataError line."""
    import h5py

    if not path.is_file():
        raise DataError(f"{path} not found; {fix}")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in keys if k not in f]
            if missing:
                raise DataError(f"{path}: missing dataset(s) {missing} (has {sorted(f.keys())}); not a file of this "
                                f"format — {fix}")
            yield f
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: too large to read into memory; the file is corrupt or not this dataset — "
                        f"{fix}") from None
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as e:
        msg = " ".join(str(e).split())
        raise DataError(f"{path}: unreadable HDF5 ({msg}); the file is truncated or corrupt (an interrupted "
                        f"download is the usual cause) — {fix}") from None


def read_h5(path: Path, keys: tuple[str, ...], fix: str) -> dict[str, np.ndarray]:
    """Read whole datasets ``keys`` from an HDF5 file, after checking their declared sizes fit in memory."""
    with _open_h5(path, keys, fix) as f:
        need = sum(int(np.prod(f[k].shape, dtype=np.float64)) * f[k].dtype.itemsize for k in keys)
        have = available_memory()
        if have is not None and need > have:
            shapes = ", ".join(f"{k} {' x '.join(map(str, f[k].shape))} {f[k].dtype}" for k in keys)
            raise DataError(f"{path}: declares {shapes} = {need / 2**30:,.1f} GiB, more than the "
                            f"{have / 2**30:,.1f} GiB of memory available; the file is corrupt or not this dataset "
                            f"— {fix}")
        return {k: f[k][()] for k in keys}


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def h5_shapes(path: Path, keys: tuple[str, ...], fix: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes only (cheap: no data is read). Same errors as :func:`read_h5`."""
    with _open_h5(path, keys, fix) as f:
        return {k: (f[k].shape, f[k].dtype) for k in keys}


def as_points(data: np.ndarray, where: str, fix: str, channels: int = 3) -> np.ndarray:
    """``(N, P, >=3)`` float array -> float32 ``(N, P, 3)`` (extra channels such as normals are dropped)."""
    if data.ndim != 3 or data.shape[-1] < channels:
        raise DataError(f"{where}: points must have shape (N, P, 3), got {tuple(data.shape)} — {fix}")
    if not np.issubdtype(data.dtype, np.floating):
        raise DataError(f"{where}: points must be floating point, got dtype {data.dtype} — {fix}")
    return np.ascontiguousarray(data[..., :channels], dtype=np.float32)


def as_labels(label: np.ndarray, n: int, where: str, fix: str) -> np.ndarray:
    """``(N,)`` or ``(N, 1)`` integer labels -> int64 ``(N,)``. Floating labels are accepted only when every
    value is integral (some re-packaged files store them as float)."""
    if label.ndim == 2 and label.shape[1] == 1:
        label = label[:, 0]
    if label.ndim != 1 or len(label) != n:
        raise DataError(f"{where}: labels must have shape ({n},), got {tuple(label.shape)} — {fix}")
    if np.issubdtype(label.dtype, np.floating):
        if not (np.isfinite(label).all() and (label == np.round(label)).all()):
            raise DataError(f"{where}: labels must be integers, got non-integral {label.dtype} values — {fix}")
    elif not np.issubdtype(label.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers, got dtype {label.dtype} — {fix}")
    return label.astype(np.int64)


def check_values(points: np.ndarray, labels: np.ndarray, num_classes: int, where: str, fix: str) -> None:
    """NaN/Inf and label range, naming how many samples are affected."""
    finite = np.isfinite(points).all(axis=(1, 2))
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise DataError(f"{where}: {int((~finite).sum())} sample(s) contain NaN/Inf coordinates (first: #{first}) "
                        f"— {fix}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(((labels < 0) | (labels >= num_classes)).sum())
        raise DataError(f"{where}: {bad} label(s) outside [0, {num_classes - 1}] (found [{labels.min()}, "
                        f"{labels.max()}]) — {fix}")


def unit_sphere(points: np.ndarray) -> np.ndarray:
    """Centre each cloud and scale it into the unit sphere (Point-BERT's ``pc_normalize``), float32, in place."""
    points -= points.mean(axis=1, keepdims=True)
    points /= np.maximum(np.linalg.norm(points, axis=-1).max(axis=1), 1e-9)[:, None, None]
    return points


MANIFEST = "peft3d_export.json"


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest ``bench data export`` writes next to a dataset it produced in a published format. It names
    the real class list and counts of that export, so it is checked against them instead of the published ones."""
    import json

    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable export manifest ({e}); delete it or re-run bench data export") from None
    problem = _manifest_problem(m)
    if problem:
        raise DataError(f"{path}: invalid export manifest ({problem}); delete it or re-run bench data export")
    return m


def _manifest_problem(m: Any) -> str | None:
    if not isinstance(m, dict):
        return f"a JSON object expected, got {type(m).__name__}"
    names = m.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return "'class_names' must be a non-empty list of strings"
    counts = m.get("counts")
    if not isinstance(counts, dict) or not all(
            isinstance(counts.get(k), int) and not isinstance(counts.get(k), bool) and counts[k] >= 0
            for k in ("train", "test")):
        return "'counts' must map train and test to sample counts"
    if "points" in m and (not isinstance(m["points"], int) or isinstance(m["points"], bool) or m["points"] < 1):
        return "'points' must be a positive whole number"
    return None
