"""The one configuration model of a medfed run.

Precedence, lowest first: defaults < YAML file < ``.env`` < ``MEDFED_*`` environment < CLI flags.
Nested keys in the environment use ``__``: ``MEDFED_FEDERATED__NUM_CLIENTS=8``.
"""

from __future__ import annotations

import copy
import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from medfed.errors import ConfigError

STRATEGIES = (
    "FedAvg",
    "FedProx",
    "FedMedian",
    "FedTrimmedAvg",
    "Krum",
    "FedAdam",
    "FedYogi",
    "FedAvgM",
    "SCAFFOLD",
)
LOSS_CORRECTIONS = ("none", "logit_adjustment", "restricted_softmax")
MODEL_NAMES = ("cancer_cnn", "resnet18", "resnet50", "scatter_linear", "scatter_cnn")
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
MIN_SECRET_KEY_BYTES = 32
# Keys whose values are never echoed in error messages.
SECRET_KEYS = (
    "api.secret_key",
    "database.url",
    "database.redis_url",
    "database.mysql.password",
    "model_key",
)


SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit
COUNT_MAX = 10_000  # hospitals, epochs and the like: far beyond any real run, inside every int


def _no_nul(path: Path) -> Path:
    if "\0" in str(path):
        raise ValueError("a path cannot hold a NUL character")
    return path


# A file system path: any text without a NUL character (which no file system accepts).
FsPath = Annotated[
    Path, AfterValidator(_no_nul), Field(json_schema_extra={"pattern": "^[^\\u0000]*$"})
]


class Section(BaseModel):
    """A config section: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    """Where a hospital's (or the central) images are and how they are prepared."""

    path: FsPath = Path("data/demo")
    layout: Literal["auto", "kaggle", "folders"] = "auto"
    test_path: FsPath | None = Field(
        default=None, description="held-out test set; default: PATH/test when it exists"
    )
    class_names: list[str] | None = Field(
        default=None, description="declared classes; default: from the data"
    )
    image_size: int = Field(default=64, ge=8, le=1024)
    channels: Literal[1, 3] = 1
    rotation: float = Field(default=10.0, ge=0, le=180, description="max random rotation, deg")
    hflip: bool = True
    vflip: bool = False
    normalize_mean: float = 0.5
    normalize_std: float = Field(default=0.25, gt=0)
    skip_bad: bool = False
    cache_dir: FsPath | None = Field(default=None, description="default: HOME/cache")


class ModelConfig(Section):
    name: Literal["cancer_cnn", "resnet18", "resnet50", "scatter_linear", "scatter_cnn"] = Field(
        default="resnet18",
        description="scatter_linear / scatter_cnn: a fixed wavelet scattering front end (no "
        "weights to learn) and a linear or small Tanh CNN head, for DP-SGD; image side a "
        "multiple of 4",
    )
    norm: Literal["batch", "group"] = "batch"
    pretrained_path: FsPath | None = None


class TrainingConfig(Section):
    """Local training: the centralized baseline's epochs, and each hospital's per round."""

    epochs: int = Field(default=2, ge=1, le=COUNT_MAX)
    batch_size: int = Field(default=32, ge=1, le=65_536)
    learning_rate: float = Field(default=1e-3, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    seed: int = Field(default=42, ge=0, le=SEED_MAX)
    threads: int = Field(default=0, ge=0, le=1024, description="torch threads; 0 = all cores")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        default="auto",
        description="where each hospital (and train-central) trains: auto = CUDA when the "
        "machine has it, else the CPU; cuda or mps fail at a machine without one",
    )
    amp: bool = Field(
        default=False,
        description="automatic mixed precision (float16 autocast, gradient scaling) on CUDA; "
        "off wherever device auto finds no CUDA",
    )


class PartitionConfig(Section):
    """How a dataset is split across simulated hospitals."""

    scheme: Literal["iid", "dirichlet", "shards", "quantity"] = "iid"
    alpha: float = Field(default=0.5, gt=0, description="Dirichlet concentration")
    classes_per_client: int = Field(default=1, ge=1, le=COUNT_MAX, description="for scheme=shards")
    seed: int = Field(default=42, ge=0, le=SEED_MAX)


