"""glibc malloc settings shared by the training workers and ``bench perf``.

glibc serves allocations above its mmap threshold (128 KiB at start, raised dynamically up to 32 MiB) with
fresh pages and unmaps them on free, so every large CPU activation pays its page faults again. Measured on the
Point-PN tokenizer (256 points, batch 16, 2 cores): 0.43-0.68 s per forward with the defaults vs 0.08-0.10 s with
a fixed 32 MiB mmap threshold and a 1 GiB trim threshold. ``bench perf`` applies the same settings to itself
(``mallopt``) so that its CPU timings are those of a training worker. (They do not change its peak memory:
``--paper --batch 4`` with four methods peaked at 8.6 GB RSS either way -- one step's own transients.) Neither
Python nor torch exposes these knobs: they belong to the C library, set through the environment for child
processes and with ``mallopt`` for the current one.
"""
from __future__ import annotations

import ctypes
import ctypes.util

MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>


def set_in_process() -> bool:
    """Apply the same thresholds to this process (glibc only); False where there is no ``mallopt``."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl without mallopt): nothing to set
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
