"""``medfed server``: the dashboard and REST API (and the SuperLink hospitals connect to)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console

from medfed.config import MedfedConfig, load_config
from medfed.errors import ConfigError
from medfed.store import RunStore
from medfed.store.home import private_home

console = Console()
STOP_TIMEOUT_S = 10.0


def _check_port_free(host: str, port: int, setting: str, remedy: str) -> None:
    """A ConfigError naming ``setting`` when ``host:port`` cannot be listened on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"{setting} {host}:{port} cannot be used ({exc.strerror}); stop the other "
                f"server there or {remedy}"
            ) from None


@contextlib.contextmanager
def _superlink(cfg: MedfedConfig, enabled: bool) -> Iterator[None]:
    """The SuperLink hospitals' SuperNodes dial into, for as long as the server is up."""
    if not enabled:
        yield
        return
    from medfed.federation.superlink import split_address, start_superlink

    _check_port_free(
        *split_address(cfg.federated.server_address),
        "federated.server_address",
        "set another federated.server_address (or pass --no-superlink)",
    )
    process = start_superlink(cfg)
    console.print(f"SuperLink for hospitals: [bold]{cfg.federated.server_address}[/]")
    try:
        yield
    finally:
        _stop_process_group(process)


def _stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process and its children, SIGKILL if they linger."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def _stop_signals_end_normally() -> Iterator[None]:
    """Ctrl-C or SIGTERM (as from a service manager), once uvicorn has shut down, unwinds the
    command so the SuperLink is stopped too, and it exits 0."""

    def end(_signum: int, _frame: object) -> None:
        raise typer.Exit(0)

    previous = {sig: signal.signal(sig, end) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def dashboard_url(cfg: MedfedConfig) -> str:
    """Where a browser on this machine reaches the dashboard."""
    host = "127.0.0.1" if cfg.api.host in ("0.0.0.0", "::", "") else cfg.api.host
    return f"http://{host}:{cfg.api.port}/"


def server_command(
    config: Path | None = typer.Option(None, "--config", "-c", help="medfed YAML config"),
    host: str | None = typer.Option(None, help="address to listen on (api.host)"),
    port: int | None = typer.Option(None, help="port to listen on (api.port)"),
    superlink: bool = typer.Option(
        True, "--superlink/--no-superlink", help="also run the SuperLink hospitals connect to"
    ),
) -> None:
    """Serve the dashboard and REST API; runs started there are trained in the background."""
    import uvicorn

    from medfed.api import create_app

    cfg = load_config(config, {"api.host": host, "api.port": port})
    _check_port_free(cfg.api.host, cfg.api.port, "api.host:api.port", "pick another --port/--host")
    private_home(cfg.home)
    with RunStore(cfg.database_url, redis_url=cfg.database.redis_url) as store:
        app = create_app(cfg, store)
        if not store.list_users():
            console.print(
                "[yellow]no dashboard users yet:[/] add one with "
                "[bold]medfed users add NAME --role admin[/]"
            )
        with _stop_signals_end_normally(), _superlink(cfg, superlink):
            console.print(f"medfed dashboard: [bold cyan]{dashboard_url(cfg)}[/]  (Ctrl-C stops)")
            uvicorn.run(
                app,
                host=cfg.api.host,
                port=cfg.api.port,
                log_level="warning",
                proxy_headers=False,  # the app trusts forwarding headers from api.trusted_proxies
            )


def register(app: typer.Typer) -> None:
    app.command("server")(server_command)
