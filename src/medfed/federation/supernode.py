"""Flower's SuperNode with shorter waits: ``python -m medfed.federation.supernode ARGS``.

Flower 1.41's SuperNode loop (``flwr.supernode.start_client_internal``) sleeps 3 s between
pulls when it has nothing to do and 0.5 s at a time while it waits for its ClientApp's reply;
a round pays both. This wrapper runs the same SuperNode, with the same arguments as
``flower-supernode``, after giving that loop a stand-in for the ``time`` module whose ``sleep``
shortens those two waits (``MEDFED_SUPERNODE_IDLE_S``, default :data:`IDLE_S`, and
:data:`WAIT_S`). Nothing else changes.
"""

from __future__ import annotations

import os
import sys
import time
from types import ModuleType

from medfed.federation.lifetime import die_with_parent

IDLE_S = 0.5
WAIT_S = 0.05
FLOWER_IDLE_S, FLOWER_WAIT_S = 3, 0.5


class QuickSleeps:
    """The ``time`` module, with Flower's idle (3 s) and reply (0.5 s) sleeps shortened."""

    def __init__(self, idle_s: float = IDLE_S, wait_s: float = WAIT_S):
        self.idle_s = idle_s
        self.wait_s = wait_s

    def sleep(self, seconds: float) -> None:
        if seconds == FLOWER_IDLE_S:
            seconds = self.idle_s
        elif seconds == FLOWER_WAIT_S:
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
    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
