"""Runs: list, create, start, stop, progress, live events, model and report downloads."""

from __future__ import annotations

import re
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask

from medfed.api.deps import AdminUser, ConfigDep, CurrentUser, StoreDep
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
)
from medfed.api.sse import run_events
from medfed.config import run_config
from medfed.errors import FederationError, StoreError
from medfed.store import RUN_STATUSES, ArtifactStore, RunRecord, RunStore
from medfed.store.repository import SORT_KEYS

router = APIRouter(prefix="/runs", tags=["runs"])

SORT_PATTERN = rf"^-?({'|'.join(SORT_KEYS)})$"
ACTIVE_STATUSES = ("pending", "running")
REPORT_MEDIA_TYPES = {"html": "text/html", "pdf": "application/pdf"}


def summary_fields(run: RunRecord) -> dict[str, object]:
    """The RunSummary fields of a stored run."""
    model = run.config.get("model", {}).get("name")
    final_accuracy = (run.final_metrics or {}).get("accuracy")
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
    }


def run_detail(run: RunRecord) -> RunDetail:
    """RunDetail of a stored run."""
    return RunDetail(
        **summary_fields(run),
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


@router.get("", response_model=RunPage)
def list_runs(
    store: StoreDep,
    _user: CurrentUser,
    status_: Annotated[Literal[RUN_STATUSES] | None, Query(alias="status")] = None,  # type: ignore[valid-type]
    strategy: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    search: str | None = None,
    sort: Annotated[str, Query(pattern=SORT_PATTERN)] = "-created_at",
    page: Annotated[int, Query(ge=1)] = 1,
    page_size: Annotated[int, Query(ge=1, le=200)] = 20,
) -> RunPage:
    """One page of runs, filtered and sorted (``-`` before the column for descending)."""
    runs, total = store.list_runs(
        status=status_,
        strategy=strategy,
        since=since,
        until=until,
        search=search,
        sort=sort,
        limit=page_size,
        offset=(page - 1) * page_size,
    )
    items = [RunSummary(**summary_fields(run)) for run in runs]
    return RunPage(items=items, total=total, page=page, page_size=page_size)


@router.post(
    "",
    response_model=RunDetail,
    status_code=status.HTTP_201_CREATED,
    responses={
        status.HTTP_401_UNAUTHORIZED: {"description": "not logged in"},
        status.HTTP_403_FORBIDDEN: {"description": "not an admin"},
        status.HTTP_409_CONFLICT: {
            "description": "deployment: no SuperLink took the run (it is stored as failed)"
        },
        status.HTTP_422_UNPROCESSABLE_CONTENT: {"description": "a bad name or config key"},
    },
)
def create_run(body: RunCreate, store: StoreDep, cfg: ConfigDep, user: AdminUser) -> RunDetail:
    """Create a run from a partial config merged over the server's defaults; start it unless
    ``start`` is false: simulated hospitals here, or (``mode: deployment``) submitted to the
    platform's SuperLink for the connected hospitals."""
    from medfed.federation import runner  # imports Flower: only when a run is made

    run_cfg = validate_run_config(cfg, body.config, body.name)
    run_id = runner.create_run(run_cfg, store, mode=body.mode, created_by=user.name)
    store.audit(user.name, "run.create", run_id, {"name": run_cfg.name, "mode": body.mode})
    if body.start and body.mode == "deployment":
        from medfed.federation.superlink import submit_run

        try:
            submit_run(run_cfg, store, run_id)
        except FederationError as exc:
            store.set_status(run_id, "failed", error=str(exc))
            raise _conflict(str(exc)) from None
        store.audit(user.name, "run.start", run_id, {"mode": body.mode})
    elif body.start:
        runner.start_run(run_cfg, store, run_id=run_id, created_by=user.name)
        store.audit(user.name, "run.start", run_id)
    return run_detail(store.get_run(run_id))


@router.get("/{run_id}", response_model=RunDetail)
def get_run(run_id: str, store: StoreDep, _user: CurrentUser) -> RunDetail:
    """A run with its full config and final metrics."""
    return run_detail(load_run(store, run_id))


@router.post("/{run_id}/start", response_model=RunDetail)
def start_run(run_id: str, store: StoreDep, cfg: ConfigDep, user: AdminUser) -> RunDetail:
    """Start a run created with ``start: false``; a stopped, failed or interrupted run resumes
    from its last checkpoint."""
    run = load_run(store, run_id)
    if run.status == "finished":
        raise _conflict(f"run {run_id} is finished; create a new run to train again")
    from medfed.federation import runner  # imports Flower: only when a run starts

    if runner.worker_alive(Path(cfg.home), run_id):
        raise _conflict(f"run {run_id} is already being trained ({run.status})")
    resume = run.started_at is not None
    run_cfg = run_config(cfg, run.config, source=f"run {run_id} config")
    if run.mode == "deployment":
        from medfed.federation.superlink import submit_run

        try:
            submit_run(run_cfg, store, run_id, resume=resume)
        except FederationError as exc:
            raise _conflict(str(exc)) from None
    else:
        runner.start_run(run_cfg, store, run_id=run_id, resume=resume)
    store.audit(user.name, "run.start", run_id, {"resume": resume})
    return run_detail(store.get_run(run_id))


@router.post("/{run_id}/stop", response_model=RunDetail)
def stop_run(run_id: str, store: StoreDep, cfg: ConfigDep, user: AdminUser) -> RunDetail:
    """Stop a pending or running run."""
    run = load_run(store, run_id)
    if run.status not in ACTIVE_STATUSES:
        raise _conflict(f"run {run_id} is already {run.status}")
    from medfed.federation import runner  # imports Flower: only when a run stops

    runner.stop_run(run_id, store, Path(cfg.home))
    store.audit(user.name, "run.stop", run_id)
    return run_detail(store.get_run(run_id))


@router.get("/{run_id}/rounds", response_model=list[RoundOut])
def rounds(run_id: str, store: StoreDep, _user: CurrentUser) -> list[RoundOut]:
    """Global metrics, traffic and privacy spent of each finished round."""
    load_run(store, run_id)
    return [RoundOut.model_validate(r, from_attributes=True) for r in store.rounds(run_id)]


@router.get("/{run_id}/clients", response_model=list[ClientResultOut])
def clients(
    run_id: str,
    store: StoreDep,
    _user: CurrentUser,
    round_: Annotated[int | None, Query(alias="round", ge=0)] = None,
) -> list[ClientResultOut]:
    """Each hospital's reply (or failure) per round and phase."""
    load_run(store, run_id)
    results = store.client_results(run_id, round_)
    return [ClientResultOut.model_validate(r, from_attributes=True) for r in results]


@router.get(
    "/{run_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def events(
    run_id: str,
    request: Request,
    store: StoreDep,
    _user: CurrentUser,
    after: Annotated[int, Query(ge=0)] = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events: the run's stored events, then new ones until the run ends."""
    load_run(store, run_id)
    if last_event_id and last_event_id.isdigit():
        after = max(after, int(last_event_id))
    return StreamingResponse(
        run_events(request, store, run_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/{run_id}/checkpoints", response_model=list[CheckpointOut])
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
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def model(
    run_id: str,
    store: StoreDep,
    cfg: ConfigDep,
    user: AdminUser,
    round_: Annotated[int | None, Query(alias="round", ge=0)] = None,
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
    responses={200: {"content": {"text/html": {}, "application/pdf": {}}}},
)
def report(
    run_id: str,
    store: StoreDep,
    cfg: ConfigDep,
    user: CurrentUser,
    format_: Annotated[Literal["html", "pdf"], Query(alias="format")] = "html",
) -> FileResponse:
    """The run's evaluation report (built on request)."""
    run = load_run(store, run_id)
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


@router.get("/{run_id}/explanations", response_model=FinalEvaluationOut)
def explanations(
    run_id: str, store: StoreDep, cfg: ConfigDep, _user: CurrentUser
) -> FinalEvaluationOut:
    """The final model on the held-out test set, computed once after the run's last round:
    calibration (ECE, reliability bins), screening operating points with their thresholds,
    and Grad-CAM heat maps of its most confident true and false positives and negatives."""
    from medfed.reports.clinical import ARTIFACT, load_final_evaluation

    run = load_run(store, run_id)
    if not (Path(cfg.home) / "artifacts" / run.id / ARTIFACT).is_file():
        if run.status in ("finished", "failed", "stopped"):
            note = "not computed: the run has no held-out test set, or ended before its last round"
        else:
            note = "computed once the run's last round has finished"
        return FinalEvaluationOut(available=False, note=note)
    evaluation = load_final_evaluation(ArtifactStore.for_config(cfg, create_key=False), run.id)
    if evaluation is None:
        return FinalEvaluationOut(available=False, note="not computed")
    return FinalEvaluationOut(available=True, **evaluation.to_dict())


@router.get("/{run_id}/sites", response_model=SitesOut)
def sites(run_id: str, store: StoreDep, _user: CurrentUser) -> SitesOut:
    """Each hospital's evaluation of the latest global model it evaluated (after the run: the
    final one) on its own held-out split, with its class balance; the worst one named."""
    from medfed.reports.sites import site_table

    run = load_run(store, run_id)
    config = run.config or {}
    names = list((config.get("data") or {}).get("class_names") or [])
    bn = str((config.get("federated") or {}).get("bn", "average"))
    return SitesOut(**site_table(store.client_results(run.id), names, bn).to_dict())


def _with_run_classes(path: Path, run: RunRecord) -> None:
    """Write the run's class names into a downloaded model file that lacks them."""
    import torch

    from medfed.models.bundle import with_class_names

    names = list((run.config.get("data") or {}).get("class_names") or [])
    content = torch.load(path, map_location="cpu", weights_only=True)
    filled = with_class_names(content, names)
    if filled is not content:
        torch.save(filled, path)