class FederatedConfig(Section):
    server_address: str = Field(default="127.0.0.1:8000", description="SuperLink address")
    num_clients: int = Field(
        default=4, ge=1, le=COUNT_MAX, description="hospitals (simulated or expected)"
    )
    strategy: Literal[
        "FedAvg",
        "FedProx",
        "FedMedian",
        "FedTrimmedAvg",
        "Krum",
        "FedAdam",
        "FedYogi",
        "FedAvgM",
        "SCAFFOLD",
    ] = Field(
        default="FedAvg",
        description="SCAFFOLD: FedAvg with control variates that correct each hospital's "
        "gradients for its drift (kept at the hospital between rounds)",
    )
    rounds: int = Field(default=5, ge=1, le=100_000)
    local_epochs: int = Field(default=1, ge=1, le=COUNT_MAX)
    local_steps: int | None = Field(
        default=None,
        ge=0,
        description="at most this many optimizer steps per hospital and round (default: "
        "local_epochs whole epochs); 0 sends the global model back unchanged",
    )
    lr_decay: Literal["none", "cosine"] = Field(
        default="none",
        description="cosine: the hospitals' learning rate falls over the rounds, from "
        "training.learning_rate in round 1 along a half cosine towards 0 after the last round",
    )
    loss_correction: Literal["none", "logit_adjustment", "restricted_softmax"] = Field(
        default="none",
        description="corrects each hospital's training loss for its own label distribution: "
        "logit_adjustment adds tau * log(local class prior) to the logits (balanced softmax, "
        "FedLC); restricted_softmax scales the logits of classes it lacks (FedRS)",
    )
    logit_adjustment_tau: float = Field(
        default=1.0, ge=0, le=10, description="loss_correction logit_adjustment: strength"
    )
    restricted_softmax_alpha: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="loss_correction restricted_softmax: scale of a missing class's logit",
    )
    fraction_train: float = Field(default=1.0, gt=0, le=1)
    fraction_evaluate: float = Field(default=1.0, ge=0, le=1)
    min_train_clients: int = Field(default=2, ge=1, le=COUNT_MAX)
    min_evaluate_clients: int = Field(default=2, ge=1, le=COUNT_MAX)
    min_available_clients: int = Field(default=2, ge=1, le=COUNT_MAX)
    proximal_mu: float = Field(default=0.01, ge=0, description="FedProx")
    trim_beta: float = Field(default=0.2, gt=0, lt=0.5, description="FedTrimmedAvg")
    num_malicious_clients: int = Field(default=0, ge=0, le=COUNT_MAX, description="Krum")
    server_learning_rate: float = Field(default=0.1, gt=0, description="FedAdam/Yogi, FedAvgM")
    server_momentum: float = Field(default=0.9, ge=0, lt=1, description="FedAvgM")
    tau: float = Field(default=1e-3, gt=0, description="FedAdam/Yogi adaptivity")
    bn: Literal["average", "local"] = Field(
        default="average", description="local = FedBN: BatchNorm stays at each hospital"
    )
    round_timeout: float = Field(default=600, gt=0, description="seconds to wait for replies")
    checkpoint_every: int = Field(default=1, ge=1, le=100_000)
    # A sanity bound, not a defence against subtle poisoning (FedMedian, Krum, FedTrimmedAvg
    # are). Norms measured after one local epoch (batch 32, BatchNorm running statistics
    # included, which dominate): 256 synthetic images, cancer_cnn 10.5 (Adam 1e-3) / 94 (SGD
    # 0.1), resnet18 50 / 102; one Br35H demo hospital (750 images, 64 px), resnet18 55 (the
    # demo's Adam 3e-4), 255 (Adam 1e-3), 12,600 (SGD 0.1, diverging: running_var), cancer_cnn
    # 23 / 780. 1e6 is about 80 times the largest.
    max_update_norm: float = Field(
        default=1e6,
        gt=0,
        description="a hospital's update (L2 norm of its change to the float weights and "
        "BatchNorm statistics) above this is refused as that hospital's failure in that round",
    )
    max_examples: int = Field(
        default=10_000_000,
        ge=1,
        le=2**53,
        description="a hospital reporting more training or BatchNorm examples than this is "
        "refused (its weight in the average would be unbounded)",
    )
    simulated_failures: list[str] = Field(
        default_factory=list,
        description="simulation fault drills: 'hospital-1@2' fails in round 2, "
        "'hospital-1@2:hang' stops answering in round 2",
    )

    @model_validator(mode="after")
    def _minimums_fit(self) -> FederatedConfig:
        for key in ("min_train_clients", "min_evaluate_clients", "min_available_clients"):
            if getattr(self, key) > self.num_clients:
                raise ValueError(
                    f"{key}={getattr(self, key)} exceeds num_clients={self.num_clients}; "
                    f"lower {key} or raise num_clients"
                )
        return self


class MysqlConfig(Section):
    host: str = "localhost"
    port: int = 3306
    username: str = "root"
    password: str = ""
    database: str = "medfed"


