"""The whole configuration of a run and of the platform host running it.

Precedence, lowest first: defaults < YAML file < ``.env`` < ``MEDFED_*`` environment < CLI flags.
Nested keys in the environment use ``__``: ``MEDFED_FEDERATED__NUM_CLIENTS=8``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from medfed.config.host_sections import (
    ApiConfig,
    DatabaseConfig,
    DeploymentConfig,
    PlatformConfig,
)
from medfed.config.run_sections import (
    CompressionConfig,
    DataConfig,
    FederatedConfig,
    ModelConfig,
    PartitionConfig,
    PrivacyConfig,
    Strategy,
    TrainingConfig,
)
from medfed.config.yaml_source import YAML_PATH, YamlSource

# The sections that describe the training itself: what a run's form edits and what hospitals
# receive (never database or API settings).
TRAINING_SECTIONS = (
    "data",
    "model",
    "training",
    "partition",
    "federated",
    "privacy",
    "compression",
)
# What defines a run: stored with it, written into its checkpoints, shown in its report. The
# rest (home, database, API, deployment, model key) is the platform's and stays on its host.
RUN_SECTIONS = ("name", *TRAINING_SECTIONS)


class MedfedConfig(BaseSettings):
    """Everything a run needs. The YAML file, CLI flags and dashboard form are views of it."""

    model_config = SettingsConfigDict(
        env_prefix="MEDFED_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        validate_assignment=True,
    )

    name: str = "medfed-run"
    home: Path = Field(default=Path(".medfed"), description="database, models, cache, logs")
    model_key_file: Path | None = Field(
        default=None,
        description="key of the encrypted checkpoints (32 random bytes, URL-safe base64); "
        "default HOME/secret.key, made on first use",
    )
    model_key: str | None = Field(
        default=None,
        exclude=True,
        repr=False,
        description="the checkpoint key itself (URL-safe base64), normally from the "
        "MEDFED_MODEL_KEY environment variable; overrides model_key_file; never stored or shown",
    )
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    partition: PartitionConfig = PartitionConfig()
    federated: FederatedConfig = FederatedConfig()
    database: DatabaseConfig = DatabaseConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    compression: CompressionConfig = CompressionConfig()
    deployment: DeploymentConfig = DeploymentConfig()
    platform: PlatformConfig = PlatformConfig()
    api: ApiConfig = ApiConfig()

    @model_validator(mode="after")
    def _privacy_fits_model(self) -> MedfedConfig:
        scatter = self.model.name.startswith("scatter_")
        if scatter and self.data.image_size % 4:
            raise ValueError(
                f"model.name={self.model.name!r} needs data.image_size divisible by 4, "
                f"not {self.data.image_size}"
            )
        if self.privacy.mode != "none" and self.model.norm != "group" and not scatter:
            raise ValueError(
                f"privacy.mode={self.privacy.mode!r} needs model.norm: group (DP-SGD cannot "
                "train BatchNorm, and BatchNorm counters would dominate clipped updates)"
            )
        if self.privacy.mode == "sample" and self.federated.strategy == Strategy.FED_PROX:
            raise ValueError(
                "privacy.mode='sample' with federated.strategy=FedProx: DP-SGD replaces the "
                "gradients, so the proximal term would be silently lost; use FedAvg"
            )
        if self.privacy.mode != "none" and self.federated.strategy == Strategy.SCAFFOLD:
            raise ValueError(
                f"privacy.mode={self.privacy.mode!r} with federated.strategy=SCAFFOLD: its "
                "control variates are each hospital's mean gradient, sent without noise, which "
                "would void the privacy guarantee; use FedAvg"
            )
        if self.training.amp and self.training.device in ("cpu", "mps"):
            raise ValueError(
                f"training.amp=true needs CUDA, but training.device={self.training.device!r}: "
                "set training.device to cuda or auto, or training.amp to false"
            )
        if self.privacy.mode == "sample" and self.training.amp:
            raise ValueError(
                "privacy.mode='sample' with training.amp=true: DP-SGD clips each example's "
                "gradient, which gradient scaling would distort; set training.amp to false"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_source = YamlSource(settings_cls, YAML_PATH.get("path"))
        return (init_settings, env_settings, dotenv_settings, yaml_source)

    @property
    def database_url(self) -> str:
        return self.database.resolved_url(self.home)

    @property
    def certs_dir(self) -> Path:
        return self.deployment.certs_dir or self.home / "certs"

    @property
    def cache_dir(self) -> Path:
        return self.data.cache_dir or self.home / "cache"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the whole configuration (``model_key`` left out).

        A run stores only :func:`run_definition` of it.
        """
        return self.model_dump(mode="json")
