"""Registered hospitals: their keys, and the SuperLink's list of SuperNodes kept in step.

medfed's store is the source of truth: a hospital is added there with its public key, and the
SuperLink (Flower's SuperNode registration, through its Control API on loopback) is told to
accept that key. A hospital's name in every record comes from this registration, never from
what its node says about itself.
"""

from __future__ import annotations

import re
import socket
from contextlib import closing
from pathlib import Path

from medfed.config import MedfedConfig
from medfed.errors import ConfigError, FederationError
from medfed.federation.keys import fingerprint, new_key_pair, pem_public_key
from medfed.store import HospitalRecord, RunStore

HOSPITAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED_NAME = "ca.pem"  # GET /api/hospitals/ca.pem is the CA certificate


def check_name(name: str) -> str:
    if name == RESERVED_NAME:
        raise ConfigError(
            f"hospital name {name!r} is taken by the platform's CA certificate: choose another"
        )
    if not HOSPITAL_NAME.fullmatch(name):
        raise ConfigError(
            f"hospital name {name!r}: use 1-64 letters, digits, '.', '-' or '_' "
            "(starting with a letter or digit)"
        )
    return name


def add_hospital(
    cfg: MedfedConfig, store: RunStore, name: str, *, registered_by: str | None = None
) -> tuple[HospitalRecord, bytes]:
    """Register a new hospital; returns its record and its private key (hand it over once)."""
    private_key, public_key = new_key_pair()
    store.register_hospital(
        check_name(name), public_key, fingerprint(public_key), registered_by=registered_by
    )
    if superlink_listening(cfg):
        try:
            sync_registrations(cfg, store)
        except FederationError:
            store.remove_hospital(name)  # its key was never handed over: the name stays free
            raise
    return store.get_hospital(name), private_key


def remove_hospital(cfg: MedfedConfig, store: RunStore, name: str) -> HospitalRecord:
    """Withdraw a hospital: its key is refused from now on; its results stay in the history."""
    record = store.remove_hospital(name)
    if superlink_listening(cfg):
        sync_registrations(cfg, store)
    return record


def superlink_listening(cfg: MedfedConfig) -> bool:
    """Whether the platform's SuperLink answers on its loopback port."""
    with closing(socket.socket()) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", cfg.deployment.superlink_port)) == 0


def control_client(port: int, ca_path: Path | None):  # -> flwr's ControlHttpClient
    """A client of the SuperLink's Control API on loopback (``ca_path`` None: plain HTTP)."""
    from flwr.supercore.control import ControlHttpClient

    address = f"127.0.0.1:{port}"
    if ca_path is None:
        return ControlHttpClient.from_server_address(address, True, None, interceptors=[])
    # The CA's bytes, not its path: httpx deprecates a path as ``verify``.
    ca = ca_path.read_bytes()
    return ControlHttpClient.from_server_address(address, False, ca, interceptors=[])


def _platform_client(cfg: MedfedConfig):  # -> flwr's ControlHttpClient
    ca_path = None if cfg.deployment.insecure else cfg.certs_dir / "ca.pem"
    return control_client(cfg.deployment.superlink_port, ca_path)


def node_statuses(client) -> dict[int, str]:  # noqa: ANN001 - flwr's ControlHttpClient
    """Flower's status of every SuperNode it knows (registered, online, offline,
    unregistered), by signed node id."""
    from flwr.proto.control_pb2 import ListNodesRequest

    return {_signed(n.node_id): n.status for n in client.ListNodes(ListNodesRequest()).nodes_info}


def sync_registrations(cfg: MedfedConfig, store: RunStore) -> None:
    """Make the SuperLink accept exactly the registered hospitals' keys; record node ids."""
    import httpx
    from flwr.proto.control_pb2 import (
        ListNodesRequest,
        RegisterNodeRequest,
        UnregisterNodeRequest,
    )

    hospitals = [h for h in store.list_hospitals() if h.public_key]
    wanted = {pem_public_key(h.public_key): h for h in hospitals if h.registered}
    try:
        client = _platform_client(cfg)
        try:
            listed = {
                bytes(n.public_key): n
                for n in client.ListNodes(ListNodesRequest()).nodes_info
                if n.status != "unregistered"
            }
            for pem, node in listed.items():
                if pem not in wanted:
                    client.UnregisterNode(UnregisterNodeRequest(node_id=node.node_id))
            for pem, hospital in wanted.items():
                node_id = listed[pem].node_id if pem in listed else None
                if node_id is None:
                    reply = client.RegisterNode(
                        RegisterNodeRequest(public_key=pem, name=hospital.name)
                    )
                    node_id = reply.node_id
                store.set_hospital_node(hospital.name, _signed(node_id))
        finally:
            client.close()
    except httpx.HTTPError as exc:
        raise FederationError(
            f"the SuperLink on 127.0.0.1:{cfg.deployment.superlink_port} refused the hospital "
            f"registrations: {exc}"
        ) from None


def _signed(node_id: int) -> int:
    """Flower's node ids are unsigned 64-bit; SQL BIGINT is signed: store the same 64 bits."""
    return node_id - 2**64 if node_id >= 2**63 else node_id


def hospital_name(store: RunStore, node_id: int) -> str | None:
    """The registered name of Flower node ``node_id`` (None if it is no registered hospital)."""
    record = store.hospital_by_node(_signed(node_id))
    return record.name if record else None
