"""Values blocks: float32, float16, or quantized to 8 or 4 bits.

Quantization is uniform on ``[min, max]`` with a per-tensor offset and step and ``2**bits``
levels (two 4-bit codes per byte). Stochastic rounding (up or down at random) makes the decoded
value unbiased, with an error of at most one step, ``(max - min) / (2**bits - 1)``, per entry;
without a random generator values round to the nearest level, so the same input always gives
the same bytes.
"""

from __future__ import annotations

import struct

import numpy as np

from medfed.federation.codec_format import _FLOAT16_BITS, _FLOAT32_BITS


def _values_size(count: int, bits: int) -> int:
    """Bytes of a values block of ``count`` entries at ``bits`` bits."""
    scale = 0 if bits in (_FLOAT32_BITS, _FLOAT16_BITS) else 8
    return 1 + scale + (count * bits + 7) // 8


def _values_block(
    values: np.ndarray, bits: int, rng: np.random.Generator | None
) -> tuple[bytes, np.ndarray]:
    """Encode float32 values; ``rng`` None rounds to nearest, otherwise stochastically."""
    if bits == _FLOAT32_BITS:
        values = values.astype(np.float32)
        return struct.pack("<B", bits) + values.tobytes(), values
    if bits == _FLOAT16_BITS:
        half = values.astype(np.float16)
        return struct.pack("<B", bits) + half.tobytes(), half.astype(np.float32)
    codes, offset, step = _quantize(values, bits, rng)
    sent = (offset + codes.astype(np.float32) * step).astype(np.float32)
    packed = _pack_nibbles(codes) if bits == 4 else codes
    return struct.pack("<Bff", bits, offset, step) + packed.tobytes(), sent


def _quantize(
    values: np.ndarray, bits: int, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.float32, np.float32]:
    """Uniform quantization on [min, max] with ``2**bits`` levels; unbiased when stochastic."""
    levels = (1 << bits) - 1
    if values.size == 0:
        return np.zeros(0, np.uint8), np.float32(0), np.float32(0)
    low, high = np.float32(values.min()), np.float32(values.max())
    step = np.float32((high - low) / levels)
    if step == 0 or not np.isfinite(step):
        return np.zeros(values.size, np.uint8), low, np.float32(0)
    scaled = (values - low) / step
    noise = 0.5 if rng is None else rng.random(values.size, dtype=np.float32)
    codes = np.clip(np.floor(scaled + noise), 0, levels).astype(np.uint8)
    return codes, low, step


def _pack_nibbles(codes: np.ndarray) -> np.ndarray:
    if codes.size % 2:
        codes = np.append(codes, np.uint8(0))
    return (codes[0::2] | (codes[1::2] << 4)).astype(np.uint8)


def _unpack_nibbles(packed: np.ndarray, count: int) -> np.ndarray:
    codes = np.empty(packed.size * 2, np.uint8)
    codes[0::2] = packed & 0x0F
    codes[1::2] = packed >> 4
    return codes[:count]
