"""What travels between ServerApp and ClientApps: encoded updates and broadcast weights.

Hospitals send the delta from the global model they received, encoded by the codec (top-k,
quantization, error feedback, lossless packing as configured), as one uint8 array. The server
decodes it back into full weights before the strategy aggregates, so every Flower strategy
works unchanged. The byte counts are those of the real encoded payloads.

Nothing received is believed: an update is decoded against the global model's layout (names,
shapes, dtypes) with its size capped, its float deltas must be finite and of bounded L2 norm,
and integer buffers (BatchNorm batch counters) must stay in range; arrays inside a Flower record
are checked before they are read (:mod:`~medfed.federation.wire_records`). A refused update
raises :class:`ReplyRejected`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, RecordDict

from medfed.config import FederatedConfig
from medfed.errors import FederationError
from medfed.federation.codec import (
    CodecError,
    CodecSpec,
    ResidualStore,
    TensorSpec,
    decode_update,
    decode_weights,
    encode_update,
    encode_weights,
    max_payload_size,
)
from medfed.federation.wire_records import (
    PAYLOAD_KEY,
    _name_mismatch,
    _payload_bytes,
    is_payload,
    payload_nbytes,
    payload_record,
    payload_view,
    read_array,
    read_arrays,
    record_layout,
    record_nbytes,
    state_layout,
)
from medfed.privacy.clipping import clip_update

__all__ = [
    "ARRAYS_KEY",
    "BN_EXAMPLES_KEY",
    "BN_STATS_KEY",
    "CONFIG_KEY",
    "COUNTER_SUFFIX",
    "DOWNLINK_KEY",
    "EVALUATE_FIRST_KEY",
    "EVALUATION_KEY",
    "MAX_COUNTER",
    "PAYLOAD_KEY",
    "ReplyRejected",
    "bn_layers",
    "bn_moments",
    "pack_bn_moments",
    "broadcast_arrays",
    "is_payload",
    "merge_bn_statistics",
    "pack_global",
    "pack_update",
    "payload_nbytes",
    "payload_record",
    "payload_view",
    "read_array",
    "read_arrays",
    "record_layout",
    "record_nbytes",
    "state_layout",
    "unpack_global",
    "unpack_update",
    "update_norm",
]

ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
BN_STATS_KEY = "bn-stats"
BN_EXAMPLES_KEY = "bn-examples"
EVALUATION_KEY = "evaluation"  # a train reply's metrics of the model it received
EVALUATE_FIRST_KEY = "evaluate-first"  # config: evaluate the received model before training
DOWNLINK_KEY = "downlink"  # which copy a broadcast change applies to (see downlink.py)
COUNTER_SUFFIX = "num_batches_tracked"
MAX_COUNTER = 2**53  # integer buffers above this are absurd (and no longer exact as floats)

log = logging.getLogger("medfed.wire")


class ReplyRejected(FederationError, ValueError):
    """A hospital's reply the server refuses; the message is one line naming what was wrong.

    It is that hospital's failure in that round, never the run's.
    """


def pack_global(record: ArrayRecord, precision: str) -> tuple[ArrayRecord, int]:
    """The global model as broadcast: one payload (fp32, fp16 or int8), float weights in
    float32 whatever the strategy computed them in.

    One array instead of one per tensor: Flower moves every array of a message as an object
    of its own, one request each between SuperLink, SuperNode and ClientApp.
    """
    payload = encode_weights(broadcast_arrays(record), precision)  # type: ignore[arg-type]
    return payload_record(payload), len(payload)


def broadcast_arrays(record: ArrayRecord) -> list[np.ndarray]:
    """The global model's arrays as hospitals receive them: float64 weights as float32."""
    return [
        a.astype(np.float32) if a.dtype == np.float64 else a for a in record.to_numpy_ndarrays()
    ]


def with_dtypes_of(record: ArrayRecord, model: ArrayRecord) -> ArrayRecord:
    """``record``'s arrays in the dtypes of ``model``'s (same names): strategies such as FedAdam
    return float64 weights and averaged counters, while the hospitals' updates, checked against
    the global model, come in the model's own dtypes. Integer arrays are rounded."""
    out = {}
    for name, array in record.items():
        values, dtype = array.numpy(), np.dtype(model[name].dtype)
        if values.dtype != dtype:
            values = np.rint(values) if dtype.kind in "iu" else values
            array = Array(np.asarray(values.astype(dtype)))
        out[name] = array
    return ArrayRecord(out)


def unpack_global(
    record: ArrayRecord, expected: Sequence[str] | Sequence[TensorSpec]
) -> dict[str, torch.Tensor]:
    """A state dict from what :func:`pack_global` sent.

    ``expected`` is the model's layout (:func:`state_layout` of the model the hospital builds):
    the broadcast is then checked against it before anything is allocated, and a mismatch
    raises :class:`CodecError`. Plain state keys are still accepted (nothing is checked).
    """
    layout = [e for e in expected if isinstance(e, TensorSpec)]
    if not layout:
        keys = [str(k) for k in expected]
        if not is_payload(record):
            return record.to_torch_state_dict()
        arrays = decode_weights(_payload_bytes(record))
        return {k: torch.from_numpy(np.array(a)) for k, a in zip(keys, arrays, strict=True)}
    if is_payload(record):
        arrays = decode_weights(payload_view(record, max_payload_size(layout)), layout)
    else:
        arrays = read_arrays(record, layout, "global model")
    return {spec.name: torch.from_numpy(a) for spec, a in zip(layout, arrays, strict=True)}


