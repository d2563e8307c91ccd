"""Request and response bodies of the REST API (see the routes for what returns which)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from medfed.config import TRAINING_SECTIONS as RUN_CONFIG_SECTIONS
from medfed.config import MedfedConfig
from medfed.store.repository import MIN_PASSWORD_LENGTH

# Request bodies take JSON types as they are: no number from a string, no 0 for false.
STRICT = ConfigDict(strict=True, extra="forbid")
NO_NUL = r"^[^\u0000]*$"


class UserOut(BaseModel):
    name: str
    role: str


class LoginIn(BaseModel):
    model_config = STRICT

    username: str = Field(min_length=1)
    password: str = Field(min_length=1)


class PasswordIn(BaseModel):
    model_config = STRICT

    current_password: str = Field(min_length=1)
    new_password: str = Field(min_length=MIN_PASSWORD_LENGTH)


class LoginOut(BaseModel):
    token: str
    user: UserOut


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


def _bare(annotation: Any) -> Any:
    """``Annotated[T, ...]`` -> ``T``."""
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


def _integral(value: Any) -> Any:
    """A JSON number with no fraction (2.0) is an integer, as JSON Schema has it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _takes_integers(annotation: Any) -> bool:
    bare = _bare(annotation)
    if bare is int:
        return True
    if get_origin(bare) is Literal:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in get_args(bare))
    args = [a for a in get_args(bare) if a is not type(None)]
    return get_origin(bare) in (Union, UnionType) and bool(args) and all(map(_takes_integers, args))


def _as_posted(info: FieldInfo) -> tuple[Any, FieldInfo]:
    """A config field as a request body has it: paths are text (without NUL characters),
    integers may be written 2.0, an enumerated key is one of its values' names."""
    bare = _bare(info.annotation)
    if isinstance(bare, type) and issubclass(bare, Enum):
        return Literal[tuple(member.value for member in bare)], info
    if _takes_integers(info.annotation):
        return Annotated[info.annotation, BeforeValidator(_integral)], info
    optional = {_bare(arg) for arg in get_args(info.annotation)} == {Path, type(None)}
    if _bare(info.annotation) is Path or optional:
        text: Any = str | None if optional else str
        default = None if info.default is None else str(info.default)
        return text, Field(default=default, description=info.description, pattern=NO_NUL)
    return info.annotation, info


def _partial_section(section: str) -> type[BaseModel]:
    """A config section with every key optional (the server's default where left out), with
    the keys, types and bounds of the configuration model; unknown keys are refused."""
    model = MedfedConfig.model_fields[section].annotation
    assert isinstance(model, type) and issubclass(model, BaseModel)
    fields: dict[str, Any] = {name: _as_posted(info) for name, info in model.model_fields.items()}
    return create_model(
        f"{section.capitalize()}Settings",
        __config__=STRICT,
        __doc__=f"The {section} section of a run's configuration (keys left out: the server's).",
        **fields,
    )


_SECTION_MODELS = {section: _partial_section(section) for section in RUN_CONFIG_SECTIONS}
RunConfigIn = create_model(  # type: ignore[call-overload]
    "RunConfigIn",
    __config__=STRICT,
    __doc__="A partial run configuration, merged over the server's defaults. Settings that "
    "contradict each other (e.g. federated.min_train_clients above federated.num_clients, "
    "privacy without model.norm group) are refused with 409.",
    **{section: (model, Field(default=None)) for section, model in _SECTION_MODELS.items()},
)


def posted_config(config: BaseModel) -> dict[str, Any]:
    """The keys a client actually sent, as a plain dict (paths as text)."""
    return config.model_dump(mode="json", exclude_unset=True)


class RunCreate(BaseModel):
    model_config = STRICT

    name: str = Field(min_length=1, max_length=200)
    config: RunConfigIn = Field(  # type: ignore[valid-type]
        default_factory=RunConfigIn,
        description="partial MedfedConfig (sections "
        + ", ".join(RUN_CONFIG_SECTIONS)
        + ") merged over the server's defaults",
    )
    start: bool = True
    mode: Literal["simulation", "deployment"] = Field(
        "simulation",
        description="simulation: simulated hospitals on this host; deployment: the registered "
        "hospitals connected to the platform's SuperLink",
    )


class RunSummary(BaseModel):
    id: str
    name: str
    mode: str
    status: str
    strategy: str
    model: str | None
    num_rounds: int
    rounds_done: int
    best_accuracy: float | None
    final_accuracy: float | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    created_by: str | None
    error: str | None
    queued_at: datetime | None = Field(description="when it joined the run queue")
    queue_position: int | None = Field(
        description="its place in the run queue while queued (1: starts next), else null"
    )


