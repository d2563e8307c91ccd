"""Child processes that end with the process that started them, however it ends.

``medfed server`` starts the SuperLink and the gateway, ``medfed client`` a SuperNode and the
executor, each in a session of its own (so a terminal's Ctrl-C reaches only the parent, which
stops them in order). If the parent is killed outright, Linux's parent-death signal
(``PR_SET_PDEATHSIG``) still ends them: a child calls :func:`die_with_parent` first thing, or
is started through ``python -m medfed.federation.lifetime COMMAND ARGS`` (for programs that are
not medfed's), which sets it and then becomes COMMAND.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_ENV = "MEDFED_PARENT_PID"
PR_SET_PDEATHSIG = 1


def child_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child that is to end with this process."""
    return {**env, PARENT_ENV: str(os.getpid())}


def die_with_parent() -> None:
    """Receive SIGTERM when the process that started this one ends (Linux; elsewhere, and
    when not started with :func:`child_env`, nothing happens). Exits at once if that parent
    is already gone."""
    parent = os.environ.pop(PARENT_ENV, None)  # not for this process's own children
    if parent is None or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):
        os._exit(0)


def main() -> None:
    die_with_parent()
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
