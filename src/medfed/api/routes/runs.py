"""Runs: list, create, start, stop and cancel (a run's results: :mod:`.run_results`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.exceptions import RequestValidationError

from medfed.api.deps import AdminUser, ConfigDep, CurrentUser, QueueDep, StoreDep
from medfed.api.errors import ADMIN_ONLY, LOGGED_IN, NO_RUN, error
from medfed.api.runconfig import redact_config, validate_run_config
from medfed.api.schemas import RunCreate, RunDetail, RunPage, RunSummary, posted_config
from medfed.config import MedfedConfig
from medfed.errors import FederationError, StoreError
from medfed.federation.queue import RunQueue
from medfed.store import ACTIVE_STATUSES, EventType, Metric, Mode, RunRecord, RunStatus, RunStore
from medfed.store.repository import SORT_KEYS

router = APIRouter(prefix="/runs", tags=["runs"])

SORT_PATTERN = rf"^-?({'|'.join(SORT_KEYS)})$"
# medfed.reports.clinical.ARTIFACT, named here so that asking for a run without one does not
# load torch into the API process (tests keep the two equal).
FINAL_EVALUATION = "final-evaluation"
MAX_PAGE = 1_000_000
# RFC 3339 date-time, as the description's format says (a bare number or date is refused).
DATE_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
CONFLICT_START = {
    status.HTTP_409_CONFLICT: error("the run is finished, queued or being trained already")
}
CONFLICT_CONFIG = {
    status.HTTP_409_CONFLICT: error(
        "settings that contradict each other or the server's defaults (detail lists them), "
        "or, for a deployment, no SuperLink took the run (it is stored as failed)"
    )
}


def summary_fields(run: RunRecord, positions: dict[str, int] | None = None) -> dict[str, object]:
    """The RunSummary fields of a stored run (``positions``: queue places by run id)."""
    model = run.config.get("model", {}).get("name")
    final_accuracy = (run.final_metrics or {}).get(Metric.ACCURACY)
    queued = run.status == RunStatus.QUEUED
    return {
        "id": run.id,
        "name": run.name,
        "mode": run.mode,
        "status": run.status,
        "strategy": run.strategy,
        "model": model,
        "num_rounds": run.num_rounds,
        "rounds_done": run.rounds_done,
        "best_accuracy": run.best_accuracy,
        "final_accuracy": final_accuracy,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration_s": run.duration_s,
        "created_by": run.created_by,
        "error": run.error,
        "queued_at": run.queued_at if queued else None,
        "queue_position": (positions or {}).get(run.id) if queued else None,
    }


def run_detail(run: RunRecord, queue: RunQueue | None = None) -> RunDetail:
    """RunDetail of a stored run."""
    queued = queue is not None and run.status == RunStatus.QUEUED
    positions = queue.positions() if queued else {}
    return RunDetail(
        **summary_fields(run, positions),
        config=redact_config(run.config),
        final_metrics=run.final_metrics,
        flower_run_id=run.flower_run_id,
    )


def load_run(store: RunStore, run_id: str) -> RunRecord:
    """The run, or 404."""
    try:
        return store.get_run(run_id)
    except StoreError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


def conflict(detail: str) -> HTTPException:
    """A 409 saying ``detail``."""
    return HTTPException(status.HTTP_409_CONFLICT, detail)


def _utc(text: str | None, key: str) -> datetime | None:
    """An RFC 3339 date-time in UTC (a leap second or year 0 taken to the nearest time
    Python has), or a 422 naming ``key``."""
    if text is None:
        return None
    found = DATE_TIME.match(text)
    try:
        if found is None:
            raise ValueError("not an RFC 3339 date-time, e.g. 2026-12-01T08:30:00Z")
        year, month, day, hour, minute, second = (int(found.group(i)) for i in range(1, 7))
        zone = found.group(8).upper()
        offset = timedelta(0)
        if zone != "Z":
            sign = -1 if zone[0] == "-" else 1
            offset = sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        local = datetime(max(year, 1), month, day, hour, minute, min(second, 59))
        utc = local - offset
    except OverflowError:
        utc = datetime.min if year < 5000 else datetime.max
    except ValueError as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", key), "msg": str(exc)}]
        ) from None
    return utc.replace(tzinfo=UTC)


@router.get("", response_model=RunPage, responses=LOGGED_IN)
def list_runs(
    store: StoreDep,
    queue: QueueDep,
    _user: CurrentUser,
    status_: Annotated[Literal[tuple(RunStatus)] | None, Query(alias="status")] = None,  # type: ignore[valid-type]
    strategy: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[str | None, Query(json_schema_extra={"format": "date-time"})] = None,
    until: Annotated[str | None, Query(json_schema_extra={"format": "date-time"})] = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
    sort: Annotated[str, Query(pattern=SORT_PATTERN)] = "-created_at",
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 20,
) -> RunPage:
    """One page of runs, filtered and sorted (``-`` before the column for descending); a
    queued run shows its place in the queue."""
    runs, total = store.list_runs(
        status=status_,
        strategy=strategy,
        since=_utc(since, "since"),
        until=_utc(until, "until"),
        search=search,
        sort=sort,
        limit=page_size,
        offset=(page - 1) * page_size,
    )
    positions = queue.positions() if any(r.status == RunStatus.QUEUED for r in runs) else {}
    items = [RunSummary(**summary_fields(run, positions)) for run in runs]
    return RunPage(items=items, total=total, page=page, page_size=page_size)


@router.post(
    "",
    response_model=RunDetail,
    status_code=status.HTTP_201_CREATED,
    responses={**ADMIN_ONLY, **CONFLICT_CONFIG},
)
def create_run(
    body: RunCreate, store: StoreDep, cfg: ConfigDep, queue: QueueDep, user: AdminUser
) -> RunDetail:
    """Create a run from a partial config merged over the server's defaults; start it unless
    ``start`` is false. A started run joins the run queue (status ``queued``) and trains when
    the platform has room: on simulated hospitals here, or (``mode: deployment``) on the
    connected hospitals through the platform's SuperLink."""
    from medfed.federation import runner

    run_cfg = validate_run_config(cfg, posted_config(body.config), body.name)
    run_id = runner.create_run(run_cfg, store, mode=body.mode, created_by=user.name)
    store.log_activity(user.name, "run.create", run_id, {"name": run_cfg.name, "mode": body.mode})
    if body.start:
        _start(run_id, body.mode, store, cfg, queue, fail_run=True)
        store.log_activity(user.name, "run.start", run_id, {"mode": body.mode})
    return run_detail(store.get_run(run_id), queue)