class RunDetail(RunSummary):
    config: dict[str, Any]
    final_metrics: dict[str, Any] | None
    flower_run_id: int | None


class RunPage(BaseModel):
    items: list[RunSummary]
    total: int
    page: int
    page_size: int


class RoundOut(BaseModel):
    round: int
    metrics: dict[str, Any]
    train_metrics: dict[str, Any] | None
    evaluate_metrics: dict[str, Any] | None
    duration_s: float
    bytes_up: int
    bytes_down: int
    epsilon: float | None
    num_clients_ok: int
    num_clients_failed: int
    finished_at: datetime


class ClientResultOut(BaseModel):
    round: int
    hospital: str
    phase: str
    status: str
    num_examples: int
    metrics: dict[str, Any] | None
    duration_s: float | None
    bytes_up: int
    bytes_down: int
    epsilon: float | None
    error: str | None
    created_at: datetime


class CheckpointOut(BaseModel):
    round: int
    metric_name: str
    metric_value: float | None
    size_bytes: int
    created_at: datetime


HOSPITAL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class HospitalOut(BaseModel):
    name: str
    fingerprint: str | None = Field(description="SHA-256 fingerprint of its registered key")
    registered: bool = Field(description="holds a key the platform accepts now")
    registered_at: datetime | None
    removed_at: datetime | None
    last_seen: datetime | None = Field(description="when it last took part in a run")
    status: Literal["online", "offline", "never"] = Field(
        description="online: connected to the SuperLink now or seen in the last 5 minutes; "
        "never: has not taken part yet"
    )
    runs: list[str] = Field(description="ids of the runs it took part in, oldest first")


class HospitalIn(BaseModel):
    model_config = STRICT

    name: str = Field(
        pattern=HOSPITAL_NAME_PATTERN,
        description="1-64 letters, digits, '.', '-' or '_', starting with a letter or digit",
    )


class HospitalAdded(BaseModel):
    hospital: HospitalOut
    private_key: str = Field(description="the hospital's private key (PEM), shown this once")
    key_file_name: str
    client_command: str = Field(description="what to run at the hospital")


class TemplateIn(BaseModel):
    model_config = STRICT

    name: str = Field(min_length=1, max_length=200)
    config: RunConfigIn = Field(  # type: ignore[valid-type]
        description="partial MedfedConfig, as in POST /api/runs"
    )


class TemplateOut(BaseModel):
    name: str
    config: dict[str, Any]
    created_by: str | None
    created_at: datetime


class ActivityEntryOut(BaseModel):
    at: datetime
    user: str | None
    action: str
    target: str | None
    detail: dict[str, Any] | None


class ActivityPage(BaseModel):
    items: list[ActivityEntryOut]
    total: int
    page: int
    page_size: int


class OperatingPointOut(BaseModel):
    name: str = Field(description="e.g. sensitivity at 95% specificity")
    target: str
    level: float
    sensitivity: float
    specificity: float
    threshold: float = Field(description="positive when p(positive class) >= threshold")


class ExplanationOut(BaseModel):
    id: str
    kind: str = Field(
        description="true/false positive/negative (two classes), else correct or misclassified"
    )
    true_class: str
    predicted_class: str
    probability: float = Field(
        description="of the positive class (two classes), else of the predicted class"
    )
    image: str = Field(description="the test image as the model saw it, base64 PNG")
    heatmap: str = Field(description="Grad-CAM heat map over the image, base64 PNG")


class FinalEvaluationOut(BaseModel):
    available: bool = Field(
        description="false until the run's last round has been scored, or "
        "when it has no held-out test set"
    )
    note: str = ""
    round: int | None = None
    num_samples: int = 0
    class_names: list[str] = []
    positive_class: str | None = None
    calibration: dict[str, Any] | None = Field(
        default=None, description="ece and the reliability diagram's bins"
    )
    operating_points: list[OperatingPointOut] = []
    explanations: list[ExplanationOut] = []


class SiteOut(BaseModel):
    hospital: str
    status: str
    num_examples: int
    accuracy: float | None
    auc: float | None
    confusion_matrix: list[list[int]] | None
    held_out_counts: list[int]
    train_counts: list[int]
    error: str | None
    worst: bool


class SitesOut(BaseModel):
    round: int | None = Field(description="the round whose model the hospitals evaluated last")
    class_names: list[str]
    sites: list[SiteOut]
    worst: str | None = Field(description="the hospital with the lowest accuracy")
    bn: str = Field(
        description="federated.bn: local means each hospital used its own BatchNorm statistics"
    )
