"""Logins: throttling that parallel guesses cannot pass, forwarding headers from trusted proxies
only, same-origin checks for cookie sessions, security headers, sessions that outlive a restart
and end with a password change, and passwords never on the command line."""

from __future__ import annotations

import base64
import hashlib
import io
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from starlette.requests import Request

from api_support import ADMIN, VIEWER, login, make_client, server_config
from medfed import cli
from medfed.api import create_app
from medfed.api.security import SESSION_COOKIE, client_address, parse_networks
from medfed.store import RunStore

WRONG = "wrong-password"


def _login(client: TestClient, user: str, password: str, **headers: str) -> httpx.Response:
    return client.post(
        "/api/auth/login", json={"username": user, "password": password}, headers=headers
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served(store: RunStore, tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A real uvicorn server on loopback (as `medfed server` runs it) and the names whose
    passwords it checked."""
    store.add_user(*ADMIN, role="admin")
    checked: list[str] = []
    verify = store.verify_user

    def counting_verify(name: str, password: str) -> Any:
        checked.append(name)
        return verify(name, password)

    store.verify_user = counting_verify  # type: ignore[method-assign]
    app = create_app(server_config(tmp_path / "home"), store)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}", checked
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# throttling -------------------------------------------------------------------------------


def test_parallel_wrong_passwords_meet_429_before_more_checks(
    served: tuple[str, list[str]],
) -> None:
    base, checked = served
    start = threading.Barrier(25)
    codes: list[int] = []

    def guess(i: int) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            start.wait()
            body = {"username": ADMIN[0], "password": f"{WRONG}-{i}"}
            codes.append(http.post("/api/auth/login", json=body).status_code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(25)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(codes)) == [401, 429]
    assert codes.count(401) == len(checked) <= 5  # only reserved attempts reach the password
    assert codes.count(429) >= 20


def test_spraying_many_user_names_from_one_address_is_throttled(
    client: TestClient, store: RunStore
) -> None:
    codes = [_login(client, f"user-{i}", WRONG).status_code for i in range(20)]
    assert codes == [401] * 20  # never more than one guess per name
    refused = _login(client, *ADMIN)  # even a right password, from that address
    assert refused.status_code == 429
    assert "too many wrong passwords from testclient" in refused.json()["detail"]
    entry = store.activity_log(limit=1)[0]
    assert entry.action == "login.throttled" and entry.detail["limit"] == "address"


def test_a_user_guessed_at_from_many_addresses_is_throttled(
    store: RunStore, tmp_path: Path
) -> None:
    store.add_user(*ADMIN, role="admin")
    app = create_app(server_config(tmp_path / "home", api={"trusted_proxies": ["10.0.0.1"]}), store)
    proxy = TestClient(app, client=("10.0.0.1", 40000))
    for i in range(20):  # 5 guesses from each of 4 addresses: under the per-address limits
        forwarded = {"X-Forwarded-For": f"203.0.113.{i // 5}"}
        assert _login(proxy, ADMIN[0], WRONG, **forwarded).status_code == 401
    refused = _login(proxy, *ADMIN, **{"X-Forwarded-For": "198.51.100.7"})
    assert refused.status_code == 429 and "for 'alice'" in refused.json()["detail"]


def test_forwarded_for_is_ignored_from_an_untrusted_peer(store: RunStore, tmp_path: Path) -> None:
    store.add_user(*ADMIN, role="admin")
    app = create_app(server_config(tmp_path / "home"), store)  # no trusted proxies
    direct = TestClient(app, client=("192.0.2.10", 40000))
    for i in range(5):  # an attacker inventing a new address for every guess
        spoofed = {"X-Forwarded-For": f"198.51.100.{i}"}
        assert _login(direct, ADMIN[0], WRONG, **spoofed).status_code == 401
    assert _login(direct, ADMIN[0], WRONG, **{"X-Forwarded-For": "1.1.1.1"}).status_code == 429
    addresses = {e.detail["address"] for e in store.activity_log() if e.action == "login.failed"}
    assert addresses == {"192.0.2.10"}


def test_forwarded_for_is_honoured_from_a_trusted_proxy(store: RunStore, tmp_path: Path) -> None:
    store.add_user(*ADMIN, role="admin")
    cfg = server_config(tmp_path / "home", api={"trusted_proxies": ["10.0.0.0/8"]})
    proxy = TestClient(create_app(cfg, store), client=("10.0.0.1", 40000))
    for _ in range(5):
        assert _login(proxy, ADMIN[0], WRONG, **{"X-Forwarded-For": "198.51.100.1"}).status_code
    blocked = _login(proxy, *ADMIN, **{"X-Forwarded-For": "198.51.100.1"})
    other = _login(proxy, *ADMIN, **{"X-Forwarded-For": "198.51.100.2, 10.0.0.7"})
    assert (blocked.status_code, other.status_code) == (429, 200)
    failed = {e.detail["address"] for e in store.activity_log() if e.action == "login.failed"}
    assert failed == {"198.51.100.1"}


def _request(peer: str, forwarded: str | None) -> Request:
    headers = [] if forwarded is None else [(b"x-forwarded-for", forwarded.encode())]
    return Request({"type": "http", "client": (peer, 1), "headers": headers})


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("10.0.0.1", "1.2.3.4", "1.2.3.4"),
        ("10.0.0.1", "6.6.6.6, 1.2.3.4, 10.0.0.2", "1.2.3.4"),  # spoofed first hop skipped
        ("10.0.0.1", None, "10.0.0.1"),
        ("10.0.0.1", "not-an-address", "10.0.0.1"),
        ("192.0.2.1", "1.2.3.4", "192.0.2.1"),  # the peer is no proxy of ours
        ("::ffff:10.0.0.1", "2001:db8::5", "2001:db8::5"),
    ],
)
def test_client_address_walks_forwarded_for_from_trusted_proxies(
    peer: str, forwarded: str | None, expected: str
) -> None:
    proxies = parse_networks(["10.0.0.0/8"])
    assert client_address(_request(peer, forwarded), proxies) == expected


def test_trusted_proxies_are_validated() -> None:
    from medfed.config import config_from_dict
    from medfed.errors import ConfigError

    with pytest.raises(ConfigError, match=r"api.trusted_proxies.*'proxy.lan' is not an IP"):
        config_from_dict({"api": {"trusted_proxies": ["proxy.lan"]}})


# cross-site requests and security headers --------------------------------------------------


def _cookie_session(client: TestClient, user: tuple[str, str]) -> None:
    assert _login(client, *user).status_code == 200
    assert client.cookies.get(SESSION_COOKIE)


TEMPLATE = {"name": "t", "config": {"federated": {"rounds": 2}}}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 403),
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Sec-Fetch-Site": "cross-site", "Origin": "http://testserver"}, 403),
        ({"Sec-Fetch-Site": "same-site"}, 403),
        ({"Origin": "http://testserver"}, 201),
        ({"Sec-Fetch-Site": "same-origin"}, 201),
        ({"X-Requested-With": "medfed"}, 201),
    ],
)
def test_cookie_signed_changes_must_come_from_the_dashboard(
    client: TestClient, headers: dict[str, str], expected: int
) -> None:
    _cookie_session(client, ADMIN)
    response = client.post("/api/templates", json=TEMPLATE, headers=headers)
    assert response.status_code == expected, response.text
    if expected == 403:
        assert "cross-site request refused" in response.json()["detail"]
    assert client.get("/api/templates").status_code == 200  # reading needs no proof


def test_cookie_logout_from_another_site_is_refused(client: TestClient) -> None:
    _cookie_session(client, VIEWER)
    assert client.post("/api/auth/logout").status_code == 403
    assert client.get("/api/auth/me").status_code == 200  # still logged in
    ok = client.post("/api/auth/logout", headers={"Origin": "http://testserver"})
    assert ok.status_code == 200


def test_bearer_requests_need_no_origin(client: TestClient) -> None:
    headers = login(client, ADMIN)  # the client keeps no cookie
    assert client.post("/api/templates", json=TEMPLATE, headers=headers).status_code == 201


def test_every_response_carries_security_headers(client: TestClient) -> None:
    for path in ("/api/health", "/api/runs", "/", "/api/openapi.json", "/api/nope"):
        headers = client.get(path).headers
        assert headers["x-frame-options"] == "DENY", path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        csp = headers["content-security-policy"]
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-eval" not in csp


def test_api_docs_allow_exactly_their_inline_script(client: TestClient) -> None:
    response = client.get("/api/docs")
    assert response.status_code == 200
    scripts = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    csp = response.headers["content-security-policy"]
    assert f"script-src 'self' 'sha256-{digest}';" in csp
    assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";", 1)[0]


# sessions ---------------------------------------------------------------------------------


def test_logout_holds_after_a_restart(store: RunStore, tmp_path: Path) -> None:
    client = make_client(store, tmp_path / "home")
    headers = login(client, ADMIN)
    other = login(client, ADMIN)
    assert client.post("/api/auth/logout", headers=headers).status_code == 200

    with RunStore(store.url) as reopened:  # a new server process on the same store
        restarted = TestClient(create_app(server_config(tmp_path / "home"), reopened))
        after = restarted.get("/api/auth/me", headers=headers)
        assert after.status_code == 401 and "logout" in after.json()["detail"]
        assert restarted.get("/api/auth/me", headers=other).status_code == 200


def test_a_password_change_ends_every_session_of_that_user(
    client: TestClient, store: RunStore
) -> None:
    first, second = login(client, ADMIN), login(client, ADMIN)
    viewer = login(client, VIEWER)
    store.set_password(ADMIN[0], "a-brand-new-password")
    for headers in (first, second):
        after = client.get("/api/auth/me", headers=headers)
        assert after.status_code == 401 and "password change" in after.json()["detail"]
    assert client.get("/api/auth/me", headers=viewer).status_code == 200
    assert _login(client, *ADMIN).status_code == 401
    assert _login(client, ADMIN[0], "a-brand-new-password").status_code == 200


def test_changing_ones_password_in_the_api_returns_a_working_session(client: TestClient) -> None:
    old = login(client, VIEWER)
    wrong = client.post(
        "/api/auth/password",
        json={"current_password": "not-it", "new_password": "viewer-password-2"},
        headers=old,
    )
    assert wrong.status_code == 403
    short = client.post(
        "/api/auth/password",
        json={"current_password": VIEWER[1], "new_password": "short"},
        headers=old,
    )
    assert short.status_code == 422
    changed = client.post(
        "/api/auth/password",
        json={"current_password": VIEWER[1], "new_password": "viewer-password-2"},
        headers=old,
    )
    assert changed.status_code == 200, changed.text
    client.cookies.clear()
    assert client.get("/api/auth/me", headers=old).status_code == 401
    fresh = {"Authorization": f"Bearer {changed.json()['token']}"}
    assert client.get("/api/auth/me", headers=fresh).json()["name"] == VIEWER[0]


# passwords on the command line ------------------------------------------------------------


def test_users_add_refuses_a_password_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'medfed.db'}"
    code = cli.main(["users", "add", "eve", "--password", "visible-to-ps", "--db", url])
    err = capsys.readouterr().err
    assert code == 2 and "--password is not accepted" in err and "Traceback" not in err
    with RunStore(url) as store:
        assert store.get_user("eve") is None
    cli.main(["users", "add", "--help"])
    assert "--password" not in capsys.readouterr().out


def test_users_add_and_passwd_read_the_password_from_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'medfed.db'}"
    monkeypatch.setattr(sys, "stdin", io.StringIO("first-password\n"))
    assert cli.main(["users", "add", "ada", "--role", "admin", "--db", url]) == 0
    with RunStore(url) as store:
        version = store.get_user("ada").token_version
    monkeypatch.setattr(sys, "stdin", io.StringIO("second-password\n"))
    assert cli.main(["users", "passwd", "ada", "--db", url]) == 0
    out = capsys.readouterr().out
    assert "first-password" not in out and "second-password" not in out
    with RunStore(url) as store:
        assert store.verify_user("ada", "first-password") is None
        assert store.verify_user("ada", "second-password") is not None
        assert store.get_user("ada").token_version == version + 1
        assert [e.action for e in store.activity_log()][:2] == ["user.password", "user.add"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert cli.main(["users", "add", "bob", "--db", url]) == 2
    assert "no password on stdin" in capsys.readouterr().err