def pack_update(
    global_state: dict[str, torch.Tensor],
    local_state: dict[str, torch.Tensor],
    spec: CodecSpec,
    residual_path: Path,
    run_id: str,
    seed: int,
    clip_norm: float | None = None,
    learning_rate: float = 1.0,
) -> tuple[ArrayRecord, int, bool]:
    """Encode ``local - global`` as one payload; the residual is kept in ``residual_path``.

    The residual is stored per unit of ``learning_rate`` (this round's local rate) and comes
    back scaled by the next round's: as the rate decays, what earlier, larger steps left
    unsent shrinks with the steps instead of landing whole on a model that has moved on.
    With ``clip_norm`` (client-level DP, clipping at the hospital) the update is clipped to
    that L2 norm before encoding; the third value says whether it was clipped.
    """
    delta = [
        (local_state[k].detach().cpu().numpy() - global_state[k].detach().cpu().numpy())
        for k in global_state
    ]
    clipped = False
    if clip_norm is not None:
        delta, clipped = clip_update(delta, clip_norm)
    store = ResidualStore(residual_path, run_id)
    per_unit = store.load() if spec.error_feedback else None
    residual = None if per_unit is None else [r * learning_rate for r in per_unit]
    payload, new_residual = encode_update(
        delta, spec, residual=residual, rng=np.random.default_rng(seed)
    )
    if new_residual is not None:
        store.save([r / learning_rate for r in new_residual])
    return payload_record(payload), len(payload), clipped


def bn_layers(global_record: ArrayRecord) -> list[str]:
    """Names of the global model's BatchNorm layers (those with running statistics)."""
    suffix = ".running_mean"
    return [k[: -len(suffix)] for k in global_record if k.endswith(suffix)]


MOMENTS_KEY = "moments"  # the one array of a bn-stats record
MOMENTS = ("mean", "sqmean")  # each BatchNorm layer's, in this order


def pack_bn_moments(moments: dict[str, np.ndarray], layers: Sequence[str]) -> ArrayRecord:
    """BatchNorm moments as one float32 array: ``LAYER.mean`` then ``LAYER.sqmean`` of each of
    ``layers`` in turn. One array, not two per layer: Flower sends every array of a message
    as objects of its own, each a request through the SuperLink (ResNet-18's 40 moments cost
    80 of them)."""
    parts = [np.asarray(moments[f"{layer}.{m}"]).ravel() for layer in layers for m in MOMENTS]
    packed = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    return ArrayRecord({MOMENTS_KEY: Array(packed)})


def bn_moments(
    content: RecordDict, global_record: ArrayRecord, max_examples: int
) -> tuple[int, dict[str, np.ndarray]]:
    """A reply's BatchNorm moments (:func:`pack_bn_moments`) by name, ``LAYER.mean`` and
    ``LAYER.sqmean``, and the number of images behind them, checked.

    The record must hold exactly one float32 array of the length the global model's BatchNorm
    layers give, finite, mean squares not negative, and ``bn-examples`` must be an integer in
    [1, ``max_examples``]; otherwise :class:`ReplyRejected`. Each moment comes back shaped and
    typed like its layer's ``running_mean``.
    """
    metrics = content.get("metrics")
    examples = None if metrics is None else metrics.get(BN_EXAMPLES_KEY)
    if isinstance(examples, bool) or not isinstance(examples, int):
        raise ReplyRejected(f"metric {BN_EXAMPLES_KEY!r} must be an integer, got {examples!r}")
    if not 1 <= examples <= max_examples:
        raise ReplyRejected(
            f"metric {BN_EXAMPLES_KEY!r} = {examples} is out of range [1, {max_examples}] "
            "(federated.max_examples)"
        )
    running = {layer: global_record[f"{layer}.running_mean"] for layer in bn_layers(global_record)}
    record = content.get(BN_STATS_KEY)
    if not isinstance(record, ArrayRecord):
        raise ReplyRejected(f"{BN_STATS_KEY}: expected an array record")
    names = list(record.keys())
    if names != [MOMENTS_KEY]:
        raise ReplyRejected(f"{BN_STATS_KEY}: {_name_mismatch(names, [MOMENTS_KEY])}")
    total = sum(2 * int(np.prod(r.shape)) for r in running.values())
    spec = TensorSpec(MOMENTS_KEY, (total,), np.dtype(np.float32))
    try:
        packed = read_array(record[MOMENTS_KEY], spec, BN_STATS_KEY)
    except CodecError as exc:
        raise ReplyRejected(str(exc)) from None
    moments, start = {}, 0
    for layer, array in running.items():
        shape, size = tuple(array.shape), int(np.prod(array.shape))
        for m in MOMENTS:
            values = packed[start : start + size].reshape(shape).astype(np.dtype(array.dtype))
            moments[f"{layer}.{m}"] = values
            start += size
        if (moments[f"{layer}.sqmean"] < 0).any():
            raise ReplyRejected(f"{BN_STATS_KEY} '{layer}.sqmean': a negative mean square")
    return examples, moments