def _start(
    run_id: str,
    mode: str,
    store: RunStore,
    cfg: MedfedConfig,
    queue: RunQueue,
    *,
    fail_run: bool = False,
) -> None:
    """Queue the run; a deployed run needs the platform's SuperLink to be up (409 if not;
    ``fail_run``: the run is then stored as failed)."""
    if mode == Mode.DEPLOYMENT:
        from medfed.federation import hospitals as registry

        if not registry.superlink_listening(cfg):
            reason = (
                f"the platform's SuperLink on 127.0.0.1:{cfg.deployment.superlink_port} is "
                "not running: start `medfed server` (it runs the SuperLink), then start the run"
            )
            if fail_run:
                store.set_status(run_id, RunStatus.FAILED, error=reason)
                store.publish(run_id, EventType.RUN_FAILED, {"error": reason})
            raise conflict(reason)
    try:
        queue.submit(run_id)
    except FederationError as exc:
        raise conflict(str(exc)) from None


@router.get("/{run_id}", response_model=RunDetail, responses={**LOGGED_IN, **NO_RUN})
def get_run(run_id: str, store: StoreDep, queue: QueueDep, _user: CurrentUser) -> RunDetail:
    """A run with its full config and final metrics (and its place in the queue)."""
    return run_detail(load_run(store, run_id), queue)


@router.post(
    "/{run_id}/start",
    response_model=RunDetail,
    responses={**ADMIN_ONLY, **NO_RUN, **CONFLICT_START},
)
def start_run(
    run_id: str, store: StoreDep, cfg: ConfigDep, queue: QueueDep, user: AdminUser
) -> RunDetail:
    """Queue a run created with ``start: false``; a stopped, failed or interrupted run
    resumes from its last checkpoint when its turn comes."""
    run = load_run(store, run_id)
    if run.status == RunStatus.FINISHED:
        raise conflict(f"run {run_id} is finished; create a new run to train again")
    if run.status == RunStatus.QUEUED:
        raise conflict(f"run {run_id} is queued already (place {queue.position(run_id)})")
    resume = run.started_at is not None
    _start(run_id, run.mode, store, cfg, queue)
    store.log_activity(user.name, "run.start", run_id, {"resume": resume})
    return run_detail(store.get_run(run_id), queue)


@router.post(
    "/{run_id}/stop",
    response_model=RunDetail,
    responses={
        **ADMIN_ONLY,
        **NO_RUN,
        status.HTTP_409_CONFLICT: error("the run is not queued, pending or running"),
    },
)
def stop_run(
    run_id: str, store: StoreDep, cfg: ConfigDep, queue: QueueDep, user: AdminUser
) -> RunDetail:
    """Stop a pending or running run after its current phase; a queued run leaves the
    queue."""
    run = load_run(store, run_id)
    if run.status not in (*ACTIVE_STATUSES, RunStatus.QUEUED):
        raise conflict(f"run {run_id} is already {run.status}")
    from medfed.federation import runner

    try:
        runner.stop_run(run_id, store, Path(cfg.home))
    except FederationError as exc:
        raise conflict(str(exc)) from None
    store.log_activity(user.name, "run.stop", run_id)
    return run_detail(store.get_run(run_id), queue)


@router.post(
    "/{run_id}/cancel",
    response_model=RunDetail,
    responses={
        **ADMIN_ONLY,
        **NO_RUN,
        status.HTTP_409_CONFLICT: error("the run is not queued"),
    },
)
def cancel_run(run_id: str, store: StoreDep, queue: QueueDep, user: AdminUser) -> RunDetail:
    """Take a queued run out of the queue (status ``stopped``; it can be started again)."""
    load_run(store, run_id)
    try:
        queue.cancel(run_id)
    except FederationError as exc:
        raise conflict(str(exc)) from None
    store.log_activity(user.name, "run.cancel", run_id)
    return run_detail(store.get_run(run_id), queue)
