"""What travels between ServerApp and ClientApps: encoded updates and broadcast weights.

Hospitals send the delta from the global model they received, encoded by the codec (top-k,
quantization, error feedback, lossless packing as configured), as one uint8 array. The server
decodes it back into full weights before the strategy aggregates, so every Flower strategy
works unchanged. The byte counts are those of the real encoded payloads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, RecordDict

from medfed.federation.codec import (
    CodecSpec,
    ResidualStore,
    decode_update,
    decode_weights,
    encode_update,
    encode_weights,
)
from medfed.privacy.clipping import clip_update

ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
BN_STATS_KEY = "bn-stats"
PAYLOAD_KEY = "payload"


def record_nbytes(record: ArrayRecord) -> int:
    """Bytes of the arrays a record carries."""
    return sum(len(array.data) for array in record.values())


def _payload_record(payload: bytes) -> ArrayRecord:
    return ArrayRecord({PAYLOAD_KEY: Array(np.frombuffer(payload, dtype=np.uint8).copy())})


def is_payload(record: ArrayRecord) -> bool:
    return list(record.keys()) == [PAYLOAD_KEY]


def _payload_bytes(record: ArrayRecord) -> bytes:
    return record[PAYLOAD_KEY].numpy().tobytes()


def pack_global(record: ArrayRecord, precision: str) -> tuple[ArrayRecord, int]:
    """The global model as broadcast: unchanged in fp32, else one fp16/int8 encoded payload."""
    if precision == "fp32":
        return record, record_nbytes(record)
    payload = encode_weights(record.to_numpy_ndarrays(), precision)  # type: ignore[arg-type]
    return _payload_record(payload), len(payload)


def unpack_global(record: ArrayRecord, keys: list[str]) -> dict[str, torch.Tensor]:
    """A state dict from what :func:`pack_global` sent (``keys`` = the model's state keys)."""
    if not is_payload(record):
        return record.to_torch_state_dict()
    arrays = decode_weights(_payload_bytes(record))
    return {k: torch.from_numpy(np.array(a)) for k, a in zip(keys, arrays, strict=True)}


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
    return _payload_record(payload), len(payload), clipped


def merge_bn_statistics(replies: list[RecordDict], global_record: ArrayRecord) -> ArrayRecord:
    """Global BatchNorm running statistics from the hospitals' activation moments.

    Each reply holds, per BatchNorm layer, the mean and mean square of its inputs under the
    global model on that hospital's images; weighted by images they give the global mean and
    variance (E[x^2] - E[x]^2).
    """
    with_stats = [r for r in replies if BN_STATS_KEY in r]
    if not with_stats:
        return global_record
    weights = np.array([float(r["metrics"]["bn-examples"]) for r in with_stats])
    weights /= weights.sum()
    out = ArrayRecord({k: v for k, v in global_record.items()})
    for key in with_stats[0][BN_STATS_KEY]:
        if not key.endswith(".mean"):
            continue
        layer = key[: -len(".mean")]
        mean = sum(
            w * r[BN_STATS_KEY][key].numpy() for w, r in zip(weights, with_stats, strict=True)
        )
        sq = sum(
            w * r[BN_STATS_KEY][f"{layer}.sqmean"].numpy()
            for w, r in zip(weights, with_stats, strict=True)
        )
        dtype = global_record[f"{layer}.running_mean"].numpy().dtype
        out[f"{layer}.running_mean"] = Array(mean.astype(dtype))
        out[f"{layer}.running_var"] = Array(np.maximum(sq - mean * mean, 0.0).astype(dtype))
    return out


def unpack_update(update: ArrayRecord, global_record: ArrayRecord) -> ArrayRecord:
    """Full weights ``global + delta`` from a hospital's encoded update."""
    deltas = decode_update(_payload_bytes(update))
    keys = list(global_record.keys())
    if len(deltas) != len(keys):
        raise ValueError(f"update carries {len(deltas)} tensors, the model has {len(keys)}")
    out = {}
    for key, delta in zip(keys, deltas, strict=True):
        base = global_record[key].numpy()
        out[key] = Array(np.asarray(base + delta.astype(base.dtype, copy=False)))
    return ArrayRecord(out)
