"""Flower's SuperNode with shorter waits: ``python -m medfed.federation.supernode ARGS``.

Flower 1.41's SuperNode loop (``flwr.supernode.start_client_internal``) sleeps 3 s between
pulls when it has nothing to do and 0.5 s at a time while it waits for its ClientApp's reply;
a round pays both. This wrapper runs the same SuperNode, with the same arguments as
``flower-supernode``, after giving that loop a stand-in for the ``time`` module whose ``sleep``
shortens those two waits: to :data:`WAIT_S` while it waits for a reply, and between pulls to
:data:`BUSY_IDLE_S` for :data:`BUSY_WINDOW_S` after a message (a round's next message comes
soon after the reply), else ``MEDFED_SUPERNODE_IDLE_S`` (default :data:`IDLE_S`). Nothing
else changes.
"""

from __future__ import annotations

import os
import sys
import time
from types import ModuleType

from medfed.federation.flower_pulls import quicken_pulls
from medfed.federation.lifetime import die_with_parent

IDLE_S = 0.5
WAIT_S = 0.05
BUSY_IDLE_S = 0.25
BUSY_WINDOW_S = 30.0
FLOWER_IDLE_S, FLOWER_WAIT_S = 3, 0.5


class QuickSleeps:
    """The ``time`` module, with Flower's idle (3 s) and reply (0.5 s) sleeps shortened; the
    idle one most while messages are coming (see the module's docstring)."""

    def __init__(self, idle_s: float = IDLE_S, wait_s: float = WAIT_S):
        self.idle_s = idle_s
        self.wait_s = wait_s
        self.last_message = -BUSY_WINDOW_S

    def sleep(self, seconds: float) -> None:
        if seconds == FLOWER_IDLE_S:
            busy = time.monotonic() - self.last_message < BUSY_WINDOW_S
            seconds = min(BUSY_IDLE_S, self.idle_s) if busy else self.idle_s
        elif seconds == FLOWER_WAIT_S:  # a message is being answered
            self.last_message = time.monotonic()
            seconds = self.wait_s
        time.sleep(seconds)

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def quicken(loop: ModuleType, idle_s: float = IDLE_S) -> None:
    """Give Flower's SuperNode loop module the shorter sleeps."""
    if not isinstance(getattr(loop, "time", None), ModuleType | QuickSleeps):
        raise RuntimeError(f"{loop.__name__} no longer sleeps through its `time` module")
    loop.time = QuickSleeps(idle_s)  # type: ignore[attr-defined]


def main() -> None:
    die_with_parent()
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli.flower_supernode import flower_supernode

    quicken(start_client_internal, float(os.environ.get("MEDFED_SUPERNODE_IDLE_S", IDLE_S)))
    quicken_pulls(start_client_internal, "pull_objects")
    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
