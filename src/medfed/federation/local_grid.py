"""Hospitals that answer in the ServerApp's own process, without Ray: for screening recipes on a
loaded machine (``bench/``) and for tests of the round loop."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from uuid import uuid4

from flwr.app import Context, Message, RecordDict

from medfed.federation.client_app import handle_evaluate, handle_train, replying_errors
from medfed.federation.runtime import RunSettings
from medfed.federation.server_app import FederatedRun


class LocalGrid:
    """A Flower grid whose simulated hospitals answer in this process, one after the other,
    through the ClientApp's own handlers: the same ServerApp round loop, checks and strategies
    as a simulated run, without Ray (whose start-up times out on a loaded machine)."""

    def __init__(self, settings: RunSettings, hospitals: int) -> None:
        self.settings = settings
        self.hospitals = hospitals
        self.replies: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.hospitals + 1))

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            node = msg.metadata.dst_node_id
            config: dict[str, Any] = {"partition-id": node - 1, "num-partitions": self.hospitals}
            context = Context(1, node, config, RecordDict(), {})
            handler = handle_train if msg.metadata.message_type == "train" else handle_evaluate
            self.replies[msg.metadata.message_id] = replying_errors(
                handler, msg, context, self.settings
            )
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]


def inline_run(grid: LocalGrid) -> FederatedRun:
    """The ServerApp's round loop over ``grid``'s hospitals, in this process."""
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_node_id", "_task_id"):
        setattr(TaskIdentity, name, 1)  # what Flower sets in a ServerApp's process
    return FederatedRun(grid.settings, grid)  # type: ignore[arg-type]
