"""``medfed report RUN_ID``: write a run's evaluation report as HTML and/or PDF."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medfed.commands.runs import ConfigOption, DbOption
from medfed.config import load_config


class ReportFormat(StrEnum):
    html = "html"
    pdf = "pdf"
    both = "both"


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(
    run_id: Annotated[str, typer.Argument(help="run id, or its first characters")],
    format_: Annotated[
        ReportFormat, typer.Option("--format", "-f", help="html, pdf or both")
    ] = ReportFormat.html,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="folder for the files; default HOME/reports")
    ] = None,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Write the evaluation report of a run: metrics, curves, confusion matrix, ROC, privacy."""
    from medfed.reports import report_content, write_report
    from medfed.store import RunStore

    cfg = load_config(config)
    formats = ["html", "pdf"] if format_ is ReportFormat.both else [format_.value]
    console = Console()
    with RunStore(db or cfg.database_url) as store:
        full_id = store.resolve_run_id(run_id)
        with console.status(f"Scoring the model of run {full_id} and drawing the report…"):
            # --db alone names no home: the run's checkpoints tell where it is
            platform = None if db and config is None else cfg
            content = report_content(store, full_id, platform=platform)
            out_dir = out or Path(cfg.home) / "reports"
            paths = [write_report(content, out_dir, fmt) for fmt in formats]
    if content.roc is None:
        console.print(
            f"[yellow]note:[/] no ROC curve: {content.roc_note}", highlight=False, soft_wrap=True
        )
    for fmt, path in zip(formats, paths, strict=True):
        console.print(
            f"{fmt.upper()} report: [bold]{path.resolve()}[/]", highlight=False, soft_wrap=True
        )
