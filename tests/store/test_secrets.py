"""Secrets stay on the platform: stored runs, checkpoints, process command lines, what viewers
see, key and file permissions, and the migration that cleans runs stored before."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from alembic import command
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi.testclient import TestClient
from sqlalchemy import JSON, DateTime, column, create_engine, insert, table, text

from api_support import SECRET, VIEWER, login, make_client, seed_run
from db_support import empty_database
from medfed.api import create_app
from medfed.config import RUN_SECTIONS, config_from_dict, load_config, run_config
from medfed.errors import ConfigError, StoreError
from medfed.federation import runner
from medfed.federation.runtime import platform_env
from medfed.store import ArtifactStore, RunStore
from medfed.store.artifacts import MAGIC_V1
from medfed.store.database import alembic_config

DB_PASSWORD = "hunter2-db-password"
REDIS_PASSWORD = "s3cret-redis-password"
SECRETS = (DB_PASSWORD, REDIS_PASSWORD, SECRET, "mysql-password-42")


def platform_values(home: Path) -> dict:
    """A platform configuration full of secrets (none of them may leave it)."""
    return {
        "name": "leaky",
        "home": str(home),
        "database": {
            "url": f"postgresql+psycopg://medfed:{DB_PASSWORD}@db.example:5432/medfed",
            "redis_url": f"redis://:{REDIS_PASSWORD}@redis.example:6379/0",
            "mysql": {"password": "mysql-password-42"},
        },
        "api": {"secret_key": SECRET},
        "model": {"name": "cancer_cnn"},
        "federated": {"rounds": 2, "num_clients": 3},
    }


def assert_no_secrets(text_: str) -> None:
    for secret in SECRETS:
        assert secret not in text_
    for key in ("redis_url", "secret_key", "database", "home"):
        assert f'"{key}"' not in text_


# the stored run ------------------------------------------------------------------------------


def test_a_stored_run_keeps_only_what_defines_it(tmp_path: Path) -> None:
    cfg = config_from_dict(platform_values(tmp_path / "home"))
    with RunStore(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        made_by_runner = runner.create_run(cfg, store)
        written_directly = store.create_run(
            "direct", cfg.to_dict(), mode="simulation", strategy="FedAvg", num_rounds=2
        )
        with store.engine.connect() as connection:
            raw = connection.execute(text("SELECT config FROM runs")).scalars().all()
        for run_id in (made_by_runner, written_directly):
            stored = store.get_run(run_id).config
            assert set(stored) == set(RUN_SECTIONS)
            assert stored["federated"]["rounds"] == 2
    assert len(raw) == 2
    for row in raw:
        assert_no_secrets(row if isinstance(row, str) else json.dumps(row))


def test_a_run_is_rebuilt_from_the_platform_config_and_its_definition(tmp_path: Path) -> None:
    platform = config_from_dict(platform_values(tmp_path / "home"))
    definition = {"name": "r", "federated": {"rounds": 7, "num_clients": 3}}
    cfg = run_config(platform, {**definition, "home": "/elsewhere", "api": {"secret_key": "x"}})
    assert cfg.home == tmp_path / "home" and cfg.api.secret_key == SECRET  # the platform's
    assert cfg.database.url == platform.database.url
    assert (cfg.name, cfg.federated.rounds) == ("r", 7)
    assert cfg.model.name == "resnet18"  # a section the run lacks takes the model's default


def test_migration_strips_secrets_from_runs_stored_before(migrated_url: tuple[str, str]) -> None:
    url, old_run = migrated_url
    with RunStore(url) as store:  # migrates 0002 -> head
        run = store.get_run(old_run)
        assert set(run.config) == set(RUN_SECTIONS)
        assert run.config["federated"]["rounds"] == 2
        assert run.config["data"]["path"] == "/data/site"  # platform paths that define it stay
        with store.engine.connect() as connection:
            raw = connection.execute(text("SELECT config FROM runs")).scalar_one()
        assert_no_secrets(raw if isinstance(raw, str) else json.dumps(raw))
        user = store.get_user("old-admin")
        assert user is not None and user.token_version == 0


@pytest.fixture(params=["sqlite", "mysql", "postgresql"])
def migrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A database at revision 0002 holding a run stored with the whole config (and a user)."""
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'old.db'}"
        else:
            what = f"{request.param} migration"
            url = stack.enter_context(empty_database(request.param, "medfed_secrets", what))
        engine = create_engine(url)
        stack.callback(engine.dispose)
        old = config_from_dict(platform_values(tmp_path / "home")).to_dict()
        old["data"]["path"] = "/data/site"
        runs = table(
            "runs",
            *(column(name) for name in ("id", "name", "mode", "status", "strategy", "num_rounds")),
            column("config", JSON()),
            column("created_at", DateTime(timezone=True)),
        )
        users = table("users", *(column(name) for name in ("name", "password_hash", "role")))
        users.append_column(column("created_at", DateTime(timezone=True)))
        when = datetime(2026, 11, 30, 12, tzinfo=UTC)
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0002")
            connection.execute(
                insert(runs).values(
                    id="oldrun", name="old", mode="simulation", status="finished",
                    strategy="FedAvg", num_rounds=2, config=old, created_at=when,
                )
            )  # fmt: skip
            connection.execute(
                insert(users).values(
                    name="old-admin", password_hash="x", role="admin", created_at=when
                )
            )
        engine.dispose()
        yield url, "oldrun"


