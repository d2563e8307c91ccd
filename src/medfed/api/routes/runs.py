"""Runs: list, create, start, stop, progress, live events, model and report downloads."""

from __future__ import annotations

import re
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from medfed.api.deps import AdminUser, ConfigDep, CurrentUser, QueueDep, StoreDep
from medfed.api.errors import ADMIN_ONLY, LOGGED_IN, NO_RUN, error
from medfed.api.runconfig import redact_config, validate_run_config
from medfed.api.schemas import (
    CheckpointOut,
    ClientResultOut,
    FinalEvaluationOut,
    RoundOut,
    RunCreate,
    RunDetail,
    RunPage,
    RunSummary,
    SitesOut,
    posted_config,
)
from medfed.api.sse import EventStream, run_events
from medfed.config import MedfedConfig
from medfed.errors import FederationError, StoreError
from medfed.federation.queue import RunQueue
from medfed.store import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    ArtifactStore,
    EventType,
    Metric,
    Mode,
    RunRecord,
    RunStatus,
    RunStore,
)
from medfed.store.repository import SORT_KEYS

router = APIRouter(prefix="/runs", tags=["runs"])

SORT_PATTERN = rf"^-?({'|'.join(SORT_KEYS)})$"
REPORT_MEDIA_TYPES = {"html": "text/html", "pdf": "application/pdf"}
# medfed.reports.clinical.ARTIFACT, named here so that asking for a run without one does not
# load torch into the API process (tests keep the two equal).
FINAL_EVALUATION = "final-evaluation"
MAX_PAGE = 1_000_000
MAX_ID = 2**62  # event ids and rounds stay far below; every database's integers hold it
MAX_ROUND = 100_000  # federated.rounds' bound
EVENT_ID_PATTERN = r"^[0-9]{1,18}$"
# One server-sent message: its id, its type (run_started, round_finished, ..., run_finished)
# and its JSON payload; or a retry hint alone.
SSE_MESSAGE = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": EVENT_ID_PATTERN},
        "event": {"type": "string"},
        "data": {"type": "string", "description": "the event's payload, JSON"},
        "retry": {"type": "string", "description": "milliseconds before reconnecting"},
    },
}
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


def _conflict(detail: str) -> HTTPException:
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
    store.audit(user.name, "run.create", run_id, {"name": run_cfg.name, "mode": body.mode})
    if body.start:
        _start(run_id, body.mode, store, cfg, queue, fail_run=True)
        store.audit(user.name, "run.start", run_id, {"mode": body.mode})
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
            raise _conflict(reason)
    try:
        queue.submit(run_id)
    except FederationError as exc:
        raise _conflict(str(exc)) from None


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
        raise _conflict(f"run {run_id} is finished; create a new run to train again")
    if run.status == RunStatus.QUEUED:
        raise _conflict(f"run {run_id} is queued already (place {queue.position(run_id)})")
    resume = run.started_at is not None
    _start(run_id, run.mode, store, cfg, queue)
    store.audit(user.name, "run.start", run_id, {"resume": resume})
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
        raise _conflict(f"run {run_id} is already {run.status}")
    from medfed.federation import runner

    try:
        runner.stop_run(run_id, store, Path(cfg.home))
    except FederationError as exc:
        raise _conflict(str(exc)) from None
    store.audit(user.name, "run.stop", run_id)
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
        raise _conflict(str(exc)) from None
    store.audit(user.name, "run.cancel", run_id)
    return run_detail(store.get_run(run_id), queue)


@router.get("/{run_id}/rounds", response_model=list[RoundOut], responses={**LOGGED_IN, **NO_RUN})
def rounds(run_id: str, store: StoreDep, _user: CurrentUser) -> list[RoundOut]:
    """Global metrics, traffic and privacy spent of each finished round."""
    load_run(store, run_id)
    return [RoundOut.model_validate(r, from_attributes=True) for r in store.rounds(run_id)]


