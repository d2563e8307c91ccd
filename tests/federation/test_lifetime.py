"""Processes `medfed client` and `medfed server` start end with them, even when they are killed
outright (SIGKILL leaves them no chance to stop their children in order)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from medfed.config import load_config
from medfed.data.synthetic import write_synthetic_dataset
from medfed.federation.hospital_node import HospitalLink, start_hospital
from serving import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux"),
]


def processes_holding(text: str) -> list[int]:
    """Live processes whose command line holds ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def wait_for(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_killed_hospital_takes_its_supernode_and_executor_along(tmp_path: Path) -> None:
    cfg = load_config(None, {"home": str(tmp_path / "home")})
    data = write_synthetic_dataset(tmp_path / "site", n_per_class=2, size=8)
    port = free_port()  # the hospital's runtime API port names its processes
    link = HospitalLink(f"127.0.0.1:{free_port()}", None, None)  # no platform: it keeps trying
    hospital = start_hospital(cfg, link, data_path=data, port=port, log_file=tmp_path / "h.log")
    mark = f"--runtime-port {port}"
    try:
        assert wait_for(lambda: processes_holding(mark) and processes_holding(f"--port {port}"))
        os.kill(hospital.pid, signal.SIGKILL)
        hospital.wait()
        assert wait_for(lambda: not processes_holding(str(port)), timeout=30), processes_holding(
            str(port)
        )
    finally:
        for pid in processes_holding(str(port)):
            os.kill(pid, signal.SIGKILL)


def test_a_killed_platform_takes_its_superlink_and_gateway_along(tmp_path: Path) -> None:
    superlink_port, gateway_port = free_port(), free_port()
    script = textwrap.dedent(
        f"""
        import time
        from medfed.config import load_config
        from medfed.federation.superlink import start_platform_link
        cfg = load_config(None, {{
            "home": {str(tmp_path / "home")!r},
            "federated.server_address": "127.0.0.1:{gateway_port}",
            "deployment.superlink_port": {superlink_port},
            "deployment.insecure": True,
        }})
        start_platform_link(cfg, "sqlite:///{tmp_path / "home" / "medfed.db"}")
        print("up", flush=True)
        time.sleep(600)
        """
    )
    platform = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert platform.stdout.readline().strip() == "up"
        assert processes_holding(f"--port {superlink_port}")
        assert processes_holding(f"--port {gateway_port}")
        os.kill(platform.pid, signal.SIGKILL)
        platform.wait()
        assert wait_for(
            lambda: (
                not processes_holding(f"--port {superlink_port}")
                and not processes_holding(f"--port {gateway_port}")
            ),
            timeout=30,
        )
    finally:
        for port in (superlink_port, gateway_port):
            for pid in processes_holding(f"--port {port}"):
                os.kill(pid, signal.SIGKILL)
