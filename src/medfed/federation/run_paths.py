"""Where a run keeps its files on the platform host: ``HOME/runs/<run id>/``.

Imports neither Flower nor torch, so the API and CLI can stop or inspect runs cheaply.
"""

from __future__ import annotations

from pathlib import Path


def run_dir(home: Path | str, run_id: str) -> Path:
    """The run's folder (not created here)."""
    return Path(home) / "runs" / run_id


def stop_flag(home: Path | str, run_id: str) -> Path:
    """The file whose presence asks a run to stop after its current phase."""
    return run_dir(home, run_id) / "STOP"


def worker_pid_file(home: Path | str, run_id: str) -> Path:
    """The process id of the run's background worker (simulated runs)."""
    return run_dir(home, run_id) / "worker.pid"


def worker_log(home: Path | str, run_id: str) -> Path:
    return run_dir(home, run_id) / "worker.log"


def flower_run_config(home: Path | str, run_id: str) -> Path:
    """The Flower run-config file a deployed run is submitted with."""
    return run_dir(home, run_id) / "run-config.toml"


def worker_token_file(home: Path | str, run_id: str) -> Path:
    """The marker every process of the run's current worker carries in its environment."""
    return run_dir(home, run_id) / "worker.token"
