"""Session tokens: HMAC-SHA256-signed, expiring, carried as a Bearer header or a cookie."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medfed.config import MedfedConfig
from medfed.errors import ConfigError

SESSION_COOKIE = "medfed_session"
TOKEN_LIFETIME_S = 12 * 3600
SECRET_FILE_NAME = "api_secret.key"
LOGIN_MAX_FAILURES = 5
LOGIN_WINDOW_S = 300.0


class InvalidToken(Exception):
    """A token is malformed, forged, revoked or expired (the message says which)."""


@dataclass(frozen=True)
class Session:
    """Who a valid token speaks for."""

    user: str
    role: str
    token_id: str
    expires_at: float


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_secret(cfg: MedfedConfig) -> bytes:
    """The signing key: ``api.secret_key`` if set, else a random key kept in HOME (mode 0600).

    A new key file is written privately and linked into place, so servers starting together
    agree on one key and never read a half-written one.
    """
    if cfg.api.secret_key:
        return cfg.api.secret_key.encode("utf-8")
    path = Path(cfg.home) / SECRET_FILE_NAME
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_hex(32).encode("ascii"))
        try:
            os.link(partial, path)
        except FileExistsError:
            pass
        finally:
            partial.unlink()
    key = path.read_bytes().strip()
    if not key:
        raise ConfigError(
            f"API key file {path} is empty: delete it (a new one is made) or set api.secret_key"
        )
    return key


class TokenSigner:
    """Issues and checks session tokens; remembers tokens revoked by logout until they expire."""

    def __init__(self, secret: bytes, lifetime_s: int = TOKEN_LIFETIME_S):
        self._secret = secret
        self.lifetime_s = lifetime_s
        self._revoked: dict[str, float] = {}

    def _sign(self, body: str) -> str:
        return _b64encode(hmac.new(self._secret, body.encode("ascii"), hashlib.sha256).digest())

    def issue(self, user: str, role: str) -> str:
        """A token for ``user`` with ``role``, valid for ``lifetime_s`` seconds."""
        claims = {
            "sub": user,
            "role": role,
            "jti": secrets.token_hex(8),
            "exp": int(time.time()) + self.lifetime_s,
        }
        body = _b64encode(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
        return f"{body}.{self._sign(body)}"

    def verify(self, token: str) -> Session:
        """The session a token carries, or :class:`InvalidToken`."""
        body, _, signature = token.partition(".")
        if not body or not signature:
            raise InvalidToken("malformed token")
        if not hmac.compare_digest(signature, self._sign(body)):
            raise InvalidToken("invalid token signature")
        try:
            claims = json.loads(_b64decode(body))
            session = Session(
                user=str(claims["sub"]),
                role=str(claims["role"]),
                token_id=str(claims["jti"]),
                expires_at=float(claims["exp"]),
            )
        except (ValueError, KeyError, TypeError):
            raise InvalidToken("malformed token") from None
        if session.expires_at <= time.time():
            raise InvalidToken("session expired: log in again")
        if session.token_id in self._revoked:
            raise InvalidToken("session ended by logout: log in again")
        return session

    def revoke(self, session: Session) -> None:
        """Refuse this token from now on (until it would have expired anyway)."""
        now = time.time()
        self._revoked = {jti: exp for jti, exp in self._revoked.items() if exp > now}
        self._revoked[session.token_id] = session.expires_at


class LoginThrottle:
    """Refuses logins for a (client address, user name) after ``max_failures`` wrong passwords
    within ``window_s`` seconds, until the oldest of them is that old; a success clears the count.

    Kept in memory, per API server process: it slows password guessing, it is not an account lock.
    """

    def __init__(
        self,
        max_failures: int = LOGIN_MAX_FAILURES,
        window_s: float = LOGIN_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> list[float]:
        times = [t for t in self._failures.get(key, []) if now - t < self.window_s]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def retry_after(self, key: tuple[str, str]) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        with self._lock:
            now = self.clock()
            times = self._recent(key, now)
            if len(times) < self.max_failures:
                return 0.0
            return times[-self.max_failures] + self.window_s - now

    def failed(self, key: tuple[str, str]) -> None:
        with self._lock:
            now = self.clock()
            self._failures[key] = [*self._recent(key, now), now]

    def succeeded(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._failures.pop(key, None)
