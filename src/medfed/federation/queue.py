"""The run queue: started runs wait (status ``queued``) until the platform has room.

The queue is the store: a run joins it with status ``queued`` and its ``queued_at`` time, and
leaves it oldest first, so runs started from the CLI and from the dashboard wait in one line
and a restart of the platform keeps it. Admission — starting queued runs while there is room —
is :meth:`RunQueue.admit`, which any process of the platform may call, under a lock file in the
platform's home (``HOME/queue.lock``) so that two never admit the same room:

- ``medfed server`` (the API process) admits every second (:class:`QueueThread`), and at once
  when a run is started from the dashboard or API;
- ``medfed run`` admits when it queues its run, and every second while its run waits;
- a run's worker, when its run ends on its own (finished, failed, stopped), admits the next.

Room: simulated runs, at most ``platform.max_concurrent_runs`` at once (default from CPUs and
memory) and only while the host has ``platform.min_free_memory_mb`` available; each gets
``cpus // max_concurrent_runs`` CPUs, to which its worker caps its threads and Ray. Deployed
runs are limited by hospitals: one starts when enough registered hospitals are connected to
the platform's SuperLink (its ``federated.min_available_clients``) beyond those the deployed
runs in progress need. Only a process holding the platform configuration (server, CLI) admits
deployed runs; they go through the server's SuperLink anyway.

Admission also reaps: a simulated run whose worker is gone (killed, or the host restarted) is
marked ``interrupted`` and whatever its worker had started is ended.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from medfed.config import MedfedConfig, run_config
from medfed.errors import FederationError, StoreError
from medfed.federation.limits import Limits, meminfo
from medfed.federation.limits import default_max_concurrent_runs as default_max_concurrent_runs
from medfed.federation.processes import (
    TOKEN_ENV,
    end_processes,
    process_alive,
    wait_for_exec,
)
from medfed.federation.run_paths import (
    run_dir,
    stop_flag,
    worker_log,
    worker_pid_file,
    worker_token_file,
)
from medfed.federation.runtime import HOME_ENV, STORE_URL_ENV, platform_env
from medfed.store import ACTIVE_STATUSES, EventType, Mode, RunRecord, RunStatus, RunStore
from medfed.store.home import make_private_dir

log = logging.getLogger("medfed.queue")

LOCK_FILE = "queue.lock"
INTERRUPT_WAIT_S = 20.0


def run_needs(run: RunRecord) -> int:
    """Hospitals a deployed run needs connected: its ``federated.min_available_clients``."""
    federated = (run.config or {}).get("federated") or {}
    try:
        return max(1, int(federated.get("min_available_clients", 1)))
    except (TypeError, ValueError):
        return 1


def worker_alive(home: Path | str, run_id: str) -> bool:
    """Whether the run's background worker (as its pid file names it) is running."""
    pid_file = worker_pid_file(home, run_id)
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False
    return process_alive(pid, cmdline_holds=run_id)


