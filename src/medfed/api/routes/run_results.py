"""A run's results: rounds, hospital replies, live events, checkpoints, model and report
downloads, final evaluation and per-site table."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from medfed.api.deps import AdminUser, ConfigDep, CurrentUser, QueueDep, StoreDep
from medfed.api.errors import ADMIN_ONLY, LOGGED_IN, NO_RUN, error
from medfed.api.routes.runs import FINAL_EVALUATION, conflict, load_run
from medfed.api.schemas import (
    CheckpointOut,
    ClientResultOut,
    FinalEvaluationOut,
    RoundOut,
    SitesOut,
)
from medfed.api.sse import EventStream, run_events
from medfed.errors import StoreError
from medfed.store import FINAL_STATUSES, ArtifactStore, RunRecord, RunStatus

router = APIRouter(prefix="/runs", tags=["runs"])

REPORT_MEDIA_TYPES = {"html": "text/html", "pdf": "application/pdf"}
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
    store.log_activity(user.name, "model.download", run_id, {"round": checkpoint.round})
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
        raise conflict(
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
    store.log_activity(user.name, "report.download", run_id, {"format": format_})
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
