"""Simulated hospitals on Flower's simulation engine (Ray), one worker process per run."""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medfed.config import MedfedConfig
from medfed.federation.runtime import RunSettings, quiet_flower_env

log = logging.getLogger("medfed.simulation")

OBJECT_STORE_MIN = 256 * 2**20
OBJECT_STORE_MAX = 2 * 2**30


class _QuietFlower(logging.Filter):
    """Keep Flower's per-round chatter and its deprecation notice out of medfed's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or (
            record.levelno >= logging.WARNING and "DEPRECATED" not in record.getMessage()
        )


def ray_init_args(cpus: int, gpus: int = 0) -> dict[str, Any]:
    """``ray.init`` arguments of a run admitted with ``cpus`` CPUs (and ``gpus`` GPUs when it
    trains on CUDA): no dashboard, its CPUs only, a bounded object store, its log lines
    relayed to the worker's log."""
    from medfed.federation.queue import meminfo

    total = meminfo("MemTotal") or 8 * 2**30
    object_store = min(OBJECT_STORE_MAX, max(OBJECT_STORE_MIN, total // 16))
    return {
        "num_cpus": cpus,
        "num_gpus": gpus,
        "include_dashboard": False,
        "object_store_memory": object_store,
        "logging_level": logging.ERROR,
        "log_to_driver": True,
    }


def simulated_gpus(cfg: MedfedConfig) -> int:
    """GPUs the simulated hospitals share: this machine's CUDA devices when
    ``training.device`` is auto or cuda, else none (the CPU path)."""
    if cfg.training.device not in ("auto", "cuda"):
        return 0
    import torch

    return torch.cuda.device_count()


def gpu_share(cfg: MedfedConfig, num_hospitals: int, cpus: int, gpus: int) -> float:
    """Ray's ``num_gpus`` for each simulated hospital: the GPUs split over the hospitals that
    train at once (those of a round, at most one per CPU); 0 without GPUs.

    A share of one GPU or more is a whole number of GPUs (as Ray requires); a fraction is
    rounded down to Ray's precision, so the hospitals of a round always fit.
    """
    if gpus <= 0:
        return 0.0
    f = cfg.federated
    per_round = max(int(num_hospitals * f.fraction_train), min(f.min_train_clients, num_hospitals))
    at_once = max(1, min(per_round, num_hospitals, cpus))
    share = gpus / at_once
    if share >= 1:
        return float(math.floor(share))
    return math.floor(share * 10_000) / 10_000


def start_ray(cpus: int, gpus: int = 0) -> None:
    """Start this worker's own Ray instance (as Flower's Ray backend would, with limits)."""
    import ray

    pythonpath = os.pathsep.join(sys.path)
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    os.environ["PYTHONPATH"] = pythonpath
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **ray_init_args(cpus, gpus))


def server_threads(cpus: int, hospitals: int) -> int:
    """Torch threads for the server's own evaluations: the CPUs the hospitals training at once
    (one each) leave, at least one. A round's central evaluation runs beside the next round's
    training; more threads than free cores make both wait on each other (2 hospitals deployed
    on this 2-core machine: a zero-step round took 4.5 s with 2 platform threads, 3.7 s with
    1)."""
    return max(1, cpus - min(hospitals, cpus))


def run_simulated(
    settings: RunSettings,
    num_hospitals: int,
    *,
    cpus: int | None = None,
    after_ray_start: Callable[[], object] | None = None,
) -> None:
    """Run ``settings``' rounds with ``num_hospitals`` virtual hospitals; returns when done.

    The run gets ``cpus`` CPUs (default: all of them): Ray's CPUs and so the hospitals training
    at once, each on one CPU with one torch thread; the server's torch threads are the CPUs
    they leave (at least one: see :func:`server_threads`). When
    ``training.device`` resolves to CUDA, each hospital also gets its share of the GPUs
    (:func:`gpu_share`); on the CPU path Ray is given none. The
    ServerApp records progress in the store as it goes. ``after_ray_start`` is called once
    Ray runs (Ray sets its own SIGTERM handler; the worker puts its own back).
    """
    quiet_flower_env(Path(settings.home))
    import torch
    from flwr.simulation import run_simulation

    from medfed.federation.client_app import make_client_app
    from medfed.federation.server_app import make_server_app

    for handler in logging.getLogger("flwr").handlers:
        handler.addFilter(_QuietFlower())
    cpus = max(1, cpus or os.cpu_count() or 1)
    torch.set_num_threads(server_threads(cpus, num_hospitals))
    cfg = settings.cfg
    gpus = simulated_gpus(cfg)
    share = gpu_share(cfg, num_hospitals, cpus, gpus)
    if share:
        log.info("%d hospitals share %d GPU(s), %g each", num_hospitals, gpus, share)
    start_ray(cpus, gpus)
    if after_ray_start is not None:
        after_ray_start()
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": share},
        "init_args": ray_init_args(cpus, gpus),
    }
    # Hospitals need no store; each has one CPU, so one torch thread (training.threads).
    config = dict(settings.config)
    config["training"] = {**config.get("training", {}), "threads": 1}
    client_settings = RunSettings(run_id=settings.run_id, config=config, home=settings.home)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(
            server_app=make_server_app(settings),
            client_app=make_client_app(client_settings),
            num_supernodes=num_hospitals,
            backend_config=backend_config,
        )
