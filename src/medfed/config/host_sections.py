"""The platform host's own sections: database, deployment, platform and API (never stored
with a run)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from medfed.config.base import Section

MIN_SECRET_KEY_BYTES = 32


class MysqlConfig(Section):
    host: str = "localhost"
    port: int = 3306
    username: str = "root"
    password: str = ""
    database: str = "medfed"


class DatabaseConfig(Section):
    backend: Literal["sqlite", "mysql", "postgresql"] = "sqlite"
    url: str | None = Field(default=None, description="SQLAlchemy URL; overrides backend")
    mysql: MysqlConfig = MysqlConfig()
    redis_url: str | None = Field(default=None, description="event bus; default in-database")

    def resolved_url(self, home: Path) -> str:
        """The SQLAlchemy URL this configuration points at."""
        if self.url:
            return self.url
        if self.backend == "mysql":
            m = self.mysql
            return f"mysql+pymysql://{m.username}:{m.password}@{m.host}:{m.port}/{m.database}"
        if self.backend == "postgresql":
            raise ValueError("database.backend=postgresql needs database.url")
        return f"sqlite:///{(home / 'medfed.db').resolve()}"


class DeploymentConfig(Section):
    """Real hospitals: TLS, hospital keys and the SuperLink's loopback port (never stored with
    a run, never sent to hospitals)."""

    insecure: bool = Field(
        default=False,
        description="plain HTTP between hospitals and the platform (warns at every start)",
    )
    certs_dir: Path | None = Field(
        default=None, description="platform: CA and server certificate; default HOME/certs"
    )
    ca_path: Path | None = Field(
        default=None,
        description="hospital: the platform's CA certificate (ca.pem) the server is checked "
        "against; default CERTS_DIR/ca.pem",
    )
    hospital_key: Path | None = Field(
        default=None, description="hospital: its private key from `medfed hospital add`"
    )
    superlink_port: int = Field(
        default=9093,
        ge=1,
        le=65535,
        description="platform: loopback port of Flower's SuperLink (control and runtime API); "
        "hospitals reach only its Fleet API, through federated.server_address",
    )


class PlatformConfig(Section):
    """What the platform host may run at once (never stored with a run)."""

    max_concurrent_runs: int | None = Field(
        default=None,
        ge=0,
        description="simulated runs trained at once; the others wait in the run queue. Default: "
        "one per 2 CPU cores and 4 GiB of memory (at least 1); 0 holds every run in the queue",
    )
    min_free_memory_mb: int = Field(
        default=1024,
        ge=0,
        description="a queued simulated run starts only while the host has this much memory "
        "available (MemAvailable)",
    )


class ApiConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    secret_key: str | None = Field(
        default=None,
        description=f"signs login tokens; at least {MIN_SECRET_KEY_BYTES} bytes. Default: a "
        "random key kept in HOME/api_secret.key",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For "
        "names the client; from any other peer the header is ignored",
    )

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode("utf-8")) < MIN_SECRET_KEY_BYTES:
            raise ValueError(
                f"must be at least {MIN_SECRET_KEY_BYTES} bytes, it has "
                f'{len(value.encode("utf-8"))}; make one with `python -c "import secrets; '
                'print(secrets.token_hex(32))"` or leave it unset (a random key is kept in '
                "HOME/api_secret.key)"
            )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network; use e.g. 127.0.0.1 or 10.0.0.0/8"
                ) from None
        return value
