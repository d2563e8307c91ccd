"""The FastAPI application: REST API and live events under /api, the built web UI at /."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import APIRouter, FastAPI, Request, status
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from medfed import __version__
from medfed.api import static
from medfed.api.errors import document_errors
from medfed.api.routes import (
    activity,
    auth,
    config,
    health,
    hospitals,
    run_results,
    runs,
    templates,
)
from medfed.api.security import (
    LoginThrottle,
    SecurityHeaders,
    TokenSigner,
    load_secret,
    parse_networks,
)
from medfed.api.sse import EventHub, stream_limiter
from medfed.config import MedfedConfig
from medfed.errors import FederationError, MedfedError, StoreError
from medfed.federation.queue import QueueThread, RunQueue
from medfed.store import RunStore
from medfed.store.home import private_home

log = logging.getLogger("medfed.api")
API_PREFIX = "/api"


def _api_router() -> APIRouter:
    api = APIRouter(prefix=API_PREFIX)
    for module in (health, auth, config, runs, run_results, hospitals, templates, activity):
        api.include_router(module.router)
    return api


def _status_of(exc: Exception) -> int:
    if isinstance(exc, StoreError):
        return status.HTTP_503_SERVICE_UNAVAILABLE
    if isinstance(exc, FederationError):
        return status.HTTP_409_CONFLICT
    return status.HTTP_400_BAD_REQUEST


async def _medfed_error(_request: Request, exc: Exception) -> JSONResponse:
    """A medfed error as ``{"detail": message}``: 503 if the store fails, 409 if a run cannot
    start or stop now, else 400."""
    return JSONResponse({"detail": str(exc)}, status_code=_status_of(exc))


class ApiRouting:
    """Under /api: 405 with an ``Allow`` header naming every method the API description
    gives the path (Starlette's own names only one route's), 404 naming an unknown path."""

    UNDESCRIBED = {f"{API_PREFIX}/openapi.json": {"GET"}, f"{API_PREFIX}/docs": {"GET"}}

    def __init__(self, app: ASGIApp, api: FastAPI):
        self.app = app
        self.api = api
        self._table: list[tuple[re.Pattern[str], set[str], bool]] | None = None

    def table(self) -> list[tuple[re.Pattern[str], set[str], bool]]:
        """Each API path (as a pattern) with its methods and whether it is literal (no path
        parameter), from the OpenAPI description."""
        if self._table is None:
            paths = {
                path: {method.upper() for method in operations}
                for path, operations in document_errors(self.api).get("paths", {}).items()
            }
            paths.update(self.UNDESCRIBED)
            self._table = [
                (
                    re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(p)) + "$"),
                    m,
                    "{" not in p,
                )
                for p, m in paths.items()
            ]
        return self._table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(f"{API_PREFIX}/"):
            await self.app(scope, receive, send)
            return
        allowed: set[str] = set()
        literal = False
        for pattern, methods, is_literal in self.table():
            if pattern.match(scope["path"]):
                if is_literal and not literal:  # /hospitals/ca.pem, not /hospitals/{name}
                    allowed, literal = set(), True
                if is_literal or not literal:
                    allowed |= methods
        if "GET" in allowed:
            allowed.add("HEAD")
        if scope["method"] in allowed:
            await self.app(scope, receive, send)
            return
        if not allowed:
            response = JSONResponse(
                {"detail": f"no API route {scope['path']}; see /api/docs"},
                status_code=status.HTTP_404_NOT_FOUND,
            )
        else:
            methods = ", ".join(sorted(allowed))
            response = JSONResponse(
                {"detail": f"{scope['method']} is not allowed here; use {methods}"},
                status_code=status.HTTP_405_METHOD_NOT_ALLOWED,
                headers={"Allow": methods},
            )
        await response(scope, receive, send)


def create_app(
    cfg: MedfedConfig, store: RunStore | None = None, *, run_queue: bool = True
) -> FastAPI:
    """The app for ``cfg``; opens (and later closes) a store at ``cfg.database_url`` unless
    one is given. With ``run_queue``, while the app is served it admits queued runs every
    second, and ends the runs it trains when it stops (they are marked interrupted)."""
    own_store = store is None
    private_home(cfg.home)
    run_store = store or RunStore(cfg.database_url, redis_url=cfg.database.redis_url)
    queue = RunQueue.for_platform(cfg, run_store)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        admitting = QueueThread(queue) if run_queue else None
        if admitting is not None:
            admitting.start()
        try:
            yield
        finally:
            if admitting is not None:
                admitting.stop()
                interrupted = await anyio.to_thread.run_sync(queue.interrupt_all)
                if interrupted:
                    log.warning("runs interrupted by the platform stopping: %s", interrupted)
            if own_store:
                run_store.close()

    app = FastAPI(
        title="medfed",
        version=__version__,
        description="Federated learning for medical image classification, built on Flower. "
        'Every error has the body {"detail": ...} (the ErrorOut schema).',
        openapi_url="/api/openapi.json",
        docs_url=None,  # served by static.api_docs with local assets
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.cfg = cfg
    app.state.store = run_store
    app.state.queue = queue
    app.state.signer = TokenSigner(load_secret(cfg))
    app.state.static_dir = static.STATIC_DIR
    app.state.stream_limiter = stream_limiter()
    app.state.event_hub = EventHub(run_store, app.state.stream_limiter)
    app.state.login_throttle = LoginThrottle()
    app.state.trusted_proxies = parse_networks(cfg.api.trusted_proxies)
    app.add_exception_handler(MedfedError, _medfed_error)
    app.add_middleware(ApiRouting, api=app)
    app.add_middleware(GZipMiddleware, minimum_size=1024)  # never applied to event streams
    app.add_middleware(SecurityHeaders)
    app.include_router(_api_router())
    app.include_router(static.router)
    app.openapi = lambda: document_errors(app)  # type: ignore[method-assign]
    return app