# checkpoints -------------------------------------------------------------------------------


def _state() -> dict:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2).state_dict()


def test_checkpoint_meta_holds_no_platform_settings(tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path / "home" / "artifacts")
    meta = {"run_id": "r1", "round": 1, "config": platform_values(tmp_path / "home")}
    path = artifacts.save_state_dict("r1/round-0001", _state(), meta, run_id="r1", round=1)
    plain = artifacts.load(path)
    assert_no_secrets(plain.decode("latin-1"))
    _, loaded = artifacts.load_state_dict(path, run_id="r1", round=1)
    assert set(loaded["config"]) <= set(RUN_SECTIONS) and loaded["round"] == 1


def test_an_older_checkpoint_is_exported_without_its_platform_settings(tmp_path: Path) -> None:
    """Checkpoints written before runs were cleaned held the whole config in their meta."""
    artifacts = ArtifactStore(tmp_path / "home" / "artifacts")
    buffer = io.BytesIO()
    meta = {"round": 2, "config": platform_values(tmp_path / "home")}
    torch.save({"state_dict": _state(), "meta": meta}, buffer)
    key = base64.urlsafe_b64decode((tmp_path / "home" / "secret.key").read_bytes().strip())
    nonce = os.urandom(12)
    old = tmp_path / "home" / "artifacts" / "old.enc"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_bytes(MAGIC_V1 + nonce + AESGCM(key).encrypt(nonce, buffer.getvalue(), MAGIC_V1))

    out = artifacts.export_plain(old, tmp_path / "download" / "model.pt", run_id="x", round=2)
    exported = torch.load(out, weights_only=True)
    assert set(exported["meta"]["config"]) <= set(RUN_SECTIONS)
    assert_no_secrets(out.read_bytes().decode("latin-1"))


def test_a_checkpoint_is_refused_for_another_run_or_round(tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path / "home" / "artifacts")
    path = artifacts.save_state_dict("a/round-0003", _state(), {}, run_id="run-a", round=3)
    with pytest.raises(StoreError, match="belongs to run run-a, not run run-b"):
        artifacts.load_state_dict(path, run_id="run-b", round=3)
    with pytest.raises(StoreError, match="belongs to round 3, not round 4"):
        artifacts.load_state_dict(path, run_id="run-a", round=4)
    with pytest.raises(StoreError, match="belongs to run run-a"):
        artifacts.export_plain(path, tmp_path / "out.pt", run_id="run-b")
    state, _ = artifacts.load_state_dict(path, run_id="run-a", round=3)
    assert torch.equal(state["weight"], _state()["weight"])

    blob = path.read_bytes()  # claim another run in the header: the tag no longer matches
    forged = blob.replace(b'"run":"run-a"', b'"run":"run-b"')
    assert forged != blob
    path.write_bytes(forged)
    with pytest.raises(StoreError, match="cannot be decrypted: it was modified"):
        artifacts.load_state_dict(path, run_id="run-b", round=3)


def test_model_key_from_the_environment_keeps_no_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("MEDFED_MODEL_KEY", key)
    home = tmp_path / "home"
    path = ArtifactStore(home / "artifacts").save("r/round-0001", b"weights", run_id="r", round=1)
    assert not (home / "secret.key").exists()
    monkeypatch.delenv("MEDFED_MODEL_KEY")
    assert ArtifactStore(tmp_path / "x", key=key.encode()).load(path) == b"weights"

    monkeypatch.setenv("MEDFED_MODEL_KEY", key)
    cfg = load_config(None, {"home": str(home)})
    assert cfg.model_key == key and "model_key" not in cfg.to_dict()
    assert key not in json.dumps(cfg.to_dict()) and key not in repr(cfg)
    assert ArtifactStore.for_config(cfg).load(path) == b"weights"

    monkeypatch.setenv("MEDFED_MODEL_KEY", "not-a-key")
    with pytest.raises(StoreError, match="MEDFED_MODEL_KEY is not an artifact key"):
        ArtifactStore(home / "artifacts")


def test_model_key_file_can_live_outside_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEDFED_MODEL_KEY", raising=False)
    key_file = tmp_path / "keys" / "model.key"
    cfg = config_from_dict({"home": str(tmp_path / "home"), "model_key_file": str(key_file)})
    path = ArtifactStore.for_config(cfg).save("r/round-0001", b"weights")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not (tmp_path / "home" / "secret.key").exists()
    assert ArtifactStore(tmp_path / "elsewhere", key_file=key_file).load(path) == b"weights"
    env = platform_env(cfg, "sqlite:///x.db")
    assert env["MEDFED_MODEL_KEY_FILE"] == str(key_file) and "MEDFED_MODEL_KEY" not in env
    with pytest.raises(StoreError, match=r"no artifact key .*missing.key"):
        ArtifactStore(tmp_path / "a", key_file=tmp_path / "missing.key", create_key=False)