class DatabaseConfig(Section):
    backend: Literal["sqlite", "mysql", "postgresql"] = "sqlite"
    url: str | None = Field(default=None, description="SQLAlchemy URL; overrides backend")
    mysql: MysqlConfig = MysqlConfig()
    redis_url: str | None = Field(default=None, description="event bus; default in-database")

    def resolved_url(self, home: Path) -> str:
        """The SQLAlchemy URL this configuration points at."""
        if self.url:
            return self.url
        if self.backend == "mysql":
            m = self.mysql
            return f"mysql+pymysql://{m.username}:{m.password}@{m.host}:{m.port}/{m.database}"
        if self.backend == "postgresql":
            raise ValueError("database.backend=postgresql needs database.url")
        return f"sqlite:///{(home / 'medfed.db').resolve()}"


class PrivacyConfig(Section):
    """Differential privacy: sample-level at each hospital, client-level on the server."""

    mode: Literal["none", "sample", "client"] = "none"
    noise_multiplier: float | None = Field(default=None, ge=0)
    target_epsilon: float | None = Field(default=None, gt=0)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    accountant: Literal["rdp", "prv"] = Field(
        default="rdp",
        description="sample-level DP's accountant: rdp (Renyi DP) or prv (privacy loss random "
        "variables: a tighter epsilon, so less noise for the same target)",
    )
    max_grad_norm: float = Field(default=1.0, gt=0, description="per-sample / per-client clip")
    clipping: Literal["fixed", "adaptive"] = "fixed"
    clip_side: Literal["server", "client"] = "server"
    epsilon_budget: float | None = Field(default=None, gt=0, description="stop a hospital past it")
    canaries: int = Field(
        default=0,
        ge=0,
        le=100_000,
        description="simulated runs: training images planted with a wrong label (as many more "
        "held out) so the audit measures the worst-case leak",
    )


class CompressionConfig(Section):
    """Codec for model updates between hospitals and server."""

    topk: float | None = Field(default=None, gt=0, le=1, description="fraction of entries kept")
    quant_bits: Literal[4, 8] | None = None
    error_feedback: bool = True
    lossless: bool = False
    dense_below: int = Field(
        default=16384,
        ge=0,
        le=2**31,
        description="with topk, tensors with fewer entries (norm layers, biases, small heads) "
        "are sent whole",
    )
    topk_scope: Literal["model", "tensor"] = Field(
        default="model",
        description="model: the largest entries of the whole update; tensor: the same fraction "
        "of every tensor",
    )
    downlink: Literal["fp32", "fp16", "int8"] = Field(
        default="fp32",
        description="precision of a full copy of the global model sent to a hospital (every "
        "round, or with downlink_topk / downlink_quant_bits only when it holds no usable copy)",
    )
    downlink_topk: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="hospitals receive the change since the copy they hold: its largest entries, "
        "this fraction of the model (tensors under dense_below whole); the rest follows later",
    )
    downlink_quant_bits: Literal[4, 8] | None = Field(
        default=None,
        description="hospitals receive the change since the copy they hold, quantized to 4 or 8 "
        "bits",
    )

    @model_validator(mode="after")
    def _downlink_delta_pays(self) -> CompressionConfig:
        if self.downlink_topk == 1 and self.downlink_quant_bits is None:
            raise ValueError(
                "compression.downlink_topk=1 without downlink_quant_bits sends every entry of the "
                "change as float32, as large as a full copy: lower downlink_topk (e.g. 0.01) or "
                "set downlink_quant_bits: 8"
            )
        return self

    @property
    def downlink_delta(self) -> bool:
        """Whether hospitals receive changes against their copy instead of full copies."""
        return self.downlink_topk is not None or self.downlink_quant_bits is not None


class DeploymentConfig(Section):
    """Real hospitals: TLS, hospital keys and the SuperLink's loopback port (never stored with
    a run, never sent to hospitals)."""

    insecure: bool = Field(
        default=False,
        description="plain HTTP between hospitals and the platform (warns at every start)",
    )
    certs_dir: Path | None = Field(
        default=None, description="platform: CA and server certificate; default HOME/certs"
    )
    ca_path: Path | None = Field(
        default=None,
        description="hospital: the platform's CA certificate (ca.pem) the server is checked "
        "against; default CERTS_DIR/ca.pem",
    )
    hospital_key: Path | None = Field(
        default=None, description="hospital: its private key from `medfed hospital add`"
    )
    superlink_port: int = Field(
        default=9093,
        ge=1,
        le=65535,
        description="platform: loopback port of Flower's SuperLink (control and runtime API); "
        "hospitals reach only its Fleet API, through federated.server_address",
    )


