"""Top-k sparsification and the coding of kept indices.

Tensors with fewer than ``dense_below`` entries (norm parameters, biases, small heads: about
0.5% of a ResNet) are sent whole: keeping 1% of a 64-entry bias would move it by one entry a
round, and one threshold would starve them. Over the other tensors, ``topk_scope="model"`` keeps
the ``round(topk * n)`` largest entries of all of them together, so the budget goes to the layers
whose update is largest this round; ``"tensor"`` keeps the same fraction
``max(1, round(topk * size))`` of every tensor. Kept indices are sorted and stored as gaps in
LEB128 varints (about 1-2 bytes per index instead of 4).
"""

from __future__ import annotations

import numpy as np

from medfed.federation.codec_format import CodecError, CodecSpec
from medfed.federation.codec_quantize import _values_size


def _kept_indices(updates: dict[int, np.ndarray], spec: CodecSpec) -> dict[int, np.ndarray]:
    """Sorted indices top-k keeps in each sparsified tensor, by the magnitude of this round's
    update (tensors left out are sent whole)."""
    if spec.topk is None:
        return {}
    sparse = {i: t.ravel() for i, t in updates.items() if t.size >= spec.dense_below and t.size}
    if spec.topk_scope == "tensor":
        return {i: _topk_indices(flat, spec.topk) for i, flat in sparse.items()}
    if not sparse:
        return {}
    order = list(sparse)
    sizes = np.array([sparse[i].size for i in order], np.int64)
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    everything = np.concatenate([sparse[i] for i in order])
    chosen = _topk_indices(everything, spec.topk)
    bounds = np.searchsorted(chosen, offsets)
    return {i: chosen[bounds[n] : bounds[n + 1]] - offsets[n] for n, i in enumerate(order)}


def _topk_indices(flat: np.ndarray, fraction: float) -> np.ndarray:
    """Sorted indices of the ``max(1, round(fraction * n))`` entries largest in magnitude
    (among equal magnitudes at the cut, the first ones).

    Exact, but without partitioning all ``n`` entries: a seeded sample of the magnitudes gives
    a cut a little below the k-th largest, and only the entries above it (about 1.2k) are
    partitioned. When the cut misses (too few entries reach it), every entry is a candidate.
    """
    k = min(flat.size, max(1, round(fraction * flat.size)))
    if k == flat.size:
        return np.arange(flat.size, dtype=np.int64)
    magnitude = np.abs(flat)
    candidates = _candidates(magnitude, k)
    values = magnitude[candidates]
    return candidates[_first_largest(values, k)].astype(np.int64)


TOPK_SAMPLE = 1 << 16  # magnitudes sampled to place the cut; below 4x this, no sampling


def _candidates(magnitude: np.ndarray, k: int) -> np.ndarray:
    """Sorted indices of entries that hold the ``k`` largest magnitudes: those at or above a
    cut sampled a little below the k-th largest, or all of them when that cut holds fewer."""
    n = magnitude.size
    share = k / n
    if n < 4 * TOPK_SAMPLE or share > 0.25:
        return np.arange(n)
    sample = magnitude[np.random.default_rng(0).integers(0, n, TOPK_SAMPLE)]
    # 20% and four standard deviations of the sampled share above the k-th largest's rank
    margin = 0.2 * share + 4 * np.sqrt(share / TOPK_SAMPLE)
    rank = min(TOPK_SAMPLE - 1, int(np.ceil((share + margin) * TOPK_SAMPLE)))
    cut = np.partition(sample, TOPK_SAMPLE - 1 - rank)[TOPK_SAMPLE - 1 - rank]
    kept = magnitude > cut
    above = int(np.count_nonzero(kept))
    if above < k:  # the cut's own entries make up the rest (e.g. an update mostly of zeros)
        ties = _first_equal(magnitude, cut, k - above)
        if above + ties.size < k:
            return np.arange(n)
        kept[ties] = True
    return np.flatnonzero(kept)


def _first_equal(values: np.ndarray, value: float, count: int, chunk: int = 1 << 20) -> np.ndarray:
    """Indices of the first ``count`` entries equal to ``value`` (fewer if there are not
    that many), looking a chunk at a time."""
    found: list[np.ndarray] = []
    left = count
    for start in range(0, values.size, chunk):
        if left <= 0:
            break
        hits = np.flatnonzero(values[start : start + chunk] == value)[:left] + start
        found.append(hits)
        left -= hits.size
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def _first_largest(values: np.ndarray, k: int) -> np.ndarray:
    """A mask of the ``k`` largest of ``values``, the first ones among equals at the cut."""
    kth = np.partition(values, values.size - k)[values.size - k]
    kept = values > kth
    need = k - int(np.count_nonzero(kept))
    if need:
        ties = np.flatnonzero(values == kth)
        kept[ties[:need]] = True
    return kept


def _dense_pays(indices: np.ndarray, size: int, bits: int) -> bool:
    """Whether all ``size`` entries cost no more than a sparse record of ``indices``."""
    gaps = np.diff(indices, prepend=0)
    index_bytes = int(np.sum(1 + (np.log2(np.maximum(gaps, 1)) // 7).astype(np.int64)))
    return 16 + index_bytes + _values_size(indices.size, bits) >= _values_size(size, bits)


def _varint_encode(values: np.ndarray) -> bytes:
    """LEB128: 7 bits per byte, high bit set on every byte but the last of a value."""
    values = values.astype(np.uint64)
    if values.size == 0:
        return b""
    widths = np.ones(values.size, np.int64)
    for shift in (7, 14, 21, 28, 35, 42, 49, 56, 63):
        widths += values >= (np.uint64(1) << np.uint64(shift))
    starts = np.cumsum(widths) - widths
    out = np.empty(int(widths.sum()), np.uint8)
    for byte in range(int(widths.max())):
        has = widths > byte
        chunk = (values[has] >> np.uint64(7 * byte)) & np.uint64(0x7F)
        more = (widths[has] > byte + 1).astype(np.uint64) << np.uint64(7)
        out[starts[has] + byte] = (chunk | more).astype(np.uint8)
    return out.tobytes()


def _varint_decode(data: bytes, count: int, max_width: int, label: str) -> np.ndarray:
    """``count`` LEB128 values of at most ``max_width`` bytes each, as uint64."""
    raw = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(raw < 0x80)
    if ends.size != count or (raw.size and ends[-1] != raw.size - 1):
        raise CodecError(f"{label}: index block holds {ends.size} varints, expected {count}")
    if count == 0:
        return np.zeros(0, np.uint64)
    starts = np.concatenate(([0], ends[:-1] + 1))
    widths = ends - starts + 1
    if int(widths.max()) > max_width:
        raise CodecError(f"{label}: an index gap of {int(widths.max())} bytes is out of range")
    position = np.arange(raw.size) - np.repeat(starts, widths)
    parts = (raw & 0x7F).astype(np.uint64) << (np.uint64(7) * position.astype(np.uint64))
    return np.add.reduceat(parts, starts)
