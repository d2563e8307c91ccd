"""Session tokens: HMAC-SHA256-signed, expiring, carried as a Bearer header or a cookie."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from medfed.config import MedfedConfig
from medfed.errors import ConfigError

SESSION_COOKIE = "medfed_session"
TOKEN_LIFETIME_S = 12 * 3600
SECRET_FILE_NAME = "api_secret.key"


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