class PlatformConfig(Section):
    """What the platform host may run at once (never stored with a run)."""

    max_concurrent_runs: int | None = Field(
        default=None,
        ge=0,
        description="simulated runs trained at once; the others wait in the run queue. Default: "
        "one per 2 CPU cores and 4 GiB of memory (at least 1); 0 holds every run in the queue",
    )
    min_free_memory_mb: int = Field(
        default=1024,
        ge=0,
        description="a queued simulated run starts only while the host has this much memory "
        "available (MemAvailable)",
    )


class ApiConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    secret_key: str | None = Field(
        default=None,
        description=f"signs login tokens; at least {MIN_SECRET_KEY_BYTES} bytes. Default: a "
        "random key kept in HOME/api_secret.key",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For "
        "names the client; from any other peer the header is ignored",
    )

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value.encode("utf-8")) < MIN_SECRET_KEY_BYTES:
            raise ValueError(
                f"must be at least {MIN_SECRET_KEY_BYTES} bytes, it has "
                f'{len(value.encode("utf-8"))}; make one with `python -c "import secrets; '
                'print(secrets.token_hex(32))"` or leave it unset (a random key is kept in '
                "HOME/api_secret.key)"
            )
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network; use e.g. 127.0.0.1 or 10.0.0.0/8"
                ) from None
        return value


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
        if self.privacy.mode == "sample" and self.federated.strategy == "FedProx":
            raise ValueError(
                "privacy.mode='sample' with federated.strategy=FedProx: DP-SGD replaces the "
                "gradients, so the proximal term would be silently lost; use FedAvg"
            )
        if self.privacy.mode != "none" and self.federated.strategy == "SCAFFOLD":
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
        yaml_source = _YamlSource(settings_cls, _YAML_PATH.get("path"))
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


_YAML_PATH: dict[str, Path | None] = {"path": None}


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file given to :func:`load_config`."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None):
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        return read_yaml(self.path)


def read_yaml(path: Path) -> dict[str, Any]:
    """Load a YAML mapping, with a ConfigError naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {path} not found: copy config_template.yml to {path} or pass --config"
        )
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(content)}")
    return content


def describe_validation_error(exc: ValidationError, source: str = "config") -> str:
    """One line per bad key: the dotted key, the value given and what is allowed."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        value = err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        if not key:
            lines.append(f"{source}: {msg}")
            continue
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling against config_template.yml)"
            lines.append(f"{source}: {key}: {msg}")
            continue
        if key in SECRET_KEYS:
            lines.append(f"{source}: {key}: {msg}")
            continue
        shown = value if not isinstance(value, dict) else "{...}"
        lines.append(f"{source}: {key} = {shown!r}: {msg}")
    return "\n".join(lines)


def load_config(
    path: Path | str | None = None, overrides: dict[str, Any] | None = None
) -> MedfedConfig:
    """Build the configuration from defaults, YAML, .env, environment and ``overrides``.

    ``overrides`` are CLI flags as a nested dict (``{"federated": {"rounds": 3}}``) or
    dotted keys (``{"federated.rounds": 3}``).
    """
    nested = nest_dotted(overrides or {})
    _YAML_PATH["path"] = Path(path) if path is not None else None
    source = str(path) if path is not None else "config"
    try:
        if path is not None:
            read_yaml(Path(path))  # clear error for a missing or malformed file first
        return MedfedConfig(**nested)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source)) from None
    except ValueError as exc:  # e.g. a malformed MEDFED_* environment value
        raise ConfigError(f"{source}: {exc}") from None
    finally:
        _YAML_PATH["path"] = None


def config_from_dict(values: dict[str, Any], source: str = "config") -> MedfedConfig:
    """Validate a full config dict (e.g. stored with a run, or posted by the dashboard).

    Only ``values`` and defaults count here: no YAML, ``.env`` or environment.
    """
    try:
        return MedfedConfig.model_validate(values, context=None)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source)) from None


def run_definition(values: dict[str, Any]) -> dict[str, Any]:
    """What defines a run (:data:`RUN_SECTIONS`) out of a config dict: never the home,
    database, API, deployment or key settings. A copy; unknown keys are dropped too."""
    return {key: copy.deepcopy(values[key]) for key in RUN_SECTIONS if key in values}


def run_config(
    platform: MedfedConfig, definition: dict[str, Any], source: str = "run config"
) -> MedfedConfig:
    """The configuration a run trains with: the platform's own (home, database, keys) with the
    run's stored sections in place of its defaults. A section missing from ``definition``
    takes the model's default, not the platform's."""
    values = run_definition(definition)
    run = config_from_dict(values, source)
    return platform.model_copy(update={key: getattr(run, key) for key in RUN_SECTIONS})


def nest_dotted(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "c": {"d": 2}}`` -> ``{"a": {"b": 1}, "c": {"d": 2}}``; None values dropped."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if value is None:
            continue
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = value
    return out
