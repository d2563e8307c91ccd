"""A phase's replies are attributed to the hospital each message was sent to, also when the
SuperLink answers for a hospital whose node stopped sending heartbeats (Node Unavailable)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from uuid import uuid4

import pytest
from flwr.app import Message, RecordDict
from flwr.server.superlink.linkstate.utils import create_message_error_unavailable_res_message
from flwr.supercore.task_identity import TaskIdentity

from medfed.federation.keys import fingerprint, new_key_pair
from medfed.federation.phases import HospitalNames, exchange, sort_replies
from medfed.store import RunStore


class HeartbeatsStopped:
    """A grid on which every destination node has gone: the SuperLink answers for each."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            self.sent.append(msg)
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        wanted = set(message_ids)
        return [
            create_message_error_unavailable_res_message(msg.metadata, "node_unavail")
            for msg in self.sent
            if msg.metadata.message_id in wanted
        ]


def test_node_unavailable_is_the_failure_of_the_hospital_the_message_went_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for field, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 0)):
        monkeypatch.setattr(TaskIdentity, field, value)  # as the ServerApp's process has
    with RunStore(f"sqlite:///{tmp_path / 'medfed.db'}") as store:
        _, public_key = new_key_pair()
        store.register_hospital("north", public_key, fingerprint(public_key))
        store.set_hospital_node("north", 7)
        messages = [Message(RecordDict(), dst_node_id=7, message_type="train", group_id="2")]

        replies, silent = exchange(HeartbeatsStopped(), messages, timeout=5)
        result = sort_replies(replies, silent, HospitalNames(store, True), lambda c: c, 5)

    assert silent == set()
    assert replies[0][1].metadata.src_node_id != 7  # sent by the SuperLink itself
    [failure] = result.failures
    assert (failure.node_id, failure.hospital) == (7, "north")
    assert "Node Unavailable" in failure.reason
    assert result.replies == [] and result.hospitals == {}
