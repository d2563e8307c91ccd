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
from flwr.app import Array, ArrayRecord

from medfed.federation.codec import (
    CodecSpec,
    ResidualStore,
    decode_update,
    decode_weights,
    encode_update,
    encode_weights,
)

ARRAYS_KEY = "arrays"
CONFIG_KEY = "config"
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
) -> tuple[ArrayRecord, int]:
    """Encode ``local - global`` as one payload; the residual is kept in ``residual_path``."""
    delta = [
        (local_state[k].detach().cpu().numpy() - global_state[k].detach().cpu().numpy())
        for k in global_state
    ]
    store = ResidualStore(residual_path, run_id)
    residual = store.load() if spec.error_feedback else None
    payload, new_residual = encode_update(
        delta, spec, residual=residual, rng=np.random.default_rng(seed)
    )
    if spec.error_feedback and spec.is_lossy:
        store.save(new_residual)
    return _payload_record(payload), len(payload)


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
