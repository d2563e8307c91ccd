"""The API keeps its OpenAPI contract under a standard fuzzer: schemathesis, all checks, run
from /api/openapi.json against the real server (``medfed server``, temporary SQLite store)
with an admin's and a viewer's token, fixed seed, a budget that fits CI. Then every failure an
earlier run of the fuzzer found (other seeds), as a plain regression test."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api_support import ADMIN, VIEWER, login, parse_sse
from medfed.store import RunStore

SEED = 20261201
MAX_EXAMPLES = 8  # per operation and phase: ~1,500 requests per token in well under a minute
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``medfed server`` on a temporary SQLite store, runs held in the queue (nothing trains:
    the fuzzer starts many); yields its URL and a token per role."""
    home, port = tmp_path / "home", _free_port()
    config = tmp_path / "medfed.yml"
    config.write_text(
        f"home: {home}\n"
        f"data:\n  path: {tmp_path / 'no-data'}\n"
        "platform:\n  max_concurrent_runs: 0\n"
        f"api:\n  port: {port}\n  secret_key: fuzz-secret-0123456789abcdef0123456789\n"
    )
    with RunStore(f"sqlite:///{home / 'medfed.db'}") as store:
        store.add_user(*ADMIN, role="admin")
        store.add_user(*VIEWER, role="viewer")
    command = [sys.executable, "-m", "medfed.cli", "server", "-c", str(config), "--no-superlink"]
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start in 60 s"
            time.sleep(0.2)
        tokens = {}
        for role, (name, password) in (("admin", ADMIN), ("viewer", VIEWER)):
            reply = httpx.post(
                f"{base}/api/auth/login", json={"username": name, "password": password}
            )
            tokens[role] = reply.json()["token"]
        yield base, tokens
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    server_log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in server_log, server_log[-4000:]


def fuzz(base: str, token: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{base}/api/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        "all",
        "--seed",
        str(SEED),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--request-timeout",
        "60",
        "--no-shrink",
        *extra,
    ]
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200", SCHEMATHESIS_HOOKS="")
    return subprocess.run(
        command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600
    )


@pytest.mark.slow
@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is not installed (dev extra)")
def test_the_fuzzer_finds_nothing(server: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    base, tokens = server
    for role in ("admin", "viewer"):
        # Logging out would end the token the rest of the run uses: fuzzed on its own below.
        done = fuzz(base, tokens[role], tmp_path, "--exclude-path", "/api/auth/logout")
        assert done.returncode == 0, f"{role}:\n{done.stdout[-6000:]}\n{done.stderr[-2000:]}"
        assert " passed" in done.stdout and "failures" not in done.stdout.splitlines()[-1]
    done = fuzz(base, tokens["admin"], tmp_path, "--include-path", "/api/auth/logout")
    assert done.returncode == 0, done.stdout[-6000:]
    shutil.rmtree(tmp_path / "schemathesis-report", ignore_errors=True)


# What earlier runs of the fuzzer found (other seeds), kept fixed -------------------------------


@pytest.fixture
def sections(tmp_path: Path) -> dict:
    return {"platform": {"max_concurrent_runs": 0}, "data": {"path": str(tmp_path / "no-data")}}


@pytest.mark.parametrize(
    "query",
    [
        "/api/activity?page=173435244283302783221760&page_size=66",  # was a 500 (SQLite overflow)
        "/api/runs?page=173435244283302783221760",
        "/api/runs?until=0.5",  # a number is no date-time (was accepted)
        "/api/runs?since=2026-12-01",  # nor is a date alone
        "/api/runs/x/clients?round=99999999999999999999",
        "/api/runs/x/model?round=-1",
        "/api/runs/x/events?after=9223372036854775808",
    ],
)
def test_out_of_range_query_parameters_are_a_422(client: TestClient, query: str) -> None:
    response = client.get(query, headers=login(client, ADMIN))
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)


def test_extreme_date_times_are_clamped_not_a_500(client: TestClient) -> None:
    viewer = login(client, VIEWER)
    for moment in ("0000-01-01T00:00:00+05:00", "9999-12-31T23:59:60-12:00"):
        response = client.get("/api/runs", params={"since": moment}, headers=viewer)
        assert response.status_code == 200, response.text


def test_the_last_event_id_header_is_digits(client: TestClient, store: RunStore) -> None:
    admin = login(client, ADMIN)
    run_id = client.post("/api/runs", json={"name": "r", "start": False}, headers=admin).json()[
        "id"
    ]
    for header in ("null", "12a", "1" * 19):  # "null" was taken for no header
        bad = client.get(f"/api/runs/{run_id}/events", headers={**admin, "Last-Event-ID": header})
        assert bad.status_code == 422, header
    good = client.get(f"/api/runs/{run_id}/events", headers={**admin, "Last-Event-ID": "0"})
    assert good.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/api/activity", "GET, HEAD"),  # was a 404
        ("GET", "/api/auth/login", "POST"),  # was the web UI's 404
        ("OPTIONS", "/api/hospitals", "GET, HEAD, POST"),  # Allow named only GET
        ("OPTIONS", "/api/templates", "GET, HEAD, POST"),
        ("OPTIONS", "/api/hospitals/ca.pem", "GET, HEAD"),  # not DELETE of /hospitals/{name}
        ("DELETE", "/api/runs/abc/stop", "POST"),
        ("PUT", "/api/runs", "GET, HEAD, POST"),
    ],
)
def test_a_method_a_path_does_not_take_is_a_405_with_its_allow(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path, headers=login(client, ADMIN))
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert method in response.json()["detail"]


