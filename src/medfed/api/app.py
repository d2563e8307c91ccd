"""The FastAPI application: REST API and live events under /api, the built web UI at /."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request, status
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse

from medfed import __version__
from medfed.api import static
from medfed.api.routes import audit, auth, config, health, hospitals, runs, templates
from medfed.api.security import (
    LoginThrottle,
    SecurityHeaders,
    TokenSigner,
    load_secret,
    parse_networks,
)
from medfed.api.sse import stream_limiter
from medfed.config import MedfedConfig
from medfed.errors import FederationError, MedfedError, StoreError
from medfed.store import RunStore
from medfed.store.home import private_home


def _api_router() -> APIRouter:
    api = APIRouter(prefix="/api")
    for module in (health, auth, config, runs, hospitals, templates, audit):
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


def create_app(cfg: MedfedConfig, store: RunStore | None = None) -> FastAPI:
    """The app for ``cfg``; opens (and later closes) a store at ``cfg.database_url`` unless
    one is given."""
    own_store = store is None
    private_home(cfg.home)
    run_store = store or RunStore(cfg.database_url, redis_url=cfg.database.redis_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if own_store:
            run_store.close()

    app = FastAPI(
        title="medfed",
        version=__version__,
        description="Federated learning for medical image classification, built on Flower.",
        openapi_url="/api/openapi.json",
        docs_url=None,  # served by static.api_docs with local assets
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.cfg = cfg
    app.state.store = run_store
    app.state.signer = TokenSigner(load_secret(cfg))
    app.state.static_dir = static.STATIC_DIR
    app.state.stream_limiter = stream_limiter()
    app.state.login_throttle = LoginThrottle()
    app.state.trusted_proxies = parse_networks(cfg.api.trusted_proxies)
    app.add_exception_handler(MedfedError, _medfed_error)
    app.add_middleware(GZipMiddleware, minimum_size=1024)  # never applied to event streams
    app.add_middleware(SecurityHeaders)
    app.include_router(_api_router())
    app.include_router(static.router)
    return app
