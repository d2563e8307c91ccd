"""Password hashing with scrypt and a random salt, verified in constant time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

SCHEME = "scrypt"
N, R, P = 2**14, 8, 1
SALT_BYTES = 16
KEY_BYTES = 32
_DUMMY_HASH: list[str] = []


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=KEY_BYTES, maxmem=2**26
    )


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` with a fresh random salt."""
    salt = os.urandom(SALT_BYTES)
    return f"{SCHEME}${N}${R}${P}${_b64(salt)}${_b64(_derive(password, salt, N, R, P))}"


def verify_password(password: str, encoded: str | None) -> bool:
    """True when ``password`` matches ``encoded``; takes as long when there is no user."""
    if encoded is None:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(hash_password(os.urandom(8).hex()))
        encoded, known = _DUMMY_HASH[0], False
    else:
        known = True
    try:
        scheme, n, r, p, salt, expected = encoded.split("$")
        if scheme != SCHEME:
            return False
        actual = _derive(password, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(actual, base64.b64decode(expected)) and known
