"""What a ServerApp or ClientApp needs to know about its medfed run, and Flower's environment."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfed.config import MedfedConfig, config_from_dict, run_definition
from medfed.store.artifacts import KEY_ENV, KEY_FILE_ENV

# How the platform's processes (run worker, deployment ServerApp) learn where the store, the
# home and the model key are: environment variables, never command-line arguments.
STORE_URL_ENV = "MEDFED_STORE_URL"
HOME_ENV = "MEDFED_HOME"

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
    "RAY_DEDUP_LOGS": "0",
}


def quiet_flower_env(home: Path) -> dict[str, str]:
    """Telemetry and update checks off, Flower's home inside medfed's; also set in os.environ."""
    env = dict(FLOWER_ENV, FLWR_HOME=str((home / "flwr").resolve()))
    os.environ.update(env)
    (home / "flwr").mkdir(parents=True, exist_ok=True)
    return env


def platform_env(cfg: MedfedConfig, store_url: str) -> dict[str, str]:
    """Variables giving a process the platform's store URL, home and model key (when set in
    the configuration rather than the environment already)."""
    env = {STORE_URL_ENV: store_url, HOME_ENV: str(Path(cfg.home).resolve())}
    if cfg.model_key_file is not None:
        env[KEY_FILE_ENV] = str(Path(cfg.model_key_file).resolve())
    if cfg.model_key:
        env[KEY_ENV] = cfg.model_key
    return env


@dataclass
class RunSettings:
    """A run as seen from inside Flower: medfed run id, config, and (server side) the store."""

    run_id: str
    config: dict[str, Any]
    store_url: str = ""
    home: str = ".medfed"
    resume: bool = False
    deployed: bool = False  # submitted to a SuperLink: hospitals are known by registration

    @property
    def cfg(self) -> MedfedConfig:
        return config_from_dict(self.config, source=f"run {self.run_id} config")

    def hospital_view(self) -> RunSettings:
        """The same run without the platform's secrets, as sent to hospitals."""
        return RunSettings(run_id=self.run_id, config=run_definition(self.config))

    def to_run_config(self) -> dict[str, str | bool]:
        """Flower run-config keys (``flwr run --run-config``) carrying these settings.

        Flower forwards the run config to every hospital, so it holds only the hospital view;
        the ServerApp on the platform host finds the store through ``MEDFED_STORE_URL``.
        """
        return {
            "medfed-run-id": self.run_id,
            "medfed-config": json.dumps(self.hospital_view().config),
            "medfed-resume": self.resume,
        }

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> RunSettings:
        """Inverse of :meth:`to_run_config` (a Flower ``context.run_config``)."""
        if "medfed-run-id" not in run_config:
            from medfed.errors import FederationError

            raise FederationError(
                "this Flower run carries no medfed settings: submit runs with `medfed run`"
            )
        return cls(
            run_id=str(run_config["medfed-run-id"]),
            config=json.loads(str(run_config["medfed-config"])),
            store_url=os.environ.get(STORE_URL_ENV, ""),
            home=os.environ.get(HOME_ENV, ".medfed"),
            resume=bool(run_config.get("medfed-resume", False)),
            deployed=True,
        )
