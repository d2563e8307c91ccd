"""Follow a run through the store's events: a live progress bar, then a summary table."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from medfed.store import ACTIVE_STATUSES, TERMINAL_EVENTS, EventType, Metric, RunStore


def follow_run(
    store: RunStore, run_id: str, console: Console, idle_timeout: float = 0, after: int = 0
) -> str:
    """Show the run's rounds as they finish; returns its final status.

    Only events after ``after`` count (a resumed run's history ends with its earlier end).
    ``idle_timeout`` > 0 gives up (returning the current status) when nothing happens that long.
    """
    run = store.get_run(run_id)
    last_id, last_event = after, time.monotonic()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("round {task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(run.name, total=run.num_rounds, status="waiting for hospitals")
        while True:
            events = store.wait_for_events(run_id, last_id, 1.0)
            for event in events:
                last_id, last_event = event.id, time.monotonic()
                status = _describe(event.type, event.payload)
                if event.type == EventType.RUN_STARTED:
                    progress.update(task, completed=event.payload.get("first_round", 1) - 1)
                if event.type == EventType.ROUND_FINISHED:
                    progress.update(task, completed=event.payload["round"])
                if status:
                    progress.update(task, status=status)
                if event.type in TERMINAL_EVENTS:
                    return store.get_run(run_id).status
            if not events and store.get_run(run_id).status not in ACTIVE_STATUSES:
                return store.get_run(run_id).status
            if idle_timeout and time.monotonic() - last_event > idle_timeout:
                return store.get_run(run_id).status


def _describe(kind: str, payload: dict) -> str:
    if kind == EventType.ROUND_STARTED:
        return f"round {payload['round']}: hospitals training"
    if kind == EventType.ROUND_FINISHED:
        m = payload.get("metrics") or {}
        if Metric.ACCURACY in m:
            accuracy, loss = m[Metric.ACCURACY], m.get(Metric.LOSS, 0)
            return f"test accuracy {accuracy:.3f}  loss {loss:.3f}"
        return f"round {payload['round']} done"
    if kind == EventType.CLIENT_FAILED:
        return f"[yellow]{payload['hospital']} failed ({payload['phase']})[/]"
    if kind == EventType.RUN_FAILED:
        return f"[red]failed: {payload.get('error', '')[:80]}[/]"
    return ""
