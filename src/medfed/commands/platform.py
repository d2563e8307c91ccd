"""``medfed server``: the dashboard and REST API (and the SuperLink hospitals connect to)."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from medfed.config import MedfedConfig, load_config
from medfed.errors import ConfigError
from medfed.store import RunStore

console = Console()
SUPERLINK_MODULE = "medfed.federation.superlink"


def _check_port_free(host: str, port: int) -> None:
    """A ConfigError naming the setting when ``host:port`` cannot be listened on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"api.host:api.port {host}:{port} cannot be used ({exc.strerror}); stop the "
                "other server there or pick another --port / --host"
            ) from None


@contextlib.contextmanager
def _superlink(cfg: MedfedConfig, enabled: bool) -> Iterator[Any]:
    """The SuperLink for deployment-mode runs while the server is up, when medfed ships one."""
    if not enabled or importlib.util.find_spec(SUPERLINK_MODULE) is None:
        yield None
        return
    handle = importlib.import_module(SUPERLINK_MODULE).start_superlink(cfg)
    console.print(f"SuperLink for hospitals on [bold]{cfg.federated.server_address}[/]")
    try:
        yield handle
    finally:
        handle.stop()


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
    _check_port_free(cfg.api.host, cfg.api.port)
    Path(cfg.home).mkdir(parents=True, exist_ok=True)
    with RunStore(cfg.database_url, redis_url=cfg.database.redis_url) as store:
        app = create_app(cfg, store)
        if not store.list_users():
            console.print(
                "[yellow]no dashboard users yet:[/] add one with "
                "[bold]medfed users add NAME --role admin[/]"
            )
        with _superlink(cfg, superlink):
            console.print(f"medfed dashboard: [bold cyan]{dashboard_url(cfg)}[/]  (Ctrl-C stops)")
            uvicorn.run(app, host=cfg.api.host, port=cfg.api.port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.command("server")(server_command)
