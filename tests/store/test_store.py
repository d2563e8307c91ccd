"""The run store's repository on SQLite, and the same suite on MariaDB and PostgreSQL.

Server back ends use their own database (MariaDB) or schema (PostgreSQL) inside the shared
test server, dropped at the end; tables are emptied after every test.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import delete, inspect, select

from db_support import empty_database
from medfed.errors import StoreError
from medfed.store import RunStore
from medfed.store import models as m
from medfed.store.database import alembic_config


@pytest.fixture(scope="module", params=["sqlite", "mysql", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[str]:
    """A URL to an empty database of each back end, removed after the module."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('store')}/medfed.db"
        return
    with empty_database(request.param, "medfed_test", f"{request.param} back end") as url:
        yield url


@pytest.fixture
def store(backend_url: str) -> Iterator[RunStore]:
    store = RunStore(backend_url)
    try:
        yield store
    finally:
        with store.engine.begin() as connection:
            for table in reversed(m.Base.metadata.sorted_tables):
                connection.execute(delete(table))
        store.close()


def _run(store: RunStore, name: str = "run", **kwargs) -> str:
    options = {"mode": "simulation", "strategy": "FedAvg", "num_rounds": 3} | kwargs
    return store.create_run(name, {"federated": {"rounds": 3}, "name": name}, **options)


def _close_to_now(moment: datetime | None) -> bool:
    assert moment is not None and moment.tzinfo is not None
    return abs(datetime.now(UTC) - moment) < timedelta(seconds=30)


# migrations ---------------------------------------------------------------------------------


def test_migrations_run_twice_and_keep_data(backend_url: str, store: RunStore) -> None:
    run_id = _run(store)
    with RunStore(backend_url) as again:
        assert again.get_run(run_id).name == "run"
    with store.engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    assert current == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_migration_creates_exactly_the_models(store: RunStore) -> None:
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), m.Base.metadata)
    assert diff == []
    tables = set(inspect(store.engine).get_table_names())
    assert {t.name for t in m.Base.metadata.sorted_tables} <= tables


def test_store_without_migration_still_connects(backend_url: str, store: RunStore) -> None:
    with RunStore(backend_url, migrate=False) as plain:
        assert plain.list_runs() == ([], 0)


# runs ---------------------------------------------------------------------------------------


def test_create_and_get_run(store: RunStore) -> None:
    config = {"federated": {"rounds": 3, "strategy": "FedProx"}, "privacy": {"delta": 1e-5}}
    run_id = store.create_run(
        "fedprox", config, mode="deployment", strategy="FedProx", num_rounds=3, created_by="ada"
    )
    run = store.get_run(run_id)
    assert len(run_id) == 32 and run.id == run_id
    assert (run.name, run.mode, run.strategy, run.num_rounds) == (
        "fedprox",
        "deployment",
        "FedProx",
        3,
    )
    assert run.status == "pending" and run.created_by == "ada"
    assert run.config == config
    assert _close_to_now(run.created_at)
    assert run.started_at is None and run.finished_at is None and run.duration_s is None
    assert (run.rounds_done, run.best_accuracy, run.final_metrics) == (0, None, None)


def test_any_language_is_stored(store: RunStore) -> None:
    run_id = _run(store, "脑肿瘤 MRI — Charité 🧠")
    store.record_client_result(run_id, 1, hospital="北京协和医院", phase="train", status="ok")
    store.publish(run_id, "client_replied", {"hospital": "北京协和医院", "note": "ünïcödé"})
    assert store.get_run(run_id).name == "脑肿瘤 MRI — Charité 🧠"
    assert store.client_results(run_id)[0].hospital == "北京协和医院"
    assert store.events(run_id)[0].payload["note"] == "ünïcödé"
    assert [r.id for r in store.list_runs(search="charité")[0]] == [run_id]