class RunQueue:
    """Queue, admission and reaping of one platform's runs (its home and store)."""

    def __init__(
        self,
        store: RunStore,
        home: Path | str,
        *,
        limits: Limits,
        worker_env: Mapping[str, str],
        cfg: MedfedConfig | None = None,
    ):
        """``worker_env``: the platform's variables a worker needs (store URL, home, model
        key); ``cfg``: the platform's configuration, needed to admit deployed runs."""
        self.store = store
        self.home = Path(home).resolve()
        self.limits = limits
        self.worker_env = dict(worker_env)
        self.cfg = cfg
        self._workers: dict[str, subprocess.Popen] = {}
        self._memory_note = ""

    @classmethod
    def for_platform(cls, cfg: MedfedConfig, store: RunStore) -> RunQueue:
        """The queue of the platform configured by ``cfg``, whose store is ``store``."""
        limits = Limits.from_config(cfg.platform)
        env = {**platform_env(cfg, store.url), **limits.env()}
        return cls(store, Path(cfg.home), limits=limits, worker_env=env, cfg=cfg)

    @classmethod
    def from_worker_environment(cls, store: RunStore) -> RunQueue:
        """The queue as a worker sees it: home, model key and limits from its environment."""
        home = os.environ[HOME_ENV]
        env = {STORE_URL_ENV: store.url, HOME_ENV: home}
        return cls(store, home, limits=Limits.from_environment(), worker_env=env)

    # ------------------------------------------------------------------ the lock
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the platform's queue lock (other processes and threads wait)."""
        make_private_dir(self.home)
        fd = os.open(self.home / LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # ---------------------------------------------------------------- the queue
    def submit(self, run_id: str) -> RunRecord:
        """Put a run in the queue (at the back), then admit what fits; returns the run."""
        with self.locked():
            run = self.store.get_run(run_id)
            if run.status == RunStatus.QUEUED:
                return run
            if run.status == RunStatus.FINISHED:
                raise FederationError(f"run {run_id} is finished; create a new run to train again")
            if run.status in ACTIVE_STATUSES and self._occupies(run):
                raise FederationError(f"run {run_id} is already being trained ({run.status})")
            self.store.set_status(run_id, RunStatus.QUEUED)
            self.store.publish(run_id, EventType.RUN_QUEUED, {"position": self.position(run_id)})
        self.admit()
        return self.store.get_run(run_id)

    def cancel(self, run_id: str) -> RunRecord:
        """Take a queued run out of the queue (status ``stopped``; it can be started again)."""
        with self.locked():
            if not self.store.set_status(run_id, RunStatus.STOPPED, only_from=(RunStatus.QUEUED,)):
                status = self.store.get_run(run_id).status
                raise FederationError(f"run {run_id} is {status}, not queued: nothing to cancel")
            self.store.publish(run_id, EventType.RUN_STOPPED, {"cancelled": True})
        return self.store.get_run(run_id)

    def positions(self) -> dict[str, int]:
        """Each queued run's place in its line (simulated and deployed runs wait apart)."""
        return self.store.queue_positions()

    def position(self, run_id: str) -> int | None:
        return self.positions().get(run_id)

    def admit(self) -> list[str]:
        """Reap vanished workers, then start queued runs while there is room; the ids started."""
        with self.locked():
            self._reap()
            started = self._admit_simulated()
            if self.cfg is not None:
                started += self._admit_deployed()
        return started

    def reap(self) -> list[str]:
        """Mark runs whose worker is gone ``interrupted`` (ending what it left); their ids."""
        with self.locked():
            return self._reap()

    def interrupt_all(self, timeout: float = INTERRUPT_WAIT_S) -> list[str]:
        """End every simulated run's worker (the platform is stopping): each run is marked
        ``interrupted`` and keeps its last checkpoint. Queued runs stay queued."""
        with self.locked():
            running = [
                r for r in self.store.active_runs(Mode.SIMULATION) if worker_alive(self.home, r.id)
            ]
            for run in running:
                self._signal_worker(run.id, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(worker_alive(self.home, r.id) for r in running):
            self._poll_children()
            time.sleep(0.1)
        for run in running:
            if worker_alive(self.home, run.id):
                self._signal_worker(run.id, signal.SIGKILL, group=True)
        self.reap()
        return [r.id for r in running]

    def training(self, run: RunRecord) -> bool:
        """Whether the run is being trained now (its worker runs, or a SuperLink has it)."""
        return self._occupies(run)

    # -------------------------------------------------------------- admission
    def _occupies(self, run: RunRecord) -> bool:
        if run.mode == Mode.DEPLOYMENT:
            return run.flower_run_id is not None
        return worker_alive(self.home, run.id)

    def _admit_simulated(self) -> list[str]:
        queued = self.store.queued_runs(Mode.SIMULATION)
        if not queued:
            return []
        busy = [r for r in self.store.active_runs(Mode.SIMULATION) if self._occupies(r)]
        room = self.limits.max_simulated - len(busy)
        started = []
        for run in queued:
            if room <= 0 or not self._memory_ok():
                break
            if not self.store.set_status(run.id, RunStatus.PENDING, only_from=(RunStatus.QUEUED,)):
                continue
            try:
                self._launch(run)
            except (OSError, StoreError) as exc:
                self._failed(run.id, f"its worker could not start: {exc}")
                continue
            self.store.publish(run.id, EventType.RUN_ADMITTED, {"cpus": self.limits.cpus_per_run})
            started.append(run.id)
            room -= 1
        return started

    def _memory_ok(self) -> bool:
        available = meminfo("MemAvailable")
        needed = self.limits.min_free_memory_mb * 2**20
        if available is None or available >= needed:
            self._memory_note = ""
            return True
        note = f"{available / 2**30:.1f} GiB available, platform.min_free_memory_mb asks more"
        if note != self._memory_note:
            log.warning("queued runs wait for memory: %s", note)
            self._memory_note = note
        return False

    def _launch(self, run: RunRecord) -> None:
        """Start the run's worker in its own session; its processes carry a fresh marker."""
        folder = run_dir(self.home, run.id)
        folder.mkdir(parents=True, exist_ok=True)
        stop_flag(self.home, run.id).unlink(missing_ok=True)
        token = f"{run.id}.{secrets.token_hex(8)}"
        command = [sys.executable, "-m", "medfed.federation.worker", run.id]
        command += ["--cpus", str(self.limits.cpus_per_run)]
        if run.started_at is not None:
            command.append("--resume")
        env = {**os.environ, **self.worker_env, TOKEN_ENV: token, "PYTHONUNBUFFERED": "1"}
        worker_token_file(self.home, run.id).write_text(token)
        with open(worker_log(self.home, run.id), "ab") as logfile:
            process = subprocess.Popen(
                command,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        worker_pid_file(self.home, run.id).write_text(str(process.pid))
        self._workers[run.id] = process
        wait_for_exec(process.pid)

    def _admit_deployed(self) -> list[str]:
        queued = self.store.queued_runs(Mode.DEPLOYMENT)
        if not queued or self.cfg is None:
            return []
        from medfed.federation import hospitals as registry

        if not registry.superlink_listening(self.cfg):
            return []  # they wait for `medfed server` and its SuperLink
        free = self._online_hospitals() - sum(
            run_needs(r) for r in self.store.active_runs(Mode.DEPLOYMENT) if self._occupies(r)
        )
        started = []
        for run in queued:
            if run_needs(run) > free:
                break  # first in line first: later runs wait too
            if not self.store.set_status(run.id, RunStatus.PENDING, only_from=(RunStatus.QUEUED,)):
                continue
            try:
                self.submit_deployed(run)
            except FederationError as exc:
                self._failed(run.id, str(exc))
                continue
            started.append(run.id)
            free -= run_needs(run)
        return started

    def submit_deployed(self, run: RunRecord) -> int:
        """Hand a deployed run to the platform's SuperLink; Flower's run id."""
        from medfed.federation.superlink import submit_run

        assert self.cfg is not None
        run_cfg = run_config(self.cfg, run.config, source=f"run {run.id} config")
        flower_run = submit_run(run_cfg, self.store, run.id, resume=run.started_at is not None)
        self.store.publish(run.id, EventType.RUN_ADMITTED, {"flower_run_id": flower_run})
        return flower_run

    def _online_hospitals(self) -> int:
        """Registered hospitals connected to the platform's SuperLink now."""
        from medfed.federation import hospitals as registry

        assert self.cfg is not None
        ca_path = None if self.cfg.deployment.insecure else self.cfg.certs_dir / "ca.pem"
        try:
            client = registry.control_client(self.cfg.deployment.superlink_port, ca_path)
            try:
                statuses = registry.node_statuses(client)
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - no answer: no hospital counts as connected
            log.warning("the SuperLink did not list its hospitals", exc_info=True)
            return 0
        online = {node for node, status in statuses.items() if status == "online"}
        return sum(1 for h in self.store.list_hospitals() if h.registered and h.node_id in online)

    def _failed(self, run_id: str, reason: str) -> None:
        self.store.set_status(run_id, RunStatus.FAILED, error=reason)
        self.store.publish(run_id, EventType.RUN_FAILED, {"error": reason})

    # ----------------------------------------------------------------- reaping
    def _poll_children(self) -> None:
        """Collect the exit status of workers this process started (no zombies stay)."""
        for run_id, process in list(self._workers.items()):
            if process.poll() is not None:
                del self._workers[run_id]

    def _reap(self) -> list[str]:
        self._poll_children()
        reaped = []
        for run in self.store.active_runs(Mode.SIMULATION):
            pid_file = worker_pid_file(self.home, run.id)
            if not pid_file.is_file() or worker_alive(self.home, run.id):
                continue  # created but never started, or training
            token_file = worker_token_file(self.home, run.id)
            token = token_file.read_text().strip() if token_file.is_file() else ""
            with contextlib.suppress(OSError, ValueError):
                end_processes(token, group=int(pid_file.read_text()))
            if mark_interrupted(
                self.store,
                run.id,
                "its worker ended before the run did (killed, or the host restarted)",
            ):
                reaped.append(run.id)
        return reaped

    def _signal_worker(self, run_id: str, sig: signal.Signals, *, group: bool = False) -> None:
        with contextlib.suppress(OSError, ValueError):
            pid = int(worker_pid_file(self.home, run_id).read_text())
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)


def mark_interrupted(store: RunStore, run_id: str, why: str) -> bool:
    """Mark a pending or running run ``interrupted`` (and say so in its events); False when
    it had already ended."""
    reason = f"interrupted: {why}; resume it from its last checkpoint (medfed run --resume)"
    if not store.set_status(run_id, RunStatus.INTERRUPTED, error=reason, only_from=ACTIVE_STATUSES):
        return False
    store.publish(run_id, EventType.RUN_INTERRUPTED, {"error": reason})
    return True


class QueueThread(threading.Thread):
    """Admits queued runs every ``interval`` seconds (first at once) until stopped."""

    def __init__(self, queue: RunQueue, interval: float = 1.0):
        super().__init__(name="medfed-run-queue", daemon=True)
        self.queue = queue
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            try:
                self.queue.admit()
            except Exception:  # noqa: BLE001 - the queue keeps going; the log says why
                log.exception("admitting queued runs failed")
            if self._stop_event.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)
