"""The names of tuning studies: where a study's trials ran, written into its name and read back from it.

``tuning.cells`` names each study "grid/backbone[weights]/dataset:v1+v2/method[/preset]/digest"; the tables
(below the tuning layer) read the variants back from a tuned result's study name, so both sides live here.
"""
from __future__ import annotations

import re

_LOG_UNIFORM = re.compile(r"log-uniform \[([0-9.eE+-]+), ([0-9.eE+-]+)\]")
_WHERE = re.compile(r"^[^/]+/[^/]+\[[^/]+\]/[^/:]+:([^/]+)/")


def study_where(dataset: str, variants: tuple[str, ...]) -> str:
    """The "dataset:v1+v2" part of a study's name: the variants its trials run at."""
    return f"{dataset}:{'+'.join(variants)}"


def objective_variants_of(study_name: str) -> tuple[str, ...]:
    """The variants a study's trials ran at, read back from its name; () for a name of another form."""
    m = _WHERE.match(study_name)
    return tuple(m[1].split("+")) if m else ()


def log_uniform(lo: float, hi: float) -> str:
    """How a study records a log-uniform range in its space description (and every tuned result)."""
    return f"log-uniform [{lo:.3g}, {hi:.3g}]"


def log_uniform_bounds(text: str | None) -> tuple[float, float] | None:
    """The (lo, hi) of a range written by :func:`log_uniform`; None for any other text."""
    m = _LOG_UNIFORM.fullmatch(text or "")
    return (float(m[1]), float(m[2])) if m else None