@router.get(
    "/{run_id}/clients", response_model=list[ClientResultOut], responses={**LOGGED_IN, **NO_RUN}
)
def clients(
    run_id: str,
    store: StoreDep,
    _user: CurrentUser,
    round_: Annotated[int | None, Query(alias="round", ge=0, le=MAX_ROUND)] = None,
) -> list[ClientResultOut]:
    """Each hospital's reply (or failure) per round and phase."""
    load_run(store, run_id)
    results = store.client_results(run_id, round_)
    return [ClientResultOut.model_validate(r, from_attributes=True) for r in results]


@router.get(
    "/{run_id}/events",
    response_class=EventStream,
    responses={
        200: {"content": {"text/event-stream": {"schema": SSE_MESSAGE}}},
        **LOGGED_IN,
        **NO_RUN,
    },
)
def events(
    run_id: str,
    request: Request,
    store: StoreDep,
    queue: QueueDep,
    _user: CurrentUser,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    last_event_id: Annotated[str, Header(pattern=EVENT_ID_PATTERN)] = None,  # type: ignore[assignment]
) -> EventStream:
    """Server-sent events: the run's stored events after ``after`` (or ``Last-Event-ID``),
    then, while the run trains, new ones until it ends. For a run that does not train now
    (queued, created, ended) the stream ends after its history with a ``retry`` hint."""
    run = load_run(store, run_id)
    if last_event_id:
        after = max(after, min(int(last_event_id), MAX_ID))
    # Running: its events come (a vanished worker is reaped, which ends the stream); pending:
    # only once the queue has started it.
    starting = run.status == RunStatus.PENDING and queue.training(run)
    live = run.status == RunStatus.RUNNING or starting
    return EventStream(
        run_events(
            request,
            store,
            run_id,
            after,
            live=live,
            retry=run.status in (RunStatus.QUEUED, RunStatus.PENDING),
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/{run_id}/checkpoints", response_model=list[CheckpointOut], responses={**LOGGED_IN, **NO_RUN}
)
def checkpoints(run_id: str, store: StoreDep, _user: CurrentUser) -> list[CheckpointOut]:
    """Saved global models of the run, by round."""
    load_run(store, run_id)
    return [
        CheckpointOut.model_validate(c, from_attributes=True) for c in store.checkpoints(run_id)
    ]


def _download_name(run: RunRecord, suffix: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", run.name).strip("_") or "run"
    return f"{stem}-{run.id[:8]}{suffix}"


@router.get(
    "/{run_id}/model",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}},
        **ADMIN_ONLY,
        status.HTTP_404_NOT_FOUND: error("no run with that id, or no model of that round"),
    },
)
def model(
    run_id: str,
    store: StoreDep,
    cfg: ConfigDep,
    user: AdminUser,
    round_: Annotated[int | None, Query(alias="round", ge=0, le=MAX_ROUND)] = None,
) -> FileResponse:
    """The global model of a round (default: the latest) as a plain ``.pt`` (state dict + meta)."""
    run = load_run(store, run_id)
    if round_ is None:
        checkpoint = store.latest_checkpoint(run_id)
    else:
        checkpoint = next((c for c in store.checkpoints(run_id) if c.round == round_), None)
    if checkpoint is None:
        which = "any round" if round_ is None else f"round {round_}"
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run_id} has no model of {which}")
    folder = Path(tempfile.mkdtemp(prefix="medfed-model-"))
    try:
        artifacts = ArtifactStore.for_config(cfg, create_key=False)
        plain = artifacts.export_plain(
            checkpoint.path, folder / "model.pt", run_id=run_id, round=checkpoint.round
        )
        _with_run_classes(plain, run)
    except StoreError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    store.audit(user.name, "model.download", run_id, {"round": checkpoint.round})
    return FileResponse(
        plain,
        media_type="application/octet-stream",
        filename=_download_name(run, f"-round{checkpoint.round}.pt"),
        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
    )


