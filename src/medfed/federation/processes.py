"""Processes a run's worker owns: finding them, telling whether they live, ending them.

A worker is started as the leader of a session of its own, and every process it starts (Ray's
GCS, raylet, dashboard and runtime-env agents, the hospitals' actors) stays in that session,
whatever parent it ends up with: Ray's agents outlive their raylet and are re-parented to init
when the worker is killed. Ending a worker's processes means ending every member of its
session (read from ``/proc``), and every process whose environment still shows the worker's
marker ``MEDFED_WORKER_TOKEN`` (a fresh value per worker; Ray's renamed processes overwrite
theirs, hence the session). Without ``/proc`` the session's process group is signalled.
Imports neither Flower nor torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

TOKEN_ENV = "MEDFED_WORKER_TOKEN"
PROC = Path("/proc")
TERM_GRACE_S = 3.0
KILL_WAIT_S = 2.0
POLL_S = 0.05


def process_alive(pid: int, *, cmdline_holds: str | None = None) -> bool:
    """Whether process ``pid`` runs (a zombie does not); with ``cmdline_holds``, also whether
    its command line holds that text (so a recycled pid is not taken for it)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    stat = PROC / str(pid) / "stat"
    try:
        state = stat.read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: kill(0) is all we know
    if state in ("Z", "X"):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        return False
    if cmdline_holds is not None:
        try:
            cmdline = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return True
        # Empty for a moment while a new process execs: it is the one just started.
        return not cmdline or cmdline_holds.encode() in cmdline
    return True


def wait_for_exec(pid: int, timeout: float = 2.0) -> None:
    """Return once process ``pid`` shows its command line (a new process has exec'd), or
    after ``timeout``."""
    deadline = time.monotonic() + timeout
    cmdline = PROC / str(pid) / "cmdline"
    while time.monotonic() < deadline:
        try:
            if cmdline.read_bytes():
                return
        except OSError:
            return
        time.sleep(0.005)


def owned_processes(token: str, session: int | None = None) -> list[int]:
    """Live processes (other than this one) in session ``session`` or whose environment
    carries worker marker ``token``."""
    if (not token and session is None) or not PROC.is_dir():
        return []
    needle = f"{TOKEN_ENV}={token}".encode() if token else None
    found = []
    me = os.getpid()
    for entry in os.scandir(PROC):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            fields = (PROC / entry.name / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if fields[0] in ("Z", "X"):
            continue
        if session is not None and fields[3] == str(session):
            found.append(int(entry.name))
            continue
        if needle is None:
            continue
        try:
            environ = (PROC / entry.name / "environ").read_bytes()
        except OSError:
            continue  # another user's
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(token: str, group: int | None, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = owned_processes(token, group) + _group_members(group)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL_S)


def _group_members(group: int | None) -> list[int]:
    """Members of process group ``group`` (only where /proc cannot be read for markers)."""
    if group is None or PROC.is_dir():
        return []
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return []
    return [group]


def end_processes(token: str, *, group: int | None = None, grace_s: float = TERM_GRACE_S) -> int:
    """End the processes of the worker whose session (and process group) is ``group`` and
    whose marker is ``token``: SIGTERM, then SIGKILL whatever is left after ``grace_s``; new
    ones started meanwhile are caught too. Returns how many were found."""
    found: set[int] = set()
    for _attempt in range(5):
        pids = owned_processes(token, group)
        found.update(pids)
        members = _group_members(group)
        if not pids and not members:
            break
        _signal_all(pids, signal.SIGTERM)
        if members and group is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGTERM)
        left = _wait_gone(token, group, grace_s)
        _signal_all(left, signal.SIGKILL)
        if group is not None and _group_members(group):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        _wait_gone(token, group, KILL_WAIT_S)
    return len(found)
