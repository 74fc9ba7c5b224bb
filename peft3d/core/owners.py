"""Owner tokens (host/pid/process start time): who holds a claim, a tuning trial or a RUNNING MLflow run, and
whether that process is certainly gone."""
from __future__ import annotations

import os
import socket
from pathlib import Path


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a live owner from a reused pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_token(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{socket.gethostname()}/{pid}/{_proc_start(pid) or '?'}"


def same_host(token: str | None) -> bool:
    return str(token).rsplit("/", 2)[0] == socket.gethostname()


def owner_alive(token: str | None) -> bool:
    """False when the owner process is certainly gone (same host, pid dead or reused); True otherwise."""
    try:
        host, pid_s, start = str(token).rsplit("/", 2)
        pid = int(pid_s)
    except ValueError:
        return False
    if host != socket.gethostname():
        return True  # another machine's process: not ours to declare dead
    now = _proc_start(pid)
    if now is not None:
        return now == start
    try:  # no /proc: fall back to "does the pid exist"
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
