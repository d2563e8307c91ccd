"""Every hospital reply is checked before any strategy sees it: a malicious hospital's reply is
refused in bounded memory with its reason, and the round goes on with the others."""

from __future__ import annotations

import contextlib
import re
import struct
import tracemalloc
import zlib
from collections.abc import Callable

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import strategy as fl
from flwr.supercore.task_identity import TaskIdentity
from hypothesis import given, settings
from hypothesis import strategies as st

from medfed.config import config_from_dict
from medfed.errors import FederationError
from medfed.federation import wire
from medfed.federation.codec import MAGIC, CodecSpec, encode_update, max_payload_size
from medfed.federation.phases import PhaseResult, split_evaluations
from medfed.federation.replies import (
    EVALUATE_METRICS,
    TRAIN_METRICS,
    ReplyLimits,
    ReplyRejected,
    check_evaluate_reply,
    check_train_reply,
)
from medfed.federation.strategies import aggregate_metrics, build_strategy, clients_per_round

RAW, DENSE, SPARSE = 0, 1, 2  # record kinds (see the codec's docstring)


def model_state(batch_norm: bool = True) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    state = {"conv.weight": torch.randn(4, 1, 3, 3, generator=generator)}
    if batch_norm:
        state.update(
            {
                "bn.weight": torch.ones(4),
                "bn.bias": torch.zeros(4),
                "bn.running_mean": torch.zeros(4),
                "bn.running_var": torch.ones(4),
                "bn.num_batches_tracked": torch.tensor(12, dtype=torch.int64),
            }
        )
    state.update({"fc.weight": torch.randn(2, 4, generator=generator), "fc.bias": torch.zeros(2)})
    return state


GLOBAL = ArrayRecord(model_state())
LIMITS = ReplyLimits(
    num_classes=2, max_update_norm=100.0, max_examples=10_000, max_counter_step=10**6
)
NAMES = list(model_state())
SHAPES = [tuple(t.shape) for t in model_state().values()]
# refusing a reply may take twice the largest legitimate payload, plus zlib's fixed inflate state
BUDGET = 2 * max_payload_size(wire.record_layout(GLOBAL)) + 64 * 1024


def deltas(seed: int = 0, state: dict[str, torch.Tensor] | None = None) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        np.array(3, np.int64)
        if not t.is_floating_point()
        else rng.normal(0, 0.01, tuple(t.shape)).astype(np.float32)
        for t in (state or model_state()).values()
    ]


def payload_record(payload: bytes) -> ArrayRecord:
    return ArrayRecord({wire.PAYLOAD_KEY: Array(np.frombuffer(payload, np.uint8).copy())})


def train_reply(
    payload: bytes | None = None, hospital: str = "hospital-0", **metrics
) -> RecordDict:
    """A training reply as a hospital sends it; ``metrics`` replace the honest ones."""
    payload = payload if payload is not None else encode_update(deltas(), CodecSpec())[0]
    values = {
        "num-examples": 120,
        "dp-weight": 1,
        "epsilon": -1.0,
        "budget-exhausted": 0,
        "train_loss": 0.4,
        "train_accuracy": 0.8,
        "train_seconds": 1.5,
        "bytes-up": len(payload),
        "bytes-down": 999,
        "seconds": 2.0,
        "class-counts": [60, 60],
    }
    values.update(metrics)
    return RecordDict(
        {
            wire.ARRAYS_KEY: payload_record(payload),
            "metrics": MetricRecord(values),
            "info": ConfigRecord({"hospital": hospital}),
        }
    )


