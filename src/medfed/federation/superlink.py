"""Deployment mode: the SuperLink on the platform host, a SuperNode per hospital, run submission.

Hospitals dial out to the SuperLink; the ServerApp runs next to it and finds the run store
through ``MEDFED_STORE_URL``. Runs are submitted with ``flwr run`` on medfed's own Flower app
(``flower_app/``), whose code is the installed medfed package.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from medfed.config import MedfedConfig
from medfed.errors import FederationError
from medfed.federation.runtime import RunSettings, quiet_flower_env
from medfed.store import RunStore

APP_DIR = Path(__file__).parent / "flower_app"
CONNECTION = "medfed"
START_TIMEOUT_S = 60.0


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise FederationError(
            f"federated.server_address = {address!r}: expected HOST:PORT, e.g. 127.0.0.1:8000"
        )
    return host, int(port)


def flower_env(cfg: MedfedConfig, store_url: str | None = None) -> dict[str, str]:
    """Environment for Flower's processes: medfed's venv first on PATH, telemetry off."""
    home = Path(cfg.home).resolve()
    env = dict(os.environ, **quiet_flower_env(home))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MEDFED_HOME"] = str(home)
    if store_url:
        env["MEDFED_STORE_URL"] = store_url
    return env


def _wait_for_port(host: str, port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise FederationError(
                f"the SuperLink stopped at start-up (exit {process.returncode}): "
                + " / ".join(tail)
            )
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.3)
    process.terminate()
    raise FederationError(f"the SuperLink did not open {host}:{port} in {START_TIMEOUT_S:g}s")


def start_superlink(cfg: MedfedConfig, store_url: str | None = None) -> subprocess.Popen:
    """Start ``flower-superlink`` at ``federated.server_address``; returns once it listens."""
    host, port = split_address(cfg.federated.server_address)
    home = Path(cfg.home).resolve()
    (home / "flwr").mkdir(parents=True, exist_ok=True)
    log = home / "flwr" / "superlink.log"
    command = [
        "flower-superlink",
        "--insecure",
        "--disable-runtime-dependency-installation",
        "--database",
        str(home / "flwr" / "superlink.db"),
        "--host",
        host,
        "--port",
        str(port),
    ]
    env = flower_env(cfg, store_url or cfg.database_url)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    _wait_for_port(host, port, process, log)
    write_connection(cfg)
    return process


def supernode_command(
    cfg: MedfedConfig, *, client_id: int, data_path: Path, name: str | None, port: int | None
) -> list[str]:
    home = Path(cfg.home).resolve()
    hospital = name or f"hospital-{client_id}"
    node_config = (
        f'data-path="{Path(data_path).resolve()}" hospital="{hospital}" '
        f'client-id={client_id} home="{home}"'
    )
    return [
        "flower-supernode",
        "--insecure",
        "--superlink",
        cfg.federated.server_address,
        "--port",
        str(port or 9100 + client_id),
        "--node-config",
        node_config,
    ]


def start_supernode(
    cfg: MedfedConfig,
    *,
    client_id: int,
    data_path: Path,
    name: str | None = None,
    port: int | None = None,
    log: Path | None = None,
) -> subprocess.Popen:
    """A hospital's SuperNode in the background (its log in ``log``)."""
    command = supernode_command(cfg, client_id=client_id, data_path=data_path, name=name, port=port)
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - owned by the process
    return subprocess.Popen(
        command,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=flower_env(cfg),
        start_new_session=True,
    )


def run_supernode(
    cfg: MedfedConfig, *, client_id: int, data_path: Path, name: str | None, port: int | None
) -> int:
    """Run a hospital's SuperNode in the foreground until it is stopped; its exit code."""
    command = supernode_command(cfg, client_id=client_id, data_path=data_path, name=name, port=port)
    try:
        return subprocess.call(command, env=flower_env(cfg))
    except KeyboardInterrupt:
        return 0


def write_connection(cfg: MedfedConfig) -> None:
    """The ``medfed`` SuperLink connection in Flower's config (inside medfed's home)."""
    path = Path(cfg.home).resolve() / "flwr" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'[superlink.{CONNECTION}]\naddress = "{cfg.federated.server_address}"\ninsecure = true\n'
    )


def submit_run(cfg: MedfedConfig, store: RunStore, run_id: str, *, resume: bool = False) -> int:
    """Submit run ``run_id`` to the SuperLink with ``flwr run``; returns Flower's run id."""
    write_connection(cfg)
    settings = RunSettings(run_id=run_id, config=cfg.to_dict(), resume=resume)
    run_config = Path(cfg.home).resolve() / "runs" / run_id / "run-config.toml"
    run_config.parent.mkdir(parents=True, exist_ok=True)
    run_config.write_text(
        "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.to_run_config().items())
    )
    command = [
        "flwr",
        "run",
        str(APP_DIR),
        CONNECTION,
        "--run-config",
        str(run_config),
        "--format",
        "json",
    ]
    done = subprocess.run(command, env=flower_env(cfg), capture_output=True, text=True)
    try:
        reply = json.loads(done.stdout)
    except json.JSONDecodeError:
        reply = {"success": False, "error-message": (done.stdout + done.stderr).strip()[-300:]}
    if not reply.get("success"):
        raise FederationError(
            f"the SuperLink at {cfg.federated.server_address} refused the run: "
            f"{reply.get('error-message', 'no reason given')} (is `medfed server` running?)"
        )
    flower_run_id = int(reply["run-id"])
    # Flower's ids are unsigned 64-bit; SQL BIGINT is signed: store the same 64 bits.
    signed = flower_run_id - 2**64 if flower_run_id >= 2**63 else flower_run_id
    store.set_flower_run_id(run_id, signed)
    return flower_run_id
