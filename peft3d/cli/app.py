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
from pathlib import Path

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
IncludeOpt = typer.Option(None, "--include", help="a folder of grid .yaml files: its grids become usable by "
                          "name, beside the built-in and plugin grids (repeatable)")
ResultsOpt = typer.Option(None, "--results", help="results folder (default ./results or $PEFT3D_RESULTS)")

# One module per sub-command. They import this module (and the layers below), never each other; they are
# imported by name here so that app.py does not import them back (no cycle), and a missing one fails loudly.
COMMANDS = ("ls", "validate", "run", "table", "data", "params", "perf", "plan", "report", "tune", "submit",
            "reproduce")


def require_results(root: Path, grid: str) -> None:
    """Tables and reports read a results folder; one that never held a run is a mistyped --results, not a grid
    with every run missing: say so instead of writing a table of blanks into a new folder."""
    if not (root / "runs").is_dir():
        fail(f"no results at {root} (it has no runs/ folder); fix: pass the --results the grid {grid} ran with "
             f"(bench status --grid {grid} --results DIR lists what is missing)")


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


def open_grid(grid: str, include: list[Path] | None = None, seeds: str | None = None,
              data_root: list[str] | None = None, device: str | None = None):
    """The command's grid, read, checked and expanded once (:class:`peft3d.grids.loader.ExpandedGrid`)."""
    from peft3d.grids.loader import GridCatalog, expand_grid

    return expand_grid(grid, parse_seeds(seeds), parse_roots(data_root), device, GridCatalog(include or ()))


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


def check_storage(url: str, connect: bool = True) -> None:
    """Refuse (one line, exit 2, before anything is written) an Optuna ``--storage`` that cannot work: a URL
    SQLAlchemy cannot parse, a scheme it has no dialect for, a missing driver, or -- with ``connect`` -- a
    database server that does not answer (5 s timeout). sqlite files are created on first use: not connected."""
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    from peft3d.tuning.budget import redact
    from peft3d.tuning.sharing import with_driver

    shown, examples = redact(url), "sqlite:///path/optuna.db, postgresql://user@host/db or mysql://user@host/db"
    try:
        parsed = make_url(with_driver(url))
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as e:
        fail(f"--storage {shown}: not a database URL SQLAlchemy can open ({_first_line(e)}); fix: use {examples}")
    if parsed.get_backend_name() == "sqlite" or not connect:
        return
    try:
        engine = sqlalchemy.create_engine(parsed, connect_args={"connect_timeout": 5})
        with engine.connect():
            pass
        engine.dispose()
    except ImportError as e:
        fail(f"--storage {shown}: its database driver is not installed ({_first_line(e)}); fix: pip install it "
             "(psycopg2-binary for PostgreSQL, mysqlclient for mysql://)")
    except SQLAlchemyError as e:
        cause = getattr(e, "orig", None) or e
        fail(f"--storage {shown}: cannot connect ({_first_line(cause)}); fix: start the database server or pass "
             "a reachable URL (leave --storage out for an sqlite file under --results)")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return " ".join(text.splitlines()[0].split())[:200] if text else type(e).__name__


def write_table(grid, root, specs=None, versus: str | None = None, name: str | None = None, **opts) -> int:
    """Write and print the tables of ``grid`` (an ExpandedGrid) through :func:`peft3d.reporting.output.write_tables`
    (``opts`` picks the layout, format, reference, footer), for ``specs`` (default: the grid's), comparing with
    ``versus`` (default: the grid's ``compare_to``); ``name`` (default: the grid's) names the files. Returns the
    number of runs that are not successes. The table goes to stdout (it pastes into a paper draft or an issue as
    is, and ``--format csv > file`` stays data), the names of the files written to stderr."""
    from peft3d.reporting.output import write_tables

    tables = write_tables(name or grid.name, grid.specs if specs is None else specs, root,
                          versus=versus or grid.compare_to, **opts)
    typer.echo(tables.text)
    typer.echo(f"wrote {' and '.join(str(p) for p in tables.paths)}", err=True)
    return tables.not_succeeded


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
