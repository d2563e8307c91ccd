"""The one configuration model of a medfed run: its sections, the settings model (where the
sources and their precedence are told) and how a configuration is loaded."""

from medfed.config.base import COUNT_MAX, SEED_MAX, FsPath, Section
from medfed.config.host_sections import (
    MIN_SECRET_KEY_BYTES,
    ApiConfig,
    DatabaseConfig,
    DeploymentConfig,
    MysqlConfig,
    PlatformConfig,
)
from medfed.config.loading import (
    SECRET_KEYS,
    config_from_dict,
    describe_validation_error,
    load_config,
    nest_dotted,
    run_config,
    run_definition,
)
from medfed.config.run_sections import (
    LOSS_CORRECTIONS,
    MODEL_NAMES,
    STRATEGIES,
    CompressionConfig,
    DataConfig,
    FederatedConfig,
    ModelConfig,
    PartitionConfig,
    PrivacyConfig,
    Strategy,
    TrainingConfig,
)
from medfed.config.settings import RUN_SECTIONS, TRAINING_SECTIONS, MedfedConfig
from medfed.config.yaml_source import read_yaml

__all__ = [
    "COUNT_MAX",
    "LOSS_CORRECTIONS",
    "MIN_SECRET_KEY_BYTES",
    "MODEL_NAMES",
    "RUN_SECTIONS",
    "SECRET_KEYS",
    "SEED_MAX",
    "STRATEGIES",
    "TRAINING_SECTIONS",
    "ApiConfig",
    "CompressionConfig",
    "DataConfig",
    "DatabaseConfig",
    "DeploymentConfig",
    "FederatedConfig",
    "FsPath",
    "MedfedConfig",
    "ModelConfig",
    "MysqlConfig",
    "PartitionConfig",
    "PlatformConfig",
    "PrivacyConfig",
    "Section",
    "Strategy",
    "TrainingConfig",
    "config_from_dict",
    "describe_validation_error",
    "load_config",
    "nest_dotted",
    "read_yaml",
    "run_config",
    "run_definition",
]
