"""``medfed runs list|show|cancel``: the run history, and the store options other commands share."""

from __future__ import annotations

import getpass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medfed.config import load_config
from medfed.errors import FederationError
from medfed.store import (
    CheckpointRecord,
    ClientResultRecord,
    EventType,
    Metric,
    ResultStatus,
    RoundRecord,
    RunRecord,
    RunStatus,
    RunStore,
)
from medfed.store.home import private_home

runs_app = typer.Typer(
    help="Run history: list runs, show one run's rounds, hospitals and checkpoints.",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="medfed YAML config (database section)")
]
DbOption = Annotated[
    str | None, typer.Option("--db", help="database URL; overrides the config's database")
]
STATUS_STYLES = {
    RunStatus.QUEUED: "magenta",
    RunStatus.INTERRUPTED: "yellow",
    RunStatus.PENDING: "dim",
    RunStatus.RUNNING: "bold cyan",
    RunStatus.FINISHED: "green",
    RunStatus.FAILED: "bold red",
    RunStatus.STOPPED: "yellow",
}


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")


def open_store(config: Path | None, db: str | None) -> RunStore:
    """The run store at ``--db``, or at the configuration's database URL (its home made
    private first)."""
    if db:
        return RunStore(db)
    cfg = load_config(config)
    private_home(cfg.home)
    return RunStore(cfg.database_url)