def evaluate_reply(mean=None, sqmean=None, **metrics) -> RecordDict:
    values = {
        "num-examples": 50,
        "dp-weight": 1,
        "loss": 0.3,
        "accuracy": 0.9,
        "precision": 0.8,
        "recall": 0.85,
        "f1": 0.82,
        "auc": 0.95,
        "confusion-matrix": [20, 5, 0, 25],
        "bytes-down": 999,
        "seconds": 1.0,
        "bn-examples": 120,
    }
    values.update(metrics)
    mean = np.full(4, 0.5, np.float32) if mean is None else mean
    sqmean = np.full(4, 1.25, np.float32) if sqmean is None else sqmean
    stats = wire.pack_bn_moments({"bn.mean": mean, "bn.sqmean": sqmean}, ["bn"])
    return RecordDict(
        {
            "metrics": MetricRecord(values),
            "info": ConfigRecord({"hospital": "hospital-0"}),
            wire.BN_STATS_KEY: stats,
        }
    )


def record(kind: int, dtype: str, shape: tuple[int, ...], data: bytes = b"") -> bytes:
    text = np.dtype(dtype).str.encode()
    return (
        struct.pack("<BB", kind, len(text))
        + text
        + struct.pack(f"<B{len(shape)}I", len(shape), *shape)
        + data
    )


def payload_with(index: int, replacement: bytes) -> bytes:
    """An honest dense payload with record ``index`` replaced."""
    records = [record(RAW, d.dtype.str, d.shape, d.tobytes()) for d in deltas()]
    records[index] = replacement
    return MAGIC + b"\x00" + struct.pack("<I", len(records)) + b"".join(records)


def honest_payload_with(index: int, array: np.ndarray) -> bytes:
    sent = deltas()
    sent[index] = array
    return encode_update(sent, CodecSpec())[0]


def poisoned(value: float) -> np.ndarray:
    array = deltas()[0].copy()
    array[1, 0, 1, 1] = value
    return array


def quantized(offset: float, step: float) -> bytes:
    block = struct.pack("<Bff", 8, offset, step) + bytes(36)
    return record(DENSE, "<f4", (4, 1, 3, 3), block)


def sparse(gaps: list[int]) -> bytes:
    index = bytes(gaps)  # every gap below 128: one byte each
    values = b"\x20" + np.ones(len(gaps), np.float32).tobytes()
    return record(
        SPARSE, "<f4", (4, 1, 3, 3), struct.pack("<QQ", len(gaps), len(index)) + index + values
    )


_HONEST = encode_update(deltas(), CodecSpec())[0]
_BODY = _HONEST[5:]