# process command lines ------------------------------------------------------------------------


def test_the_worker_command_line_holds_no_store_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDFED_MODEL_KEY_FILE", str(tmp_path / "model.key"))
    home = tmp_path / "home"
    url = f"sqlite:///{tmp_path / 'store-with-a-secret-name.db'}"
    cfg = config_from_dict({"home": str(home), "data": {"path": str(tmp_path / "none")}})
    with RunStore(url) as store:
        run_id = runner.start_run(cfg, store)
        pid = int((home / "runs" / run_id / "worker.pid").read_text())
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        finally:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    joined = b" ".join(cmdline).decode()
    assert "medfed.federation.worker" in joined and run_id in joined
    assert "store-with-a-secret-name" not in joined and "sqlite" not in joined
    assert "--store" not in joined
    assert f"MEDFED_STORE_URL={url}".encode() in environ
    assert f"MEDFED_HOME={home.resolve()}".encode() in environ


def test_the_worker_refuses_to_start_without_its_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from medfed.federation import worker

    monkeypatch.delenv("MEDFED_STORE_URL", raising=False)
    with pytest.raises(SystemExit) as exited:
        worker.main(["some-run"])
    assert exited.value.code == 2
    assert "MEDFED_STORE_URL and MEDFED_HOME must be set" in capsys.readouterr().err


# what viewers see, and the API secret -------------------------------------------------------


def test_viewers_see_no_database_redis_or_api_secret(tmp_path: Path) -> None:
    values = platform_values(tmp_path / "home")
    sections = {k: v for k, v in values.items() if k in ("database", "model", "federated")}
    with RunStore(f"sqlite:///{tmp_path / 'medfed.db'}") as store:
        client = make_client(store, tmp_path / "home", **sections)
        viewer = login(client, VIEWER)
        defaults = client.get("/api/config/defaults", headers=viewer)
        run_id = seed_run(store, config_from_dict(values))
        detail = client.get(f"/api/runs/{run_id}", headers=viewer)
    assert defaults.status_code == detail.status_code == 200
    shown = defaults.json()["database"]
    assert shown["redis_url"] == "redis://:***@redis.example:6379/0"
    assert shown["url"] == "postgresql+psycopg://medfed:***@db.example:5432/medfed"
    for response in (defaults, detail):
        for secret in SECRETS:
            assert secret not in response.text
    assert set(detail.json()["config"]) == set(RUN_SECTIONS)


@pytest.mark.parametrize("where", ["yaml", "env"])
def test_a_short_api_secret_key_is_refused(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "medfed.yml"
    if where == "yaml":
        path.write_text("api:\n  secret_key: short-but-s3cret\n")
    else:
        path.write_text("name: x\n")
        monkeypatch.setenv("MEDFED_API__SECRET_KEY", "short-but-s3cret")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "api.secret_key" in message and "at least 32 bytes, it has 16" in message
    assert "short-but-s3cret" not in message
    long_enough = "k" * 32
    monkeypatch.setenv("MEDFED_API__SECRET_KEY", long_enough)
    assert load_config(None).api.secret_key == long_enough


# file permissions --------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_home_database_and_key_files_are_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEDFED_MODEL_KEY", raising=False)
    monkeypatch.delenv("MEDFED_MODEL_KEY_FILE", raising=False)
    home = tmp_path / "home"
    cfg = config_from_dict({"home": str(home)})  # no api.secret_key: a key file is made
    app = create_app(cfg)
    with TestClient(app) as client:
        assert client.get("/api/health").status_code == 200
        app.state.store.create_run("r", {}, mode="simulation", strategy="FedAvg", num_rounds=1)
        ArtifactStore.for_config(cfg).save("r/round-0001", b"weights")
        assert _mode(home) == 0o700
        for name in ("medfed.db", "api_secret.key", "secret.key"):
            assert _mode(home / name) == 0o600, name
        wal = home / "medfed.db-wal"
        assert not wal.exists() or _mode(wal) == 0o600
        assert _mode(home / "artifacts" / "r" / "round-0001") == 0o600

    home.chmod(0o755)  # loosened by hand: tightened again when the platform starts
    (home / "medfed.db").chmod(0o644)
    (home / "secret.key").chmod(0o644)
    with TestClient(create_app(cfg)):
        pass
    assert _mode(home) == 0o700
    assert _mode(home / "medfed.db") == _mode(home / "secret.key") == 0o600


def test_a_new_sqlite_database_is_private_wherever_it_is(tmp_path: Path) -> None:
    with RunStore(f"sqlite:///{tmp_path / 'new' / 'medfed.db'}") as store:
        store.create_run("r", {}, mode="simulation", strategy="FedAvg", num_rounds=1)
    assert _mode(tmp_path / "new") == 0o700
    assert _mode(tmp_path / "new" / "medfed.db") == 0o600