@runs_app.command("list")
def list_runs(
    status: Annotated[
        str | None,
        typer.Option(
            click_type=click.Choice([s.value for s in RunStatus]), help="only this status"
        ),
    ] = None,
    strategy: Annotated[str | None, typer.Option(help="only this strategy, e.g. FedAvg")] = None,
    search: Annotated[str | None, typer.Option(help="part of the name or id")] = None,
    limit: Annotated[int, typer.Option(min=1, help="newest runs shown")] = 20,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """List runs, newest first; a queued run shows its place in the queue."""
    with open_store(config, db) as store:
        runs, total = store.list_runs(status=status, strategy=strategy, search=search, limit=limit)
        places = store.queue_positions()
    table = Table(title="medfed runs", caption=f"{len(runs)} of {total} runs")
    for column in ("id", "name", "mode", "strategy", "status", "rounds", "best acc"):
        table.add_column(column, justify="right" if column in ("rounds", "best acc") else "left")
    table.add_column("started (UTC)")
    table.add_column("duration", justify="right")
    for run in runs:
        table.add_row(
            run.id[:8],
            run.name,
            run.mode,
            run.strategy,
            _status(run.status, _queued(run.status, places.get(run.id))),
            f"{run.rounds_done}/{run.num_rounds}",
            _percent(run.best_accuracy),
            format_moment(run.started_at),
            _duration(run.duration_s),
        )
    Console().print(table)


@runs_app.command("show")
def show_run(
    run_id: Annotated[str, typer.Argument(help="run id, or its first characters")],
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Show a run: settings, every round, each hospital's last results and the checkpoints."""
    with open_store(config, db) as store:
        run = store.get_run(store.resolve_run_id(run_id))
        places = store.queue_positions()
        rounds = store.rounds(run.id)
        last = rounds[-1].round if rounds else None
        results = store.client_results(run.id, last) if last is not None else []
        checkpoints = store.checkpoints(run.id)
        notes = [
            e.payload.get("message", "") for e in store.events(run.id, type=EventType.RUN_NOTE)
        ]
    console = Console()
    console.print(_run_summary(run, places.get(run.id)))
    for note in notes:
        console.print(f"[yellow]note[/] {escape(note)}")
    console.print(rounds_table(rounds))
    if results:
        console.print(_results_table(last, results))
    if checkpoints:
        console.print(_checkpoints_table(checkpoints))
    from medfed.commands.run_evaluation import evaluation_parts

    for part in evaluation_parts(run, results, config, db):
        console.print(part)


@runs_app.command("cancel")
def cancel_run(
    run_id: Annotated[str, typer.Argument(help="run id, or its first characters")],
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Take a queued run out of the run queue (it becomes stopped; start it again later)."""
    with open_store(config, db) as store:
        full_id = store.resolve_run_id(run_id)
        run = store.get_run(full_id)
        if not store.set_status(full_id, RunStatus.STOPPED, only_from=(RunStatus.QUEUED,)):
            raise FederationError(f"run {full_id} is {run.status}, not queued: nothing to cancel")
        store.publish(full_id, EventType.RUN_STOPPED, {"cancelled": True})
        store.log_activity(f"cli:{getpass.getuser()}", "run.cancel", full_id)
    Console().print(f"run [bold]{full_id}[/] left the queue (stopped)")


def _queued(status: str, place: int | None) -> str | None:
    return f"queued #{place}" if status == RunStatus.QUEUED and place else None


def _run_summary(run: RunRecord, place: int | None = None) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, str]] = [
        ("run", f"{run.name} ({run.id})"),
        ("status", _status(run.status, _queued(run.status, place))),
        ("mode", run.mode),
        ("strategy", run.strategy),
        ("rounds", f"{run.rounds_done}/{run.num_rounds}"),
        ("best accuracy", _percent(run.best_accuracy)),
        ("created", f"{format_moment(run.created_at)} by {run.created_by or '-'}"),
        ("started", format_moment(run.started_at)),
        ("finished", format_moment(run.finished_at)),
        ("duration", _duration(run.duration_s)),
    ]
    if run.flower_run_id is not None:
        rows.append(("flower run", str(run.flower_run_id)))
    if run.final_metrics:
        rows.append(("final", _metrics_line(run.final_metrics)))
    if run.error:
        rows.append(("error", f"[red]{run.error}[/]"))
    for key, value in rows:
        grid.add_row(key, value)
    return grid


def rounds_table(rounds: list[RoundRecord]) -> Table:
    table = Table(title="rounds", caption=None if rounds else "no round finished yet")
    for column in ("round", "loss", "acc", "F1", "AUC", "time", "up", "down", "ε", "clients"):
        table.add_column(column, justify="right")
    for r in rounds:
        table.add_row(
            str(r.round),
            _number(r.metrics.get(Metric.LOSS)),
            _percent(r.metrics.get(Metric.ACCURACY)),
            _number(r.metrics.get(Metric.F1)),
            _number(r.metrics.get(Metric.AUC)),
            _duration(r.duration_s),
            _bytes(r.bytes_up),
            _bytes(r.bytes_down),
            _number(r.epsilon, 2),
            _clients(r.num_clients_ok, r.num_clients_failed),
        )
    return table


def _results_table(round_number: int | None, results: list[ClientResultRecord]) -> Table:
    table = Table(title=f"hospitals in round {round_number}")
    for column in ("hospital", "phase", "status", "examples", "metrics", "time", "up", "down"):
        table.add_column(column, justify="right" if column in ("examples", "time") else "left")
    table.add_column("ε", justify="right")
    table.add_column("device")
    for res in results:
        ok = res.status == ResultStatus.OK
        outcome = _metrics_line(res.metrics or {}) if ok else f"[red]{res.error}[/]"
        table.add_row(
            res.hospital,
            res.phase,
            _status(RunStatus.FINISHED if ok else RunStatus.FAILED, res.status),
            str(res.num_examples),
            outcome,
            _duration(res.duration_s),
            _bytes(res.bytes_up),
            _bytes(res.bytes_down),
            _number(res.epsilon, 2),
            _device(res.metrics),
        )
    return table


def _device(metrics: dict[str, Any] | None) -> str:
    """The device a hospital reported with a result (cpu, cuda, mps), or "-"."""
    device = (metrics or {}).get(Metric.DEVICE)
    return device if isinstance(device, str) else "-"


def _checkpoints_table(checkpoints: list[CheckpointRecord]) -> Table:
    table = Table(title="checkpoints")
    for column in ("round", "metric", "size", "path"):
        table.add_column(column, justify="right" if column in ("round", "size") else "left")
    for c in checkpoints:
        metric = f"{c.metric_name}={_number(c.metric_value)}"
        table.add_row(str(c.round), metric, _bytes(c.size_bytes), c.path)
    return table


def _status(status: str, text: str | None = None) -> str:
    return f"[{STATUS_STYLES.get(status, '')}]{text or status}[/]"


def _metrics_line(metrics: dict[str, Any]) -> str:
    shown = [f"{k}={_number(v)}" for k, v in metrics.items() if isinstance(v, int | float)]
    return " ".join(shown) or "-"


def _number(value: Any, digits: int = 4) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.{digits}g}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_moment(moment: datetime | None) -> str:
    """A date and time to the second, or "-"."""
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def _bytes(size: int | None) -> str:
    if not size:
        return "-"
    units = ("B", "KB", "MB", "GB")
    value, unit = float(size), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    return f"{size} B" if unit == 0 else f"{value:.1f} {units[unit]}"


def _clients(ok: int, failed: int) -> str:
    return f"{ok} ok, [red]{failed} failed[/]" if failed else f"{ok} ok"
