"""The sections that define a run: data, model, training, partition, federated, privacy and
compression."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, WithJsonSchema, model_validator

from medfed.config.base import COUNT_MAX, SEED_MAX, FsPath, Section


class Strategy(StrEnum):
    """The aggregation strategies a run can use, named as the configuration names them."""

    FED_AVG = "FedAvg"
    FED_PROX = "FedProx"
    FED_MEDIAN = "FedMedian"
    FED_TRIMMED_AVG = "FedTrimmedAvg"
    KRUM = "Krum"
    FED_ADAM = "FedAdam"
    FED_YOGI = "FedYogi"
    FED_AVG_M = "FedAvgM"
    SCAFFOLD = "SCAFFOLD"


STRATEGIES = tuple(strategy.value for strategy in Strategy)
LOSS_CORRECTIONS = ("none", "logit_adjustment", "restricted_softmax")
MODEL_NAMES = ("cancer_cnn", "resnet18", "resnet50", "scatter_linear", "scatter_cnn")


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
    model_config = ConfigDict(**Section.model_config, use_enum_values=True)

    server_address: str = Field(default="127.0.0.1:8000", description="SuperLink address")
    num_clients: int = Field(
        default=4, ge=1, le=COUNT_MAX, description="hospitals (simulated or expected)"
    )
    # Held as the plain name (use_enum_values), with the enum inline in the JSON schema.
    strategy: Annotated[
        Strategy, WithJsonSchema({"enum": list(STRATEGIES), "title": "Strategy", "type": "string"})
    ] = Field(
        default=Strategy.FED_AVG,
        validate_default=True,
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
        default="cosine",
        description="cosine: the hospitals' learning rate falls over the rounds, from "
        "training.learning_rate in round 1 along a half cosine towards 0 after the last round",
    )
    loss_correction: Literal["none", "logit_adjustment", "restricted_softmax"] = Field(
        default="logit_adjustment",
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
