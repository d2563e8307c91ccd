"""``medfed server``: the dashboard and REST API (and the SuperLink hospitals connect to)."""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import typer
from rich.console import Console

from medfed.config import MedfedConfig, load_config
from medfed.errors import ConfigError
from medfed.store import Mode, RunStore
from medfed.store.home import private_home

console = Console()


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
def _superlink(cfg: MedfedConfig, store: RunStore, enabled: bool) -> Iterator[None]:
    """The SuperLink (loopback) and the hospital-facing gateway, for as long as the server is
    up; registered hospitals are made known to the SuperLink at start."""
    if not enabled:
        yield
        return
    from medfed.federation.hospitals import sync_registrations
    from medfed.federation.superlink import (
        INSECURE_WARNING,
        split_address,
        start_platform_link,
        stop_process_group,
    )

    _check_port_free(
        *split_address(cfg.federated.server_address),
        "federated.server_address",
        "set another federated.server_address (or pass --no-superlink)",
    )
    _check_port_free(
        "127.0.0.1",
        cfg.deployment.superlink_port,
        "deployment.superlink_port",
        "set another deployment.superlink_port",
    )
    _interrupt_deployed(store, "the platform's SuperLink was restarted")
    link = start_platform_link(cfg, store.url)
    try:
        sync_registrations(cfg, store)
        if cfg.deployment.insecure:
            warning = INSECURE_WARNING.format(address=cfg.federated.server_address)
            console.print(f"[bold yellow]warning:[/] {warning}")
        else:
            console.print(
                f"hospitals connect to [bold]{cfg.federated.server_address}[/] (TLS, registered "
                "keys only; Flower's control API stays on this host)"
            )
        yield
    finally:
        for process in link.processes:
            stop_process_group(process)
        _interrupt_deployed(store, "the platform's SuperLink stopped")


def _interrupt_deployed(store: RunStore, why: str) -> None:
    """Deployed runs end with the SuperLink that trains them: marked interrupted (resumable)."""
    from medfed.federation.queue import mark_interrupted

    for run in store.active_runs(Mode.DEPLOYMENT):
        mark_interrupted(store, run.id, why)


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
    insecure: bool = typer.Option(
        False, "--insecure", help="hospitals over plain HTTP, without keys (closed test networks)"
    ),
) -> None:
    """Serve the dashboard and REST API; runs started there are trained in the background."""
    import uvicorn

    from medfed.api import create_app
    from medfed.api.serving import HeaderDeadlineProtocol

    cfg = load_config(
        config, {"api.host": host, "api.port": port, "deployment.insecure": insecure or None}
    )
    _check_port_free(cfg.api.host, cfg.api.port, "api.host:api.port", "pick another --port/--host")
    private_home(cfg.home)
    with RunStore(cfg.database_url, redis_url=cfg.database.redis_url) as store:
        app = create_app(cfg, store)
        if not store.list_users():
            console.print(
                "[yellow]no dashboard users yet:[/] add one with "
                "[bold]medfed users add NAME --role admin[/]"
            )
        with _stop_signals_end_normally(), _superlink(cfg, store, superlink):
            console.print(f"medfed dashboard: [bold cyan]{dashboard_url(cfg)}[/]  (Ctrl-C stops)")
            uvicorn.run(
                app,
                host=cfg.api.host,
                port=cfg.api.port,
                log_level="warning",
                proxy_headers=False,  # the app trusts forwarding headers from api.trusted_proxies
                http=HeaderDeadlineProtocol,  # a client sending its request slowly is cut off
            )


def register(app: typer.Typer) -> None:
    app.command("server")(server_command)
