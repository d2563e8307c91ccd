"""A hospital's long-lived ClientApp executor, in place of Flower's SuperExec.

Flower's SuperExec starts a fresh ``flwr-clientapp`` process for every message, which imports
Flower and torch and rebuilds the model and the data before it trains (5-6 s here). ``medfed
client`` runs the SuperNode with ``--isolation process`` and this executor next to it: one
process that keeps torch, the model and the decoded images loaded, takes each task from the
SuperNode's local Runtime API and runs medfed's own ClientApp in-process. It never installs or
runs the code of the app the platform submits: a hospital runs the medfed it installed.

Payloads of at least ``blobs.min_bytes`` travel beside the messages, from and to the platform's
gateway (see ``blobs.py``): the executor fetches the ones a message names and uploads its
reply's.

``python -m medfed.federation.executor --runtime-port PORT --server HOST:PORT --ca CA --key KEY``
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

from medfed.errors import MedfedError
from medfed.federation.hospital_node import (
    CANNOT_START,
    HospitalLink,
    add_link_arguments,
    parsed_link,
)
from medfed.federation.lifetime import die_with_parent

log = logging.getLogger("medfed.executor")

POLL_INTERVAL_S = 0.1  # after a task: the next message of a round comes soon
BUSY_WINDOW_S = 30.0  # how long after a task the executor keeps looking that often
IDLE_POLL_S = 0.5  # the longest wait between looks when no task came for a while
STOP_GRACE_S = 5.0  # after a stop signal, the longest the executor takes to end
MEDFED_APP = "medfed/medfed-app"  # publisher/name of the app `medfed run --deploy` submits


def run_task(address: str, token: str, app: Callable) -> None:
    """Pull one message through the Runtime API, answer it with ``app``, push the reply."""
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    client = RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=True,
        root_certificates=None,
        interceptors=[
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(token),
        ],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    message = context = reply = None
    status, details = SubStatus.FAILED, "the ClientApp failed"
    try:
        message, context, run, _fab = pull_task_input(client)
        if run.fab_id != MEDFED_APP:
            raise PermissionError(
                f"the platform sent the app {run.fab_id!r}; this hospital runs only {MEDFED_APP}"
            )
        reply = app(message=message, context=context)
        status, details = SubStatus.COMPLETED, ""
    except Exception as exc:  # the hospital stays up; the platform records the failure
        log.exception("task failed")
        details = f"{type(exc).__name__}: {exc}"
        if message is not None:
            reply = Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details),
                reply_to=message,
            )
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        finally:
            push_task_output(client, context, status, details)
            heartbeat.stop()
            client.close()


def next_wait(wait_s: float, poll_s: float, since_task_s: float = BUSY_WINDOW_S) -> float:
    """The wait after an empty look: ``poll_s`` within :data:`BUSY_WINDOW_S` of the last task,
    then half as long again each time, up to :data:`IDLE_POLL_S`."""
    if since_task_s < BUSY_WINDOW_S:
        return poll_s
    return min(max(wait_s * 1.5, poll_s), max(IDLE_POLL_S, poll_s))


def serve(
    runtime_port: int,
    stop: threading.Event,
    link: HospitalLink,
    poll_s: float = POLL_INTERVAL_S,
) -> None:
    """Take ClientApp tasks from the SuperNode at ``127.0.0.1:runtime_port`` until ``stop``:
    every ``poll_s`` after a task (see :func:`next_wait`), backing off to :data:`IDLE_POLL_S`
    while none comes. Blobs come from and go to the platform at ``link``."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supernode.runtime import run_clientapp

    from medfed.federation.blobs import HospitalBlobs
    from medfed.federation.client_app import app
    from medfed.federation.flower_pulls import quicken_pulls

    quicken_pulls(run_clientapp, "pull_and_inflate_object_from_tree")

    address = f"127.0.0.1:{runtime_port}"
    tasks = RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=True,
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperExec")],
        retry_invoker=make_simple_http_retry_invoker(),
    )
    blobs = HospitalBlobs(link.server_address, link.ca_path, link.key_path)
    answer = blobs.around(app)
    log.info("taking tasks from the SuperNode at %s", address)
    wait_s, last_task = poll_s, -BUSY_WINDOW_S
    try:
        while not stop.is_set():
            reply = tasks.AcquireTask(
                AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
            )
            if reply.HasField("task") and reply.token:
                run_task(address, reply.token, answer)
                wait_s, last_task = poll_s, time.monotonic()
            else:
                stop.wait(wait_s)
                wait_s = next_wait(wait_s, poll_s, time.monotonic() - last_task)
    finally:
        tasks.close()
        blobs.close()


def stop_soon(stop: threading.Event, grace_s: float = STOP_GRACE_S) -> None:
    """Stop after the current look or task; exit anyway after ``grace_s``. Flower's retry
    invoker tries a SuperNode that is gone forever, so a look that began just as the
    SuperNode ended would otherwise never return."""
    if stop.is_set():
        return
    stop.set()
    timer = threading.Timer(grace_s, os._exit, args=(0,))
    timer.daemon = True
    timer.start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-port", type=int, required=True)
    parser.add_argument("--poll", type=float, default=POLL_INTERVAL_S, help="seconds")
    add_link_arguments(parser)
    args = parser.parse_args(argv)
    die_with_parent()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per look for a task
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_soon(stop))
    started = time.perf_counter()
    try:
        serve(args.runtime_port, stop, parsed_link(args), args.poll)
    except MedfedError as exc:  # e.g. a hospital key others can read: restarting won't help
        log.error("%s", exc)
        return CANNOT_START
    log.info("stopped after %.0f s", time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