@router.get(
    "/{run_id}/report",
    response_class=FileResponse,
    responses={
        200: {
            "content": {
                "text/html": {"schema": {"type": "string"}},
                "application/pdf": {"schema": {"type": "string"}},
            }
        },
        **LOGGED_IN,
        **NO_RUN,
        status.HTTP_409_CONFLICT: error("the run has no finished round yet"),
    },
)
def report(
    run_id: str,
    store: StoreDep,
    cfg: ConfigDep,
    user: CurrentUser,
    format_: Annotated[Literal["html", "pdf"], Query(alias="format")] = "html",
) -> FileResponse:
    """The run's evaluation report (built on request, once a round has finished)."""
    run = load_run(store, run_id)
    if run.rounds_done == 0:
        raise _conflict(
            f"run {run_id} has no finished round yet: its report comes once a round has "
            "finished (see its status)"
        )
    from medfed.reports import build_report  # matplotlib: only when a report is asked for

    path = build_report(
        store,
        run_id,
        Path(cfg.home) / "reports" / run_id,
        format_,
        platform=cfg,
    )
    store.audit(user.name, "report.download", run_id, {"format": format_})
    return FileResponse(
        path,
        media_type=REPORT_MEDIA_TYPES[format_],
        filename=_download_name(run, f"-report.{format_}"),
    )


@router.get(
    "/{run_id}/explanations", response_model=FinalEvaluationOut, responses={**LOGGED_IN, **NO_RUN}
)
def explanations(
    run_id: str, store: StoreDep, cfg: ConfigDep, _user: CurrentUser
) -> FinalEvaluationOut:
    """The final model on the held-out test set, computed once after the run's last round:
    calibration (ECE, reliability bins), screening operating points with their thresholds,
    and Grad-CAM heat maps of its most confident true and false positives and negatives."""
    run = load_run(store, run_id)
    if not (Path(cfg.home) / "artifacts" / run.id / FINAL_EVALUATION).is_file():
        if run.status in FINAL_STATUSES:
            note = "not computed: the run has no held-out test set, or ended before its last round"
        else:
            note = "computed once the run's last round has finished"
        return FinalEvaluationOut(available=False, note=note)
    from medfed.reports.clinical import load_final_evaluation  # torch: only when there is one

    evaluation = load_final_evaluation(ArtifactStore.for_config(cfg, create_key=False), run.id)
    if evaluation is None:
        return FinalEvaluationOut(available=False, note="not computed")
    return FinalEvaluationOut(available=True, **evaluation.to_dict())


@router.get("/{run_id}/sites", response_model=SitesOut, responses={**LOGGED_IN, **NO_RUN})
def sites(run_id: str, store: StoreDep, _user: CurrentUser) -> SitesOut:
    """Each hospital's evaluation of the latest global model it evaluated (after the run: the
    final one) on its own held-out split, with its class balance; the worst one named."""
    run = load_run(store, run_id)
    config = run.config or {}
    names = list((config.get("data") or {}).get("class_names") or [])
    bn = str((config.get("federated") or {}).get("bn", "average"))
    results = store.client_results(run.id)
    if not results:  # nothing to tabulate: answered without loading the reports package
        return SitesOut(round=None, class_names=names, sites=[], worst=None, bn=bn)
    from medfed.reports.sites import site_table

    return SitesOut(**site_table(results, names, bn).to_dict())


def _with_run_classes(path: Path, run: RunRecord) -> None:
    """Write the run's class names into a downloaded model file that lacks them."""
    import torch

    from medfed.models.bundle import with_class_names

    names = list((run.config.get("data") or {}).get("class_names") or [])
    content = torch.load(path, map_location="cpu", weights_only=True)
    filled = with_class_names(content, names)
    if filled is not content:
        torch.save(filled, path)