def test_unknown_api_paths_are_a_404_not_the_web_ui(client: TestClient) -> None:
    response = client.get("/api/runs/x/y/z", headers=login(client, ADMIN))
    assert response.status_code == 404
    assert "/api/runs/x/y/z" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "r", "start": 0},  # 0 is no boolean (was accepted)
        {"name": "r", "config": {"compression": {"dense_below": False}}},  # false is no number
        {"name": "r", "config": {"training": {"threads": "4"}}},
        {"name": "r", "config": {"training": {"threads": 4.5}}},
        {"name": "r", "config": {"data": {"path": "a\u0000b"}}},  # no path holds NUL
        {"name": "r", "config": {"federated": {"rounds": 10**12}}},  # was a 500 (INTEGER)
        {"name": "r", "config": {"training": {"seed": -1}}},
        {"name": "r", "config": {"extra": {}}},
    ],
)
def test_a_body_outside_the_schema_is_a_422(
    client: TestClient, store: RunStore, body: dict
) -> None:
    response = client.post("/api/runs", json=body, headers=login(client, ADMIN))
    assert response.status_code == 422, response.text
    assert store.list_runs()[1] == 0


def test_a_body_inside_the_schema_is_taken(client: TestClient, store: RunStore) -> None:
    body = {
        "name": "r",
        "start": True,
        "config": {
            "training": {"threads": 2.0, "learning_rate": 1},  # 2.0 is an integer in JSON
            "data": {"test_path": "", "cache_dir": None, "channels": 3.0},
            "compression": {"quant_bits": 8.0},
            "model": {"pretrained_path": ""},
        },
    }
    response = client.post("/api/runs", json=body, headers=login(client, ADMIN))
    assert response.status_code == 201, response.text
    run = response.json()
    assert (run["status"], run["queue_position"]) == ("queued", 1)  # max_concurrent_runs: 0
    assert store.get_run(run["id"]).config["training"]["threads"] == 2


def test_a_body_that_is_not_json_is_a_400(client: TestClient) -> None:
    response = client.post(
        "/api/templates",
        content=b"\x8e9\xcc\x8cS",
        headers={**login(client, ADMIN), "Content-Type": "application/json"},
    )
    assert response.status_code in (400, 422)
    assert "detail" in response.json()


def test_every_operation_documents_its_errors_with_one_model(client: TestClient) -> None:
    schema = client.get("/api/openapi.json").json()
    error_ref = {"$ref": "#/components/schemas/ErrorOut"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            where = f"{method.upper()} {path}"
            assert "503" in responses, where
            if operation.get("security"):
                assert "401" in responses, where
            if operation.get("parameters") or "requestBody" in operation:
                assert "422" in responses, where
            for code, response in responses.items():
                if code[0] in "45":
                    assert response["content"]["application/json"]["schema"] == error_ref, where
            for parameter in operation.get("parameters", []):
                kind = parameter["schema"].get("type") or [
                    s.get("type") for s in parameter["schema"].get("anyOf", [])
                ]
                if kind == "integer" or "integer" in kind:
                    bounds = parameter["schema"]
                    if "anyOf" in bounds:
                        bounds = next(s for s in bounds["anyOf"] if s.get("type") == "integer")
                    assert "maximum" in bounds and "minimum" in bounds, f"{where} {parameter}"


def test_the_stream_of_a_queued_run_ends_after_its_history(client: TestClient) -> None:
    admin = login(client, ADMIN)
    run = client.post("/api/runs", json={"name": "waits"}, headers=admin).json()
    assert run["status"] == "queued"
    response = client.get(f"/api/runs/{run['id']}/events", headers=admin)
    assert response.status_code == 200
    assert "retry: " in response.text  # the browser looks again later
    assert [m["event"] for m in parse_sse(response.text.split("retry:")[0])] == ["run_queued"]


def test_asking_for_a_final_evaluation_that_is_not_there_stays_light(client: TestClient) -> None:
    from medfed.api.routes import runs
    from medfed.reports.clinical import ARTIFACT

    assert runs.FINAL_EVALUATION == ARTIFACT
    admin = login(client, ADMIN)
    run_id = client.post("/api/runs", json={"name": "r"}, headers=admin).json()["id"]
    reply = client.get(f"/api/runs/{run_id}/explanations", headers=admin)
    assert reply.status_code == 200 and reply.json()["available"] is False


def test_a_run_without_results_has_an_empty_site_table_at_once(client: TestClient) -> None:
    admin = login(client, ADMIN)
    run_id = client.post("/api/runs", json={"name": "r"}, headers=admin).json()["id"]
    reply = client.get(f"/api/runs/{run_id}/sites", headers=admin)
    assert reply.status_code == 200
    assert reply.json()["sites"] == [] and reply.json()["worst"] is None


def test_a_report_before_any_round_is_a_quick_409(client: TestClient) -> None:
    admin = login(client, ADMIN)
    run_id = client.post("/api/runs", json={"name": "r"}, headers=admin).json()["id"]
    started = time.monotonic()
    reply = client.get(f"/api/runs/{run_id}/report?format=pdf", headers=admin)
    assert reply.status_code == 409 and "no finished round" in reply.json()["detail"]
    assert time.monotonic() - started < 5  # refused before the report's libraries load
