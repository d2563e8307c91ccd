"""Hospital keys: ECDSA P-384 pairs, their OpenSSH form and fingerprint, signed timestamps.

A hospital proves who it is with the private key the platform made for it (`medfed hospital
add`); Flower's SuperNode signs the current time with it on every Fleet call, and the platform
knows the hospital by the public key it registered.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from medfed.errors import ConfigError

TIMESTAMP_TOLERANCE_S = 300  # as Flower's SuperLink (flwr.common.constant)
CLOCK_SKEW_S = 5


def new_key_pair() -> tuple[bytes, str]:
    """A fresh P-384 key pair: the private key (OpenSSH PEM) and the public key (OpenSSH line)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return private, _ssh_line(key.public_key())


def _ssh_line(public_key: ec.EllipticCurvePublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode("ascii")


def ssh_public_key(pem: bytes) -> str:
    """The OpenSSH line of a PEM (SubjectPublicKeyInfo) EC public key; ValueError otherwise."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an elliptic-curve public key")
    return _ssh_line(key)


def pem_public_key(ssh_line: str) -> bytes:
    """The PEM form Flower's SuperLink registers, from an OpenSSH public key line."""
    key = serialization.load_ssh_public_key(ssh_line.encode("ascii"))
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def fingerprint(ssh_line: str) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it."""
    blob = base64.b64decode(ssh_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A hospital's private key file, or a ConfigError saying what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"no hospital key at {path}: the platform makes it with `medfed hospital add NAME` "
            "(or the dashboard's Hospitals page); copy it here and pass --key"
        )
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), None)
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path} is not a hospital key made by `medfed hospital add`")
    if path.stat().st_mode & 0o077:
        raise ConfigError(
            f"hospital key {path} can be read by other users: `chmod 600 {path}` first"
        )
    return key


def signed_headers(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """The identity headers Flower's SuperNode sends: public key, timestamp, its signature."""
    timestamp = dt.datetime.now(dt.UTC).isoformat()
    signature = key.sign(timestamp.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "flwr-public-key": base64.b64encode(public).decode("ascii"),
        "flwr-timestamp": timestamp,
        "flwr-signature": base64.b64encode(signature).decode("ascii"),
    }


def verify_signed_timestamp(public_b64: str, timestamp: str, signature_b64: str) -> bool:
    """Whether ``signature`` is the key's signature of a recent ``timestamp``."""
    try:
        key = serialization.load_pem_public_key(base64.b64decode(public_b64, validate=True))
        signature = base64.b64decode(signature_b64, validate=True)
        age = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(timestamp)).total_seconds()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        if not -CLOCK_SKEW_S < age < TIMESTAMP_TOLERANCE_S + CLOCK_SKEW_S:
            return False
        key.verify(signature, timestamp.encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm, InvalidSignature):
        return False
    return True
