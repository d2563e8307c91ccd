"""``medfed server`` serves the API and dashboard (and the SuperLink) from a real process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from medfed.cli import main
from medfed.store import RunStore


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "medfed.yml"
    secret = "server-test-secret-0123456789abcdef"
    path.write_text(f"home: {tmp_path / 'home'}\napi:\n  secret_key: {secret}\n")
    return path


@contextmanager
def serving(
    config_file: Path, port: int, *flags: str, stop: signal.Signals = signal.SIGTERM
) -> Iterator[list[str]]:
    """``medfed server`` running until the block ends (``stop`` sent); yields its output."""
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200")
    command = [sys.executable, "-m", "medfed.cli", "server", "-c", str(config_file)]
    process = subprocess.Popen(
        [*command, "--port", str(port), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not _listening(port):
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the server did not start in 60 s"
            time.sleep(0.2)
        yield output
    finally:
        process.send_signal(stop)
        out, _ = process.communicate(timeout=30)
        output.extend(out.splitlines())
    assert process.returncode == 0, out


@pytest.mark.slow
def test_server_serves_the_api_until_stopped(config_file: Path, tmp_path: Path) -> None:
    port = _free_port()
    with RunStore(f"sqlite:///{tmp_path / 'home' / 'medfed.db'}") as store:
        store.add_user("alice", "alice-password", "admin")
    base = f"http://127.0.0.1:{port}"
    with serving(config_file, port, "--no-superlink") as output:
        assert httpx.get(f"{base}/api/health").json()["status"] == "ok"
        login = httpx.post(
            f"{base}/api/auth/login", json={"username": "alice", "password": "alice-password"}
        )
        assert login.status_code == 200
        token = login.json()["token"]
        runs = httpx.get(f"{base}/api/runs", headers={"Authorization": f"Bearer {token}"})
        assert runs.json()["total"] == 0
        assert httpx.get(f"{base}/").status_code == 200
    assert any(f"http://127.0.0.1:{port}/" in line for line in output)
    assert not any("Traceback" in line for line in output)


@pytest.mark.slow
def test_server_runs_the_superlink_and_its_gateway_until_ctrl_c(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway_port, superlink_port = _free_port(), _free_port()
    with config_file.open("a") as handle:
        handle.write(
            f"federated:\n  server_address: 127.0.0.1:{gateway_port}\n"
            f"deployment:\n  superlink_port: {superlink_port}\n"
        )
    code = main(["server", "-c", str(config_file), "--port", str(_free_port())])
    assert code == 2
    assert "no TLS certificate" in capsys.readouterr().err  # and which command makes it
    assert main(["certs", "init", "--host", "localhost", "-c", str(config_file)]) == 0
    store = RunStore(f"sqlite:///{config_file.parent / 'home' / 'medfed.db'}")
    orphan = store.create_run("left", {}, mode="deployment", strategy="FedAvg", num_rounds=2)
    store.set_status(orphan, "running")  # its SuperLink went down with the last server
    with serving(config_file, _free_port(), stop=signal.SIGINT) as output:
        assert _listening(gateway_port) and _listening(superlink_port)
        assert store.get_run(orphan).status == "interrupted"
    assert not _listening(gateway_port) and not _listening(superlink_port)
    assert any(f"127.0.0.1:{gateway_port}" in line for line in output)
    assert any("no dashboard users yet" in line for line in output)


def test_server_on_a_busy_port_is_a_one_line_error(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["server", "-c", str(config_file), "--port", str(port), "--no-superlink"])
    assert code == 2
    assert f"api.host:api.port 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.slow
def test_events_reach_the_browser_as_they_happen(config_file: Path, tmp_path: Path) -> None:
    port = _free_port()
    store = RunStore(f"sqlite:///{tmp_path / 'home' / 'medfed.db'}")
    store.add_user("victor", "victor-password", "viewer")
    run_id = store.create_run(
        "live", {"home": str(tmp_path / "home")}, mode="simulation", strategy="FedAvg", num_rounds=1
    )
    store.set_status(run_id, "running")
    store.publish(run_id, "run_started", {"num_rounds": 1, "strategy": "FedAvg"})
    received: list[str] = []
    base = f"http://127.0.0.1:{port}"
    with serving(config_file, port, "--no-superlink"), httpx.Client(base_url=base) as browser:
        browser.post("/api/auth/login", json={"username": "victor", "password": "victor-password"})
        with browser.stream("GET", f"/api/runs/{run_id}/events", timeout=30) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    received.append(line.removeprefix("event: "))
                    if received == ["run_started"]:  # only now does the run go on
                        store.publish(run_id, "round_finished", {"round": 1, "metrics": {}})
                        store.set_status(run_id, "finished")
                        store.publish(run_id, "run_finished", {"final_metrics": {}})
    store.close()
    assert received == ["run_started", "round_finished", "run_finished"]
