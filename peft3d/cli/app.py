"""The ``bench`` command line. Light at import: torch is imported only by commands that train or build.

User errors (:class:`peft3d.core.errors.Peft3dError`) print one line and exit 2; an unexpected exception
prints one line with the file holding its traceback and exits 1 (``--debug`` shows the traceback).
"""
from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
import traceback

import typer

from peft3d.core.errors import Peft3dError
from peft3d.core.registry import RegistryError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="peft3d: which pretrained modality transfers best to 3D point clouds, under which PEFT method.")


def fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg="red", err=True)
    raise typer.Exit(code)


def _ls_rows(what: str) -> list[dict]:
    from peft3d.cli import listing

    return listing.rows(what)


@app.command("ls")
def ls(what: str = typer.Argument(..., help="backbones | methods | datasets | grids | presets"),
       as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List registered names (never imports torch)."""
    try:
        rows = _ls_rows(what)
    except ValueError as e:
        fail(str(e))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    from peft3d.cli.listing import JSON_ONLY

    table = Table(title=what)
    cols = [c for c in (rows[0] if rows else ["name"]) if c not in JSON_ONLY]
    for col in cols:
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(*[str(r[c]) for c in cols])
    Console().print(table)
    if any(c in JSON_ONLY for c in (rows[0] if rows else [])):
        Console().print("(--json adds where each backbone's weights were looked for)")


def _mount() -> None:
    """Sub-commands that live in their own modules (kept import-light)."""
    from peft3d.cli import (  # noqa: F401
        commands,  # noqa: F401  (registers run/table/validate/...)
        data,
        params,
        report,
        tune,
    )


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