def test_create_run_with_given_id_and_duplicate(store: RunStore) -> None:
    assert _run(store, run_id="abc123") == "abc123"
    with pytest.raises(StoreError, match="abc123 already exists"):
        _run(store, run_id="abc123")
    with pytest.raises(StoreError, match="mode 'batch' is not one of simulation, deployment"):
        _run(store, mode="batch")
    with pytest.raises(StoreError, match="a run name needs 1 to 200 characters, not 201"):
        _run(store, "x" * 201)
    assert store.get_run(_run(store, "y" * 200)).name == "y" * 200


def test_unknown_run_is_a_clear_error(store: RunStore) -> None:
    with pytest.raises(StoreError, match="no run nope; `medfed runs list` shows the runs"):
        store.get_run("nope")
    with pytest.raises(StoreError, match="no run nope"):
        store.set_status("nope", "running")
    with pytest.raises(StoreError, match="no run nope"):
        store.record_round("nope", 1, metrics={}, duration_s=1)
    with pytest.raises(StoreError, match="no run nope"):
        store.publish("nope", "run_started", {})


def test_status_lifecycle_stamps_times(store: RunStore) -> None:
    run_id = _run(store)
    store.set_status(run_id, "running")
    started = store.get_run(run_id).started_at
    assert _close_to_now(started)
    store.set_status(run_id, "failed", error="hospital-2 unreachable")
    run = store.get_run(run_id)
    assert run.status == "failed" and run.error == "hospital-2 unreachable"
    assert run.finished_at is not None and run.finished_at >= started
    assert run.duration_s is not None and run.duration_s >= 0
    store.set_status(run_id, "running")  # resumed: keeps its start, is no longer finished
    run = store.get_run(run_id)
    assert (run.started_at, run.finished_at, run.error) == (started, None, None)
    with pytest.raises(StoreError, match="status 'done' is not one of"):
        store.set_status(run_id, "done")


def test_flower_run_id_and_final_metrics(store: RunStore) -> None:
    run_id = _run(store)
    store.set_flower_run_id(run_id, 2**62 + 7)
    store.set_final_metrics(run_id, {"accuracy": np.float32(0.5), "auc": float("nan")})
    run = store.get_run(run_id)
    assert run.flower_run_id == 2**62 + 7
    assert run.final_metrics == {"accuracy": 0.5, "auc": None}


def test_resolve_run_id_by_prefix(store: RunStore) -> None:
    first = _run(store, run_id="aaaa1111")
    _run(store, run_id="aaaa2222")
    assert store.resolve_run_id("aaaa1") == first
    with pytest.raises(StoreError, match="2 runs start with aaaa"):
        store.resolve_run_id("aaaa")
    with pytest.raises(StoreError, match="no run zz"):
        store.resolve_run_id("zz")
    _run(store, run_id="bbbb3333")
    _run(store, run_id="bbbb33334")
    assert store.resolve_run_id("bbbb3333") == "bbbb3333"  # an exact id wins
    assert store.resolve_run_id("BBBB33334") == "bbbb33334"
    with pytest.raises(StoreError, match="no run ;"):
        store.resolve_run_id("")


def test_list_runs_filters_sorts_and_pages(store: RunStore) -> None:
    ids = {}
    for name, strategy in [("alpha", "FedAvg"), ("Beta 100%", "FedProx"), ("gamma", "FedAvg")]:
        ids[name] = _run(store, name, strategy=strategy)
    store.set_status(ids["gamma"], "running")

    runs, total = store.list_runs()
    assert total == 3 and [r.name for r in runs] == ["gamma", "Beta 100%", "alpha"]
    assert [r.name for r in store.list_runs(sort="name")[0]] == ["alpha", "Beta 100%", "gamma"]
    assert [r.name for r in store.list_runs(strategy="FedAvg")[0]] == ["gamma", "alpha"]
    assert [r.name for r in store.list_runs(status="running")[0]] == ["gamma"]
    assert [r.name for r in store.list_runs(search="beta")[0]] == ["Beta 100%"]
    assert [r.name for r in store.list_runs(search="0%")[0]] == ["Beta 100%"]
    assert store.list_runs(search="%")[1] == 1  # a literal percent sign, not a wildcard
    assert [r.id for r in store.list_runs(search=ids["alpha"][:12])[0]] == [ids["alpha"]]
    page, total = store.list_runs(limit=2, offset=2)
    assert total == 3 and [r.name for r in page] == ["alpha"]
    # started_at: runs never started come last in either direction
    assert store.list_runs(sort="-started_at")[0][0].name == "gamma"
    assert store.list_runs(sort="started_at")[0][0].name == "gamma"

    now = datetime.now(UTC)
    assert store.list_runs(since=now - timedelta(minutes=5))[1] == 3
    assert store.list_runs(since=now + timedelta(minutes=5))[1] == 0
    assert store.list_runs(until=now - timedelta(minutes=5))[1] == 0
    with pytest.raises(StoreError, match="cannot sort runs by 'password'"):
        store.list_runs(sort="password")


