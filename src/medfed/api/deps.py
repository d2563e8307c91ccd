"""Dependencies injected into the routes: the store, the settings and the current user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from medfed.api.schemas import UserOut
from medfed.api.security import (
    SAFE_METHODS,
    SESSION_COOKIE,
    InvalidToken,
    Session,
    TokenSigner,
    same_origin,
)
from medfed.config import MedfedConfig
from medfed.federation.queue import RunQueue
from medfed.store import Role, RunStore

bearer_scheme = HTTPBearer(auto_error=False, description="token from POST /api/auth/login")
cookie_scheme = APIKeyCookie(name=SESSION_COOKIE, auto_error=False)


def get_store(request: Request) -> RunStore:
    """The run store the app was created with."""
    return request.app.state.store


def get_config(request: Request) -> MedfedConfig:
    """The server's configuration (also the defaults every posted run config is merged over)."""
    return request.app.state.cfg


def get_queue(request: Request) -> RunQueue:
    """The platform's run queue."""
    return request.app.state.queue


def get_signer(request: Request) -> TokenSigner:
    """The token signer holding the server secret."""
    return request.app.state.signer


StoreDep = Annotated[RunStore, Depends(get_store)]
ConfigDep = Annotated[MedfedConfig, Depends(get_config)]
SignerDep = Annotated[TokenSigner, Depends(get_signer)]
QueueDep = Annotated[RunQueue, Depends(get_queue)]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def current_session(
    request: Request,
    signer: SignerDep,
    store: StoreDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    cookie: Annotated[str | None, Depends(cookie_scheme)],
) -> Session:
    """The session of the request's Bearer token, or else of its session cookie; 401 if none
    or if it was ended by a logout.

    A POST (PUT, PATCH, DELETE) authenticated by the cookie alone must come from this site's
    own pages (see :func:`same_origin`), or it is refused with 403: another site could make
    the browser send the cookie along.
    """
    token = bearer.credentials if bearer is not None else cookie
    if not token:
        raise _unauthorized("not authenticated: log in at POST /api/auth/login")
    try:
        session = signer.verify(token)
    except InvalidToken as exc:
        raise _unauthorized(str(exc)) from None
    user, revoked = store.session_user(session.user, session.token_id)
    if revoked:
        raise _unauthorized("session ended by logout: log in again")
    if bearer is None and request.method not in SAFE_METHODS and not same_origin(request):
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail="cross-site request refused: a request signed in by the session cookie "
            "must come from the dashboard (same Origin or Sec-Fetch-Site: same-origin, or an "
            "X-Requested-With header); API clients send the token as Authorization: Bearer",
        )
    request.state.user = user  # as the store knows them now (require_user checks it)
    return session


SessionDep = Annotated[Session, Depends(current_session)]


def require_user(request: Request, session: SessionDep) -> UserOut:
    """The logged-in user as the store knows them now (a deleted user's token stops working)."""
    user = request.state.user
    if user is None:
        raise _unauthorized(f"user {session.user!r} no longer exists")
    if session.version != user.token_version:
        raise _unauthorized("session ended by a password change: log in again")
    return UserOut(name=user.name, role=user.role)


CurrentUser = Annotated[UserOut, Depends(require_user)]


def require_admin(user: CurrentUser) -> UserOut:
    """The logged-in user if they are an admin; 403 otherwise."""
    if user.role != Role.ADMIN:
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail=f"user {user.name!r} has role {user.role!r}; this needs role '{Role.ADMIN}'",
        )
    return user


AdminUser = Annotated[UserOut, Depends(require_admin)]
