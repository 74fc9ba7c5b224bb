"""The ``bench`` command line. Light at import: torch is imported only by commands that train or build.

User errors (:class:`peft3d.core.errors.Peft3dError`) print one line and exit 2; an unexpected exception
prints one line with the file holding its traceback and exits 1 (``--debug`` shows the traceback).
"""
from __future__ import annotations

import errno
import os
import sys
import tempfile
import traceback

import typer

from peft3d.core.errors import Peft3dError
from peft3d.core.registry import RegistryError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="peft3d: which pretrained modality transfers best to 3D point clouds, under which PEFT method.")


@app.callback()
def _group() -> None:
    # A callback keeps ``bench`` a command group even when a test mounts a single sub-command.
    pass


def fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(code)


GridOpt = typer.Option(..., "--grid", "-g", help="grid name (bench ls grids) or path to a .yaml file")
ResultsOpt = typer.Option(None, "--results", help="results folder (default ./results or $PEFT3D_RESULTS)")

# One module per sub-command. They import this module (and the layers below), never each other; they are
# imported by name here so that app.py does not import them back (no cycle), and a missing one fails loudly.
COMMANDS = ("ls", "validate", "run", "table", "data", "params", "perf", "plan", "report", "tune", "submit")


def parse_roots(items: list[str] | None) -> dict[str, str]:
    """``--data-root FAMILY=PATH`` options -> ``{family: path}``."""
    out = {}
    for it in items or []:
        fam, sep, path = it.partition("=")
        if not sep or not path:
            fail(f"--data-root expects FAMILY=PATH (e.g. scanobjectnn=/data/ScanObjectNN/h5_files), got {it!r}")
        out[fam] = path
    return out


def parse_seeds(s: str | None) -> list[int] | None:
    """``--seeds 0,1,2`` -> ``[0, 1, 2]`` (None: the grid's seeds)."""
    if s is None:
        return None
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        fail(f"--seeds expects a comma-separated list of integers, got {s!r}")
        return None


def check_roots(specs) -> None:
    """Fail (one line) on the first dataset whose files are missing or malformed, before anything runs."""
    from peft3d.datasets import DATASETS, check_root

    seen = set()
    for s in specs:
        key = (s.dataset, s.variant, s.data_root)
        if key in seen:
            continue
        seen.add(key)
        if DATASETS.meta(s.dataset).get("needs_root", True) and not s.data_root:
            fail(f"dataset {s.dataset} needs its files: set data_root in the grid or pass "
                 f"--data-root {s.dataset}=PATH (see: bench data info {s.dataset})")
        if s.data_root:
            problem = check_root(s.dataset, s.variant, s.data_root)
            if problem:
                fail(problem)


def write_table(grid: str, specs, root, echo: bool, versus: str | None = None) -> int:
    """Write the grid's default tables (md + csv), comparing with ``versus`` (default: the grid's
    ``compare_to``); returns the number of runs that are not successes."""
    from pathlib import Path

    from peft3d.grids.loader import compare_to
    from peft3d.reporting.tables import runs_frame, write_tables

    df = runs_frame(specs, root)
    md_path, csv_path, md = write_tables(Path(grid).stem, df, root, versus or compare_to(grid))
    if echo:
        typer.echo(md)  # plain markdown: pastes into a paper draft or an issue as is
        typer.echo(f"wrote {md_path} and {csv_path}")
    return int((df["status"] != "success").sum())


def measured(compute, as_json: bool, show) -> None:
    """``compute(log)`` -> a result dict (``log``: progress lines on stderr, silent with ``--json``); printed as
    one JSON object or through ``show``. A user error is one line, exit 2 (``bench perf``, ``bench plan``)."""
    import json

    try:
        r = compute((lambda _m: None) if as_json else (lambda m: typer.echo(m, err=True)))
    except (Peft3dError, RegistryError, ValueError) as e:
        fail(str(e))
        return
    if as_json:
        print(json.dumps(r))
    else:
        show(r)


def _mount() -> None:
    """Import every sub-command module (each registers its commands on :data:`app`)."""
    import importlib

    for name in COMMANDS:
        importlib.import_module(f"peft3d.cli.{name}")


DEBUG_FLAG = "--debug"


def main() -> None:
    """Entry point. Expected errors (the user's input, the machine's state) print one line and exit 2; any
    other exception is a bug: one line naming what failed and the file holding its traceback, exit 1.
    ``--debug`` (anywhere on the command line) or PEFT3D_DEBUG=1 lets the traceback through instead."""
    debug = DEBUG_FLAG in sys.argv[1:] or os.environ.get("PEFT3D_DEBUG") == "1"
    sys.argv[1:] = [a for a in sys.argv[1:] if a != DEBUG_FLAG]
    _mount()
    try:
        app()
    except (Peft3dError, RegistryError) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted: finished runs are kept; run the same command again to do only what is missing",
                    fg="yellow", err=True)
        sys.exit(130)
    except OSError as e:
        if debug or not _not_writable(e):
            _unexpected(e, debug)
        typer.secho(f"error: {e.filename or 'a file'} is not writable ({e.strerror}): choose a writable folder "
                    "(--results or PEFT3D_RESULTS) or fix its permissions", fg="red", err=True)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 -- the last line of defence: no traceback reaches a user by default
        _unexpected(e, debug)


def _not_writable(e: OSError) -> bool:
    return e.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR)  # ENOTDIR: --results names a file


def _unexpected(e: BaseException, debug: bool) -> None:
    if debug:
        raise e
    command = " ".join(["bench", *sys.argv[1:2]])
    log = _save_traceback(e)
    where = f"traceback in {log}" if log else "the traceback could not be saved"
    msg = " ".join(str(e).split())[:200] or "(no message)"
    typer.secho(f"error: {command} failed unexpectedly: {type(e).__name__}: {msg} ({where}; rerun with --debug "
                "to print it; please report it)", fg="red", err=True)
    sys.exit(1)


def _save_traceback(e: BaseException) -> str | None:
    """The traceback goes to a file in the temp folder (the results folder may be the thing that failed)."""
    text = "".join(traceback.format_exception(e))
    try:
        fd, path = tempfile.mkstemp(prefix="peft3d-error-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write(f"bench {' '.join(sys.argv[1:])}\n\n{text}")
        return path
    except OSError:
        return None
