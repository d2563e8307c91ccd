"""Flower's pulling of a message's objects, with medfed's shorter retries."""

from __future__ import annotations

import time
import types

import pytest
from flwr.supercore.inflatable import inflatable_utils
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

from medfed.federation.flower_pulls import PULL_RETRY_S, quicken_pulls


def arriving_after(seconds: float):
    """A pull function whose objects become available ``seconds`` from now."""
    ready = time.monotonic() + seconds

    def pull(object_id: str) -> bytes:
        if time.monotonic() < ready:
            raise ObjectUnavailableError(object_id)
        return object_id.encode()

    return pull


def module_with(pull: object) -> types.ModuleType:
    module = types.ModuleType("flower_module")
    module.pull_objects = pull  # type: ignore[attr-defined]
    return module


def pulled_in(module: types.ModuleType) -> float:
    start = time.monotonic()
    contents = module.pull_objects(["a", "b"], arriving_after(0.05))
    assert contents == {"a": b"a", "b": b"b"}
    return time.monotonic() - start


def test_objects_that_arrive_a_moment_late_are_pulled_a_moment_later() -> None:
    module = module_with(inflatable_utils.pull_objects)
    assert pulled_in(module) >= 0.8  # Flower's own first retry: after about 1 s
    quicken_pulls(module, "pull_objects")
    quicken_pulls(module, "pull_objects")  # a second time changes nothing
    assert pulled_in(module) < 0.05 + 8 * PULL_RETRY_S


def test_a_function_without_retry_arguments_is_refused() -> None:
    module = module_with(lambda object_ids, pull: {})
    with pytest.raises(RuntimeError, match="no longer pulls with retry arguments"):
        quicken_pulls(module, "pull_objects")
    with pytest.raises(RuntimeError, match="flower_module.missing"):
        quicken_pulls(module, "missing")
