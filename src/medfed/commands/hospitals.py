"""``medfed certs init|show`` (the platform's TLS) and ``medfed hospital add|list|remove``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from medfed.config import load_config
from medfed.federation.certs import CertPaths, describe, init_certs, write_private
from medfed.store import RunStore

console = Console()
certs_app = typer.Typer(help="The platform's TLS certificates.", no_args_is_help=True)
hospital_app = typer.Typer(help="Hospitals allowed to join runs.", no_args_is_help=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="medfed YAML config")]


def register(app: typer.Typer) -> None:
    app.add_typer(certs_app, name="certs")
    app.add_typer(hospital_app, name="hospital")


@certs_app.command("init")
def certs_init(
    host: Annotated[
        list[str],
        typer.Option(help="name or IP hospitals connect to (repeat for several)"),
    ],
    force: Annotated[bool, typer.Option(help="replace existing certificates")] = False,
    config: ConfigOption = None,
) -> None:
    """Make the platform's CA and server certificate (hospitals get ca.pem)."""
    cfg = load_config(config)
    Path(cfg.home).mkdir(parents=True, exist_ok=True)
    paths = init_certs(cfg.certs_dir, host, force=force)
    info = describe(paths.server_cert.read_bytes())
    console.print(
        f"server certificate for {', '.join(info.hosts)}, valid to {info.not_after:%Y-%m-%d}"
    )
    console.print(
        f"give each hospital [bold]{paths.ca_cert}[/] (it checks the platform against it)"
    )


@certs_app.command("show")
def certs_show(config: ConfigOption = None) -> None:
    """The platform's certificates: names, expiry and fingerprints."""
    paths = CertPaths(load_config(config).certs_dir).require()
    for label, path in (("CA", paths.ca_cert), ("server", paths.server_cert)):
        info = describe(path.read_bytes())
        console.print(f"[bold]{label}[/] {path}: {info.subject}")
        if info.hosts:
            console.print(f"  hosts: {', '.join(info.hosts)}")
        console.print(f"  valid to {info.not_after:%Y-%m-%d}, SHA-256 {info.fingerprint}")


def _store(config: Path | None) -> tuple:
    cfg = load_config(config)
    Path(cfg.home).mkdir(parents=True, exist_ok=True)
    return cfg, RunStore(cfg.database_url, redis_url=cfg.database.redis_url)


@hospital_app.command("add")
def hospital_add(
    name: Annotated[str, typer.Argument(help="the hospital's name in runs and reports")],
    out: Annotated[
        Path | None, typer.Option(help="where to write its private key (default NAME.key)")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Register a hospital: makes its key pair and writes the private key to hand over."""
    from medfed.federation.hospitals import add_hospital

    cfg, store = _store(config)
    out = out or Path(f"{name}.key")
    if out.exists():
        raise typer.BadParameter(f"{out} exists: choose another --out", param_hint="--out")
    with store:
        record, private_key = add_hospital(cfg, store, name)
    write_private(out, private_key)
    console.print(f"hospital [bold]{record.name}[/] registered, key {record.fingerprint}")
    console.print(
        f"hand over [bold]{out}[/] (private: 0600) and {cfg.certs_dir / 'ca.pem'}; at the "
        f"hospital: medfed client --key {out.name} --ca ca.pem --server HOST:PORT --data PATH"
    )


@hospital_app.command("list")
def hospital_list(config: ConfigOption = None) -> None:
    """Registered hospitals, their key fingerprints and when each was last seen."""
    _, store = _store(config)
    with store:
        hospitals = [h for h in store.list_hospitals() if h.public_key]
    table = Table("hospital", "key", "registered", "last seen", "runs", "status")
    for h in hospitals:
        table.add_row(
            h.name,
            h.fingerprint or "-",
            f"{h.registered_at:%Y-%m-%d %H:%M}" if h.registered_at else "-",
            f"{h.last_seen:%Y-%m-%d %H:%M}" if h.last_seen else "never",
            str(h.runs_joined),
            "registered" if h.registered else f"removed {h.removed_at:%Y-%m-%d}",
        )
    console.print(table if hospitals else "no hospitals registered: medfed hospital add NAME")


@hospital_app.command("remove")
def hospital_remove(name: str, config: ConfigOption = None) -> None:
    """Withdraw a hospital: its key is refused from now on; its past results stay."""
    from medfed.federation.hospitals import remove_hospital

    cfg, store = _store(config)
    with store:
        remove_hospital(cfg, store, name)
    console.print(f"hospital [bold]{name}[/] removed: its key is refused from now on")
