"""Log in and out, change one's password; who am I."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request, Response, status

from medfed.api.deps import CurrentUser, SessionDep, SignerDep, StoreDep
from medfed.api.errors import FORBIDDEN, LOGGED_IN, THROTTLED, error
from medfed.api.schemas import LoginIn, LoginOut, PasswordIn, UserOut
from medfed.api.security import SESSION_COOKIE, LoginThrottle, TokenSigner, client_address
from medfed.store import RunStore, UserRecord

router = APIRouter(prefix="/auth", tags=["auth"])


def _checked_password(
    request: Request, store: RunStore, username: str, password: str
) -> UserRecord | None:
    """The user when ``password`` is theirs, None when not; 429 with Retry-After when too many
    wrong passwords came for the user or from the client's address. The attempt is counted
    before the password is checked, so parallel guesses meet the limit too."""
    throttle: LoginThrottle = request.app.state.login_throttle
    address = client_address(request, request.app.state.trusted_proxies)
    wait, which = throttle.reserve(address, username)
    if wait > 0:
        store.log_activity(None, "login.throttled", username, {"address": address, "limit": which})
        seconds = math.ceil(wait)
        source = f"from {address}" if which == "address" else f"for {username!r}"
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many wrong passwords {source}: try again in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )
    user = store.verify_user(username, password)
    if user is None:
        store.log_activity(None, "login.failed", username, {"address": address})
        return None
    throttle.succeeded(address, username)
    return user


def _start_session(
    request: Request, response: Response, signer: TokenSigner, user: UserRecord
) -> LoginOut:
    token = signer.issue(user.name, user.role, user.token_version)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=signer.lifetime_s,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return LoginOut(token=token, user=UserOut(name=user.name, role=user.role))


@router.post(
    "/login",
    response_model=LoginOut,
    responses={status.HTTP_401_UNAUTHORIZED: error("wrong user name or password"), **THROTTLED},
)
def login(
    body: LoginIn, request: Request, response: Response, store: StoreDep, signer: SignerDep
) -> LoginOut:
    """Check the user's password; return a token and set it as the session cookie.

    After too many wrong passwords for a user, or from one address, answers 429 with
    Retry-After.
    """
    user = _checked_password(request, store, body.username, body.password)
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong user name or password")
    store.log_activity(user.name, "login", user.name)
    return _start_session(request, response, signer, user)


@router.post("/logout", responses={**LOGGED_IN, **FORBIDDEN})
def logout(session: SessionDep, response: Response, store: StoreDep) -> dict[str, str]:
    """End the session: its token stops working (also after a restart) and the cookie is
    cleared."""
    store.revoke_token(
        session.token_id, session.user, datetime.fromtimestamp(session.expires_at, UTC)
    )
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return {"status": "logged out"}


@router.post(
    "/password",
    response_model=LoginOut,
    responses={
        **LOGGED_IN,
        status.HTTP_403_FORBIDDEN: error(
            "the current password is wrong, or a cookie-signed change from another site"
        ),
        **THROTTLED,
    },
)
def change_password(
    body: PasswordIn,
    request: Request,
    response: Response,
    user: CurrentUser,
    store: StoreDep,
    signer: SignerDep,
) -> LoginOut:
    """Change the logged-in user's password (the current one is asked for again). Every
    earlier session of the user ends; the new token returned (and set as the cookie) works."""
    if _checked_password(request, store, user.name, body.current_password) is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the current password is wrong")
    changed = store.set_password(user.name, body.new_password)
    store.log_activity(user.name, "user.password", user.name)
    return _start_session(request, response, signer, changed)


@router.get("/me", response_model=UserOut, responses=LOGGED_IN)
def me(user: CurrentUser) -> UserOut:
    """The logged-in user."""
    return user
