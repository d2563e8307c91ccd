"""The platform's TLS certificates: a CA of its own and a server certificate it signs.

``medfed certs init --host NAME`` writes them under ``HOME/certs`` (keys 0600, folder 0700).
Hospitals receive ``ca.pem`` and check the platform against it; the server certificate also
names the loopback addresses, where the SuperLink itself listens.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from medfed.errors import ConfigError, FederationError

CA_DAYS = 3650
SERVER_DAYS = 825
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


@dataclass(frozen=True)
class CertPaths:
    """Where the platform's certificates live."""

    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    def exist(self) -> bool:
        return all(p.is_file() for p in (self.ca_cert, self.server_cert, self.server_key))

    def require(self) -> CertPaths:
        """These paths, or a FederationError saying how to make the certificates."""
        if not self.exist():
            raise FederationError(
                f"no TLS certificate in {self.folder} yet: run `medfed certs init --host "
                "NAME_OR_IP` on the platform (or start with --insecure for plain HTTP)"
            )
        return self


@dataclass(frozen=True)
class CertInfo:
    """What a certificate says about itself."""

    subject: str
    hosts: tuple[str, ...]
    not_after: dt.datetime
    fingerprint: str


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600), replacing any old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "medfed"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _subject_alt_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, *LOOPBACK_NAMES]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _check_host(host: str) -> str:
    host = host.strip().strip("[]")
    if _is_ip(host) or HOST_NAME.fullmatch(host):
        return host
    raise ConfigError(f"--host {host!r}: give a host name or an IP address, e.g. 10.0.0.5")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def init_certs(folder: Path, hosts: list[str], *, force: bool = False) -> CertPaths:
    """A new CA and a server certificate for ``hosts`` (plus loopback) in ``folder``."""
    paths = CertPaths(Path(folder))
    if paths.exist() and not force:
        raise FederationError(
            f"certificates already exist in {paths.folder}: pass --force to replace them "
            "(every hospital then needs the new ca.pem)"
        )
    if not hosts:
        raise ConfigError("give at least one --host: the name or IP hospitals use to connect")
    hosts = [_check_host(h) for h in hosts]
    paths.folder.mkdir(parents=True, exist_ok=True)
    paths.folder.chmod(0o700)
    now = dt.datetime.now(dt.UTC)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = _name("medfed platform CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_subject_alt_names(hosts)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA384())
    )
    write_private(paths.ca_key, _pem_key(ca_key))
    write_private(paths.server_key, _pem_key(server_key))
    paths.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    return paths


def describe(cert_pem: bytes) -> CertInfo:
    """Subject, host names, expiry and SHA-256 fingerprint of a PEM (or DER) certificate."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        cert = x509.load_der_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = tuple(
            [*san.get_values_for_type(x509.DNSName)]
            + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        )
    except x509.ExtensionNotFound:
        hosts = ()
    digest = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return CertInfo(cert.subject.rfc4514_string(), hosts, cert.not_valid_after_utc, digest)
