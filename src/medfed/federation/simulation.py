"""Simulated hospitals on Flower's simulation engine (Ray), one process per run."""

from __future__ import annotations

import logging
import os
import warnings

from medfed.federation.runtime import RunSettings, quiet_flower_env

log = logging.getLogger("medfed.simulation")


class _QuietFlower(logging.Filter):
    """Keep Flower's per-round chatter and its deprecation notice out of medfed's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or (
            record.levelno >= logging.WARNING and "DEPRECATED" not in record.getMessage()
        )


def run_simulated(settings: RunSettings, num_hospitals: int) -> None:
    """Run ``settings``' rounds with ``num_hospitals`` virtual hospitals; returns when done.

    Each hospital asks for one CPU, so on a 2-core machine two train at once, each with one
    torch thread. The ServerApp records progress in the store as it goes.
    """
    from pathlib import Path

    quiet_flower_env(Path(settings.home))
    from flwr.simulation import run_simulation

    from medfed.federation.client_app import make_client_app
    from medfed.federation.server_app import make_server_app

    for handler in logging.getLogger("flwr").handlers:
        handler.addFilter(_QuietFlower())
    cpus = os.cpu_count() or 1
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": cpus,
            "num_gpus": 0,
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            "log_to_driver": True,
        },
    }
    # Hospitals need no store; Ray limits each actor to its one CPU (OMP_NUM_THREADS=1).
    client_settings = RunSettings(
        run_id=settings.run_id, config=settings.config, home=settings.home
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(
            server_app=make_server_app(settings),
            client_app=make_client_app(client_settings),
            num_supernodes=num_hospitals,
            backend_config=backend_config,
        )
