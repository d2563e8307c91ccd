"""Hospitals: the registered ones (their keys) and every one that has taken part in a run.

Admins add a hospital (the platform makes its key pair; the private key is shown once, to be
handed over) and remove one (its key is refused from then on; its results stay). Every add
and remove is written to the activity log.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import FileResponse

from medfed.api.deps import AdminUser, ConfigDep, CurrentUser, StoreDep
from medfed.api.errors import ADMIN_ONLY, LOGGED_IN, error
from medfed.api.schemas import HospitalAdded, HospitalIn, HospitalOut
from medfed.config import MedfedConfig
from medfed.errors import ConfigError, FederationError, StoreError
from medfed.store import HospitalRecord
from medfed.store.models import utcnow

router = APIRouter(prefix="/hospitals", tags=["hospitals"])
log = logging.getLogger(__name__)

ONLINE_WINDOW = timedelta(minutes=5)
WILDCARD_HOSTS = {"0.0.0.0", "::", "[::]", ""}

NOT_FOUND = {status.HTTP_404_NOT_FOUND: error("no hospital of that name")}
CONFLICT_ADD = {status.HTTP_409_CONFLICT: error("a hospital of that name is registered")}
CONFLICT_REMOVE = {status.HTTP_409_CONFLICT: error("the hospital is not registered")}
SUPERLINK_REFUSED = {status.HTTP_502_BAD_GATEWAY: error("the running SuperLink refused the change")}


def hospital_status(last_seen: datetime | None, now: datetime, connected: bool = False) -> str:
    """online: connected to the SuperLink now, or seen in the last 5 minutes; offline: seen
    before; never: not yet."""
    if connected:
        return "online"
    if last_seen is None:
        return "never"
    return "online" if now - last_seen <= ONLINE_WINDOW else "offline"


def hospital_out(
    record: HospitalRecord, now: datetime | None = None, connected: bool = False
) -> HospitalOut:
    return HospitalOut(
        name=record.name,
        fingerprint=record.fingerprint,
        registered=record.registered,
        registered_at=record.registered_at,
        removed_at=record.removed_at,
        last_seen=record.last_seen,
        status=hospital_status(record.last_seen, now or utcnow(), connected),
        runs=list(record.run_ids),
    )


def connected_nodes(cfg: MedfedConfig) -> set[int]:
    """Flower node ids the platform's SuperLink reports online (none when it is not running
    or does not answer: the list then goes by when each hospital was last seen)."""
    from medfed.federation import hospitals as registry

    if not registry.superlink_listening(cfg):
        return set()
    ca_path = None if cfg.deployment.insecure else cfg.certs_dir / "ca.pem"
    try:
        client = registry.control_client(cfg.deployment.superlink_port, ca_path)
        try:
            statuses = registry.node_statuses(client)
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - a listing never fails for the SuperLink's sake
        log.warning("the SuperLink did not list its nodes", exc_info=True)
        return set()
    return {node for node, node_status in statuses.items() if node_status == "online"}


def _find(store: StoreDep, name: str) -> HospitalRecord | None:
    return next((h for h in store.list_hospitals() if h.name == name), None)


def client_command(cfg: MedfedConfig, request: Request, key_file: str) -> str:
    """The command a hospital runs to join: its key, the CA (or --insecure), the server."""
    host, _, port = cfg.federated.server_address.rpartition(":")
    if host in WILDCARD_HOSTS:
        host = request.url.hostname or "PLATFORM-HOST"
    trust = "--insecure" if cfg.deployment.insecure else "--ca ca.pem"
    return f"medfed client --key {key_file} {trust} --server {host}:{port} --data PATH"


@router.get("", response_model=list[HospitalOut], responses=LOGGED_IN)
def list_hospitals(store: StoreDep, cfg: ConfigDep, _user: CurrentUser) -> list[HospitalOut]:
    """Registered hospitals and every hospital that took part in a run, with the runs each
    joined; online when connected to the platform's SuperLink now or seen in the last 5
    minutes."""
    now = utcnow()
    online = connected_nodes(cfg)
    return [
        hospital_out(h, now, h.registered and h.node_id in online) for h in store.list_hospitals()
    ]


@router.post(
    "",
    response_model=HospitalAdded,
    status_code=status.HTTP_201_CREATED,
    responses={**ADMIN_ONLY, **CONFLICT_ADD, **SUPERLINK_REFUSED},
)
def add_hospital(
    body: HospitalIn, request: Request, store: StoreDep, cfg: ConfigDep, user: AdminUser
) -> HospitalAdded:
    """Register a hospital: the platform makes its key pair and returns the private key
    once, with the command to run at the hospital. 422 for a bad name."""
    from medfed.federation import hospitals as registry

    existing = _find(store, body.name)
    if existing is not None and existing.registered:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"hospital {body.name!r} is already registered (key {existing.fingerprint}): "
            "remove it first to give it a new key",
        )
    try:
        record, private_key = registry.add_hospital(cfg, store, body.name, registered_by=user.name)
    except StoreError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except ConfigError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except FederationError as exc:  # the registration was withdrawn: the name stays free
        store.log_activity(user.name, "hospital.add", body.name, {"error": str(exc)})
        raise HTTPException(
            status.HTTP_502_BAD_GATEWAY, f"{exc}; the hospital was not added: try again"
        ) from None
    store.log_activity(user.name, "hospital.add", record.name, {"fingerprint": record.fingerprint})
    if isinstance(private_key, bytes):
        private_key = private_key.decode("ascii")
    key_file = f"{record.name}.key"
    return HospitalAdded(
        hospital=hospital_out(record),
        private_key=private_key,
        key_file_name=key_file,
        client_command=client_command(cfg, request, key_file),
    )


@router.get(
    "/ca.pem",
    response_class=FileResponse,
    responses={
        **LOGGED_IN,
        status.HTTP_200_OK: {"content": {"application/x-pem-file": {"schema": {"type": "string"}}}},
        status.HTTP_404_NOT_FOUND: {"description": "the platform has no CA certificate yet"},
    },
)
def ca_certificate(cfg: ConfigDep, _user: CurrentUser) -> Any:
    """The platform's CA certificate (public): hospitals check the server against it."""
    path = cfg.certs_dir / "ca.pem"
    if not path.is_file():
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            "the platform has no CA certificate yet: run `medfed certs init --host HOST` on "
            "the platform host (HOST: the name hospitals reach it by)",
        )
    return FileResponse(path, media_type="application/x-pem-file", filename="ca.pem")


@router.delete(
    "/{name}",
    response_model=HospitalOut,
    responses={**ADMIN_ONLY, **NOT_FOUND, **CONFLICT_REMOVE, **SUPERLINK_REFUSED},
)
def remove_hospital(name: str, store: StoreDep, cfg: ConfigDep, user: AdminUser) -> HospitalOut:
    """Withdraw a hospital's registration: its key is refused from now on; its results stay."""
    from medfed.federation import hospitals as registry

    existing = _find(store, name)
    if existing is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no hospital {name!r}")
    if not existing.registered:
        raise HTTPException(status.HTTP_409_CONFLICT, f"hospital {name!r} is not registered")
    try:
        record = registry.remove_hospital(cfg, store, name)
    except StoreError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except FederationError as exc:
        store.log_activity(user.name, "hospital.remove", name, {"error": str(exc)})
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, str(exc)) from None
    store.log_activity(user.name, "hospital.remove", name, {"fingerprint": existing.fingerprint})
    return hospital_out(record)
