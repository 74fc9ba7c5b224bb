"""``bench perf``: median step time per method against the ``linear`` floor (peft3d.training.perf).

Import-light and free of mlflow/optuna: it must run on a bare GPU machine with torch and transformers only.
"""
from __future__ import annotations

from typing import Optional

import typer

from peft3d.cli.app import app, measured


def _print_table(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    st = r["settings"]
    title = (f"{st['backbone']}: {st['points']} points (k={st['k']}), batch {st['batch']}, {st['device']} "
             f"{st['precision']}, {st['steps']} alternated steps, {st['threads']} threads")
    table = Table(title=title)
    first = "first step s (compile)" if st["compile"] else "first step s"
    for col in ("method", "ms/step (median)", "x linear", "peak MB", "samples/s", first, "preset"):
        table.add_column(col)
    for name, m in r["methods"].items():
        table.add_row(name, f"{m['ms']:.1f}", f"{m['ratio']:.2f}",
                      "n/a" if m["peak_mb"] is None else f"{m['peak_mb']:.0f}", f"{m['samples_per_s']:.1f}",
                      f"{m['first_step_s']:.2f}", m["preset"] or "")
    con = Console()
    con.print(table)
    con.print(f"tokenizer forward+backward: {r['tokenizer_ms']:.1f} ms = {100 * r['tokenizer_share']:.0f}% of "
              f"the floor; {r['tokenizer_gflop']:.2f} GFLOP at {r['tokenizer_gflop_per_s']:.1f} GFLOP/s = "
              f"{100 * r['tokenizer_efficiency']:.0f}% of a plain matmul {tuple(r['matmul_shape'])} "
              f"({r['matmul_gflop_per_s']:.1f} GFLOP/s)")
    con.print(f"memory: {r['memory']}")
    if r.get("profile"):
        prof = Table(title="floor step: top operators by self time (torch.profiler, per step)")
        for col in ("operator", "self ms", "share", "calls"):
            prof.add_column(col)
        for p in r["profile"]:
            prof.add_row(p["op"], f"{p['self_ms']:.1f}", f"{100 * p['share']:.1f}%", f"{p['calls']:g}")
        con.print(prof)
    for method, rows in (r.get("extra_ops") or {}).items():
        extra = Table(title=f"{method}: top operators by time beyond the floor's (ms per step)")
        for col in ("operator", "extra ms", f"{method} ms", "floor ms", "calls", "floor calls"):
            extra.add_column(col)
        for p in rows:
            extra.add_row(p["op"], f"{p['extra_ms']:+.1f}", f"{p['self_ms']:.1f}", f"{p['floor_ms']:.1f}",
                          f"{p['calls']:g}", f"{p['floor_calls']:g}")
        con.print(extra)


@app.command("perf")
def perf(backbone: str = typer.Option("minilm", "--backbone", "-b", help="backbone name (bench ls backbones)"),
         methods: Optional[list[str]] = typer.Option(None, "--methods", "-m",
                                                     help="methods to time (repeat; default: every registered "
                                                          "method); the floor method is always included"),
         points: Optional[int] = typer.Option(None, "--points", help="points per cloud (default 128; "
                                                                     "1024 with --paper)"),
         batch: int = typer.Option(16, "--batch"),
         paper: bool = typer.Option(False, "--paper",
                                    help="paper tokenizer (1024 points, 3 stages, k=64) and paper presets"),
         device: str = typer.Option("cpu", "--device", help="cpu | cuda | cuda:N"),
         precision: Optional[str] = typer.Option(None, "--precision",
                                                 help="fp32 | bf16 (autocast); default bf16 on CUDA, fp32 on CPU"),
         compile_: bool = typer.Option(False, "--compile", help="torch.compile each model"),
         steps: int = typer.Option(20, "--steps", help="timed steps per method (after the warm-up)"),
         warmup: int = typer.Option(3, "--warmup"),
         profile: int = typer.Option(0, "--profile", help="also profile: the floor step's top N operators by "
                                                          "self time, and each method's top N beyond the floor's"),
         full_size: bool = typer.Option(False, "--full-size",
                                        help="random weights at the backbone's real size (no checkpoint read)"),
         weights: str = typer.Option("random", "--weights", help="random | pretrained | path:/..."),
         attention: Optional[str] = typer.Option(None, "--attention",
                                                 help="sdpa | eager; default sdpa on CUDA, the backbone's own "
                                                      "on CPU"),
         threads: int = typer.Option(0, "--threads", help="torch intra-op threads (0: torch's default)"),
         as_json: bool = typer.Option(False, "--json", help="print one JSON object")) -> None:
    """Median ms/step per method, ratio to the linear floor, peak memory, samples/s and the tokenizer's
    share; random weights by default (the step time does not depend on them)."""
    from peft3d.training.perf import PerfSettings, measure

    def compute(log):
        s = PerfSettings(backbone=backbone, methods=tuple(methods or ()), points=points, batch=batch,
                         paper=paper, device=device, precision=precision, compile=compile_, steps=steps,
                         warmup=warmup, profile=profile, full_size=full_size, weights=weights, threads=threads,
                         attention=attention if attention is not None else
                         ("sdpa" if device.startswith("cuda") else None))
        return measure(s, log=log)

    measured(compute, as_json, _print_table)
