"""Flower records to and from numpy arrays, without believing what is received.

An encoded payload travels as a record of one uint8 array. Arrays inside a received record are
read from their ``.npy`` bytes only after their header matches what is expected (numpy's own
loader would allocate whatever a header claims); a mismatch raises :class:`CodecError`.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from medfed.federation.codec import CodecError, TensorSpec

PAYLOAD_KEY = "payload"
_NPY_STYPE = "numpy.ndarray"
_NPY_MAX_HEADER = 10_000


def record_nbytes(record: ArrayRecord) -> int:
    """Bytes of the arrays a record carries."""
    return sum(len(array.data) for array in record.values())


def payload_record(payload: bytes | bytearray) -> ArrayRecord:
    """One encoded payload as a record of one uint8 array (what travels either way): the
    ``.npy`` form ``np.save`` writes, made with one copy of the payload instead of three."""
    header = io.BytesIO()
    shape = (len(payload),)
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": shape}
    )
    array = Array(dtype="uint8", shape=shape, stype=_NPY_STYPE, data=header.getvalue() + payload)
    return ArrayRecord({PAYLOAD_KEY: array})


def is_payload(record: ArrayRecord) -> bool:
    return list(record.keys()) == [PAYLOAD_KEY]


def _payload_bytes(record: ArrayRecord) -> bytes:
    return record[PAYLOAD_KEY].numpy().tobytes()


def record_layout(record: ArrayRecord) -> list[TensorSpec]:
    """Names, shapes and dtypes of a record's arrays, in order (a record this process made)."""
    return [TensorSpec(k, tuple(a.shape), np.dtype(a.dtype)) for k, a in record.items()]


def state_layout(state: Mapping[str, torch.Tensor]) -> list[TensorSpec]:
    """What a hospital expects of the broadcast model: its own model's names and shapes, in
    any plain numeric dtype (the server's strategies may send float64: FedAdam's weights,
    averaged BatchNorm counters); ``load_state_dict`` casts them back."""
    return [TensorSpec(name, tuple(tensor.shape), None) for name, tensor in state.items()]


def read_array(array: Array, spec: TensorSpec, what: str) -> np.ndarray:
    """One array of a received record, checked against ``spec`` before it is allocated.

    The array's ``.npy`` header must give exactly the spec's dtype and shape, its data exactly
    that many bytes, and float values must be finite; otherwise :class:`CodecError` names
    ``what`` and the tensor.
    """
    label = f"{what} {spec.name!r}"
    shape, fortran, dtype, data = _npy_parts(array, label)
    if not spec.accepts(dtype):
        raise CodecError(f"{label}: dtype {dtype}, expected {spec.describe_dtype()}")
    if shape != spec.shape:
        raise CodecError(f"{label}: shape {shape}, expected {spec.shape}")
    if len(data) != spec.size * dtype.itemsize:
        raise CodecError(f"{label}: {len(data)} data bytes, expected {spec.size * dtype.itemsize}")
    values = np.frombuffer(data, dtype)
    if dtype.kind == "f" and not np.isfinite(values).all():
        raise CodecError(f"{label}: holds NaN or infinite values")
    return values.reshape(shape, order="F" if fortran else "C").copy()


def read_arrays(record: ArrayRecord, layout: Sequence[TensorSpec], what: str) -> list[np.ndarray]:
    """Every array of a received record, in ``layout``'s order, each checked by
    :func:`read_array`; the record's names must be exactly the layout's, in order."""
    if not isinstance(record, ArrayRecord):
        raise CodecError(f"{what}: expected an array record, got {type(record).__name__}")
    names = list(record.keys())
    expected = [spec.name for spec in layout]
    if names != expected:
        raise CodecError(f"{what}: {_name_mismatch(names, expected)}")
    return [read_array(record[spec.name], spec, what) for spec in layout]


def payload_view(record: ArrayRecord, max_bytes: int) -> memoryview:
    """The bytes of a received payload record, without copying: the record must hold exactly
    one 1-D uint8 array of at most ``max_bytes`` bytes."""
    if not isinstance(record, ArrayRecord) or not is_payload(record):
        keys = list(record.keys()) if isinstance(record, ArrayRecord) else type(record).__name__
        raise CodecError(f"expected one encoded payload array {PAYLOAD_KEY!r}, got {keys}")
    shape, _, dtype, data = _npy_parts(record[PAYLOAD_KEY], "payload")
    if dtype != np.uint8 or len(shape) != 1:
        raise CodecError(f"payload: a {dtype} array of shape {shape}, expected 1-D uint8")
    if shape[0] > max_bytes:
        raise CodecError(
            f"payload of {shape[0]} bytes is larger than any update of this model "
            f"({max_bytes} bytes at most)"
        )
    if len(data) != shape[0]:
        raise CodecError(f"payload: {len(data)} data bytes, its header says {shape[0]}")
    return data


def payload_nbytes(record: ArrayRecord) -> int:
    """Size of the payload a record carries (as :func:`payload_view` finds it)."""
    return len(payload_view(record, sys.maxsize))


def _npy_parts(array: Array, label: str) -> tuple[tuple[int, ...], bool, np.dtype, memoryview]:
    """Shape, Fortran order, dtype and data bytes of an Array's ``.npy`` serialization."""
    if not isinstance(array, Array) or array.stype != _NPY_STYPE:
        kind = getattr(array, "stype", type(array).__name__)
        raise CodecError(f"{label}: not a numpy array ({kind})")
    if not isinstance(array.data, bytes):
        raise CodecError(f"{label}: array data is {type(array.data).__name__}, not bytes")
    stream = io.BytesIO(array.data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(stream, _NPY_MAX_HEADER)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(stream, _NPY_MAX_HEADER)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as exc:  # numpy's header parser raises several types for bad input
        raise CodecError(f"{label}: unreadable array header ({exc})") from None
    shape, fortran, dtype = header
    return tuple(shape), bool(fortran), dtype, memoryview(array.data)[stream.tell() :]


def _name_mismatch(names: list[str], expected: list[str]) -> str:
    missing = [n for n in expected if n not in names]
    extra = [n for n in names if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(map(repr, missing[:3]))}")
        if extra:
            parts.append(f"unexpected {', '.join(map(repr, extra[:3]))}")
        more = len(missing) + len(extra) > 6
        return "; ".join(parts) + (" (and more)" if more else "")
    first = next(i for i, (a, b) in enumerate(zip(names, expected, strict=True)) if a != b)
    return f"arrays out of order: {names[first]!r} where {expected[first]!r} belongs"
