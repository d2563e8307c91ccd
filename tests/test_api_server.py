"""``medfed server`` serves the API and dashboard from a real process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from medfed.cli import main
from medfed.store import RunStore


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "medfed.yml"
    path.write_text(f"home: {tmp_path / 'home'}\napi:\n  secret_key: server-test-secret\n")
    return path


def test_server_serves_the_api_until_stopped(config_file: Path, tmp_path: Path) -> None:
    port = _free_port()
    with RunStore(f"sqlite:///{tmp_path / 'home' / 'medfed.db'}") as store:
        store.add_user("alice", "alice-password", "admin")
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200")
    command = [sys.executable, "-m", "medfed.cli", "server", "-c", str(config_file)]
    process = subprocess.Popen(
        [*command, "--port", str(port), "--no-superlink"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        health = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                health = httpx.get(f"{base}/api/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health is not None and health.json()["status"] == "ok"
        login = httpx.post(
            f"{base}/api/auth/login", json={"username": "alice", "password": "alice-password"}
        )
        assert login.status_code == 200
        runs = httpx.get(f"{base}/api/runs", cookies=login.cookies)
        assert runs.json()["total"] == 0
        assert httpx.get(f"{base}/").status_code == 200
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/" in output
    assert "Traceback" not in output


def test_server_on_a_busy_port_is_a_one_line_error(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["server", "-c", str(config_file), "--port", str(port), "--no-superlink"])
    assert code == 2
    assert f"127.0.0.1:{port}" in capsys.readouterr().err
