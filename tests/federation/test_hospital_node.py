"""A hospital's processes: the SuperNode's command line and the executor's polling."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from medfed.config import load_config
from medfed.federation.certs import init_certs
from medfed.federation.executor import BUSY_WINDOW_S, IDLE_POLL_S, POLL_INTERVAL_S, next_wait
from medfed.federation.hospital_node import (
    CANNOT_START,
    HospitalLink,
    run_hospital,
    supernode_command,
)
from medfed.federation.keys import new_key_pair
from medfed.federation.supernode import BUSY_IDLE_S, WAIT_S, QuickSleeps
from serving import free_port


def node_config(command: list[str]) -> str:
    return command[command.index("--node-config") + 1]


def test_threads_reach_the_node_config_only_when_set(tmp_path: Path) -> None:
    link = HospitalLink("platform:9092", tmp_path / "ca.pem", tmp_path / "north.key")
    common = {"data_path": tmp_path, "port": 9094, "home": tmp_path, "name": "north"}
    assert " threads=" not in node_config(supernode_command(link, **common))
    assert node_config(supernode_command(link, threads=1, **common)).endswith(" threads=1")


def test_an_idle_executor_looks_less_often_up_to_a_cap() -> None:
    waits = [POLL_INTERVAL_S]
    for _ in range(20):
        waits.append(next_wait(waits[-1], POLL_INTERVAL_S))
    assert waits == sorted(waits) and waits[1] > waits[0]
    assert waits[-1] == IDLE_POLL_S
    assert next_wait(2.0, 2.0) == 2.0  # a slower poll asked for stays as asked
    # soon after a task the next message of the round is near: no backing off yet
    assert next_wait(0.3, POLL_INTERVAL_S, since_task_s=2.0) == POLL_INTERVAL_S
    assert next_wait(0.3, POLL_INTERVAL_S, since_task_s=BUSY_WINDOW_S + 1) > 0.3


def test_the_supernode_pulls_often_only_while_messages_come() -> None:
    sleeps = QuickSleeps(idle_s=0.4)

    def slept(seconds: float) -> float:
        start = time.monotonic()
        sleeps.sleep(seconds)
        return time.monotonic() - start

    assert slept(3) >= 0.4  # Flower's idle 3 s, nothing answered yet: the idle wait
    assert slept(0.5) < 0.5 and slept(0.5) >= WAIT_S  # waiting for the ClientApp's reply
    assert BUSY_IDLE_S <= slept(3) < 0.4  # a message was just answered: the next comes soon
    assert slept(1.0) >= 1.0  # other sleeps are left alone


def test_a_stopped_executor_ends_even_when_stuck_in_a_look() -> None:
    """SIGTERM while a look at a vanished SuperNode retries forever: the process still ends."""
    stuck = textwrap.dedent(
        """
        import signal, threading, time
        from medfed.federation.executor import stop_soon
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop_soon(stop, grace_s=0.5))
        print("ready", flush=True)
        while True:  # a retry loop that never looks at `stop`
            time.sleep(0.05)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", stuck], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()


def test_a_trainer_its_configuration_stops_stops_the_hospital_instead_of_restarting(
    tmp_path: Path, caplog
) -> None:
    init_certs(tmp_path / "certs", ["localhost"])
    private, _ = new_key_pair()
    key = tmp_path / "north.key"
    key.write_bytes(private)
    key.chmod(0o644)  # a downloaded key nobody made private (`medfed client` refuses it first)
    link = HospitalLink(f"127.0.0.1:{free_port()}", tmp_path / "certs" / "ca.pem", key)
    cfg = load_config(None, {"home": tmp_path / "home"})

    def too_long(_signum: int, _frame: object) -> None:
        raise TimeoutError("the hospital kept restarting its trainer")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(60)
    try:
        with caplog.at_level(logging.ERROR, logger="medfed.hospital"):
            code = run_hospital(cfg, link, data_path=tmp_path, port=free_port(), name="north")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert code == CANNOT_START
    assert "cannot start" in caplog.text
