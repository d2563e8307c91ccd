"""Shorter retries while a Flower message's objects arrive.

Flower 1.41 sends a message in two steps: the message, then each of its objects (records,
arrays, their chunks). A receiver that sees the message before all of its objects are there (a
SuperNode pulling the platform's message, a hospital's executor taking it from its SuperNode,
the ServerApp pulling a reply) retries each missing object after 1 s, doubling up to 10 s. On a
network the objects follow within milliseconds, so a round waited a second or more for nothing.
:func:`quicken_pulls` gives one of Flower's pulling functions a first retry after
:data:`PULL_RETRY_S`, doubling up to :data:`PULL_RETRY_CAP_S`; nothing else of it changes.
"""

from __future__ import annotations

import functools
import inspect
from types import ModuleType

PULL_RETRY_S = 0.02
PULL_RETRY_CAP_S = 1.0
RETRY_ARGUMENTS = ("initial_backoff", "backoff_cap")


def quicken_pulls(module: ModuleType, name: str) -> None:
    """Replace ``module.name``, a Flower function that pulls objects with retries, by the same
    function with shorter retries (once; again is a no-op)."""
    pull = getattr(module, name, None)
    if isinstance(pull, functools.partial):
        return
    if pull is None or not all(a in inspect.signature(pull).parameters for a in RETRY_ARGUMENTS):
        raise RuntimeError(f"{module.__name__}.{name} no longer pulls with retry arguments")
    quick = functools.partial(pull, initial_backoff=PULL_RETRY_S, backoff_cap=PULL_RETRY_CAP_S)
    setattr(module, name, quick)
