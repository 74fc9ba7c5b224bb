"""What each method cost to train, measured from the result files: per dataset × backbone × method, the median
training step, its ratio to the floor method's step on the same backbone, the median epochs run, the median wall
time of a run and the hours summed over the cell's runs.

`bench perf` times a few steps of each method in isolation; this table is what the runs of a grid actually spent,
epochs to plateau included (a method that needs more epochs costs more than its step ratio says), so a reader
can weigh an accuracy against the compute behind it.
"""
from __future__ import annotations

import pandas as pd

from peft3d.analysis import formatting as fm
from peft3d.methods import floor_method

COST_TITLE = "Measured cost per run"


def cost_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset × backbone × method with a timed successful run, pooled over weights and seeds (they do
    not change what a step computes); empty when no run records its step time."""
    ok = df[(df["status"] == "success") & df["step_ms"].notna()]
    if ok.empty:
        return pd.DataFrame()
    floor = floor_method()
    floor_step = ok[ok["method"] == floor].groupby(["dataset", "backbone"])["step_ms"].median()
    rows = []
    for (ds, bb, m), runs in ok.groupby(["dataset", "backbone", "method"], sort=False):
        step, base = runs["step_ms"].median(), floor_step.get((ds, bb))
        rows.append({"dataset": ds, "backbone": bb, "method": m, "runs": len(runs), "ms / step": fm.num(step, ".0f"),
                     f"× {floor} step": fm.num(step / base if base else None, ".2f"),
                     "epochs": fm.num(runs["epochs"].median(), ".0f"),
                     "min / run": fm.num(runs["time_s"].median() / 60, ".1f"),
                     "hours, all runs": fm.num(runs["time_s"].sum() / 3600, ".2f")})
    return pd.DataFrame(rows)


COST_NOTE = ("Measured from the result files of the table's runs (`time.step_ms`: the mean training step; "
             "`time.wall_s`: a run's wall time, every segment of a resumed run, evaluation included), medians over "
             "the successful runs of each dataset × backbone × method, pooled over weights and seeds. × floor: the "
             "step's ratio to the linear probe's on the same backbone and dataset. Epochs: to the validation "
             "plateau or the cap, so min / run weighs what the step ratio leaves out. Times are as measured: a "
             "run that shared its core or memory bandwidth with other jobs ran slower, so compare cells run on one "
             "device and thread count under the same load; `bench perf`, which times every method's steps "
             "alternately in one process, gives the fairer step ratio. Tuning trials are not counted.")


def cost_markdown(df: pd.DataFrame) -> list[str]:
    table = cost_table(df)
    return [] if table.empty else [f"## {COST_TITLE}", "", fm.markdown(table), "", COST_NOTE, ""]
