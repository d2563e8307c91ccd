"""The run queue: started runs wait for room, start oldest first, can be cancelled, survive a
restart of the platform; vanished workers are reaped. Workers here are stand-in processes
(their command line names the run, as a real worker's does), so no test trains."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api_support import ADMIN, VIEWER, login, make_client
from db_support import empty_database
from medfed.cli import main
from medfed.config import MedfedConfig, config_from_dict
from medfed.errors import FederationError
from medfed.federation import queue as queue_module
from medfed.federation.processes import wait_for_exec
from medfed.federation.queue import Limits, RunQueue, default_max_concurrent_runs, worker_alive
from medfed.federation.run_paths import worker_pid_file
from medfed.federation.simulation import ray_init_args
from medfed.store import RunStore

GiB = 2**30


@pytest.fixture
def cfg(tmp_path: Path) -> MedfedConfig:
    return config_from_dict(
        {
            "home": str(tmp_path / "home"),
            "data": {"path": str(tmp_path / "data")},
            "platform": {"max_concurrent_runs": 1, "min_free_memory_mb": 0},
        }
    )


@pytest.fixture
def store(cfg: MedfedConfig) -> RunStore:
    with RunStore(cfg.database_url) as run_store:
        yield run_store


class StandInWorkers:
    """Replaces RunQueue._launch: a sleeping process per admitted run (no Ray, no torch)."""

    def __init__(self) -> None:
        self.processes: dict[str, subprocess.Popen] = {}
        self.launched: list[str] = []

    def launch(self, queue: RunQueue, run) -> None:  # noqa: ANN001 - a RunRecord
        process = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)", run.id],
            start_new_session=True,
        )
        path = worker_pid_file(queue.home, run.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(process.pid))
        self.processes[run.id] = process
        self.launched.append(run.id)

    def end(self, run_id: str) -> None:
        process = self.processes.pop(run_id)
        process.kill()
        process.wait()

    def close(self) -> None:
        for run_id in list(self.processes):
            self.end(run_id)


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> StandInWorkers:
    stand_ins = StandInWorkers()
    monkeypatch.setattr(RunQueue, "_launch", lambda self, run: stand_ins.launch(self, run))
    yield stand_ins
    stand_ins.close()


def new_run(store: RunStore, cfg: MedfedConfig, name: str, mode: str = "simulation") -> str:
    return store.create_run(name, cfg.to_dict(), mode=mode, strategy="FedAvg", num_rounds=2)


def test_runs_wait_for_room_and_start_oldest_first(
    cfg: MedfedConfig, store: RunStore, workers: StandInWorkers
) -> None:
    queue = RunQueue.for_platform(cfg, store)
    first, second, third = (new_run(store, cfg, name) for name in ("a", "b", "c"))
    for run_id in (first, second, third):
        queue.submit(run_id)
    assert [store.get_run(r).status for r in (first, second, third)] == [
        "pending",
        "queued",
        "queued",
    ]
    assert queue.positions() == {second: 1, third: 2}
    assert [e.type for e in store.events(second)] == ["run_queued"]
    assert store.events(first)[-1].type == "run_admitted"

    queue.admit()  # no room yet: nothing moves
    assert workers.launched == [first]

    store.set_status(first, "running")
    store.set_status(first, "finished")
    workers.end(first)
    assert queue.admit() == [second]
    assert store.get_run(second).status == "pending"
    assert queue.positions() == {third: 1}


def test_a_queued_run_can_be_cancelled_and_started_again(
    cfg: MedfedConfig, store: RunStore, workers: StandInWorkers
) -> None:
    queue = RunQueue.for_platform(cfg, store)
    busy, waiting = new_run(store, cfg, "busy"), new_run(store, cfg, "waiting")
    queue.submit(busy)
    queue.submit(waiting)
    queue.cancel(waiting)
    run = store.get_run(waiting)
    assert run.status == "stopped"
    assert store.events(waiting)[-1].type == "run_stopped"
    assert store.events(waiting)[-1].payload == {"cancelled": True}
    with pytest.raises(FederationError, match="not queued"):
        queue.cancel(waiting)
    with pytest.raises(FederationError, match="already being trained"):
        queue.submit(busy)
    queue.submit(waiting)
    assert store.get_run(waiting).status == "queued"


def test_restarting_the_platform_keeps_the_queue(
    cfg: MedfedConfig, store: RunStore, workers: StandInWorkers
) -> None:
    held = cfg.model_copy(
        update={"platform": cfg.platform.model_copy(update={"max_concurrent_runs": 0})}
    )
    queue = RunQueue.for_platform(held, store)
    ids = [new_run(store, cfg, name) for name in ("a", "b")]
    for run_id in ids:
        queue.submit(run_id)
    assert workers.launched == []  # 0 holds every run in the queue
    store.close()

    with RunStore(cfg.database_url) as reopened:  # the platform starts again
        restarted = RunQueue.for_platform(cfg, reopened)
        assert restarted.positions() == {ids[0]: 1, ids[1]: 2}
        assert restarted.admit() == [ids[0]]
        assert reopened.get_run(ids[1]).status == "queued"


def test_a_run_whose_worker_vanished_is_interrupted(
    cfg: MedfedConfig, store: RunStore, workers: StandInWorkers
) -> None:
    queue = RunQueue.for_platform(cfg, store)
    run_id = new_run(store, cfg, "lost")
    queue.submit(run_id)
    store.set_status(run_id, "running")
    untouched = new_run(store, cfg, "no worker file")
    store.set_status(untouched, "running")  # e.g. a run whose worker is not this host's
    assert worker_alive(queue.home, run_id)
    workers.end(run_id)
    assert not worker_alive(queue.home, run_id)

    assert queue.reap() == [run_id]
    run = store.get_run(run_id)
    assert run.status == "interrupted"
    assert "resume" in run.error
    assert store.events(run_id)[-1].type == "run_interrupted"
    assert store.get_run(untouched).status == "running"
    assert queue.reap() == []


def test_a_recycled_pid_is_not_taken_for_the_worker(cfg: MedfedConfig, store: RunStore) -> None:
    run_id = new_run(store, cfg, "old")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        wait_for_exec(other.pid)  # its command line is empty while it execs
        path = worker_pid_file(cfg.home, run_id)
        path.parent.mkdir(parents=True)
        path.write_text(str(other.pid))
        assert not worker_alive(cfg.home, run_id)
    finally:
        other.kill()
        other.wait()


def test_no_memory_to_spare_keeps_runs_queued(
    cfg: MedfedConfig, store: RunStore, workers: StandInWorkers
) -> None:
    hungry = cfg.model_copy(
        update={"platform": cfg.platform.model_copy(update={"min_free_memory_mb": 2**30})}
    )
    queue = RunQueue.for_platform(hungry, store)
    run_id = new_run(store, cfg, "waits")
    queue.submit(run_id)
    assert store.get_run(run_id).status == "queued"
    assert workers.launched == []


def test_deployed_runs_wait_for_enough_connected_hospitals(
    cfg: MedfedConfig, store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medfed.federation import hospitals

    online = {"count": 1}
    submitted: list[str] = []
    monkeypatch.setattr(hospitals, "superlink_listening", lambda _cfg: True)
    monkeypatch.setattr(RunQueue, "_online_hospitals", lambda self: online["count"])

    def submit(self: RunQueue, run) -> int:  # noqa: ANN001 - a RunRecord
        submitted.append(run.id)
        store.set_flower_run_id(run.id, len(submitted))
        return len(submitted)

    monkeypatch.setattr(RunQueue, "submit_deployed", submit)
    queue = RunQueue.for_platform(cfg, store)
    needs_two = cfg.model_copy(
        update={"federated": cfg.federated.model_copy(update={"min_available_clients": 2})}
    )
    first = store.create_run(
        "sites", needs_two.to_dict(), mode="deployment", strategy="FedAvg", num_rounds=2
    )
    second = store.create_run(
        "more", needs_two.to_dict(), mode="deployment", strategy="FedAvg", num_rounds=2
    )
    queue.submit(first)
    queue.submit(second)
    assert submitted == []  # one hospital online, two needed
    assert queue.positions() == {first: 1, second: 2}

    online["count"] = 3
    queue.admit()
    assert submitted == [first]  # the other needs two more hospitals than are free
    online["count"] = 4
    queue.admit()
    assert submitted == [first, second]


def test_default_limits_follow_cpus_and_memory() -> None:
    assert default_max_concurrent_runs(cpus=2, memory=24 * GiB) == 1  # this machine
    assert default_max_concurrent_runs(cpus=8, memory=32 * GiB) == 4
    assert default_max_concurrent_runs(cpus=16, memory=8 * GiB) == 2
    assert default_max_concurrent_runs(cpus=1, memory=1 * GiB) == 1
    assert Limits(max_simulated=2, min_free_memory_mb=0, cpus=8).cpus_per_run == 4
    assert Limits(max_simulated=4, min_free_memory_mb=0, cpus=2).cpus_per_run == 1
    limits = Limits(max_simulated=3, min_free_memory_mb=512, cpus=8)
    assert Limits.from_environment(limits.env()).max_simulated == 3
    assert Limits.from_environment(limits.env()).min_free_memory_mb == 512


def test_a_run_is_given_its_admitted_cpus_and_a_bounded_ray() -> None:
    args = ray_init_args(2)
    assert args["num_cpus"] == 2 and args["num_gpus"] == 0
    assert args["include_dashboard"] is False
    assert 256 * 2**20 <= args["object_store_memory"] <= 2 * GiB


def test_the_api_queues_runs_shows_their_place_and_cancels_them(
    tmp_path: Path, store: RunStore, workers: StandInWorkers
) -> None:
    client = make_client(
        store,
        tmp_path / "home",
        platform={"max_concurrent_runs": 1, "min_free_memory_mb": 0},
        data={"path": str(tmp_path / "data")},
    )
    admin, viewer = login(client, ADMIN), login(client, VIEWER)
    started = [
        client.post("/api/runs", json={"name": name}, headers=admin).json()
        for name in ("first", "second")
    ]
    assert [(r["status"], r["queue_position"]) for r in started] == [
        ("pending", None),
        ("queued", 1),
    ]
    waiting = started[1]["id"]
    listed = client.get("/api/runs?status=queued", headers=viewer).json()
    assert [(r["id"], r["queue_position"]) for r in listed["items"]] == [(waiting, 1)]
    assert client.get(f"/api/runs/{waiting}", headers=viewer).json()["queue_position"] == 1
    again = client.post(f"/api/runs/{waiting}/start", headers=admin)
    assert again.status_code == 409 and "queued" in again.json()["detail"]
    assert client.post(f"/api/runs/{waiting}/cancel", headers=viewer).status_code == 403

    cancelled = client.post(f"/api/runs/{waiting}/cancel", headers=admin)
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["queue_position"]) == ("stopped", None)
    refused = client.post(f"/api/runs/{waiting}/cancel", headers=admin)
    assert refused.status_code == 409 and "not queued" in refused.json()["detail"]
    actions = [(e.action, e.target) for e in store.activity_log()]
    assert ("run.cancel", waiting) in actions
    stream = client.get(f"/api/runs/{waiting}/events", headers=viewer)
    assert "run_queued" in stream.text and stream.text.rstrip().endswith(
        'run_stopped\ndata: {"cancelled":true}'
    )


def test_the_cli_lists_queued_runs_with_their_place_and_cancels_them(
    cfg: MedfedConfig,
    store: RunStore,
    workers: StandInWorkers,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue = RunQueue.for_platform(cfg, store)
    busy, waiting = new_run(store, cfg, "busy-run"), new_run(store, cfg, "waiting-run")
    queue.submit(busy)
    queue.submit(waiting)
    monkeypatch.setenv("COLUMNS", "200")
    db = ["--db", cfg.database_url]
    assert main(["runs", "list", *db]) == 0
    assert "queued #1" in capsys.readouterr().out
    assert main(["runs", "cancel", waiting[:8], *db]) == 0
    assert store.get_run(waiting).status == "stopped"
    assert main(["runs", "cancel", busy[:8], *db]) == 2
    assert "not queued" in capsys.readouterr().err


def test_admission_is_one_at_a_time_across_processes(
    cfg: MedfedConfig, store: RunStore, workers: StandInWorkers
) -> None:
    """Two queues of one platform (a server and a CLI) never fill the same room twice."""
    ids = [new_run(store, cfg, f"r{i}") for i in range(4)]
    for run_id in ids:
        store.set_status(run_id, "queued")
        time.sleep(0.01)
    queues = [RunQueue.for_platform(cfg, store) for _ in range(2)]
    import threading

    threads = [threading.Thread(target=q.admit) for q in queues for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert workers.launched == [ids[0]]
    assert queue_module.LOCK_FILE in {p.name for p in Path(cfg.home).iterdir()}


def test_stopping_the_platform_interrupts_the_runs_it_trains_and_keeps_the_queue(
    tmp_path: Path, store: RunStore, workers: StandInWorkers
) -> None:
    from fastapi.testclient import TestClient

    from api_support import SECRET
    from medfed.api import create_app

    cfg = config_from_dict(
        {
            "home": str(tmp_path / "home"),
            "data": {"path": str(tmp_path / "data")},
            "platform": {"max_concurrent_runs": 1, "min_free_memory_mb": 0},
            "api": {"secret_key": SECRET},
        }
    )
    store.add_user(*ADMIN, role="admin")
    with TestClient(create_app(cfg, store)) as client:  # served: the queue runs
        admin = login(client, ADMIN)
        training, waiting = (
            client.post("/api/runs", json={"name": name}, headers=admin).json()["id"]
            for name in ("training", "waiting")
        )
        store.set_status(training, "running")
        process = workers.processes[training]
    process.wait(timeout=30)  # ended with the platform
    run = store.get_run(training)
    assert run.status == "interrupted" and "resume" in run.error
    assert store.get_run(waiting).status == "queued"  # the queue is kept for the next start


def test_medfed_run_queues_and_says_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    config = tmp_path / "medfed.yml"
    config.write_text(
        f"home: {tmp_path / 'home'}\ndata:\n  path: {tmp_path / 'data'}\n"
        "platform:\n  max_concurrent_runs: 0\n"
    )
    assert main(["run", "--config", str(config), "--detach"]) == 0
    out = capsys.readouterr().out
    assert "queued" in out and "place 1" in out
    with RunStore(f"sqlite:///{tmp_path / 'home' / 'medfed.db'}") as store:
        runs, _ = store.list_runs()
        assert [r.status for r in runs] == ["queued"]
        assert main(["run", "--config", str(config), "--resume", runs[0].id[:8]]) == 2
    assert "queued" in capsys.readouterr().err


@pytest.fixture(params=["mysql", "postgresql"])
def server_store(request: pytest.FixtureRequest) -> Iterator[RunStore]:
    """A store in a database (MariaDB) or schema (PostgreSQL) of its own, dropped after."""
    with (
        empty_database(request.param, "medfed_queue", f"{request.param} back end") as url,
        RunStore(url) as store,
    ):
        yield store


def test_the_queue_works_on_every_database(
    server_store: RunStore, cfg: MedfedConfig, workers: StandInWorkers
) -> None:
    store = server_store
    queue = RunQueue.for_platform(cfg, store)
    ids = [new_run(store, cfg, f"run-{i}") for i in range(3)]
    for run_id in ids:
        queue.submit(run_id)
    assert store.get_run(ids[0]).status == "pending"
    assert queue.positions() == {ids[1]: 1, ids[2]: 2}
    assert not store.set_status(ids[0], "running", only_from=("queued",))
    assert store.set_status(ids[0], "running", only_from=("pending",))
    queue.cancel(ids[2])
    assert store.get_run(ids[2]).status == "stopped"
