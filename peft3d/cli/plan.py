"""``bench plan``: per cell of a grid, the measured step time and memory on a device, the time per run and for
the grid, the cells that will not fit, and the ``bench submit`` to use (peft3d.training.plan)."""
from __future__ import annotations

from typing import Optional

import typer

from peft3d.cli.app import GridOpt, app, measured, parse_seeds


def _print(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    unit = "GPU" if r["device"].startswith("cuda") else "CPU"
    table = Table(title=f"{r['grid']} on {r['device']} ({r['device_memory_mb'] / 1024:.0f} GB): {r['runs']} runs, "
                        f"{len(r['cells'])} distinct cells" + (" -- TINY TWINS, not a forecast" if r["tiny"] else ""))
    table.add_column("cell", overflow="fold", min_width=24)
    for col in ("runs", "batch", "s/step", "peak MB", "per run", "all its runs", "fits"):
        table.add_column(col)
    for c in r["cells"]:
        table.add_row(c["cell"], str(c["runs"]), str(c["batch"]),
                      "—" if c["s_per_step"] is None else f"{c['s_per_step']:.3f}",
                      "—" if c["peak_mb"] is None else f"{c['peak_mb']:.0f}", _dur(c["run_s"]), _dur(c["total_s"]),
                      "yes" if c["fits"] else f"NO{' (' + c['oom'] + ')' if c.get('oom') else ''}")
    con.print(table)
    con.print(f"grid total: {_dur(r['total_s'])} = {r['device_hours']:.2f} {unit}-hours (one run per {unit}), "
              "cells that fit only")
    for st in r.get("stages", []):
        con.print(f"  + {st['stage']} under bench tune: {st['runs']} runs, {_dur(st['total_s'])} = "
                  f"{st['device_hours']:.2f} {unit}-hours")
    if r["does_not_fit"]:
        con.print(f"will not fit the device memory: {', '.join(r['does_not_fit'])}", style="yellow")
    con.print(f"suggested: {r['suggested_submit']}")
    con.print(f"how: {r['notes']}", style="dim")


def _dur(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"


@app.command("plan")
def plan(grid: str = GridOpt,
         device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N: where to measure"),
         batch: Optional[int] = typer.Option(None, "--batch", help="override the grid's batch size"),
         steps: int = typer.Option(3, "--steps", help="timed steps per cell (after the warm-up)"),
         warmup: int = typer.Option(1, "--warmup"),
         tiny: bool = typer.Option(False, "--tiny", help="time each backbone's tiny test twin instead: checks "
                                                         "that every cell builds and steps, on a CPU, quickly"),
         no_weights_check: bool = typer.Option(False, "--no-weights-check",
                                               help="do not require the grid's pretrained weights on this machine"),
         seeds: Optional[str] = typer.Option(None, "--seeds", help="override the grid's seeds, e.g. 0,1,2"),
         threads: int = typer.Option(0, "--threads", help="torch intra-op threads (0: 1 on the CPU, as bench run's "
                                                          "workers; torch's default on CUDA)"),
         as_json: bool = typer.Option(False, "--json", help="print one JSON object")) -> None:
    """Measure every distinct cell of a grid on a device (random weights, real sizes) and forecast its cost."""
    from peft3d.training.plan import PlanSettings
    from peft3d.training.plan import plan as forecast
    from peft3d.tuning.cells import tune_stages

    seed_list = parse_seeds(seeds)
    measured(lambda log: forecast(PlanSettings(grid=grid, device=device, batch=batch, steps=steps, warmup=warmup,
                                               tiny=tiny, check_weights=not no_weights_check, threads=threads,
                                               seeds=seed_list), log=log, stages=tune_stages(grid, seed_list)),
             as_json, _print)

