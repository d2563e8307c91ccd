"""Log in and out; who am I."""

from __future__ import annotations

import math

from fastapi import APIRouter, HTTPException, Request, Response, status

from medfed.api.deps import CurrentUser, SessionDep, SignerDep, StoreDep
from medfed.api.schemas import LoginIn, LoginOut, UserOut
from medfed.api.security import SESSION_COOKIE, LoginThrottle

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login", response_model=LoginOut)
def login(
    body: LoginIn, request: Request, response: Response, store: StoreDep, signer: SignerDep
) -> LoginOut:
    """Check the user's password; return a token and set it as the session cookie.

    After too many wrong passwords from one address for one user, answers 429 with Retry-After.
    """
    throttle: LoginThrottle = request.app.state.login_throttle
    key = (request.client.host if request.client else "-", body.username)
    wait = throttle.retry_after(key)
    if wait > 0:
        store.audit(None, "login.throttled", body.username)
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many wrong passwords for {body.username!r}: try again in {math.ceil(wait)} s",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    user = store.verify_user(body.username, body.password)
    if user is None:
        throttle.failed(key)
        store.audit(None, "login.failed", body.username)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong user name or password")
    throttle.succeeded(key)
    token = signer.issue(user.name, user.role)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=signer.lifetime_s,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    store.audit(user.name, "login", user.name)
    return LoginOut(token=token, user=UserOut(name=user.name, role=user.role))


@router.post("/logout")
def logout(session: SessionDep, response: Response, signer: SignerDep) -> dict[str, str]:
    """End the session: its token stops working and the cookie is cleared."""
    signer.revoke(session)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return {"status": "logged out"}


@router.get("/me", response_model=UserOut)
def me(user: CurrentUser) -> UserOut:
    """The logged-in user."""
    return user
