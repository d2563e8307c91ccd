"""Helpers shared by the API tests: an app on a real RunStore, users, login, SSE parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from medfed.api import create_app
from medfed.config import MedfedConfig, config_from_dict
from medfed.store import RunStore

ADMIN = ("alice", "alice-password")
VIEWER = ("victor", "victor-password")
SECRET = "test-secret-key-" + "0" * 32  # the API asks for at least 32 bytes


def server_config(home: Path, **sections: Any) -> MedfedConfig:
    """The server's config for a test: its home in tmp_path, a fixed signing secret."""
    values: dict[str, Any] = {"home": str(home), "api": {"secret_key": SECRET}}
    values.update(sections)
    return config_from_dict(values)


def make_client(store: RunStore, home: Path, **sections: Any) -> TestClient:
    """A TestClient of the app on ``store``, with an admin and a viewer user."""
    store.add_user(*ADMIN, role="admin")
    store.add_user(*VIEWER, role="viewer")
    return TestClient(create_app(server_config(home, **sections), store))


def login(client: TestClient, user: tuple[str, str]) -> dict[str, str]:
    """Authorization headers of a fresh session of ``user`` (the client keeps no cookie)."""
    response = client.post("/api/auth/login", json={"username": user[0], "password": user[1]})
    assert response.status_code == 200, response.text
    client.cookies.clear()
    return {"Authorization": f"Bearer {response.json()['token']}"}


def seed_run(
    store: RunStore, cfg: MedfedConfig, name: str = "seeded", *, status: str = "pending", **kw: Any
) -> str:
    """A run row written straight to the store, with ``cfg`` as its config."""
    run_id = store.create_run(
        name,
        cfg.to_dict(),
        mode=kw.pop("mode", "simulation"),
        strategy=kw.pop("strategy", cfg.federated.strategy),
        num_rounds=kw.pop("num_rounds", cfg.federated.rounds),
        created_by=kw.pop("created_by", "alice"),
    )
    if status != "pending":
        store.set_status(run_id, "running")
        if status != "running":
            store.set_status(run_id, status)
    return run_id


def parse_sse(text: str) -> list[dict[str, Any]]:
    """SSE messages as ``{"id", "event", "data"}`` dicts (comments skipped)."""
    messages = []
    for block in text.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if fields:
            messages.append(
                {
                    "id": int(fields["id"]),
                    "event": fields["event"],
                    "data": json.loads(fields["data"]),
                }
            )
    return messages