# one malicious hospital's replies, in turn: (what it sends, the reason it is refused for)
TRAIN_ATTACKS: dict[str, tuple[Callable[[], RecordDict], str]] = {
    "oversized shape header": (
        lambda: train_reply(payload_with(0, record(SPARSE, "<f4", (65536, 65536), bytes(17)))),
        r"'conv.weight': shape \(65536, 65536\), expected \(4, 1, 3, 3\)",
    ),
    "decompression bomb (65 KB to 64 MiB)": (
        lambda: train_reply(MAGIC + b"\x01" + zlib.compress(_BODY + bytes(64 * 2**20), 9)),
        "larger than any update of this model",
    ),
    "decompression bomb within the payload bound": (
        lambda: train_reply(MAGIC + b"\x01" + zlib.compress(_BODY + bytes(2**18), 9)),
        "inflates beyond",
    ),
    "wrong shape": (
        lambda: train_reply(honest_payload_with(6, np.zeros((4, 2), np.float32))),
        r"'fc.weight': shape \(4, 2\), expected \(2, 4\)",
    ),
    "scalar that would broadcast": (
        lambda: train_reply(honest_payload_with(0, np.float32(0.1))),
        r"'conv.weight': shape \(\), expected",
    ),
    "(4, 1) onto a (4,) bias": (
        lambda: train_reply(honest_payload_with(2, np.zeros((4, 1), np.float32))),
        r"'bn.bias': shape \(4, 1\), expected \(4,\)",
    ),
    "NaN": (lambda: train_reply(honest_payload_with(0, poisoned(np.nan))), "NaN or infinite"),
    "inf": (lambda: train_reply(honest_payload_with(0, poisoned(np.inf))), "NaN or infinite"),
    "inf quantization offset": (
        lambda: train_reply(payload_with(0, quantized(np.inf, 0.1))),
        "quantization offset inf",
    ),
    "NaN quantization step": (
        lambda: train_reply(payload_with(0, quantized(0.0, np.nan))),
        "step nan not finite",
    ),
    "negative example count": (lambda: train_reply(**{"num-examples": -5}), "'num-examples' = -5"),
    "huge example count": (
        lambda: train_reply(**{"num-examples": 10**12}),
        r"'num-examples' = 1000000000000 is out of range \[1, 10000\]",
    ),
    "zero example count": (lambda: train_reply(**{"num-examples": 0}), "out of range"),
    "example count as a list": (
        lambda: train_reply(**{"num-examples": [5, 5]}),
        "'num-examples' must be an integer, got a list",
    ),
    "example count as a float": (
        lambda: train_reply(**{"num-examples": 5.5}),
        "must be an integer, got float",
    ),
    "truncated bytes": (lambda: train_reply(_HONEST[:-7]), "truncated payload"),
    "random bytes": (
        lambda: train_reply(np.random.default_rng(5).bytes(len(_HONEST))),
        "bad magic",
    ),
    "random body": (
        lambda: train_reply(MAGIC + b"\x00" + np.random.default_rng(6).bytes(len(_BODY))),
        "update: ",
    ),
    "wrong dtype": (
        lambda: train_reply(honest_payload_with(7, np.zeros(2, np.float64))),
        "'fc.bias': dtype float64, expected float32",
    ),
    "wrong tensor count": (
        lambda: train_reply(encode_update(deltas()[:-1], CodecSpec())[0]),
        "carries 7 tensors, the model has 8",
    ),
    "duplicate sparse index": (
        lambda: train_reply(payload_with(0, sparse([3, 0]))),
        "sparse indices repeat",
    ),
    "out-of-range sparse index": (
        lambda: train_reply(payload_with(0, sparse([30, 10]))),
        "sparse index 40 out of range for 36",
    ),
    "too large a norm": (
        lambda: train_reply(honest_payload_with(0, np.full((4, 1, 3, 3), 50, np.float32))),
        r"update norm 300 is above federated.max_update_norm=100",
    ),
    "counter pushed negative": (
        lambda: train_reply(honest_payload_with(5, np.array(-100, np.int64))),
        "counter 'bn.num_batches_tracked' would go from 12 to -88; it may not fall below 0",
    ),
    "counter pushed absurd": (
        lambda: train_reply(honest_payload_with(5, np.array(2**50, np.int64))),
        "nor grow by more than 1000000",
    ),
    "full weights instead of a payload": (
        lambda: RecordDict({**train_reply(), wire.ARRAYS_KEY: GLOBAL}),
        "expected one encoded payload array",
    ),
    "metrics as strings": (
        lambda: RecordDict({**train_reply(), "metrics": ConfigRecord({"num-examples": "many"})}),
        "expected a metric record",
    ),
    "a metric missing": (
        lambda: RecordDict(
            {**train_reply(), "metrics": MetricRecord({"num-examples": 10, "dp-weight": 1})}
        ),
        "metric 'epsilon' missing",
    ),
    "NaN loss": (lambda: train_reply(train_loss=float("nan")), "'train_loss' = nan is not finite"),
    "a DP weight other than 1": (lambda: train_reply(**{"dp-weight": 7}), "'dp-weight' = 7"),
    "class counts of another model": (
        lambda: train_reply(**{"class-counts": [1, 2, 3]}),
        "'class-counts' must be 2 integers, got 3",
    ),
    "a hospital name with a newline": (
        lambda: train_reply(hospital="h\nspoofed line"),
        "'hospital' must be a printable name",
    ),
}


def peak_while(fn: Callable[[], object]) -> tuple[BaseException | None, int]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    error = None
    try:
        fn()
    except Exception as exc:
        error = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return error, peak


