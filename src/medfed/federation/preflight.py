"""A hospital's check before it joins: the platform answers, its certificate is the one the CA
file vouches for, and the platform knows this hospital's key (and by which name).

Flower's SuperNode retries a failing connection forever and reports TLS problems as long
tracebacks; this check turns each into one line that says what to do.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import httpx

from medfed.errors import FederationError
from medfed.federation.certs import describe
from medfed.federation.gateway import HELLO_PATH
from medfed.federation.hospital_node import HospitalLink
from medfed.federation.keys import load_private_key, signed_headers
from medfed.federation.superlink import split_address

TIMEOUT_S = 10.0
EXPIRED, HOSTNAME_MISMATCH = 10, 62  # OpenSSL X509_V_ERR_* codes


def check_platform(link: HospitalLink) -> str | None:
    """The name the platform registered this hospital under (None over ``--insecure``)."""
    host, port = split_address(link.server_address)
    where = f"{host}:{port}"
    if link.ca_path is None:
        return _hello(f"http://{where}", False, {}, where)
    ca_path = Path(link.ca_path)
    if not ca_path.is_file():
        raise FederationError(
            f"no CA certificate at {ca_path}: copy ca.pem from the platform (made there by "
            "`medfed certs init --host NAME`) and pass --ca PATH"
        )
    key = load_private_key(Path(link.key_path))  # type: ignore[arg-type]
    try:
        context = ssl.create_default_context(cafile=str(ca_path))
    except ssl.SSLError:
        raise FederationError(f"{ca_path} is not a PEM CA certificate: copy ca.pem again") from None
    _handshake(host, port, context, ca_path)
    return _hello(f"https://{where}", context, signed_headers(key), where)


def _connect(host: str, port: int) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=TIMEOUT_S)
    except OSError as exc:
        raise FederationError(
            f"nothing answers at {host}:{port} ({exc.strerror or exc}): is `medfed server` "
            "running there, and does the network let this machine reach that port?"
        ) from None


def _handshake(host: str, port: int, context: ssl.SSLContext, ca_path: Path) -> None:
    with _connect(host, port) as sock:
        try:
            context.wrap_socket(sock, server_hostname=host).close()
            return
        except ssl.SSLCertVerificationError as exc:
            error = exc
        except (ssl.SSLError, ConnectionError) as exc:
            raise FederationError(
                f"the platform at {host}:{port} does not answer with TLS ({_reason(exc)}): "
                "if it was started with --insecure, start this hospital with --insecure too"
            ) from None
    info = describe(_peer_certificate(host, port))
    if error.verify_code == EXPIRED:
        raise FederationError(
            f"the platform's certificate expired on {info.not_after:%Y-%m-%d}: ask the platform "
            "to run `medfed certs init --force --host ...` and send the new ca.pem"
        )
    if error.verify_code == HOSTNAME_MISMATCH:
        raise FederationError(
            f"the platform's certificate is not valid for {host!r} (it names "
            f"{', '.join(info.hosts) or 'no host'}): connect with one of those names, or ask the "
            f"platform to run `medfed certs init --force --host {host}`"
        )
    raise FederationError(
        f"the platform at {host}:{port} has a certificate that {ca_path} does not vouch for "
        f"({error.verify_message}): get the platform's current ca.pem"
    )


def _peer_certificate(host: str, port: int) -> bytes:
    """The server's certificate without checking it (only to explain why it was refused)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with _connect(host, port) as sock, context.wrap_socket(sock, server_hostname=host) as tls:
        return tls.getpeercert(binary_form=True) or b""


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or str(exc) or type(exc).__name__


def _hello(base: str, verify: ssl.SSLContext | bool, headers: dict, where: str) -> str | None:
    try:
        reply = httpx.post(
            base + HELLO_PATH, headers=headers, verify=verify, timeout=TIMEOUT_S, trust_env=False
        )
    except httpx.HTTPError as exc:
        hint = "it expects TLS: drop --insecure and pass --ca" if not verify else str(exc)
        raise FederationError(f"the platform at {where} did not answer the check: {hint}") from None
    if reply.status_code == 404:
        raise FederationError(f"{where} is not a medfed platform (no {HELLO_PATH})")
    try:
        body = reply.json()
    except ValueError:
        body = {"detail": reply.text[:200]}
    if reply.status_code != 200:
        raise FederationError(f"the platform at {where} refused this hospital: {body['detail']}")
    return body.get("hospital")
