"""The REST API's auth, config, templates, hospitals, activity log and web UI serving, on a real
SQLite RunStore."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from api_support import ADMIN, SECRET, VIEWER, login, make_client, seed_run, server_config
from medfed import __version__
from medfed.api import create_app
from medfed.api.security import SESSION_COOKIE, LoginThrottle, TokenSigner
from medfed.config import STRATEGIES, config_from_dict
from medfed.store import RunStore
from medfed.store import models as m

PROTECTED_ROUTES = [
    ("POST", "/api/auth/logout"),
    ("GET", "/api/auth/me"),
    ("GET", "/api/config/defaults"),
    ("GET", "/api/config/schema"),
    ("GET", "/api/runs"),
    ("POST", "/api/runs"),
    ("GET", "/api/runs/RUN"),
    ("POST", "/api/runs/RUN/start"),
    ("POST", "/api/runs/RUN/stop"),
    ("GET", "/api/runs/RUN/rounds"),
    ("GET", "/api/runs/RUN/clients"),
    ("GET", "/api/runs/RUN/events"),
    ("GET", "/api/runs/RUN/checkpoints"),
    ("GET", "/api/runs/RUN/model"),
    ("GET", "/api/runs/RUN/report"),
    ("GET", "/api/hospitals"),
    ("GET", "/api/templates"),
    ("POST", "/api/templates"),
    ("GET", "/api/templates/NAME"),
    ("GET", "/api/activity"),
]
ADMIN_ROUTES = [
    ("POST", "/api/runs", {"name": "x", "config": {}}),
    ("POST", "/api/runs/RUN/start", None),
    ("POST", "/api/runs/RUN/stop", None),
    ("GET", "/api/runs/RUN/model", None),
    ("POST", "/api/templates", {"name": "t", "config": {}}),
    ("GET", "/api/activity", None),
]


@pytest.fixture
def run_id(store: RunStore, tmp_path: Path) -> str:
    return seed_run(store, server_config(tmp_path / "home"))


def test_health_needs_no_login(client: TestClient) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__}


def test_login_returns_token_sets_cookie_and_is_audited(
    client: TestClient, store: RunStore
) -> None:
    response = client.post("/api/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
    assert response.status_code == 200
    body = response.json()
    assert body["user"] == {"name": "alice", "role": "admin"}
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}={body['token']}")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Max-Age=43200" in cookie
    entry = store.activity_log(limit=1)[0]
    assert (entry.user, entry.action, entry.target) == ("alice", "login", "alice")


def test_login_with_wrong_password_is_refused_and_audited(
    client: TestClient, store: RunStore
) -> None:
    response = client.post("/api/auth/login", json={"username": "alice", "password": "nope-nope"})
    assert response.status_code == 401
    assert "wrong user name or password" in response.json()["detail"]
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    entry = store.activity_log(limit=1)[0]
    assert (entry.user, entry.action, entry.target) == (None, "login.failed", "alice")


def test_repeated_wrong_passwords_are_throttled_for_that_user_only(
    client: TestClient, store: RunStore
) -> None:
    def attempt(user: str, password: str) -> int:
        body = {"username": user, "password": password}
        return client.post("/api/auth/login", json=body).status_code

    assert [attempt(ADMIN[0], "wrong-guess") for _ in range(5)] == [401] * 5
    refused = client.post("/api/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
    assert refused.status_code == 429  # even the right password, until the window passes
    assert "too many wrong passwords for 'alice'" in refused.json()["detail"]
    assert 0 < int(refused.headers["Retry-After"]) <= 300
    assert store.activity_log(limit=1)[0].action == "login.throttled"
    assert attempt(VIEWER[0], VIEWER[1]) == 200  # another user is not affected


def test_login_throttle_forgets_old_attempts_and_a_success_clears_it() -> None:
    now = [0.0]
    throttle = LoginThrottle(max_failures=3, window_s=60, clock=lambda: now[0])
    address, user = "10.0.0.1", "alice"
    for second in (0, 10, 20):
        now[0] = second
        assert throttle.reserve(address, user) == (0.0, "")  # counted before the check
    wait, limit = throttle.reserve(address, user)
    assert (wait, limit) == (pytest.approx(40), "pair")  # the first attempt expires at 60
    now[0] = 61
    assert throttle.retry_after(address, user) == 0
    throttle.reserve(address, user)
    assert throttle.retry_after(address, user) == pytest.approx(9)  # attempts at 10, 20, 61
    throttle.succeeded(address, user)
    assert throttle.retry_after(address, user) == 0
    assert throttle.retry_after("10.0.0.2", user) == 0


def test_login_body_is_validated(client: TestClient) -> None:
    response = client.post("/api/auth/login", json={"username": "alice"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "password"]


def test_session_cookie_alone_authenticates(client: TestClient) -> None:
    client.post("/api/auth/login", json={"username": VIEWER[0], "password": VIEWER[1]})
    assert client.cookies.get(SESSION_COOKIE)
    response = client.get("/api/auth/me")
    assert response.status_code == 200
    assert response.json() == {"name": "victor", "role": "viewer"}


def test_logout_revokes_the_token_and_clears_the_cookie(client: TestClient) -> None:
    headers = login(client, ADMIN)
    assert client.get("/api/auth/me", headers=headers).status_code == 200
    response = client.post("/api/auth/logout", headers=headers)
    assert response.status_code == 200
    assert f'{SESSION_COOKIE}=""' in response.headers["set-cookie"]
    after = client.get("/api/auth/me", headers=headers)
    assert after.status_code == 401
    assert "logout" in after.json()["detail"]


@pytest.mark.parametrize(("method", "path"), PROTECTED_ROUTES)
def test_protected_routes_refuse_missing_and_bad_tokens(
    client: TestClient, method: str, path: str
) -> None:
    missing = client.request(method, path)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "not authenticated" in missing.json()["detail"]
    forged = TokenSigner(b"another-secret").issue("alice", "admin")
    for token, reason in (("garbage", "malformed"), (forged, "signature")):
        bad = client.request(method, path, headers={"Authorization": f"Bearer {token}"})
        assert bad.status_code == 401
        assert reason in bad.json()["detail"]
    client.cookies.set(SESSION_COOKIE, forged)
    assert client.request(method, path).status_code == 401


def test_expired_token_is_refused(client: TestClient) -> None:
    expired = TokenSigner(SECRET.encode(), lifetime_s=-1).issue("alice", "admin")
    response = client.get("/api/auth/me", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_tampered_role_claim_is_refused(client: TestClient) -> None:
    token = login(client, VIEWER)["Authorization"].removeprefix("Bearer ")
    signature = token.split(".")[1]
    admin_body = TokenSigner(b"x").issue("victor", "admin").split(".")[0]
    response = client.get(
        "/api/activity", headers={"Authorization": f"Bearer {admin_body}.{signature}"}
    )
    assert response.status_code == 401


def test_token_of_unknown_user_is_refused(client: TestClient) -> None:
    ghost = TokenSigner(SECRET.encode()).issue("ghost", "admin")
    response = client.get("/api/auth/me", headers={"Authorization": f"Bearer {ghost}"})
    assert response.status_code == 401
    assert "ghost" in response.json()["detail"]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_viewer_gets_403_on_admin_routes(
    client: TestClient, run_id: str, method: str, path: str, body: dict | None
) -> None:
    headers = login(client, VIEWER)
    response = client.request(method, path.replace("RUN", run_id), json=body, headers=headers)
    assert response.status_code == 403
    assert "admin" in response.json()["detail"]


def test_config_defaults_are_the_servers_without_secrets(store: RunStore, tmp_path: Path) -> None:
    client = make_client(
        store,
        tmp_path / "home",
        federated={"rounds": 7},
        database={"url": "postgresql+psycopg://medfed:hunter2@db:5432/medfed"},
    )
    response = client.get("/api/config/defaults", headers=login(client, VIEWER))
    assert response.status_code == 200
    values = response.json()
    assert values["federated"]["rounds"] == 7
    assert values["model"]["name"] == "resnet18"
    assert values["api"]["secret_key"] is None
    assert "hunter2" not in response.text
    assert values["database"]["url"] == "postgresql+psycopg://medfed:***@db:5432/medfed"


def test_config_schema_lists_the_choices(client: TestClient) -> None:
    response = client.get("/api/config/schema", headers=login(client, VIEWER))
    assert response.status_code == 200
    defs = response.json()["$defs"]
    assert defs["FederatedConfig"]["properties"]["strategy"]["enum"] == list(STRATEGIES)
    assert "resnet50" in defs["ModelConfig"]["properties"]["name"]["enum"]
    assert "dirichlet" in defs["PartitionConfig"]["properties"]["scheme"]["enum"]


def test_templates_save_list_get(client: TestClient, store: RunStore) -> None:
    admin = login(client, ADMIN)
    config = {"federated": {"strategy": "FedProx", "rounds": 3}, "model": {"name": "cancer_cnn"}}
    created = client.post("/api/templates", json={"name": "prox", "config": config}, headers=admin)
    assert created.status_code == 201
    assert created.json()["config"] == config
    assert created.json()["created_by"] == "alice"
    viewer = login(client, VIEWER)
    listed = client.get("/api/templates", headers=viewer).json()
    assert [t["name"] for t in listed] == ["prox"]
    one = client.get("/api/templates/prox", headers=viewer)
    assert one.status_code == 200 and one.json()["config"] == config
    missing = client.get("/api/templates/nope", headers=viewer)
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    assert any(e.action == "template.save" and e.target == "prox" for e in store.activity_log())


def test_template_with_a_bad_value_is_a_422_naming_the_key(client: TestClient) -> None:
    body = {"name": "bad", "config": {"partition": {"alpha": -1}}}
    response = client.post("/api/templates", json=body, headers=login(client, ADMIN))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "config", "partition", "alpha"]
    assert client.get("/api/templates", headers=login(client, ADMIN)).json() == []


def test_hospitals_list_their_runs_and_online_status(
    client: TestClient, store: RunStore, tmp_path: Path
) -> None:
    cfg = server_config(tmp_path / "home")
    first, second = seed_run(store, cfg, "first"), seed_run(store, cfg, "second")
    for run, hospital in ((first, "h-north"), (second, "h-north"), (second, "h-south")):
        store.record_client_result(run, 1, hospital=hospital, phase="train", status="ok")
    store.touch_hospital("h-north")
    store.touch_hospital("h-south")
    with store.engine.begin() as connection:
        connection.execute(
            update(m.Hospital)
            .where(m.Hospital.name == "h-south")
            .values(last_seen=m.utcnow() - timedelta(hours=2))
        )
    response = client.get("/api/hospitals", headers=login(client, VIEWER))
    assert response.status_code == 200
    by_name = {h["name"]: h for h in response.json()}
    assert by_name["h-north"]["runs"] == [first, second]
    assert by_name["h-north"]["status"] == "online"
    assert by_name["h-south"]["runs"] == [second]
    assert by_name["h-south"]["status"] == "offline"


def test_activity_log_pages_newest_first(client: TestClient) -> None:
    for _ in range(3):
        login(client, VIEWER)
    admin = login(client, ADMIN)
    first = client.get("/api/activity?page=1&page_size=2", headers=admin)
    assert first.status_code == 200
    page = first.json()
    assert page["total"] == 4 and page["page"] == 1 and page["page_size"] == 2
    assert [(e["user"], e["action"]) for e in page["items"]] == [
        ("alice", "login"),
        ("victor", "login"),
    ]
    rest = client.get("/api/activity?page=2&page_size=2", headers=admin).json()
    assert [e["user"] for e in rest["items"]] == ["victor", "victor"]
    assert client.get("/api/activity?page=0", headers=admin).status_code == 422


def test_large_responses_are_gzipped(client: TestClient) -> None:
    response = client.get(
        "/api/config/schema", headers={**login(client, VIEWER), "Accept-Encoding": "gzip"}
    )
    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["title"] == "MedfedConfig"


def test_openapi_and_docs_are_served(client: TestClient) -> None:
    spec = client.get("/api/openapi.json")
    assert spec.status_code == 200
    assert "/api/runs/{run_id}/events" in spec.json()["paths"]
    docs = client.get("/api/docs")
    assert docs.status_code == 200
    # nothing from a CDN: the page's script and style come from this server
    sources = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert sources and all(s.startswith("/") for s in sources), sources
    assert "/api-docs/swagger-ui-bundle.js" in sources


def test_unknown_api_path_is_a_json_404(client: TestClient) -> None:
    response = client.get("/api/nothing-here", headers=login(client, VIEWER))
    assert response.status_code == 404
    assert "/api/nothing-here" in response.json()["detail"]


def test_root_says_how_to_build_the_ui_when_it_is_missing(
    client: TestClient, tmp_path: Path
) -> None:
    client.app.state.static_dir = tmp_path / "no-ui"
    response = client.get("/")
    assert response.status_code == 200
    assert "not built" in response.text and "make demo" in response.text


def test_built_ui_is_served_with_spa_fallback(client: TestClient, tmp_path: Path) -> None:
    ui = tmp_path / "ui"
    (ui / "assets").mkdir(parents=True)
    (ui / "index.html").write_text("<div id=app>medfed ui</div>")
    (ui / "assets" / "app.js").write_text("console.log('medfed')")
    (tmp_path / "secret.txt").write_text("outside")
    client.app.state.static_dir = ui
    assert client.get("/").text == "<div id=app>medfed ui</div>"
    asset = client.get("/assets/app.js")
    assert asset.text == "console.log('medfed')"
    assert "javascript" in asset.headers["content-type"]
    assert "immutable" in asset.headers["cache-control"]
    assert client.get("/").headers["cache-control"] == "no-cache"
    deep_link = client.get("/runs/abc123/compare")
    assert deep_link.status_code == 200 and "medfed ui" in deep_link.text
    escape = client.get("/assets/..%2F..%2Fsecret.txt")
    assert "outside" not in escape.text
    assert client.get("/api/unknown").status_code == 404


def test_without_a_configured_secret_a_private_key_file_is_shared_by_servers(
    store: RunStore, tmp_path: Path
) -> None:
    store.add_user(*ADMIN, role="admin")
    cfg = config_from_dict({"home": str(tmp_path / "home")})
    first, second = TestClient(create_app(cfg, store)), TestClient(create_app(cfg, store))
    headers = login(first, ADMIN)
    assert second.get("/api/auth/me", headers=headers).json()["name"] == "alice"
    key_file = tmp_path / "home" / "api_secret.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    other_home = config_from_dict({"home": str(tmp_path / "other")})
    stranger = TestClient(create_app(other_home, store))
    assert stranger.get("/api/auth/me", headers=headers).status_code == 401


def test_app_opens_the_store_of_its_config(tmp_path: Path) -> None:
    cfg = config_from_dict({"home": str(tmp_path / "home"), "api": {"secret_key": SECRET}})
    with RunStore(cfg.database_url) as store:
        store.add_user(*VIEWER, role="viewer")
    with TestClient(create_app(cfg)) as client:
        assert client.get("/api/auth/me", headers=login(client, VIEWER)).json()["role"] == "viewer"
    assert (tmp_path / "home" / "medfed.db").is_file()