# rounds, results, checkpoints ---------------------------------------------------------------


def _round_metrics(accuracy: float) -> dict:
    return {
        "loss": 0.4,
        "accuracy": accuracy,
        "precision": 0.8,
        "recall": 0.7,
        "f1": 0.75,
        "auc": 0.9,
        "confusion_matrix": [[40, 10], [5, 45]],
    }


def test_record_round_is_idempotent(store: RunStore) -> None:
    run_id = _run(store)
    store.record_round(run_id, 2, metrics=_round_metrics(0.6), duration_s=2.0)
    store.record_round(run_id, 1, metrics=_round_metrics(0.5), duration_s=1.0)
    store.record_round(
        run_id,
        2,
        metrics=_round_metrics(0.85),
        duration_s=2.5,
        bytes_up=3 * 2**32,
        bytes_down=1000,
        train_metrics={"loss": np.float64(0.3), "num_examples": np.int64(120)},
        evaluate_metrics={"accuracy": 0.8},
        epsilon=1.25,
        num_clients_ok=3,
        num_clients_failed=1,
    )
    rounds = store.rounds(run_id)
    assert [r.round for r in rounds] == [1, 2]
    second = rounds[1]
    assert second.metrics == _round_metrics(0.85)
    assert second.train_metrics == {"loss": 0.3, "num_examples": 120}
    assert second.evaluate_metrics == {"accuracy": 0.8}
    assert (second.duration_s, second.bytes_up, second.bytes_down) == (2.5, 3 * 2**32, 1000)
    assert (second.epsilon, second.num_clients_ok, second.num_clients_failed) == (1.25, 3, 1)
    assert _close_to_now(second.finished_at)
    assert rounds[0].train_metrics is None and rounds[0].epsilon is None
    run = store.get_run(run_id)
    assert (run.rounds_done, run.best_accuracy) == (2, 0.85)
    assert store.last_completed_round(run_id) == 2


def test_client_results_by_round(store: RunStore) -> None:
    run_id = _run(store)
    for round_number in (1, 2):
        store.record_client_result(
            run_id,
            round_number,
            hospital="hospital-1",
            phase="train",
            status="ok",
            num_examples=120,
            metrics={"loss": 0.2 * round_number},
            duration_s=3.5,
            bytes_up=2048,
            bytes_down=4096,
            epsilon=0.7,
        )
        store.record_client_result(
            run_id, round_number, hospital="42", phase="evaluate", status="failed", error="timeout"
        )
    assert len(store.client_results(run_id)) == 4
    second = store.client_results(run_id, 2)
    assert [(r.hospital, r.phase, r.status) for r in second] == [
        ("hospital-1", "train", "ok"),
        ("42", "evaluate", "failed"),
    ]
    ok, failed = second
    assert (ok.num_examples, ok.metrics, ok.duration_s) == (120, {"loss": 0.4}, 3.5)
    assert (ok.bytes_up, ok.bytes_down, ok.epsilon, ok.error) == (2048, 4096, 0.7, None)
    assert (failed.metrics, failed.duration_s, failed.error) == (None, None, "timeout")
    assert _close_to_now(ok.created_at)
    with pytest.raises(StoreError, match="phase 'fit' is not one of train, evaluate"):
        store.record_client_result(run_id, 1, hospital="h", phase="fit", status="ok")


