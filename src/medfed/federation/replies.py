"""Checks on every hospital reply before any strategy sees it.

The ServerApp calls :func:`check_train_reply` and :func:`check_evaluate_reply` on each reply of
a round. Each returns a clean copy of the reply (the update decoded into full weights, only the
metrics medfed knows, checked BatchNorm moments) or raises :class:`ReplyRejected` with a one-line
reason; a rejected reply is that hospital's failure in that round, and the round goes on with
the others. The update itself is checked by :func:`medfed.federation.wire.unpack_update`
(layout, size, finite values, norm, counters) before decoding allocates anything.

Every clean reply of a phase carries the same metric names with numbers of the right type, so
Flower's consistency checks and :func:`~medfed.federation.strategies.aggregate_metrics` cannot be
made to fail by one hospital.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from medfed.config import FederatedConfig, MedfedConfig, Strategy
from medfed.federation import wire
from medfed.federation.codec import CodecError
from medfed.federation.scaffold import CONTROL_KEY, checked_change
from medfed.federation.strategies import DP_WEIGHT_KEY
from medfed.federation.wire import ReplyRejected
from medfed.learning.device import DEVICE_TYPES
from medfed.privacy.clipping import NORM_BIT_KEY

__all__ = [
    "EVALUATE_METRICS",
    "TRAIN_METRICS",
    "ReplyLimits",
    "ReplyRejected",
    "check_evaluate_reply",
    "check_train_reply",
]

log = logging.getLogger("medfed.replies")
METRICS_KEY = "metrics"
INFO_KEY = "info"
HOSPITAL_KEY = "hospital"
DEVICE_KEY = "device"
MAX_NAME_LENGTH = 128
MAX_BYTES = 2**50  # a byte count above a petabyte is not a count


@dataclass(frozen=True)
class ReplyLimits:
    """What a reply may hold; :meth:`from_config` builds it from the run's configuration."""

    num_classes: int
    max_update_norm: float = FederatedConfig.model_fields["max_update_norm"].default
    max_examples: int = FederatedConfig.model_fields["max_examples"].default
    max_counter_step: int = wire.MAX_COUNTER  # most a batch counter may grow in one reply
    norm_bit: bool = False  # hospitals clip (client-side DP): train replies carry norm_bit
    bn_stats: bool = True  # federated.bn = average: evaluate replies carry BatchNorm moments
    scaffold: bool = False  # SCAFFOLD: train replies carry the change of the control variate

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, not {self.num_classes}")

    @classmethod
    def from_config(cls, cfg: MedfedConfig, num_classes: int) -> ReplyLimits:
        """Limits of a run: its norm and example bounds, and what its hospitals send.

        A BatchNorm batch counter counts at most ``max_examples`` batches per local epoch and
        round, so no hospital's counter (its own under FedBN) can pass the global model's by
        more than ``rounds * local_epochs * max_examples``.
        """
        f = cfg.federated
        counter = min(wire.MAX_COUNTER, f.rounds * f.local_epochs * f.max_examples)
        return cls(
            num_classes=num_classes,
            max_update_norm=f.max_update_norm,
            max_examples=f.max_examples,
            max_counter_step=counter,
            norm_bit=cfg.privacy.mode == "client" and cfg.privacy.clip_side == "client",
            bn_stats=f.bn == "average",
            scaffold=f.strategy == Strategy.SCAFFOLD,
        )


# --------------------------------------------------------------------------- metric checks

Check = Callable[[str, Any, ReplyLimits], int | float | list[int]]


def _integer(low: int | Callable[[ReplyLimits], int], high: int | Callable[[ReplyLimits], int]):
    def check(name: str, value: Any, limits: ReplyLimits) -> int:
        lo = low(limits) if callable(low) else low
        hi = high(limits) if callable(high) else high
        if isinstance(value, bool) or not isinstance(value, int):
            raise ReplyRejected(f"metric {name!r} must be an integer, got {_kind(value)}")
        if not lo <= value <= hi:
            raise ReplyRejected(f"metric {name!r} = {value} is out of range [{lo}, {hi}]")
        return int(value)

    return check


