"""The hospitals API on a real app and SQLite RunStore: listing, adding (key pair made and
shown once), removing, the CA certificate, and runs created for the connected hospitals."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api_support import ADMIN, VIEWER, login, seed_run, server_config
from medfed.store import RunStore
from medfed.store import models as m
from serving import free_port


@pytest.fixture
def sections() -> dict:
    # A loopback port where no SuperLink listens: adding a hospital only writes the store.
    return {
        "deployment": {"superlink_port": free_port()},
        "federated": {"server_address": "0.0.0.0:9092"},
    }


def add(client: TestClient, headers: dict[str, str], name: str):  # noqa: ANN201
    return client.post("/api/hospitals", json={"name": name}, headers=headers)


def test_admin_adds_a_hospital_and_gets_its_key_once(
    client: TestClient, store: RunStore, admin: dict[str, str]
) -> None:
    response = add(client, admin, "st-marys")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["private_key"].startswith("-----BEGIN")
    assert "PRIVATE KEY-----" in body["private_key"]
    assert body["key_file_name"] == "st-marys.key"
    # The wildcard bind address becomes the host the dashboard was reached by.
    assert body["client_command"] == (
        "medfed client --key st-marys.key --ca ca.pem --server testserver:9092 --data PATH"
    )
    hospital = body["hospital"]
    record = store.get_hospital("st-marys")
    assert hospital["fingerprint"] == record.fingerprint and record.fingerprint
    assert hospital["registered"] is True
    assert hospital["status"] == "never" and hospital["last_seen"] is None
    assert record.registered_by == ADMIN[0]

    listed = client.get("/api/hospitals", headers=login(client, VIEWER)).json()
    assert [h["name"] for h in listed] == ["st-marys"]
    assert "private_key" not in listed[0]
    entries = [(e.user, e.action, e.target) for e in store.activity_log()]
    assert (ADMIN[0], "hospital.add", "st-marys") in entries


def test_adding_a_registered_name_is_a_conflict_and_bad_names_are_refused(
    client: TestClient, admin: dict[str, str]
) -> None:
    assert add(client, admin, "north").status_code == 201
    again = add(client, admin, "north")
    assert again.status_code == 409
    assert "already registered" in again.json()["detail"]
    for bad in ("", "-dash-first", "has space", "x" * 65, "../etc", "ca.pem"):
        assert add(client, admin, bad).status_code == 422, bad


def test_viewers_cannot_add_or_remove(client: TestClient, admin: dict[str, str]) -> None:
    viewer = login(client, VIEWER)
    assert add(client, viewer, "north").status_code == 403
    assert add(client, admin, "north").status_code == 201
    assert client.delete("/api/hospitals/north", headers=viewer).status_code == 403
    assert client.get("/api/hospitals").status_code == 401


def test_remove_withdraws_the_key_keeps_the_history_and_is_audited(
    client: TestClient, store: RunStore, admin: dict[str, str], tmp_path: Path
) -> None:
    add(client, admin, "south")
    run_id = seed_run(store, server_config(tmp_path / "home"))
    store.record_client_result(run_id, 1, hospital="south", phase="train", status="ok")
    response = client.delete("/api/hospitals/south", headers=admin)
    assert response.status_code == 200, response.text
    removed = response.json()
    assert removed["registered"] is False and removed["removed_at"]
    assert removed["runs"] == [run_id]
    assert client.delete("/api/hospitals/south", headers=admin).status_code == 409
    assert client.delete("/api/hospitals/nowhere", headers=admin).status_code == 404
    assert (ADMIN[0], "hospital.remove", "south") in [
        (e.user, e.action, e.target) for e in store.activity_log()
    ]
    # A removed hospital's name can be registered again, with a new key.
    assert add(client, admin, "south").json()["hospital"]["fingerprint"] != removed["fingerprint"]


def test_list_shows_registered_and_seen_hospitals_with_their_status(
    client: TestClient, store: RunStore, admin: dict[str, str], tmp_path: Path
) -> None:
    add(client, admin, "registered-only")
    run_id = seed_run(store, server_config(tmp_path / "home"))
    for hospital in ("hospital-0", "hospital-1"):
        store.record_client_result(run_id, 1, hospital=hospital, phase="train", status="ok")
        store.touch_hospital(hospital)
    with store.engine.begin() as connection:
        connection.execute(
            update(m.Hospital)
            .where(m.Hospital.name == "hospital-1")
            .values(last_seen=m.utcnow() - timedelta(minutes=6))
        )
    by_name = {h["name"]: h for h in client.get("/api/hospitals", headers=admin).json()}
    assert by_name["hospital-0"]["status"] == "online"
    assert by_name["hospital-1"]["status"] == "offline"
    assert by_name["registered-only"]["status"] == "never"
    assert by_name["hospital-0"]["registered"] is False
    assert by_name["hospital-0"]["fingerprint"] is None
    assert by_name["hospital-0"]["runs"] == [run_id]


def test_superlink_refusing_the_key_adds_nothing(
    client: TestClient, store: RunStore, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from medfed.errors import FederationError
    from medfed.federation import hospitals as registry

    def refuse(cfg, store) -> None:  # noqa: ANN001
        raise FederationError("the SuperLink refused the hospital registrations: boom")

    monkeypatch.setattr(registry, "superlink_listening", lambda cfg: True)
    monkeypatch.setattr(registry, "sync_registrations", refuse)
    response = add(client, admin, "east")
    assert response.status_code == 502
    assert "boom" in response.json()["detail"]
    assert not store.get_hospital("east").registered
    monkeypatch.undo()
    assert add(client, admin, "east").status_code == 201


def test_ca_certificate_download(
    client: TestClient, admin: dict[str, str], tmp_path: Path, sections: dict
) -> None:
    missing = client.get("/api/hospitals/ca.pem", headers=admin)
    assert missing.status_code == 404
    assert "medfed certs init --host" in missing.json()["detail"]
    certs = server_config(tmp_path / "home", **sections).certs_dir
    certs.mkdir(parents=True, exist_ok=True)
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    (certs / "ca.pem").write_text(pem)
    response = client.get("/api/hospitals/ca.pem", headers=login(client, VIEWER))
    assert response.status_code == 200
    assert response.text == pem
    assert "ca.pem" in response.headers["content-disposition"]


def test_a_deployment_run_without_a_superlink_is_a_conflict_and_fails(
    client: TestClient, store: RunStore, admin: dict[str, str]
) -> None:
    created = client.post(
        "/api/runs",
        json={"name": "held", "config": {}, "mode": "deployment", "start": False},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    assert created.json()["mode"] == "deployment"
    assert created.json()["status"] == "pending"

    response = client.post(
        "/api/runs", json={"name": "to-hospitals", "mode": "deployment"}, headers=admin
    )
    assert response.status_code == 409, response.text
    assert "SuperLink" in response.json()["detail"]
    runs, _ = store.list_runs(search="to-hospitals")
    assert [(r.mode, r.status) for r in runs] == [("deployment", "failed")]
    assert "SuperLink" in (runs[0].error or "")
    bad = client.post("/api/runs", json={"name": "x", "mode": "elsewhere"}, headers=admin)
    assert bad.status_code == 422


def test_every_error_status_is_documented(client: TestClient) -> None:
    paths = client.get("/api/openapi.json").json()["paths"]

    def codes(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    assert {"201", "401", "403", "409", "422", "502"} <= codes("/api/hospitals", "post")
    assert {"200", "401", "403", "404", "409", "502"} <= codes("/api/hospitals/{name}", "delete")
    assert {"200", "401", "404"} <= codes("/api/hospitals/ca.pem", "get")
    assert {"200", "401"} <= codes("/api/hospitals", "get")
    assert {"201", "401", "403", "409", "422"} <= codes("/api/runs", "post")


def test_hospitals_connected_to_the_superlink_are_online(
    client: TestClient, store: RunStore, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from medfed.federation import hospitals as registry

    for name in ("linked", "idle"):
        add(client, admin, name)
    store.set_hospital_node("linked", 41)
    store.set_hospital_node("idle", 42)

    class Control:
        def close(self) -> None:
            pass

    statuses = {41: "online", 42: "offline"}
    monkeypatch.setattr(registry, "superlink_listening", lambda cfg: True)
    monkeypatch.setattr(registry, "control_client", lambda port, ca_path: Control())
    monkeypatch.setattr(registry, "node_statuses", lambda control: statuses)
    by_name = {h["name"]: h for h in client.get("/api/hospitals", headers=admin).json()}
    assert by_name["linked"]["status"] == "online"
    assert by_name["idle"]["status"] == "never"

    def broken(control) -> dict[int, str]:  # noqa: ANN001
        raise RuntimeError("no answer")

    monkeypatch.setattr(registry, "node_statuses", broken)
    response = client.get("/api/hospitals", headers=admin)
    assert response.status_code == 200
    assert {h["status"] for h in response.json()} == {"never"}
