"""Login security: signed session tokens, login throttling, the client's address behind
trusted proxies, same-origin checks for cookie sessions, and security headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from medfed.config import MIN_SECRET_KEY_BYTES, MedfedConfig
from medfed.errors import ConfigError
from medfed.store.home import create_secret_file, tighten

SESSION_COOKIE = "medfed_session"
TOKEN_LIFETIME_S = 12 * 3600
SECRET_FILE_NAME = "api_secret.key"
LOGIN_MAX_FAILURES = 5  # per user from one address
LOGIN_MAX_FAILURES_PER_ADDRESS = 20  # across user names (password spraying)
LOGIN_MAX_FAILURES_PER_USER = 20  # across addresses
LOGIN_WINDOW_S = 300.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADERS = ("x-requested-with", "x-csrf-token")

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'{scripts}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


class InvalidToken(Exception):
    """A token is malformed, forged or expired (the message says which)."""


@dataclass(frozen=True)
class Session:
    """Who a valid token speaks for."""

    user: str
    role: str
    token_id: str
    expires_at: float
    version: int = 0


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
        create_secret_file(path, secrets.token_hex(32).encode("ascii"))
    tighten(path)
    key = path.read_bytes().strip()
    if len(key) < MIN_SECRET_KEY_BYTES:
        raise ConfigError(
            f"API key file {path} holds {len(key)} bytes, fewer than {MIN_SECRET_KEY_BYTES}: "
            "delete it (a new one is made) or set api.secret_key"
        )
    return key


class TokenSigner:
    """Issues and checks session tokens (HMAC-SHA256). Whether a valid token was ended by a
    logout or a password change is the store's to say (see ``api.deps``)."""

    def __init__(self, secret: bytes, lifetime_s: int = TOKEN_LIFETIME_S):
        self._secret = secret
        self.lifetime_s = lifetime_s

    def _sign(self, body: str) -> str:
        return _b64encode(hmac.new(self._secret, body.encode("ascii"), hashlib.sha256).digest())

    def issue(self, user: str, role: str, version: int = 0) -> str:
        """A token for ``user`` with ``role`` and the user's token ``version``, valid for
        ``lifetime_s`` seconds."""
        claims = {
            "sub": user,
            "role": role,
            "jti": secrets.token_hex(16),
            "exp": int(time.time()) + self.lifetime_s,
            "ver": int(version),
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
                version=int(claims.get("ver", 0)),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InvalidToken("malformed token") from None
        if session.expires_at <= time.time():
            raise InvalidToken("session expired: log in again")
        return session


Key = tuple[str, str]


class LoginThrottle:
    """Slows password guessing: an attempt is counted *before* its password is checked, so
    parallel guesses cannot slip past the limit.

    Within ``window_s`` seconds at most ``max_failures`` attempts for one user from one
    address, ``max_per_address`` from one address whatever the user names (password spraying)
    and ``max_per_user`` for one user whatever the address may fail; beyond that attempts are
    refused until the oldest counted one is ``window_s`` old. A right password takes its own
    attempt back and clears that user's count from that address.

    Kept in memory, per API server process: it slows guessing, it is not an account lock.
    """

    def __init__(
        self,
        max_failures: int = LOGIN_MAX_FAILURES,
        window_s: float = LOGIN_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_per_address: int = LOGIN_MAX_FAILURES_PER_ADDRESS,
        max_per_user: int = LOGIN_MAX_FAILURES_PER_USER,
    ):
        self.max_failures = max_failures
        self.max_per_address = max_per_address
        self.max_per_user = max_per_user
        self.window_s = window_s
        self.clock = clock
        self._attempts: dict[Key, list[float]] = {}
        self._lock = threading.Lock()

    def _limits(self, address: str, user: str) -> list[tuple[Key, int]]:
        return [
            (("pair", f"{address}\0{user}"), self.max_failures),
            (("address", address), self.max_per_address),
            (("user", user), self.max_per_user),
        ]

    def _recent(self, key: Key, now: float) -> list[float]:
        times = [t for t in self._attempts.get(key, []) if now - t < self.window_s]
        if times:
            self._attempts[key] = times
        else:
            self._attempts.pop(key, None)
        return times

    def _wait(self, address: str, user: str, now: float) -> tuple[float, str]:
        wait, which = 0.0, ""
        for key, limit in self._limits(address, user):
            times = self._recent(key, now)
            if len(times) >= limit:
                until = times[-limit] + self.window_s - now
                if until > wait:
                    wait, which = until, key[0]
        return wait, which

    def reserve(self, address: str, user: str) -> tuple[float, str]:
        """Count an attempt of ``user`` from ``address`` now, before its password is checked.

        Returns ``(0, "")`` when it may go ahead; else the seconds to wait and which limit
        was hit (``"pair"``, ``"address"`` or ``"user"``), and nothing is counted.
        """
        with self._lock:
            now = self.clock()
            wait, which = self._wait(address, user, now)
            if wait > 0:
                return wait, which
            for key, _limit in self._limits(address, user):
                self._attempts.setdefault(key, []).append(now)
            return 0.0, ""

    def retry_after(self, address: str, user: str) -> float:
        """Seconds until ``user`` may try again from ``address``; 0 when now."""
        with self._lock:
            return self._wait(address, user, self.clock())[0]

    def succeeded(self, address: str, user: str) -> None:
        """The password was right: take this attempt back and clear the user's count from
        this address."""
        with self._lock:
            now = self.clock()
            limits = self._limits(address, user)
            self._attempts.pop(limits[0][0], None)
            for key, _limit in limits[1:]:
                times = self._recent(key, now)
                if times:
                    times.pop()
                    if not times:
                        self._attempts.pop(key, None)


def parse_networks(
    entries: Iterable[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """IP networks of ``api.trusted_proxies`` (validated by the config)."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def _trusted(address: str, proxies: tuple) -> bool:
    parsed = _address(address)
    return parsed is not None and any(parsed in network for network in proxies)


def client_address(request: Request, proxies: tuple = ()) -> str:
    """The client's address: the direct peer, or, when the peer is a trusted proxy, the
    nearest address in ``X-Forwarded-For`` that is not itself a trusted proxy."""
    peer = request.client.host if request.client else "-"
    if not proxies or not _trusted(peer, proxies):
        return peer
    forwarded = ",".join(request.headers.getlist("x-forwarded-for"))
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if _address(hop) is None:
            return peer  # a malformed header names no one
        if not _trusted(hop, proxies):
            return str(_address(hop))
    return str(_address(hops[0])) if hops else peer


def same_origin(request: Request) -> bool:
    """Whether an unsafe request comes from this site's own pages: a CSRF header (which
    other sites cannot send without CORS, never granted here), ``Sec-Fetch-Site:
    same-origin``, or an ``Origin`` naming the host the request was sent to."""
    headers = request.headers
    if any(headers.get(name) for name in CSRF_HEADERS):
        return True
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site:
        return fetch_site.lower() == "same-origin"
    origin = headers.get("origin")
    if not origin or origin == "null":
        return False
    host = headers.get("host", "")
    return bool(host) and urlsplit(origin).netloc.lower() == host.lower()


_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def inline_script_hashes(html: bytes) -> str:
    """CSP sources (``'sha256-…'``) allowing exactly the inline scripts of ``html``."""
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )


def content_security_policy(script_sources: str = "") -> str:
    """The Content-Security-Policy: the app's own files only; extra script sources when
    given (the API docs page's inline start-up script)."""
    return CONTENT_SECURITY_POLICY.format(scripts=f" {script_sources}" if script_sources else "")


class SecurityHeaders:
    """ASGI middleware adding CSP, X-Frame-Options, nosniff and Referrer-Policy to every
    response (a route may set its own CSP); streams pass through untouched otherwise."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.csp = content_security_policy()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
                if "content-security-policy" not in headers:
                    headers["content-security-policy"] = self.csp
            await send(message)

        await self.app(scope, receive, send_with_headers)