def test_an_honest_training_reply_becomes_full_weights() -> None:
    sent = deltas()
    payload = encode_update(sent, CodecSpec())[0]
    reply = train_reply(payload, **{"bytes-up": 1})
    reply["metrics"]["something-new"] = 3.0
    clean = check_train_reply(reply, GLOBAL, LIMITS)
    assert list(clean.keys()) == [wire.ARRAYS_KEY, "metrics", "info"]
    weights = clean[wire.ARRAYS_KEY]
    assert list(weights.keys()) == NAMES
    for (name, base), delta in zip(model_state().items(), sent, strict=True):
        np.testing.assert_allclose(weights[name].numpy(), base.numpy() + delta, rtol=1e-6)
    metrics = clean["metrics"]
    assert set(metrics) == set(TRAIN_METRICS)  # unknown names left out, every reply alike
    assert metrics["bytes-up"] == len(payload)  # counted on the real payload
    assert clean["info"]["hospital"] == "hospital-0"


@pytest.mark.parametrize("attack", list(TRAIN_ATTACKS))
def test_a_malicious_training_reply_is_refused_in_bounded_memory(attack: str) -> None:
    make, reason = TRAIN_ATTACKS[attack]
    reply = make()
    error, peak = peak_while(lambda: check_train_reply(reply, GLOBAL, LIMITS))
    assert isinstance(error, ReplyRejected), repr(error)
    assert isinstance(error, FederationError)
    assert "\n" not in str(error)
    assert re.search(reason, str(error)), str(error)
    assert peak < BUDGET, f"refusing took {peak} bytes: {error}"


