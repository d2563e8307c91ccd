"""One phase of a round on the Flower grid: send the messages, collect the replies, and sort
them into checked replies and hospitals' failures.

Replies are pulled every :data:`POLL_INTERVAL_S` (Flower's ``send_and_receive`` sleeps 3 s
between polls of a deployed SuperLink). A hospital's name comes from its registration on the
platform when the run is deployed, never from what its node says about itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from medfed.federation import wire
from medfed.federation.hospitals import hospital_name
from medfed.federation.messages import read_error
from medfed.federation.recorder import HospitalFailure
from medfed.federation.replies import ReplyRejected
from medfed.store import RunStore

POLL_INTERVAL_S = 0.1


class HospitalNames:
    """Names of the hospitals behind Flower node ids.

    Deployed runs: the name registered with the node's key on this platform; a node without
    one (only possible on a platform started with ``--insecure``) shows what it claims, marked
    unverified. Simulated hospitals are the platform's own: their names are taken as given.
    """

    def __init__(self, store: RunStore, deployed: bool):
        self.store = store
        self.deployed = deployed
        self._known: dict[int, str] = {}

    def __call__(self, node_id: int, claimed: str | None = None) -> str:
        if node_id in self._known:
            return self._known[node_id]
        if not self.deployed:
            if claimed is None:
                return f"node-{node_id}"
            self._known[node_id] = claimed
            return claimed
        registered = hospital_name(self.store, node_id)
        if registered is not None:
            self._known[node_id] = registered
            return registered
        return f"{claimed} (unverified)" if claimed else f"node-{node_id}"


@dataclass
class PhaseResult:
    """The checked replies of a phase (content decoded) and the hospitals that failed it."""

    replies: list[Message] = field(default_factory=list)
    hospitals: dict[int, str] = field(default_factory=dict)  # node id -> name, of replies
    failures: list[HospitalFailure] = field(default_factory=list)


@dataclass
class Evaluation:
    """The hospitals' evaluation of one round's model: each hospital's checked metrics (and
    BatchNorm moments), and the hospitals that failed it."""

    replies: list[tuple[str, RecordDict]] = field(default_factory=list)
    failures: list[HospitalFailure] = field(default_factory=list)


def split_evaluations(train: PhaseResult) -> Evaluation:
    """Take the evaluation of the received model out of each checked training reply (so a
    strategy sees the update alone); hospitals that failed training did not evaluate either."""
    evaluation = Evaluation(failures=list(train.failures))
    for reply in train.replies:
        content = reply.content
        part = RecordDict({"metrics": content.pop(wire.EVALUATION_KEY), "info": content["info"]})
        if wire.BN_STATS_KEY in content:
            part[wire.BN_STATS_KEY] = content.pop(wire.BN_STATS_KEY)
        evaluation.replies.append((train.hospitals[reply.metadata.src_node_id], part))
    return evaluation


def exchange(
    grid: Grid,
    messages: Iterable[Message],
    timeout: float,
    should_stop: Callable[[], None] = lambda: None,
) -> tuple[list[tuple[int, Message]], set[int]]:
    """Send ``messages``; return the replies, each with the node id its message was sent to,
    and the node ids that did not reply in time.

    A reply is paired with the node it answers for, not its sender: when a hospital's node
    stops sending heartbeats, the SuperLink itself answers for it (``Node Unavailable``, sent
    from the SuperLink's own node id). ``should_stop`` is called between polls (it raises to
    abandon the phase).
    """
    messages = list(messages)
    pushed = set(grid.push_messages(messages))
    pending = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
    unsent = {pending.pop(msg_id) for msg_id in set(pending) - pushed}
    replies: list[tuple[int, Message]] = []
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
        for reply in grid.pull_messages(list(pending)):
            node = pending.pop(reply.metadata.reply_to_message_id, None)
            if node is not None:
                replies.append((node, reply))
        should_stop()
    return replies, unsent | set(pending.values())


def sort_replies(
    replies: list[tuple[int, Message]],
    silent: set[int],
    names: HospitalNames,
    check: Callable[[RecordDict], RecordDict],
    timeout: float,
    fetch: Callable[[int, RecordDict], RecordDict] | None = None,
) -> PhaseResult:
    """Checked replies and failures (errors, refused replies, silent hospitals); ``replies``
    pairs each reply with the node its message was sent to. ``fetch`` first replaces the blobs
    a reply names with what that node uploaded (see ``blobs.py``)."""
    result = PhaseResult()
    for node, reply in replies:
        if reply.has_error():
            claimed, reason = read_error(reply.error)
            result.failures.append(HospitalFailure(node, names(node, claimed), reason))
            continue
        claimed = _claimed_name(reply.content)
        try:
            content = reply.content if fetch is None else fetch(node, reply.content)
            reply.content = check(content)
        except ReplyRejected as exc:
            reason = f"reply refused: {exc}"
            result.failures.append(HospitalFailure(node, names(node, claimed), reason))
            continue
        result.replies.append(reply)
        result.hospitals[node] = names(node, claimed)
    for node in sorted(silent):
        reason = f"no reply within federated.round_timeout={timeout:g}s"
        result.failures.append(HospitalFailure(node, names(node), reason))
    return result


def _claimed_name(content: RecordDict) -> str | None:
    try:
        return str(content["info"]["hospital"])[:128]
    except (KeyError, TypeError):
        return None
