"""``bench reproduce``: re-train a sample of recorded runs with today's code; exit 1 when any differs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from peft3d.cli.app import ResultsOpt, app, fail, parse_roots


@app.command("reproduce")
def reproduce(results: Optional[Path] = ResultsOpt,
              run: Optional[list[str]] = typer.Option(None, "--run", help="a run_id to re-train (repeatable); "
                                                      "default: a sample"),
              sample: int = typer.Option(3, "--sample", help="how many runs, one per recorded code commit in "
                                         "turn, drawn at random within each"),
              seed: int = typer.Option(0, "--seed", help="the draw's seed (the same seed draws the same runs)"),
              same_cpu: bool = typer.Option(False, "--same-cpu", help="draw the sample only from runs recorded on "
                                            "this kind of CPU (another CPU trains differently)"),
              data_root: Optional[list[str]] = typer.Option(None, "--data-root"),
              as_json: bool = typer.Option(False, "--json", help="one JSON list instead of lines")) -> None:
    """Re-train recorded runs with this checkout's code and compare every metric and curve value with their
    result files (nothing is written). Exit 0 when all are identical, 1 when any differs."""
    from peft3d.core.result import results_dir
    from peft3d.training import reproduce as rep

    if sample < 1:
        fail(f"--sample must be at least 1, got {sample}")
    root = results_dir(results)
    roots = parse_roots(data_root)
    found, unreadable = rep.successful_runs(root)
    if not found:
        fail(f"{root / 'runs'} holds no successful run result; fix: point --results at a results folder")
    if same_cpu:
        if run:
            fail("--same-cpu chooses the sample, --run names the runs: give one of them")
        found, here = rep.recorded_on_this_cpu(found)
        if not found:
            fail(f"--same-cpu: no run in {root / 'runs'} was recorded on this CPU ({here}); fix: run bench "
                 "reproduce on the kind of machine that trained them, or leave out --same-cpu")
    if run:
        by_id = {r.run_id: r for r in found}
        unknown = [rid for rid in run if rid not in by_id]
        if unknown:
            fail(f"--run {unknown[0]}: no successful result in {root / 'runs'}; fix: name a run_id listed there")
        chosen = [by_id[rid] for rid in dict.fromkeys(run)]
    else:
        chosen = rep.pick(found, sample, seed)
    if unreadable and not as_json:
        typer.echo(f"skipped {len(unreadable)} unreadable result file(s): {', '.join(unreadable[:3])}")
    commits = len({rep.commit_of(r) for r in found})
    if not as_json:
        where = " recorded on this CPU" if same_cpu else ""
        typer.echo(f"re-training {len(chosen)} of {len(found)} runs{where} (from {commits} code commit(s))")
    outcomes = []
    for result in chosen:
        outcome = rep.reproduce(result, roots)
        outcomes.append(outcome)
        if not as_json:
            _print(outcome)
    differ = sum(not o.identical for o in outcomes)
    if as_json:
        typer.echo(json.dumps([{**o.__dict__, "identical": o.identical} for o in outcomes], indent=1))
    else:
        typer.echo(f"{len(outcomes) - differ} of {len(outcomes)} identical" + (f"; {differ} differ" if differ else ""))
    if differ:
        raise typer.Exit(1)


def _print(o) -> None:
    verdict = "identical" if o.identical else "DIFFERS"
    typer.echo(f"{o.run_id} {o.label} (code {o.commit}, {o.seconds:.0f} s): {verdict}")
    for line in o.differences:
        typer.echo(f"  {line}")
    for line in o.environment_changes:
        typer.echo(f"  environment: {line}")