def replies_of(contents: list[RecordDict], message_type: str, monkeypatch) -> list[Message]:
    """Flower reply messages carrying ``contents`` (node ids 1, 2, ...)."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 0)
    out = []
    for node, content in enumerate(contents, start=1):
        instruction = Message(RecordDict(), dst_node_id=node, message_type=message_type)
        out.append(Message(content, reply_to=instruction))
    return out


MEDFED_METRICS = {
    "train_metrics_aggr_fn": aggregate_metrics,
    "evaluate_metrics_aggr_fn": aggregate_metrics,
}


@pytest.mark.parametrize(
    "strategy",
    [
        fl.FedAvg(**MEDFED_METRICS),
        fl.FedMedian(**MEDFED_METRICS),
        fl.FedTrimmedAvg(beta=0.0, **MEDFED_METRICS),
    ],
    ids=["FedAvg", "FedMedian", "FedTrimmedAvg"],
)
def test_the_round_goes_on_with_the_honest_hospitals(strategy, monkeypatch) -> None:
    honest = [
        train_reply(encode_update(deltas(seed), CodecSpec())[0], hospital=f"hospital-{seed}")
        for seed in range(3)
    ]
    incoming = honest + [make() for make, _ in TRAIN_ATTACKS.values()]
    accepted, failures = [], {}
    for node, content in enumerate(incoming):
        try:
            accepted.append(check_train_reply(content, GLOBAL, LIMITS))
        except ReplyRejected as exc:
            failures[node] = str(exc)
    assert len(accepted) == 3 and sorted(failures) == list(range(3, len(incoming)))
    arrays, metrics = strategy.aggregate_train(1, replies_of(accepted, "train", monkeypatch))
    assert arrays is not None and list(arrays.keys()) == NAMES
    assert [tuple(arrays[n].numpy().shape) for n in NAMES] == SHAPES
    assert all(np.isfinite(arrays[n].numpy()).all() for n in NAMES)
    expected = np.mean([model_state()["fc.bias"].numpy() + deltas(s)[7] for s in range(3)], 0)
    if isinstance(strategy, fl.FedAvg) and not isinstance(strategy, fl.FedMedian):
        np.testing.assert_allclose(arrays["fc.bias"].numpy(), expected, rtol=1e-5, atol=1e-7)
    assert metrics is not None and metrics["num-examples"] == 360


EVALUATE_ATTACKS: dict[str, tuple[Callable[[], RecordDict], str]] = {
    "negative bn-examples": (lambda: evaluate_reply(**{"bn-examples": -1}), "'bn-examples' = -1"),
    "huge bn-examples": (
        lambda: evaluate_reply(**{"bn-examples": 10**9}),
        r"'bn-examples' = 1000000000 is out of range \[1, 10000\]",
    ),
    "NaN moments": (
        lambda: evaluate_reply(mean=np.full(4, np.nan, np.float32)),
        "'moments': holds NaN",
    ),
    "negative mean square": (
        lambda: evaluate_reply(sqmean=np.full(4, -1.0, np.float32)),
        "'bn.sqmean': a negative mean square",
    ),
    "moments of another shape": (
        lambda: evaluate_reply(mean=np.zeros(5, np.float32)),
        r"'moments': shape \(9,\), expected \(8,\)",
    ),
    "no moments": (
        lambda: RecordDict({k: v for k, v in evaluate_reply().items() if k != wire.BN_STATS_KEY}),
        "'bn-stats' missing",
    ),
    "negative example count": (
        lambda: evaluate_reply(**{"num-examples": -50}),
        "'num-examples' = -50",
    ),
    "huge example count": (
        lambda: evaluate_reply(**{"num-examples": 10**7, "confusion-matrix": [10**7, 0, 0, 0]}),
        "'num-examples' = 10000000 is out of range",
    ),
    "confusion matrix of another size": (
        lambda: evaluate_reply(**{"confusion-matrix": [50]}),
        "'confusion-matrix' must be 4 integers, got 1",
    ),
    "negative confusion count": (
        lambda: evaluate_reply(**{"confusion-matrix": [70, -20, 0, 0]}),
        r"outside \[0, 10000\]",
    ),
    "confusion matrix not adding up": (
        lambda: evaluate_reply(**{"confusion-matrix": [20, 5, 0, 2500]}),
        "counts 2525 images, num-examples says 50",
    ),
    "confusion matrix of floats": (
        lambda: evaluate_reply(**{"confusion-matrix": [20.0, 5.0, 0.0, 25.0]}),
        "must hold integers only",
    ),
    "NaN loss": (lambda: evaluate_reply(loss=float("nan")), "'loss' = nan is not finite"),
    "infinite accuracy": (lambda: evaluate_reply(accuracy=float("inf")), "not finite"),
    "accuracy above one": (lambda: evaluate_reply(accuracy=3.0), r"'accuracy' = 3 is out of range"),
    "accuracy as a list": (lambda: evaluate_reply(accuracy=[0.5]), "must be a number, got a list"),
}


def test_an_honest_evaluation_reply_keeps_its_moments() -> None:
    clean = check_evaluate_reply(evaluate_reply(), GLOBAL, LIMITS)
    assert set(clean["metrics"]) == set(EVALUATE_METRICS) | {wire.BN_EXAMPLES_KEY}
    assert set(wire.bn_moments(clean, GLOBAL, 1000)[1]) == {"bn.mean", "bn.sqmean"}
    # without BatchNorm layers (or under FedBN) there are no moments to keep
    plain = ArrayRecord(model_state(batch_norm=False))
    clean = check_evaluate_reply(evaluate_reply(), plain, LIMITS)
    assert wire.BN_STATS_KEY not in clean and wire.BN_EXAMPLES_KEY not in clean["metrics"]
    fedbn = ReplyLimits(num_classes=2, bn_stats=False)
    assert wire.BN_STATS_KEY not in check_evaluate_reply(evaluate_reply(), GLOBAL, fedbn)


@pytest.mark.parametrize("attack", list(EVALUATE_ATTACKS))
def test_a_malicious_evaluation_reply_is_refused(attack: str) -> None:
    make, reason = EVALUATE_ATTACKS[attack]
    reply = make()
    error, peak = peak_while(lambda: check_evaluate_reply(reply, GLOBAL, LIMITS))
    assert isinstance(error, ReplyRejected), repr(error)
    assert re.search(reason, str(error)), str(error)
    assert peak < BUDGET


def folded(evaluation: RecordDict | None = None, **metrics) -> RecordDict:
    """A training reply that also carries the evaluation of the model it received."""
    content = train_reply(**metrics)
    evaluation = evaluation if evaluation is not None else evaluate_reply()
    content[wire.EVALUATION_KEY] = evaluation["metrics"]
    content[wire.BN_STATS_KEY] = evaluation[wire.BN_STATS_KEY]
    return content


def test_a_training_reply_carries_the_checked_evaluation_of_the_received_model(
    monkeypatch,
) -> None:
    clean = check_train_reply(folded(), GLOBAL, LIMITS, with_evaluation=True)
    assert set(clean[wire.EVALUATION_KEY]) == set(EVALUATE_METRICS) | {wire.BN_EXAMPLES_KEY}
    assert list(clean[wire.BN_STATS_KEY].keys()) == ["moments"]
    result = PhaseResult(replies=replies_of([clean], "train", monkeypatch))
    result.hospitals[result.replies[0].metadata.src_node_id] = "north"
    evaluation = split_evaluations(result)
    assert [name for name, _ in evaluation.replies] == ["north"]
    assert set(clean.keys()) == {wire.ARRAYS_KEY, "metrics", "info"}  # what a strategy sees
    assert check_train_reply(folded(), GLOBAL, LIMITS)[wire.ARRAYS_KEY]  # not asked: ignored
    with pytest.raises(ReplyRejected, match="'evaluation' missing"):
        check_train_reply(train_reply(), GLOBAL, LIMITS, with_evaluation=True)
    with pytest.raises(ReplyRejected, match="accuracy"):
        bad = folded(evaluate_reply(accuracy=1.5))
        check_train_reply(bad, GLOBAL, LIMITS, with_evaluation=True)


def test_evaluation_goes_on_with_the_honest_hospitals(monkeypatch) -> None:
    honest = [
        evaluate_reply(),
        evaluate_reply(
            np.full(4, 1.5, np.float32), np.full(4, 3.25, np.float32), **{"bn-examples": 360}
        ),
    ]
    accepted = []
    for content in honest + [make() for make, _ in EVALUATE_ATTACKS.values()]:
        with contextlib.suppress(ReplyRejected):
            accepted.append(check_evaluate_reply(content, GLOBAL, LIMITS))
    assert len(accepted) == 2
    merged = wire.merge_bn_statistics(accepted, GLOBAL)
    np.testing.assert_allclose(merged["bn.running_mean"].numpy(), np.full(4, 1.25))
    strategy = fl.FedAvg(**MEDFED_METRICS)
    metrics = strategy.aggregate_evaluate(1, replies_of(accepted, "evaluate", monkeypatch))
    assert metrics is not None and metrics["confusion-matrix"] == [40, 10, 0, 50]


def test_metrics_aggregate_alike_whatever_unknown_names_hospitals_add() -> None:
    replies = [train_reply(**{f"extra-{i}": [1.0] * i}) for i in range(1, 4)]
    clean = [check_train_reply(r, GLOBAL, LIMITS) for r in replies]
    metrics = aggregate_metrics(clean, "num-examples")
    assert metrics["num-examples"] == 360 and metrics["class-counts"] == [180, 180]
    assert not any(key.startswith("extra") for key in metrics)


def test_norm_bit_is_required_when_hospitals_clip() -> None:
    clipping = ReplyLimits(num_classes=2, norm_bit=True)
    with pytest.raises(ReplyRejected, match="metric 'norm_bit' missing"):
        check_train_reply(train_reply(), GLOBAL, clipping)
    with pytest.raises(ReplyRejected, match=r"'norm_bit' = 2 is out of range \[0, 1\]"):
        check_train_reply(train_reply(norm_bit=2), GLOBAL, clipping)
    assert check_train_reply(train_reply(norm_bit=1), GLOBAL, clipping)["metrics"]["norm_bit"] == 1
    assert "norm_bit" not in check_train_reply(train_reply(norm_bit=1), GLOBAL, LIMITS)["metrics"]


def test_limits_follow_the_configuration() -> None:
    cfg = config_from_dict(
        {
            "federated": {"max_update_norm": 50.0, "max_examples": 1000, "rounds": 4},
            "model": {"norm": "group"},
            "privacy": {"mode": "client", "clip_side": "client", "noise_multiplier": 1.0},
        }
    )
    limits = ReplyLimits.from_config(cfg, num_classes=3)
    assert (limits.max_update_norm, limits.max_examples, limits.num_classes) == (50.0, 1000, 3)
    assert limits.norm_bit and limits.max_counter_step == 4 * cfg.federated.local_epochs * 1000
    default = ReplyLimits.from_config(config_from_dict({}), num_classes=2)
    assert not default.norm_bit and default.bn_stats
    assert default.max_update_norm == 1e6


@pytest.mark.parametrize("clip_side", ["server", "client"])
def test_checked_replies_work_with_client_level_dp(clip_side: str, monkeypatch) -> None:
    cfg = config_from_dict(
        {
            "federated": {"num_clients": 3, "min_train_clients": 3, "min_available_clients": 3},
            "model": {"norm": "group"},
            "privacy": {
                "mode": "client",
                "clip_side": clip_side,
                "noise_multiplier": 0.1,
                "max_grad_norm": 0.05,
            },
        }
    )
    state = model_state(batch_norm=False)
    global_record = ArrayRecord(state)
    limits = ReplyLimits.from_config(cfg, num_classes=2)
    extra = {"norm_bit": 0} if clip_side == "client" else {}
    accepted = [
        check_train_reply(
            train_reply(encode_update(deltas(seed, state), CodecSpec())[0], **extra),
            global_record,
            limits,
        )
        for seed in range(clients_per_round(cfg))
    ]
    strategy = build_strategy(cfg)
    strategy.current_arrays = global_record
    arrays, _ = strategy.aggregate_train(1, replies_of(accepted, "train", monkeypatch))
    assert arrays is not None and list(arrays.keys()) == list(state)
    assert all(np.isfinite(arrays[n].numpy()).all() for n in state)
    assert [tuple(arrays[n].numpy().shape) for n in state] == [
        tuple(t.shape) for t in state.values()
    ]


def test_aggregating_leaves_out_a_metric_the_replies_disagree_on() -> None:
    def reply(**values) -> RecordDict:
        return RecordDict({"metrics": MetricRecord(values)})

    replies = [
        reply(**{"num-examples": 10, "loss": 0.5, "confusion-matrix": [1, 2], "auc": 0.5}),
        reply(**{"num-examples": 30, "loss": [0.1], "confusion-matrix": [1, 2, 3]}),
    ]
    out = aggregate_metrics(replies, "num-examples")
    assert dict(out) == {"num-examples": 40}


_FUZZ_BASE = encode_update(deltas(), CodecSpec(topk=0.5, quant_bits=4, dense_below=0))[0]
_metric_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(-5, 10**6), max_size=5),
    st.lists(st.floats(allow_nan=True), max_size=5),
)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    metrics=st.dictionaries(st.sampled_from([*TRAIN_METRICS, "norm_bit", "x"]), _metric_values),
    cut=st.integers(0, len(_FUZZ_BASE)),
    flips=st.lists(st.tuples(st.integers(0, len(_FUZZ_BASE) - 1), st.integers(0, 7)), max_size=3),
)
def test_property_a_reply_is_cleaned_or_refused_never_a_crash(metrics, cut, flips) -> None:
    data = bytearray(_FUZZ_BASE)
    for at, bit in flips:
        data[at] ^= 1 << bit
    reply = train_reply(bytes(data[: max(cut, 5)]), **metrics)
    error, peak = peak_while(lambda: check_train_reply(reply, GLOBAL, LIMITS))
    assert error is None or isinstance(error, ReplyRejected), repr(error)
    assert peak < BUDGET + 200_000  # + the decoded full weights of an accepted reply
