"""Deployment mode on the platform host: the SuperLink and its gateway; run submission.

The SuperLink listens on loopback only (``deployment.superlink_port``): its Control API, which
submits runs and registers hospitals, has no authentication of its own, so only the platform
host may reach it. Hospitals dial the gateway at ``federated.server_address``, which answers
Flower's Fleet API only, over TLS, for registered hospitals (see ``gateway.py``). The ServerApp
runs next to the SuperLink and finds the run store through ``MEDFED_STORE_URL``. Runs are
submitted with ``flwr run`` on medfed's own Flower app (``flower_app/``), whose code is the
installed medfed package.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from medfed.config import MedfedConfig
from medfed.errors import FederationError
from medfed.federation.blob_files import blob_root
from medfed.federation.certs import CertPaths
from medfed.federation.lifetime import child_env
from medfed.federation.runtime import HOME_ENV, RunSettings, platform_env, quiet_flower_env
from medfed.store import RunStore

log = logging.getLogger("medfed.superlink")

APP_DIR = Path(__file__).parent / "flower_app"
CONNECTION = "medfed"
START_TIMEOUT_S = 60.0
LOOPBACK = "127.0.0.1"
INSECURE_WARNING = (
    "--insecure: hospitals connect over plain HTTP and without keys; anyone who reaches "
    "{address} can join as a hospital and read the model. Use it on a closed test network only."
)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise FederationError(
            f"federated.server_address = {address!r}: expected HOST:PORT, e.g. 127.0.0.1:8000"
        )
    return host.strip("[]"), int(port)


def flower_env(cfg: MedfedConfig, store_url: str | None = None) -> dict[str, str]:
    """Environment for Flower's processes: medfed's venv first on PATH, telemetry off; on the
    platform (``store_url``) the store and model key, never on a command line."""
    home = Path(cfg.home).resolve()
    env = dict(os.environ, **quiet_flower_env(home))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env[HOME_ENV] = str(home)
    if store_url:  # the platform's processes: its store, and the model key when configured
        env.update(platform_env(cfg, store_url))
    return env


def wait_for_port(host: str, port: int, process: subprocess.Popen, log_file: Path) -> None:
    """Return once ``host:port`` accepts connections; FederationError if ``process`` ends
    (with the last lines of its log)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_file.read_text(errors="replace").strip().splitlines()[-3:]
            raise FederationError(
                f"{log_file.stem} stopped at start-up (exit {process.returncode}): "
                + " / ".join(tail)
            )
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    process.terminate()
    raise FederationError(f"nothing opened {host}:{port} within {START_TIMEOUT_S:g}s")


def _background(command: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen:
    """``command`` in a session of its own, ending with this process (see ``lifetime.py``)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "medfed.federation.lifetime", *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=child_env(env),
            start_new_session=True,
        )


@dataclass
class PlatformLink:
    """The SuperLink on loopback and the hospital-facing gateway, as started processes."""

    superlink: subprocess.Popen
    gateway: subprocess.Popen
    processes: list[subprocess.Popen] = field(init=False)

    def __post_init__(self) -> None:
        self.processes = [self.gateway, self.superlink]


def tls_paths(cfg: MedfedConfig) -> CertPaths | None:
    """The platform's certificates (None with ``--insecure``); an error if not made yet."""
    if cfg.deployment.insecure:
        return None
    return CertPaths(cfg.certs_dir).require()


def start_platform_link(cfg: MedfedConfig, store_url: str) -> PlatformLink:
    """Start the SuperLink (loopback) and the gateway at ``federated.server_address``."""
    host, port = split_address(cfg.federated.server_address)
    certs = tls_paths(cfg)
    if certs is None:
        log.warning(INSECURE_WARNING.format(address=cfg.federated.server_address))
    home = Path(cfg.home).resolve()
    flwr_dir = home / "flwr"
    env = flower_env(cfg, store_url)
    superlink = _background(superlink_command(cfg, certs), env, flwr_dir / "superlink.log")
    try:
        wait_for_port(
            LOOPBACK, cfg.deployment.superlink_port, superlink, flwr_dir / "superlink.log"
        )
        gateway_command = [
            sys.executable,
            "-m",
            "medfed.federation.gateway",
            "--host",
            host,
            "--port",
            str(port),
            "--upstream-port",
            str(cfg.deployment.superlink_port),
            "--blobs",
            str(blob_root(home)),
        ]
        gateway_command += ["--insecure"] if certs is None else ["--certs", str(certs.folder)]
        gateway = _background(gateway_command, env, flwr_dir / "gateway.log")
        wait_for_port(host, port, gateway, flwr_dir / "gateway.log")
    except BaseException:
        superlink.terminate()
        raise
    write_connection(cfg)
    return PlatformLink(superlink, gateway)


# Flower's in-memory state: with a SQLite file, the SuperLink writes every chunk of every
# message (the global model, each reply) into it and spent most of a deployed round there.
# Nothing in it outlives the SuperLink anyway: medfed registers the hospitals' keys again at
# each start (sync_registrations) and interrupts the runs of a SuperLink that stopped.
SUPERLINK_DATABASE = ":flwr-in-memory:"


def superlink_command(cfg: MedfedConfig, certs: CertPaths | None) -> list[str]:
    command = [
        "flower-superlink",
        "--disable-runtime-dependency-installation",
        "--database",
        SUPERLINK_DATABASE,
        "--host",
        LOOPBACK,
        "--port",
        str(cfg.deployment.superlink_port),
    ]
    if certs is None:
        return [*command, "--insecure"]
    return [
        *command,
        "--ssl-certfile",
        str(certs.server_cert),
        "--ssl-keyfile",
        str(certs.server_key),
        "--ssl-ca-certfile",
        str(certs.ca_cert),
        "--enable-supernode-auth",
    ]


def stop_process_group(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM to a process started in its own session and to its children; SIGKILL if they
    linger."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def write_connection(cfg: MedfedConfig) -> None:
    """The ``medfed`` connection in Flower's config (inside medfed's home): the loopback
    SuperLink, checked against the platform's CA."""
    path = Path(cfg.home).resolve() / "flwr" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    address = f"{LOOPBACK}:{cfg.deployment.superlink_port}"
    if cfg.deployment.insecure:
        security = "insecure = true\n"
    else:
        security = f"root-certificates = {json.dumps(str(cfg.certs_dir.resolve() / 'ca.pem'))}\n"
    path.write_text(f'[superlink.{CONNECTION}]\naddress = "{address}"\n{security}')


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
            f"the SuperLink on {LOOPBACK}:{cfg.deployment.superlink_port} refused the run: "
            f"{reply.get('error-message', 'no reason given')} (is `medfed server` running?)"
        )
    flower_run_id = int(reply["run-id"])
    # Flower's ids are unsigned 64-bit; SQL BIGINT is signed: store the same 64 bits.
    signed = flower_run_id - 2**64 if flower_run_id >= 2**63 else flower_run_id
    store.set_flower_run_id(run_id, signed)
    return flower_run_id