def test_checkpoints_and_latest(store: RunStore) -> None:
    run_id = _run(store)
    assert store.latest_checkpoint(run_id) is None and store.checkpoints(run_id) == []
    for round_number, accuracy in [(1, 0.6), (3, 0.7), (2, float("nan"))]:
        store.record_checkpoint(
            run_id,
            round_number,
            f"models/{run_id}/round_{round_number}.pt.enc",
            metric_name="accuracy",
            metric_value=accuracy,
            size_bytes=5 * 2**30,
        )
    checkpoints = store.checkpoints(run_id)
    assert [c.round for c in checkpoints] == [1, 2, 3]
    assert checkpoints[1].metric_value is None and checkpoints[0].size_bytes == 5 * 2**30
    latest = store.latest_checkpoint(run_id)
    assert latest is not None
    assert (latest.round, latest.path, latest.metric_value) == (
        3,
        f"models/{run_id}/round_3.pt.enc",
        0.7,
    )


def test_delete_rounds_after_for_resume(store: RunStore) -> None:
    run_id, other = _run(store), _run(store, "other")
    assert store.last_completed_round(run_id) == 0
    for rid in (run_id, other):
        for r in (1, 2, 3):
            store.record_round(rid, r, metrics={"accuracy": r / 10}, duration_s=1)
            store.record_client_result(rid, r, hospital="h1", phase="train", status="ok")
            store.record_checkpoint(
                rid, r, f"{rid}/{r}", metric_name="a", metric_value=1, size_bytes=1
            )
    store.delete_rounds_after(run_id, 1)
    assert [r.round for r in store.rounds(run_id)] == [1]
    assert [r.round for r in store.client_results(run_id)] == [1]
    assert [c.round for c in store.checkpoints(run_id)] == [1]
    assert store.last_completed_round(run_id) == 1
    assert store.last_completed_round(other) == 3 and len(store.checkpoints(other)) == 3


# events -------------------------------------------------------------------------------------


def test_events_history_after_id(store: RunStore) -> None:
    run_id, other = _run(store), _run(store, "other")
    first = store.publish(run_id, "run_started", {"num_rounds": 3})
    store.publish(other, "run_started", {})
    second = store.publish(run_id, "round_finished", {"round": 1, "metrics": {"accuracy": 0.5}})
    third = store.publish(run_id, "run_finished", {"ok": True})
    assert first < second < third
    events = store.events(run_id)
    assert [e.type for e in events] == ["run_started", "round_finished", "run_finished"]
    assert events[1].payload == {"round": 1, "metrics": {"accuracy": 0.5}}
    assert _close_to_now(events[0].created_at)
    assert [e.id for e in store.events(run_id, after_id=first)] == [second, third]
    assert [e.id for e in store.events(run_id, after_id=first, limit=1)] == [second]
    assert store.events(run_id, after_id=third) == []
    assert events[1].to_json()["created_at"] == events[1].created_at.isoformat()


def test_unjsonable_payload_names_the_key(store: RunStore) -> None:
    run_id = _run(store)
    with pytest.raises(StoreError, match=r"payload.model: a object cannot be stored as JSON"):
        store.publish(run_id, "x", {"model": object()})


# users, audit, templates, hospitals ---------------------------------------------------------


def test_users_hash_and_verify(store: RunStore) -> None:
    admin = store.add_user("ada", "correct horse", "admin")
    store.add_user("bob", "correct horse", "viewer")
    assert (admin.name, admin.role) == ("ada", "admin") and _close_to_now(admin.created_at)
    assert store.verify_user("ada", "correct horse") == admin
    assert store.verify_user("ada", "wrong horse!") is None
    assert store.verify_user("nobody", "correct horse") is None
    assert store.get_user("bob").role == "viewer" and store.get_user("nobody") is None
    assert [u.name for u in store.list_users()] == ["ada", "bob"]
    with store.engine.connect() as connection:
        hashes = connection.execute(select(m.User.password_hash)).scalars().all()
    assert all(h.startswith("scrypt$") and "correct horse" not in h for h in hashes)
    assert hashes[0] != hashes[1]  # salted
    with pytest.raises(StoreError, match="user 'ada' already exists"):
        store.add_user("ada", "another password", "viewer")
    with pytest.raises(StoreError, match="role 'root' is not one of admin, viewer"):
        store.add_user("carol", "long enough", "root")
    with pytest.raises(StoreError, match="at least 8 characters"):
        store.add_user("carol", "short", "viewer")


