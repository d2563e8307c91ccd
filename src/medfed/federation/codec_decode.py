"""Reading payloads, checked against the layout they must carry.

Decoding a payload from elsewhere (a hospital's update on the server, the broadcast model at a
hospital) takes the expected layout, one :class:`TensorSpec` per tensor. Every header is then
checked against it before anything is allocated (count, kind, dtype, shape, sparse ``k`` and
index block, value width), the decompressed body is capped at the largest payload a real encoder
makes for that layout (:func:`~medfed.federation.codec.max_payload_size`), indices must be in
range and increasing, and every decoded float must be finite (for quantized blocks: offset, step
and the top level). A payload that fails raises :class:`CodecError` naming the tensor and what
was wrong, having allocated at most about the size of the legitimate model.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from medfed.federation.codec_format import (
    _DENSE,
    _FLAG_ZLIB,
    _FLAG_ZSTD,
    _FLOAT16_BITS,
    _FLOAT32_BITS,
    _HEADER_BYTES,
    _PLAIN_KINDS,
    _RAW,
    _SPARSE,
    _ZSTD_WINDOW_LOG,
    MAGIC,
    CodecError,
    TensorSpec,
    zstd,
)
from medfed.federation.codec_quantize import _unpack_nibbles
from medfed.federation.codec_sparse import _varint_decode


def _max_body_size(layout: Sequence[TensorSpec]) -> int:
    total = 4
    for spec in layout:
        header = 2 + 4 + 1 + 4 * len(spec.shape)
        total += header + 32 + max(spec.itemsize, 6) * spec.size
    return total


def _unpack(payload: bytes | memoryview, cap: int | None) -> memoryview:
    """The payload's body (inflated if compressed), refused beyond ``cap`` bytes."""
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise CodecError(f"payload must be bytes, not {type(payload).__name__}")
    view = memoryview(payload)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    if cap is not None and len(view) > _HEADER_BYTES + cap:
        raise CodecError(
            f"payload of {len(view)} bytes is larger than any update of this model "
            f"({_HEADER_BYTES + cap} bytes at most)"
        )
    if len(view) < _HEADER_BYTES or view[: len(MAGIC)] != MAGIC:
        raise CodecError("not a medfed codec payload (bad magic bytes)")
    flags = view[len(MAGIC)]
    if flags not in (0, _FLAG_ZLIB, _FLAG_ZSTD):
        raise CodecError(f"unknown payload flags {flags:#04x}")
    body = view[_HEADER_BYTES:]
    return body if flags == 0 else _inflate(body, cap, zstandard=flags == _FLAG_ZSTD)


def _inflate(body: memoryview, cap: int | None, zstandard: bool) -> memoryview:
    """A compressed body inflated: one stream, no larger than ``cap``, nothing after it; a
    Zstandard frame within medfed's window (which bounds the decoder's memory)."""
    inflater: Any
    errors: type[Exception]
    if zstandard:
        inflater = zstd.ZstdDecompressor(
            options={zstd.DecompressionParameter.window_log_max: _ZSTD_WINDOW_LOG}
        )
        stream, errors, unlimited = "Zstandard frame", zstd.ZstdError, -1
    else:
        inflater = zlib.decompressobj()
        stream, errors, unlimited = "zlib stream", zlib.error, 0
    try:
        inflated = inflater.decompress(body, unlimited if cap is None else cap + 1)
    except errors as exc:
        raise CodecError(f"corrupted compressed payload: {exc}") from None
    if zstandard:
        more = not (inflater.eof or inflater.needs_input)
    else:
        more = bool(inflater.unconsumed_tail)
    if cap is not None and (len(inflated) > cap or more):
        raise CodecError(
            f"compressed body inflates beyond {cap} bytes, more than any update of this model"
        )
    if not inflater.eof:
        raise CodecError(f"truncated compressed payload: the {stream} does not end")
    if inflater.unused_data:
        raise CodecError(f"{len(inflater.unused_data)} unexpected bytes after the {stream}")
    return memoryview(inflated)


class _Reader:
    """Sequential reader over a payload body, with clear errors on truncation."""

    def __init__(self, data: bytes | memoryview):
        self.view = memoryview(data)
        self.offset = 0

    @property
    def remaining(self) -> int:
        return len(self.view) - self.offset

    def take(self, size: int) -> memoryview:
        if size < 0 or size > self.remaining:
            raise CodecError(f"truncated payload: need {size} bytes, {self.remaining} left")
        chunk = self.view[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))


