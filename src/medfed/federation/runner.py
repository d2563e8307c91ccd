"""Create, start (through the run queue), stop and cancel runs on the platform host.

A started run joins the platform's run queue (:mod:`medfed.federation.queue`), which starts its
background worker when there is room: ``python -m medfed.federation.worker RUN_ID``, with the
store URL, home and model key in its environment, never on its command line.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from medfed.config import MedfedConfig, run_definition
from medfed.errors import FederationError
from medfed.federation.queue import RunQueue, worker_alive
from medfed.federation.run_paths import run_dir as _run_dir
from medfed.federation.run_paths import stop_flag, worker_pid_file
from medfed.federation.runtime import platform_env
from medfed.store import ACTIVE_STATUSES, EventType, Mode, RunStatus, RunStore
from medfed.store.home import private_home

__all__ = [
    "absolute_paths",
    "cancel_run",
    "create_run",
    "run_dir",
    "start_run",
    "stop_run",
    "worker_alive",
    "worker_env",
]


def absolute_paths(cfg: MedfedConfig) -> MedfedConfig:
    """The same config with home and data paths absolute (workers may run elsewhere)."""
    data = cfg.data.model_copy(
        update={
            "path": Path(cfg.data.path).resolve(),
            "test_path": Path(cfg.data.test_path).resolve() if cfg.data.test_path else None,
        }
    )
    return cfg.model_copy(update={"home": Path(cfg.home).resolve(), "data": data})


def run_dir(home: Path, run_id: str) -> Path:
    """The run's folder, made if missing."""
    path = _run_dir(home, run_id)
    path.mkdir(parents=True, exist_ok=True)
    return path


def create_run(
    cfg: MedfedConfig,
    store: RunStore,
    *,
    mode: str = Mode.SIMULATION,
    created_by: str | None = None,
) -> str:
    """A new pending run row holding what defines the run (never the platform's secrets)."""
    cfg = absolute_paths(cfg)
    return store.create_run(
        cfg.name,
        run_definition(cfg.to_dict()),
        mode=mode,
        strategy=cfg.federated.strategy,
        num_rounds=cfg.federated.rounds,
        created_by=created_by,
    )


def start_run(
    cfg: MedfedConfig,
    store: RunStore,
    *,
    run_id: str | None = None,
    created_by: str | None = None,
    resume: bool = False,
    queue: RunQueue | None = None,
) -> str:
    """Create the run (unless ``run_id``), put it in the platform's run queue and start what
    fits now; returns the run id. The run is ``queued`` until it has room, then ``pending``.

    ``cfg`` is the platform's configuration with the run's sections (see
    :func:`medfed.config.run_config`). A run that trained before continues from its last
    checkpoint when it starts (``resume`` is implied by that and kept for callers).
    """
    del resume  # a run that started before always resumes from its last checkpoint
    cfg = absolute_paths(cfg)
    run_id = run_id or create_run(cfg, store, created_by=created_by)
    private_home(cfg.home)
    (queue or RunQueue.for_platform(cfg, store)).submit(run_id)
    return run_id


def worker_env(cfg: MedfedConfig, store_url: str) -> dict[str, str]:
    """The environment of a run's worker: this one, plus the store URL, home and model key
    of the platform (values a process list would show never go on a command line)."""
    return dict(os.environ, PYTHONUNBUFFERED="1", **platform_env(cfg, store_url))


def cancel_run(run_id: str, store: RunStore, cfg: MedfedConfig) -> None:
    """Take a queued run out of the queue (it becomes ``stopped`` and can be started again)."""
    RunQueue.for_platform(cfg, store).cancel(run_id)


def stop_run(run_id: str, store: RunStore, home: Path, *, force: bool = False) -> None:
    """Ask a run to stop after its current phase (``force``: end its process now); ``home``
    is the platform's home, where the run's worker keeps its files. A queued run leaves the
    queue."""
    run = store.get_run(run_id)
    if run.status == RunStatus.QUEUED:
        if store.set_status(run_id, RunStatus.STOPPED, only_from=(RunStatus.QUEUED,)):
            store.publish(run_id, EventType.RUN_STOPPED, {"cancelled": True})
            return
        run = store.get_run(run_id)
    if run.status not in ACTIVE_STATUSES:
        raise FederationError(f"run {run_id} is {run.status}, not running: nothing to stop")
    home = Path(home)
    flag = stop_flag(home, run_id)
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch()
    if force or not worker_alive(home, run_id):
        alive = worker_alive(home, run_id)
        if store.set_status(run_id, RunStatus.STOPPED, only_from=ACTIVE_STATUSES):
            store.publish(run_id, EventType.RUN_STOPPED, {})
        if alive:  # its SIGTERM handler sees the run stopped already; the watchdog cleans up
            os.killpg(int(worker_pid_file(home, run_id).read_text()), signal.SIGTERM)