def _number(low: float, high: float, *, also: float | None = None):
    def check(name: str, value: Any, limits: ReplyLimits) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ReplyRejected(f"metric {name!r} must be a number, got {_kind(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise ReplyRejected(f"metric {name!r} = {value} is not finite")
        if not (low <= value <= high or value == also):
            allowed = f"[{low:g}, {high:g}]" + (f" or {also:g}" if also is not None else "")
            raise ReplyRejected(f"metric {name!r} = {value:g} is out of range {allowed}")
        return value

    return check


def _counts(length: Callable[[ReplyLimits], int]):
    def check(name: str, value: Any, limits: ReplyLimits) -> list[int]:
        expected = length(limits)
        if not isinstance(value, list) or len(value) != expected:
            size = len(value) if isinstance(value, list) else _kind(value)
            raise ReplyRejected(f"metric {name!r} must be {expected} integers, got {size}")
        if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise ReplyRejected(f"metric {name!r} must hold integers only")
        if min(value) < 0 or max(value) > limits.max_examples:
            raise ReplyRejected(f"metric {name!r} holds a count outside [0, {limits.max_examples}]")
        return [int(v) for v in value]

    return check


def _max_examples(limits: ReplyLimits) -> int:
    return limits.max_examples


_EXAMPLES = _integer(1, _max_examples)
_ONE = _integer(1, 1)
_FLAG = _integer(0, 1)
_BYTES = _integer(0, MAX_BYTES)
_SECONDS = _number(0.0, math.inf)
_FRACTION = _number(0.0, 1.0)

TRAIN_METRICS: dict[str, Check] = {
    "num-examples": _EXAMPLES,
    DP_WEIGHT_KEY: _ONE,
    "epsilon": _number(0.0, math.inf, also=-1.0),
    "budget-exhausted": _FLAG,
    "train_loss": _number(0.0, math.inf, also=-1.0),
    "train_accuracy": _number(0.0, 1.0, also=-1.0),
    "train_seconds": _SECONDS,
    "bytes-up": _BYTES,
    "bytes-down": _BYTES,
    "seconds": _SECONDS,
    "class-counts": _counts(lambda limits: limits.num_classes),
}
"""What a training reply's metrics must hold (plus ``norm_bit`` under client-side clipping)."""

EVALUATE_METRICS: dict[str, Check] = {
    "num-examples": _EXAMPLES,
    DP_WEIGHT_KEY: _ONE,
    "loss": _number(0.0, math.inf),
    "accuracy": _FRACTION,
    "precision": _FRACTION,
    "recall": _FRACTION,
    "f1": _FRACTION,
    "auc": _number(0.0, 1.0, also=-1.0),
    "confusion-matrix": _counts(lambda limits: limits.num_classes**2),
    "bytes-down": _BYTES,
    "seconds": _SECONDS,
}
"""What an evaluation reply's metrics must hold (plus ``bn-examples`` with BatchNorm moments)."""


def _kind(value: Any) -> str:
    return "a list" if isinstance(value, list) else type(value).__name__


def _checked_metrics(
    content: RecordDict, schema: dict[str, Check], limits: ReplyLimits
) -> dict[str, Any]:
    """The known metrics of a reply, each checked; unknown names are left out."""
    metrics = content.get(METRICS_KEY)
    if not isinstance(metrics, MetricRecord):
        raise ReplyRejected(f"{METRICS_KEY!r}: expected a metric record")
    out = {}
    for name, check in schema.items():
        if name not in metrics:
            raise ReplyRejected(f"metric {name!r} missing")
        out[name] = check(name, metrics[name], limits)
    return out


def _checked_info(content: RecordDict) -> ConfigRecord:
    """The hospital's name (required), and the device it used when it is one medfed knows
    (cpu, cuda, mps); any other device value is dropped, not held against the reply."""
    info = content.get(INFO_KEY)
    name = info.get(HOSPITAL_KEY) if isinstance(info, ConfigRecord) else None
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH or not name.isprintable():
        raise ReplyRejected(
            f"{INFO_KEY!r}: {HOSPITAL_KEY!r} must be a printable name of at most "
            f"{MAX_NAME_LENGTH} characters"
        )
    checked = ConfigRecord({HOSPITAL_KEY: name})
    device = info.get(DEVICE_KEY)
    if isinstance(device, str) and device in DEVICE_TYPES:
        checked[DEVICE_KEY] = device
    return checked


def _checked_records(content: RecordDict) -> None:
    if not isinstance(content, RecordDict):
        raise ReplyRejected(f"reply content is {type(content).__name__}, not a RecordDict")


# --------------------------------------------------------------------------- replies


def _refusing(check: Callable[..., RecordDict], *args: Any) -> RecordDict:
    """Run a reply check; whatever goes wrong is that hospital's :class:`ReplyRejected`."""
    try:
        return check(*args)
    except ReplyRejected:
        raise
    except CodecError as exc:
        raise ReplyRejected(str(exc)) from None
    except Exception as exc:  # a malformed reply nothing here foresaw: still not the run's fault
        log.warning("reply refused on an unexpected error", exc_info=True)
        raise ReplyRejected(f"unreadable reply ({type(exc).__name__}: {exc})") from None


def check_train_reply(
    content: RecordDict,
    global_record: ArrayRecord,
    limits: ReplyLimits,
    with_evaluation: bool = False,
) -> RecordDict:
    """A training reply made safe for any strategy, or :class:`ReplyRejected`.

    Returns a new RecordDict with ``arrays`` (the update decoded into full weights, checked by
    :func:`~medfed.federation.wire.unpack_update` against ``global_record``), ``metrics`` (the
    :data:`TRAIN_METRICS`, plus ``norm_bit`` when hospitals clip, with ``bytes-up`` the real
    payload size) and ``info`` (the hospital's name). ``with_evaluation``: the reply must also
    carry the hospital's evaluation of ``global_record`` (``evaluation`` metrics, and BatchNorm
    moments), checked as :func:`check_evaluate_reply` does and kept under the same keys.
    """
    return _refusing(_check_train, content, global_record, limits, with_evaluation)


def check_evaluate_reply(
    content: RecordDict, global_record: ArrayRecord, limits: ReplyLimits
) -> RecordDict:
    """An evaluation reply made safe for any strategy, or :class:`ReplyRejected`.

    Returns a new RecordDict with ``metrics`` (the :data:`EVALUATE_METRICS`; the confusion
    matrix ``num_classes``² counts adding up to ``num-examples``), ``info`` and, when the global
    model has BatchNorm layers and ``limits.bn_stats``, the checked ``bn-stats`` moments with
    their ``bn-examples`` (see :func:`~medfed.federation.wire.bn_moments`).
    """
    return _refusing(_check_evaluate, content, global_record, limits)


def _check_train(
    content: RecordDict, global_record: ArrayRecord, limits: ReplyLimits, with_evaluation: bool
) -> RecordDict:
    _checked_records(content)
    info = _checked_info(content)
    metrics = _checked_metrics(content, TRAIN_METRICS, limits)
    if limits.norm_bit:
        metrics.update(_checked_metrics(content, {NORM_BIT_KEY: _FLAG}, limits))
    update = content.get(wire.ARRAYS_KEY)
    if not isinstance(update, ArrayRecord):
        raise ReplyRejected(f"{wire.ARRAYS_KEY!r}: expected the encoded update")
    arrays = wire.unpack_update(
        update,
        global_record,
        max_update_norm=limits.max_update_norm,
        max_counter_step=limits.max_counter_step,
    )
    metrics["bytes-up"] = wire.payload_nbytes(update)
    control = None
    if limits.scaffold:
        if CONTROL_KEY not in content:
            raise ReplyRejected(f"{CONTROL_KEY!r} missing: SCAFFOLD's control variate change")
        control = checked_change(content[CONTROL_KEY], global_record, limits.max_update_norm)
        metrics["bytes-up"] += wire.payload_nbytes(content[CONTROL_KEY])
    out = RecordDict({wire.ARRAYS_KEY: arrays, METRICS_KEY: MetricRecord(metrics), INFO_KEY: info})
    if control is not None:
        out[CONTROL_KEY] = control
    if with_evaluation:
        if wire.EVALUATION_KEY not in content:
            raise ReplyRejected(f"{wire.EVALUATION_KEY!r} missing: the evaluation asked for")
        part = RecordDict({METRICS_KEY: content[wire.EVALUATION_KEY], INFO_KEY: info})
        if wire.BN_STATS_KEY in content:
            part[wire.BN_STATS_KEY] = content[wire.BN_STATS_KEY]
        evaluation = _check_evaluate(part, global_record, limits)
        out[wire.EVALUATION_KEY] = evaluation[METRICS_KEY]
        if wire.BN_STATS_KEY in evaluation:
            out[wire.BN_STATS_KEY] = evaluation[wire.BN_STATS_KEY]
    return out


def _check_evaluate(
    content: RecordDict, global_record: ArrayRecord, limits: ReplyLimits
) -> RecordDict:
    _checked_records(content)
    info = _checked_info(content)
    metrics = _checked_metrics(content, EVALUATE_METRICS, limits)
    if sum(metrics["confusion-matrix"]) != metrics["num-examples"]:
        raise ReplyRejected(
            f"the confusion matrix counts {sum(metrics['confusion-matrix'])} images, "
            f"num-examples says {metrics['num-examples']}"
        )
    out = RecordDict({INFO_KEY: info})
    if limits.bn_stats and wire.bn_layers(global_record):
        if wire.BN_STATS_KEY not in content:
            raise ReplyRejected(f"{wire.BN_STATS_KEY!r} missing: no BatchNorm statistics")
        examples, moments = wire.bn_moments(content, global_record, limits.max_examples)
        metrics[wire.BN_EXAMPLES_KEY] = examples
        out[wire.BN_STATS_KEY] = wire.pack_bn_moments(moments, wire.bn_layers(global_record))
    out[METRICS_KEY] = MetricRecord(metrics)
    return out