def merge_bn_statistics(
    replies: list[RecordDict],
    global_record: ArrayRecord,
    max_examples: int = FederatedConfig.model_fields["max_examples"].default,
) -> ArrayRecord:
    """Global BatchNorm running statistics from the hospitals' activation moments.

    Each reply holds, per BatchNorm layer, the mean and mean square of its inputs under the
    global model on that hospital's images; weighted by images they give the global mean and
    variance (E[x^2] - E[x]^2). Each reply's moments are checked (:func:`bn_moments`); one
    that fails is left out and logged, the others are merged.
    """
    checked = []
    for reply in replies:
        if BN_STATS_KEY not in reply:
            continue
        try:
            checked.append(bn_moments(reply, global_record, max_examples))
        except ReplyRejected as exc:
            log.warning("BatchNorm statistics of a reply left out: %s", exc)
    if not checked:
        return global_record
    weights = np.array([float(examples) for examples, _ in checked])
    weights /= weights.sum()
    out = ArrayRecord({k: v for k, v in global_record.items()})
    for layer in bn_layers(global_record):
        mean = sum(w * m[f"{layer}.mean"] for w, (_, m) in zip(weights, checked, strict=True))
        sq = sum(w * m[f"{layer}.sqmean"] for w, (_, m) in zip(weights, checked, strict=True))
        dtype = np.dtype(global_record[f"{layer}.running_mean"].dtype)
        out[f"{layer}.running_mean"] = Array(np.asarray(mean).astype(dtype))
        out[f"{layer}.running_var"] = Array(np.maximum(sq - mean * mean, 0.0).astype(dtype))
    return out


def update_norm(deltas: Sequence[np.ndarray], layout: Sequence[TensorSpec]) -> float:
    """L2 norm of an update's float deltas (integer buffers and batch counters left out)."""
    total = 0.0
    for spec, delta in zip(layout, deltas, strict=True):
        if delta.dtype.kind != "f" or _is_counter(spec):
            continue
        flat = delta.reshape(-1)
        if flat.dtype.itemsize < 4:
            flat = flat.astype(np.float32)
        total += float(np.dot(flat, flat))
    return math.sqrt(total)


def unpack_update(
    update: ArrayRecord,
    global_record: ArrayRecord,
    *,
    max_update_norm: float = math.inf,
    max_counter_step: int = MAX_COUNTER,
) -> ArrayRecord:
    """Full weights ``global + delta`` from a hospital's encoded update, checked first.

    The record must hold exactly one uint8 payload no larger than the largest update of the
    global model; it is decoded against the global record's names, shapes and dtypes (finite
    values, bounded sizes); the float deltas' L2 norm must be at most ``max_update_norm``; and
    integer buffers and BatchNorm batch counters must stay at least 0, at most
    ``max_counter_step`` above the global model's value and at most :data:`MAX_COUNTER`. Only
    then is anything added. Anything else raises :class:`ReplyRejected` with the reason.
    """
    layout = record_layout(global_record)
    try:
        deltas = decode_update(payload_view(update, max_payload_size(layout)), layout)
    except CodecError as exc:
        raise ReplyRejected(f"update: {exc}") from None
    norm = update_norm(deltas, layout)
    if not norm <= max_update_norm:
        raise ReplyRejected(
            f"update norm {norm:.4g} is above federated.max_update_norm={max_update_norm:g}"
        )
    out = {}
    for spec, delta in zip(layout, deltas, strict=True):
        base = global_record[spec.name].numpy()
        if _is_counter(spec):
            _check_counter(spec.name, base, delta, max_counter_step)
        out[spec.name] = Array(np.asarray(base + delta.astype(base.dtype, copy=False)))
    return ArrayRecord(out)


def _check_counter(name: str, base: np.ndarray, delta: np.ndarray, max_step: int) -> None:
    step = delta.astype(np.float64)
    total = base.astype(np.float64) + step
    if (total < 0).any() or (step > max_step).any() or (total > MAX_COUNTER).any():
        raise ReplyRejected(
            f"update: counter {name!r} would go from {_span(base)} to {_span(total)}; it may "
            f"not fall below 0 nor grow by more than {max_step}"
        )


def _span(values: np.ndarray) -> str:
    low, high = float(values.min()), float(values.max())
    return f"{low:.6g}" if low == high else f"{low:.6g}..{high:.6g}"


def _is_counter(spec: TensorSpec) -> bool:
    """Integer buffers, and BatchNorm batch counters even once averaging made them floats."""
    return (spec.dtype is not None and spec.dtype.kind != "f") or spec.name.endswith(COUNTER_SUFFIX)