def test_activity_log_newest_first(store: RunStore) -> None:
    store.log_activity("ada", "login", None)
    store.log_activity("ada", "run.create", "run-1", {"strategy": "FedAvg"})
    store.log_activity(None, "model.download", "run-1/round_3")
    entries = store.activity_log()
    assert [e.action for e in entries] == ["model.download", "run.create", "login"]
    assert entries[1].detail == {"strategy": "FedAvg"} and entries[1].user == "ada"
    assert entries[0].user is None and _close_to_now(entries[0].at)
    assert [e.action for e in store.activity_log(limit=1, offset=1)] == ["run.create"]
    assert store.count_activity() == 3


def test_templates_save_replace_and_get(store: RunStore) -> None:
    store.save_template("quick", {"federated": {"rounds": 2}}, created_by="ada")
    store.save_template("dp", {"privacy": {"mode": "sample"}})
    store.save_template("quick", {"federated": {"rounds": 4}}, created_by="bob")
    assert [t.name for t in store.list_templates()] == ["dp", "quick"]
    quick = store.get_template("quick")
    assert (quick.config, quick.created_by) == ({"federated": {"rounds": 4}}, "bob")
    with pytest.raises(StoreError, match="no config template 'slow'; saved templates: dp, quick"):
        store.get_template("slow")


def test_hospitals_seen_and_runs_joined(store: RunStore) -> None:
    store.touch_hospital("hospital-1", {"num_examples": 120})
    store.touch_hospital("hospital-2")
    first_seen = store.list_hospitals()[0].last_seen
    store.touch_hospital("hospital-1")
    run_ids = [_run(store, "first"), _run(store, "second")]
    for run_id in reversed(run_ids):
        for r in (1, 2):
            store.record_client_result(run_id, r, hospital="hospital-1", phase="train", status="ok")
    hospitals = store.list_hospitals()
    assert [(h.name, h.runs_joined) for h in hospitals] == [("hospital-1", 2), ("hospital-2", 0)]
    assert hospitals[0].run_ids == tuple(run_ids) and hospitals[1].run_ids == ()
    assert hospitals[0].info == {"num_examples": 120}  # kept when not given
    assert hospitals[0].last_seen >= first_seen and hospitals[1].info is None
    store.touch_hospital("hospital-1", {"num_examples": 80})
    assert store.list_hospitals()[0].info == {"num_examples": 80}


# connection errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "is not valid; use e.g. sqlite:///"),
        ("nosuchdb://x/y", "no database driver for nosuchdb://x/y"),
        ("mysql+pymysql://ada:s3cret@127.0.0.1:1/medfed", "cannot use the database at mysql"),
    ],
)
def test_bad_url_is_a_clear_error(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as caught:
        RunStore(url)
    assert "s3cret" not in str(caught.value)
    assert "--db" in str(caught.value)


def test_unmigrated_database_is_refused_without_migrate(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    with pytest.raises(StoreError, match=r"has schema revision none, medfed needs \d{4}"):
        RunStore(url, migrate=False)
    RunStore(url).close()
    with RunStore(url, migrate=False) as store:
        assert store.list_runs() == ([], 0)


def test_sqlite_store_creates_its_folder(tmp_path) -> None:
    with RunStore(f"sqlite:///{tmp_path}/a/b/medfed.db") as store:
        _run(store)
    assert (tmp_path / "a" / "b" / "medfed.db").is_file()


def test_concurrent_first_migrations_agree(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    errors: list[Exception] = []

    def open_store() -> None:
        try:
            RunStore(url).close()
        except Exception as exc:  # collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with RunStore(url) as store:
        assert store.list_runs() == ([], 0)
