"""Start, follow and stop runs as background processes on the platform host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from medfed.config import MedfedConfig, run_definition
from medfed.errors import FederationError
from medfed.federation.run_paths import stop_flag
from medfed.federation.runtime import platform_env
from medfed.store import RunStore
from medfed.store.home import private_home

ACTIVE = ("pending", "running")


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
    path = Path(home) / "runs" / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def create_run(
    cfg: MedfedConfig, store: RunStore, *, mode: str = "simulation", created_by: str | None = None
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
) -> str:
    """Create the run (unless ``run_id``) and start its worker process; returns the run id.

    ``cfg`` is the platform's configuration with the run's sections (see
    :func:`medfed.config.run_config`). The worker finds the store, home and model key in its
    environment (:func:`worker_env`): no URL or password is on its command line.
    """
    cfg = absolute_paths(cfg)
    run_id = run_id or create_run(cfg, store, created_by=created_by)
    private_home(cfg.home)
    folder = run_dir(cfg.home, run_id)
    stop_flag(cfg.home, run_id).unlink(missing_ok=True)
    command = [sys.executable, "-m", "medfed.federation.worker", run_id]
    if resume:
        command.append("--resume")
    with open(folder / "worker.log", "ab") as logfile:
        process = subprocess.Popen(
            command,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=worker_env(cfg, store.url),
            start_new_session=True,
        )
    (folder / "worker.pid").write_text(str(process.pid))
    return run_id


def worker_env(cfg: MedfedConfig, store_url: str) -> dict[str, str]:
    """The environment of a run's worker: this one, plus the store URL, home and model key
    of the platform (values a process list would show never go on a command line)."""
    return dict(os.environ, PYTHONUNBUFFERED="1", **platform_env(cfg, store_url))


def worker_alive(home: Path, run_id: str) -> bool:
    pid_file = Path(home) / "runs" / run_id / "worker.pid"
    if not pid_file.is_file():
        return False
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def stop_run(run_id: str, store: RunStore, home: Path, *, force: bool = False) -> None:
    """Ask a run to stop after its current phase (``force``: end its process now); ``home``
    is the platform's home, where the run's worker keeps its files."""
    run = store.get_run(run_id)
    if run.status not in ACTIVE:
        raise FederationError(f"run {run_id} is {run.status}, not running: nothing to stop")
    home = Path(home)
    flag = stop_flag(home, run_id)
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch()
    if force or not worker_alive(home, run_id):
        pid_file = home / "runs" / run_id / "worker.pid"
        if pid_file.is_file() and worker_alive(home, run_id):
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        store.set_status(run_id, "stopped")
        store.publish(run_id, "run_stopped", {})