def _read_record(reader: _Reader, index: int, spec: TensorSpec | None) -> np.ndarray:
    """One tensor; checked against ``spec`` (when given) before anything is allocated."""
    label = f"tensor {index}" if spec is None else f"tensor {spec.name!r}"
    kind, dtype_len = reader.unpack("<BB")
    dtype = _read_dtype(bytes(reader.take(dtype_len)), label)
    if spec is not None and not spec.accepts(dtype):
        raise CodecError(f"{label}: dtype {dtype}, expected {spec.describe_dtype()}")
    (ndim,) = reader.unpack("<B")
    shape = reader.unpack(f"<{ndim}I")
    if spec is not None and shape != spec.shape:
        raise CodecError(f"{label}: shape {shape}, expected {spec.shape}")
    size = math.prod(shape)
    checked = spec is not None
    is_float = dtype.kind == "f"
    if kind == _RAW:
        array = np.frombuffer(reader.take(size * dtype.itemsize), dtype)
        if checked and is_float:
            _check_finite(array, label)
        return array.reshape(shape).copy()
    if kind not in (_DENSE, _SPARSE):
        raise CodecError(f"{label}: unknown record kind {kind}")
    if checked and not is_float:
        raise CodecError(f"{label}: a {dtype} tensor must travel raw, not quantized or sparse")
    if kind == _DENSE:
        values = _read_values(reader, size, label, checked)
        return values.astype(dtype, copy=not values.flags.owndata).reshape(shape)
    k, index_len = reader.unpack("<QQ")
    if k > size:
        raise CodecError(f"{label}: sparse record keeps {k} entries of {size}")
    max_width = max(1, -(-size.bit_length() // 7))
    if index_len > k * max_width:
        raise CodecError(f"{label}: index block of {index_len} bytes for {k} indices")
    indices = _sparse_indices(bytes(reader.take(index_len)), k, size, max_width, label)
    values = _read_values(reader, k, label, checked)
    dense = np.zeros(size, np.float32)
    dense[indices] = values
    return dense.astype(dtype, copy=False).reshape(shape)


def _read_dtype(text: bytes, label: str) -> np.dtype:
    try:
        dtype = np.dtype(text.decode("ascii"))
    except Exception as exc:  # numpy's parser raises several types for malformed text
        raise CodecError(f"{label}: bad dtype {text[:20]!r} ({exc})") from None
    if dtype.kind not in _PLAIN_KINDS + "c" or dtype.shape:
        raise CodecError(f"{label}: dtype {dtype} is not a plain numeric dtype")
    return dtype


def _sparse_indices(data: bytes, k: int, size: int, max_width: int, label: str) -> np.ndarray:
    """Increasing indices below ``size`` from their varint gaps."""
    gaps = _varint_decode(data, k, max_width, label)
    if k == 0:
        return np.zeros(0, np.int64)
    if k > 1 and int(gaps[1:].min()) == 0:
        raise CodecError(f"{label}: sparse indices repeat (they must increase)")
    if int(gaps.max()) >= size:
        raise CodecError(f"{label}: sparse index gap {int(gaps.max())} out of range for {size}")
    indices = np.cumsum(gaps.astype(np.int64))
    if int(indices[-1]) >= size:
        raise CodecError(f"{label}: sparse index {int(indices[-1])} out of range for {size}")
    return indices


def _check_finite(values: np.ndarray, label: str) -> None:
    if not np.isfinite(values).all():
        raise CodecError(f"{label}: holds NaN or infinite values")


def _read_values(reader: _Reader, count: int, label: str, checked: bool) -> np.ndarray:
    """``count`` float32 values of a values block (a read-only view when stored as float32)."""
    (bits,) = reader.unpack("<B")
    if bits == _FLOAT32_BITS:
        values = np.frombuffer(reader.take(4 * count), "<f4")
        if checked:
            _check_finite(values, label)
        return values
    if bits == _FLOAT16_BITS:
        values = np.frombuffer(reader.take(2 * count), "<f2").astype(np.float32)
        if checked:
            _check_finite(values, label)
        return values
    if bits not in (4, 8):
        raise CodecError(f"{label}: unsupported value width {bits} bits")
    offset, step = (np.float32(v) for v in reader.unpack("<ff"))
    if checked:
        with np.errstate(over="ignore", invalid="ignore"):
            top = offset + np.float32((1 << bits) - 1) * step
        if not (np.isfinite(offset) and np.isfinite(step) and np.isfinite(top)):
            raise CodecError(f"{label}: quantization offset {offset} / step {step} not finite")
    nbytes = count if bits == 8 else (count + 1) // 2
    packed = np.frombuffer(reader.take(nbytes), np.uint8)
    codes = packed if bits == 8 else _unpack_nibbles(packed, count)
    return (offset + codes.astype(np.float32) * step).astype(np.float32, copy=False)
