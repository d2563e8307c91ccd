"""Update / weights codec: exactness, error bounds, top-k, error feedback, storage."""

from __future__ import annotations

import re
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medfed.errors import FederationError
from medfed.federation.codec import (
    MAGIC,
    CodecError,
    CodecSpec,
    ResidualStore,
    TensorSpec,
    decode_update,
    decode_weights,
    encode_delta,
    encode_update,
    encode_weights,
    max_payload_size,
    weights_size,
)
from medfed.federation.codec_format import zstd


def model_like_update(seed: int = 0) -> list[np.ndarray]:
    """Tensors shaped like a small CNN's state_dict, with an int64 BatchNorm counter."""
    rng = np.random.default_rng(seed)
    return [
        rng.normal(0, 0.01, (16, 3, 3, 3)).astype(np.float32),
        rng.normal(0, 0.01, (16,)).astype(np.float32),
        np.array(7, dtype=np.int64),
        rng.normal(0, 0.1, (10, 64)).astype(np.float32),
        np.zeros((0, 3), np.float32),
    ]


shapes = st.lists(st.integers(1, 12), min_size=0, max_size=3).map(tuple)
float_arrays = st.builds(
    lambda shape, seed, scale: (
        np.random.default_rng(seed).normal(0, scale, shape).astype(np.float32)
    ),
    shapes,
    st.integers(0, 2**32 - 1),
    st.floats(1e-4, 10),
)


@pytest.mark.parametrize("lossless", [False, True])
def test_round_trip_is_exact_without_topk_or_quantization(lossless: bool) -> None:
    update = model_like_update()
    payload, residual = encode_update(update, CodecSpec(lossless=lossless))
    decoded = decode_update(payload)
    assert residual is None
    for original, back in zip(update, decoded, strict=True):
        assert back.dtype == original.dtype and back.shape == original.shape
        assert np.array_equal(back, original)


def test_lossless_flag_shrinks_compressible_payloads() -> None:
    update = [np.zeros((100, 100), np.float32), np.arange(1000, dtype=np.int64)]
    plain, _ = encode_update(update, CodecSpec())
    packed, _ = encode_update(update, CodecSpec(lossless=True))
    assert len(packed) < len(plain) / 10
    assert all(np.array_equal(a, b) for a, b in zip(update, decode_update(packed), strict=True))


@pytest.mark.parametrize("bits", [8, 4])
def test_quantization_error_is_at_most_one_step(bits: int) -> None:
    update = model_like_update(1)
    payload, _ = encode_update(update, CodecSpec(quant_bits=bits), rng=np.random.default_rng(0))
    levels = 2**bits - 1
    for original, back in zip(update, decode_update(payload), strict=True):
        if original.dtype == np.int64:
            assert np.array_equal(original, back)
        elif original.size:
            step = (original.max() - original.min()) / levels
            assert np.abs(back - original).max() <= step * (1 + 1e-5) + 1e-12


def test_quantization_is_unbiased() -> None:
    values = np.random.default_rng(2).uniform(-1, 1, 2000).astype(np.float32)
    rng = np.random.default_rng(3)
    mean = np.mean(
        [
            decode_update(encode_update([values], CodecSpec(quant_bits=4), rng=rng)[0])[0]
            for _ in range(200)
        ],
        axis=0,
    )
    step = 2 / 15
    # each entry's mean over 200 draws: standard error <= step / (2 * sqrt(200)) ~ 0.0047
    assert np.abs(mean - values).max() < 6 * step / (2 * np.sqrt(200))
    assert abs(float((mean - values).mean())) < 1e-3


def test_four_bit_payload_packs_two_codes_per_byte() -> None:
    update = [np.random.default_rng(4).normal(size=100_000).astype(np.float32)]
    eight, _ = encode_update(update, CodecSpec(quant_bits=8))
    four, _ = encode_update(update, CodecSpec(quant_bits=4))
    assert 100_000 <= len(eight) < 100_100
    assert 50_000 <= len(four) < 50_100


@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.01])
def test_topk_keeps_exactly_the_k_largest_per_tensor(fraction: float) -> None:
    update = [np.random.default_rng(5).normal(size=(40, 50)).astype(np.float32)]
    payload, _ = encode_update(
        update, CodecSpec(topk=fraction, error_feedback=False, dense_below=0)
    )
    back = decode_update(payload)[0]
    k = round(fraction * 2000)
    kept = np.flatnonzero(back)
    assert kept.size == k
    expected = np.argsort(-np.abs(update[0].ravel()))[:k]
    assert set(kept) == set(expected)
    assert np.array_equal(back.ravel()[kept], update[0].ravel()[kept])


def _update_of(kind: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(11)
    if kind == "normal":
        return rng.normal(size=n).astype(np.float32)
    if kind == "mostly zeros":  # e.g. frozen layers, or a round without a step
        return np.where(rng.random(n) < 0.002, rng.normal(size=n), 0).astype(np.float32)
    if kind == "few levels":  # ties at the cut
        return rng.integers(-3, 4, size=n).astype(np.float32)
    return np.zeros(n, np.float32)


@pytest.mark.parametrize("kind", ["normal", "mostly zeros", "few levels", "zeros"])
@pytest.mark.parametrize("fraction", [0.3, 0.1, 0.01, 1e-5])
def test_topk_over_large_updates_is_exact_and_prefers_the_first_of_equals(
    kind: str, fraction: float
) -> None:
    """Large updates place a sampled cut before partitioning; the kept set is still exactly
    the k largest, and among equal magnitudes at the cut the first entries."""
    from medfed.federation.codec_sparse import TOPK_SAMPLE, _topk_indices

    flat = _update_of(kind, 5 * TOPK_SAMPLE)
    k = round(fraction * flat.size)
    expected = np.sort(np.argsort(-np.abs(flat), kind="stable")[:k])
    assert np.array_equal(_topk_indices(flat, fraction), expected)


def test_topk_sends_small_tensors_whole() -> None:
    rng = np.random.default_rng(3)
    small = rng.normal(size=(64,)).astype(np.float32)
    large = rng.normal(size=(200, 100)).astype(np.float32)
    payload, residual = encode_update([small, large], CodecSpec(topk=0.01, dense_below=1000))
    back = decode_update(payload)
    assert np.array_equal(back[0], small)
    assert np.count_nonzero(back[1]) == 200
    assert residual is not None and not residual[0].any()


def test_tensor_scope_sends_at_least_one_entry_of_every_tensor() -> None:
    first = np.linspace(0.1, 0.5, 100).astype(np.float32)
    first[1] = -2.0
    update = [first, np.ones((20, 20), np.float32) * 1e-6]
    spec = CodecSpec(topk=0.001, dense_below=0, topk_scope="tensor")
    back = decode_update(encode_update(update, spec)[0])
    assert np.flatnonzero(back[0]).tolist() == [1] and back[0][1] == -2.0
    assert np.count_nonzero(back[1]) == 1


@pytest.mark.parametrize("bits", [None, 8, 4])
def test_a_tensor_goes_whole_when_its_kept_entries_would_cost_as_much(bits: int | None) -> None:
    rng = np.random.default_rng(4)
    update = [rng.normal(size=(60, 50)).astype(np.float32)]
    for fraction, whole in ((0.1, False), (0.9, True)):
        spec = CodecSpec(topk=fraction, quant_bits=bits, error_feedback=False, dense_below=0)
        payload, _ = encode_delta(update, spec)
        sparse, _ = encode_update(update, spec)  # the uplink keeps exactly k entries
        kept = np.count_nonzero(decode_update(payload)[0])
        if whole:  # every entry, for no more bytes than the kept ones
            assert kept == update[0].size
            assert len(payload) <= len(sparse)
        else:
            assert kept == round(fraction * update[0].size)
            assert len(payload) == len(sparse)


def test_model_scope_keeps_the_largest_entries_of_the_whole_update() -> None:
    rng = np.random.default_rng(11)
    quiet = rng.normal(0, 1e-3, (50, 40)).astype(np.float32)
    loud = rng.normal(0, 1.0, (30, 100)).astype(np.float32)
    small = rng.normal(0, 1e-3, (8,)).astype(np.float32)
    update = [quiet, small, loud]
    payload, residual = encode_update(update, CodecSpec(topk=0.02, dense_below=100))
    back = decode_update(payload)
    assert not back[0].any()  # the quiet layer loses its turn to the loud one
    assert np.array_equal(back[1], small)  # under dense_below: whole
    k = round(0.02 * (quiet.size + loud.size))
    kept = np.flatnonzero(back[2])
    assert kept.size == k
    assert set(kept) == set(np.argsort(-np.abs(loud.ravel()))[:k])
    assert residual is not None and np.array_equal(residual[0], quiet)


def test_entries_are_chosen_by_this_rounds_update_and_carry_their_residual() -> None:
    spec = CodecSpec(topk=0.25, dense_below=0)
    update = [np.array([0.0, 0.0, 1.0, 0.5], np.float32)]
    residual = [np.array([5.0, 0.0, 0.25, 0.0], np.float32)]
    payload, residual = encode_update(update, spec, residual=residual)
    assert np.array_equal(decode_update(payload)[0], [0.0, 0.0, 1.25, 0.0])
    assert residual is not None
    assert np.array_equal(residual[0], [5.0, 0.0, 0.0, 0.5])  # entry 0 waits for its entry to move
    payload, residual = encode_update(
        [np.array([0.6, 0, 0, 0], np.float32)], spec, residual=residual
    )
    assert np.array_equal(decode_update(payload)[0], np.float32([5.6, 0.0, 0.0, 0.0]))


@pytest.mark.parametrize(
    "spec",
    [
        CodecSpec(topk=0.05, dense_below=0),
        CodecSpec(quant_bits=4),
        CodecSpec(topk=0.1, quant_bits=8, lossless=True, dense_below=0),
    ],
)
def test_error_feedback_carries_what_was_not_sent(spec: CodecSpec) -> None:
    rng = np.random.default_rng(6)
    residual = None
    sent_total = [np.zeros(a.shape, np.float64) for a in model_like_update()]
    true_total = [np.zeros(a.shape, np.float64) for a in model_like_update()]
    for round_ in range(6):
        update = model_like_update(10 + round_)
        payload, residual = encode_update(update, spec, residual=residual, rng=rng)
        for total, decoded in zip(sent_total, decode_update(payload), strict=True):
            total += decoded
        for total, true in zip(true_total, update, strict=True):
            total += true
    assert residual is not None
    for sent, res, true in zip(sent_total, residual, true_total, strict=True):
        np.testing.assert_allclose(sent + res, true, atol=1e-5)


def test_without_error_feedback_no_residual_is_returned() -> None:
    payload, residual = encode_update(
        model_like_update(), CodecSpec(topk=0.1, error_feedback=False)
    )
    assert residual is None
    assert len(decode_update(payload)) == 5


def test_mismatched_residual_is_refused() -> None:
    with pytest.raises(CodecError, match="residual"):
        encode_update(model_like_update(), CodecSpec(topk=0.1), residual=[np.zeros(3)])


def test_payload_size_is_what_is_sent() -> None:
    update = [np.random.default_rng(7).normal(size=10_000).astype(np.float32)]
    payload, _ = encode_update(update, CodecSpec(topk=0.01, quant_bits=8, dense_below=0))
    # 100 kept values (1 byte each) + 100 varint gaps (1-2 bytes each) + small headers
    assert isinstance(payload, bytes)
    assert 200 < len(payload) < 400


def test_diverged_update_is_a_federation_error() -> None:
    update = model_like_update()
    update[0][0, 0, 0, 0] = np.nan
    with pytest.raises(FederationError, match=r"tensor 0 \(16, 3, 3, 3\).*NaN"):
        encode_update(update, CodecSpec(quant_bits=8))


@pytest.mark.parametrize("bits", [8, 4])
def test_a_delta_rounds_to_the_nearest_level_and_always_encodes_alike(bits: int) -> None:
    change = model_like_update(3)
    spec = CodecSpec(quant_bits=bits, error_feedback=False)
    payload, _ = encode_delta(change, spec)
    assert encode_delta(change, spec)[0] == payload  # the same change, the same payload
    for original, back in zip(change, decode_update(payload), strict=True):
        if original.dtype == np.int64:
            assert np.array_equal(original, back)
        elif original.size:
            half_step = (original.max() - original.min()) / (2**bits - 1) / 2
            assert np.abs(back - original).max() <= half_step * (1 + 1e-5) + 1e-12


@pytest.mark.parametrize(
    "spec",
    [
        CodecSpec(quant_bits=8, error_feedback=False),
        CodecSpec(quant_bits=4, topk=0.2, dense_below=0, error_feedback=False),
        CodecSpec(topk=0.05, dense_below=0, lossless=True, error_feedback=False),
        CodecSpec(topk=0.5, error_feedback=False),
        CodecSpec(),
    ],
)
def test_a_delta_as_sent_is_what_the_receiver_decodes_bit_for_bit(spec: CodecSpec) -> None:
    change = [*model_like_update(4), np.linspace(-1, 1, 50), np.arange(6, dtype=np.int32)]
    payload, sent = encode_delta(change, spec)
    assert payload == encode_delta(change, spec)[0]
    decoded = decode_update(payload)
    assert len(sent) == len(decoded)
    for mine, theirs in zip(sent, decoded, strict=True):
        assert (mine.dtype, mine.shape) == (theirs.dtype, theirs.shape)
        assert np.ascontiguousarray(mine).tobytes() == theirs.tobytes()


@settings(max_examples=40, deadline=None)
@given(
    arrays=st.lists(float_arrays, min_size=0, max_size=4),
    precision=st.sampled_from(["fp32", "fp16", "int8"]),
)
def test_property_weights_size_is_the_encoded_size(arrays, precision) -> None:
    arrays = [*arrays, np.array(3, np.int64), np.zeros((2, 3), np.float64)]
    assert weights_size(arrays, precision) == len(encode_weights(arrays, precision))


@pytest.mark.parametrize("precision,tolerance", [("fp32", 0.0), ("fp16", 1e-3), ("int8", 4e-3)])
def test_weights_downlink(precision: str, tolerance: float) -> None:
    weights = model_like_update(8)
    payload = encode_weights(weights, precision)
    back = decode_weights(payload)
    for original, decoded in zip(weights, back, strict=True):
        assert decoded.dtype == original.dtype and decoded.shape == original.shape
        if original.dtype == np.int64:
            assert np.array_equal(original, decoded)
        elif original.size:
            span = float(original.max() - original.min())
            assert np.abs(decoded - original).max() <= tolerance * max(span, 1.0)
    sizes = {p: len(encode_weights(weights, p)) for p in ("fp32", "fp16", "int8")}
    assert sizes["int8"] < sizes["fp16"] < sizes["fp32"]


def test_int8_downlink_is_deterministic() -> None:
    weights = model_like_update(9)
    assert encode_weights(weights, "int8") == encode_weights(weights, "int8")


@pytest.mark.parametrize("payload", [b"", b"nope", b"MFC1\x00\x05\x00\x00\x00"])
def test_malformed_payloads_raise_codec_error(payload: bytes) -> None:
    with pytest.raises(CodecError):
        decode_update(payload)


def test_truncated_payload_raises_codec_error() -> None:
    payload, _ = encode_update(model_like_update(), CodecSpec(topk=0.1, quant_bits=4))
    with pytest.raises(CodecError, match="truncated"):
        decode_update(payload[:-3])


def test_residual_store_round_trip_and_run_isolation(tmp_path) -> None:
    path = tmp_path / "state" / "residual-0.npz"
    store = ResidualStore(path, run_id="run-1")
    assert store.load() is None
    residual = [np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros((), np.float32)]
    store.save(residual)
    loaded = ResidualStore(path, "run-1").load()
    assert loaded is not None
    assert all(np.array_equal(a, b) for a, b in zip(residual, loaded, strict=True))
    assert ResidualStore(path, "run-2").load() is None
    assert [p.name for p in path.parent.iterdir()] == ["residual-0.npz"]
    store.save(None)
    assert not path.exists()


def test_residual_store_ignores_a_corrupted_file(tmp_path) -> None:
    path = tmp_path / "residual.npz"
    path.write_bytes(b"garbage")
    assert ResidualStore(path, "r").load() is None


@settings(max_examples=40, deadline=None)
@given(
    arrays=st.lists(float_arrays, min_size=1, max_size=4),
    topk=st.one_of(st.none(), st.floats(0.01, 1.0)),
    bits=st.sampled_from([None, 4, 8]),
    lossless=st.booleans(),
    dense_below=st.sampled_from([0, 50]),
    scope=st.sampled_from(["model", "tensor"]),
)
def test_property_decoded_shapes_and_residual_identity(
    arrays, topk, bits, lossless, dense_below, scope
) -> None:
    spec = CodecSpec(
        topk=topk, quant_bits=bits, lossless=lossless, dense_below=dense_below, topk_scope=scope
    )
    payload, residual = encode_update(arrays, spec, rng=np.random.default_rng(0))
    decoded = decode_update(payload)
    assert [d.shape for d in decoded] == [a.shape for a in arrays]
    assert all(d.dtype == np.float32 for d in decoded)
    if not spec.is_lossy:
        assert residual is None
        assert all(np.array_equal(a, d) for a, d in zip(arrays, decoded, strict=True))
        return
    assert residual is not None
    sparse = [(a, d) for a, d in zip(arrays, decoded, strict=True) if a.size >= dense_below]
    if topk is not None and scope == "model" and sparse:
        total = sum(a.size for a, _ in sparse)
        assert sum(np.count_nonzero(d) for _, d in sparse) <= max(1, round(topk * total))
    for original, back, res in zip(arrays, decoded, residual, strict=True):
        np.testing.assert_allclose(back + res, original, rtol=1e-5, atol=1e-6)
        if topk is not None and scope == "tensor" and original.size >= dense_below:
            expected_k = min(original.size, max(1, round(topk * original.size)))
            assert np.count_nonzero(back) <= expected_k
        if bits is not None and topk is None and original.size:
            step = (original.max() - original.min()) / (2**bits - 1)
            assert np.abs(back - original).max() <= step * (1 + 1e-5) + 1e-12


int_arrays = st.builds(
    lambda shape, seed: np.random.default_rng(seed).integers(-1000, 1000, shape),
    shapes,
    st.integers(0, 2**32 - 1),
)


@settings(max_examples=30, deadline=None)
@given(
    arrays=st.lists(st.one_of(float_arrays, int_arrays), min_size=1, max_size=4),
    precision=st.sampled_from(["fp32", "fp16", "int8"]),
)
def test_property_weights_keep_shapes_dtypes_and_integers(arrays, precision) -> None:
    decoded = decode_weights(encode_weights(arrays, precision))
    assert [(d.shape, d.dtype) for d in decoded] == [(a.shape, a.dtype) for a in arrays]
    for original, back in zip(arrays, decoded, strict=True):
        if original.dtype.kind == "i" or precision == "fp32":
            assert np.array_equal(original, back)
        else:
            span = float(original.max() - original.min())
            bound = span / 255 / 2 if precision == "int8" else np.abs(original).max() / 1024
            assert np.abs(back - original).max() <= bound * (1 + 1e-3) + 1e-7


# --------------------------------------------------------------------------- untrusted payloads

LAYOUT = [
    TensorSpec("conv.weight", (16, 3, 3, 3), np.float32),
    TensorSpec("conv.bias", (16,), np.float32),
    TensorSpec("bn.num_batches_tracked", (), np.int64),
    TensorSpec("fc.weight", (10, 64), np.float32),
    TensorSpec("empty", (0, 3), np.float32),
]
RAW, DENSE, SPARSE = 0, 1, 2  # record kinds, as the module docstring lays the format out
LEGIT_SIZE = len(encode_update(model_like_update(), CodecSpec())[0])
ZLIB_STATE = 64 * 1024  # zlib's inflate window and state: a constant, whatever the payload
# refusing a payload may take twice the largest legitimate payload (the legacy decoder took
# 256 MiB for a 36-byte header and 64 MiB for a 65 KB zlib bomb)
BUDGET = 2 * max_payload_size(LAYOUT) + ZLIB_STATE


def record(kind: int, dtype: str, shape: tuple[int, ...], data: bytes = b"") -> bytes:
    """One record as the format describes it: kind, dtype, shape, then its data."""
    text = np.dtype(dtype).str.encode()
    dims = struct.pack(f"<B{len(shape)}I", len(shape), *shape)
    return struct.pack("<BB", kind, len(text)) + text + dims + data


def body_of(records: list[bytes], count: int | None = None) -> bytes:
    return struct.pack("<I", len(records) if count is None else count) + b"".join(records)


def payload_of(records: list[bytes], count: int | None = None) -> bytes:
    return MAGIC + b"\x00" + body_of(records, count)


def legit_records(seed: int = 0) -> list[bytes]:
    """The records of an exact dense payload of :func:`model_like_update`."""
    out = []
    for array in model_like_update(seed):
        out.append(record(RAW, array.dtype.str, array.shape, array.tobytes()))
    return out


def with_record(index: int, replacement: bytes) -> bytes:
    records = legit_records()
    records[index] = replacement
    return payload_of(records)


def peak_while(fn) -> tuple[BaseException | None, int]:
    """The exception ``fn`` raised (or None) and the peak bytes it allocated meanwhile."""
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


def assert_refused(payload: bytes, match: str, layout=LAYOUT, budget: int = BUDGET) -> None:
    error, peak = peak_while(lambda: decode_update(payload, layout))
    assert isinstance(error, CodecError), error
    assert re.search(match, str(error)), str(error)
    assert peak < budget, f"refusing took {peak} bytes: {error}"


def values_block(values: np.ndarray) -> bytes:
    return b"\x20" + np.asarray(values, np.float32).tobytes()


def quantized_block(offset: float, step: float, codes: np.ndarray, bits: int = 8) -> bytes:
    return struct.pack("<Bff", bits, offset, step) + np.asarray(codes, np.uint8).tobytes()


def varints(values: list[int]) -> bytes:
    """LEB128: 7 bits a byte, the high bit set on all but a value's last byte."""
    out = bytearray()
    for value in values:
        while value >= 0x80:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out)


def sparse_data(k: int, gaps: list[int], values: bytes) -> bytes:
    index = varints(gaps)
    return struct.pack("<QQ", k, len(index)) + index + values


@pytest.mark.parametrize(
    "spec",
    [
        CodecSpec(),
        CodecSpec(lossless=True),
        CodecSpec(quant_bits=8),
        CodecSpec(quant_bits=4, lossless=True),
        CodecSpec(topk=0.1, dense_below=0),
        CodecSpec(topk=0.1, quant_bits=8, topk_scope="tensor", dense_below=20),
        CodecSpec(topk=0.05, quant_bits=4, lossless=True, dense_below=0),
    ],
)
def test_checked_decoding_gives_what_the_unchecked_one_does(spec: CodecSpec) -> None:
    payload, _ = encode_update(model_like_update(3), spec, rng=np.random.default_rng(0))
    assert len(payload) <= max_payload_size(LAYOUT)
    trusted = decode_update(payload)
    checked = decode_update(payload, LAYOUT)
    for a, b, spec_ in zip(trusted, checked, LAYOUT, strict=True):
        assert b.shape == spec_.shape and b.dtype == spec_.dtype
        assert np.array_equal(a, b)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_checked_weights_accept_counters_sent_as_floats(precision: str) -> None:
    weights = model_like_update(4)
    weights[2] = np.array(6.5)  # a BatchNorm counter after the server's averaging
    layout = [*LAYOUT[:2], TensorSpec("bn.num_batches_tracked", (), None), *LAYOUT[3:]]
    back = decode_weights(encode_weights(weights, precision), layout)
    assert [b.shape for b in back] == [s.shape for s in layout]
    assert back[2].dtype == np.float64


def test_an_oversized_shape_header_is_refused_before_allocating() -> None:
    # 36 bytes claiming a 65536 x 65536 float32 sparse tensor: 16 GiB if believed
    bomb = record(SPARSE, "<f4", (65536, 65536), sparse_data(0, [], b"\x20"))
    assert_refused(with_record(0, bomb), r"'conv.weight': shape \(65536, 65536\), expected")


@pytest.mark.parametrize("compress", ["zstd", "zlib"])
def test_a_decompression_bomb_stops_at_the_largest_legitimate_body(compress: str) -> None:
    layout = [TensorSpec("w", (100_000,), np.float32)]  # room for a 65 KB bomb
    body = body_of([record(RAW, "<f4", (100_000,))]) + bytes(64 * 2**20)
    if compress == "zstd":
        window = {zstd.CompressionParameter.window_log: 21}  # as medfed's own payloads
        bomb = MAGIC + b"\x02" + zstd.compress(body, options=window)
    else:
        bomb = MAGIC + b"\x01" + zlib.compress(body, 9)
    assert len(bomb) < 100_000 < max_payload_size(layout)
    # 64 MiB if believed; the output buffer stops one byte past the cap
    assert_refused(bomb, "inflates beyond", layout, budget=3 * max_payload_size(layout))


def test_a_payload_larger_than_any_update_of_the_model_is_refused() -> None:
    body = body_of([record(RAW, "<f4", (1,))]) + bytes(64 * 2**20)
    bomb = MAGIC + b"\x01" + zlib.compress(body, 9)
    assert_refused(bomb, "larger than any update of this model")


@pytest.mark.parametrize(
    "index,replacement,match",
    [
        (1, record(RAW, "<f4", (), b"\0" * 4), r"'conv.bias': shape \(\), expected \(16,\)"),
        (1, record(RAW, "<f4", (16, 1), b"\0" * 64), r"shape \(16, 1\), expected \(16,\)"),
        (3, record(DENSE, "<f4", (64, 10), values_block(np.zeros(640))), r"shape \(64, 10\)"),
        (1, record(RAW, "<f8", (16,), b"\0" * 128), "'conv.bias': dtype float64, expected float32"),
        (2, record(RAW, "<f8", (), b"\0" * 8), "dtype float64, expected int64"),
        (2, record(DENSE, "<i8", (), values_block([1.0])), "int64 tensor must travel raw"),
        (1, record(7, "<f4", (16,)), "unknown record kind 7"),
        (1, record(DENSE, "<f4", (16,), b"\x03" + bytes(16)), "unsupported value width 3"),
        (1, record(RAW, "O", (16,)), "not a plain numeric dtype"),
    ],
)
def test_a_record_that_does_not_match_its_tensor_is_refused(
    index: int, replacement: bytes, match: str
) -> None:
    assert_refused(with_record(index, replacement), match)


def test_a_wrong_tensor_count_is_refused() -> None:
    records = legit_records()
    assert_refused(payload_of(records[:-1]), "carries 4 tensors, the model has 5")
    assert_refused(payload_of(records, count=2**32 - 1), "carries 4294967295 tensors")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    values = np.zeros(16, np.float32)
    values[5] = bad
    raw = record(RAW, "<f4", (16,), values.tobytes())
    assert_refused(with_record(1, raw), "'conv.bias': holds NaN or infinite values")
    dense = record(DENSE, "<f4", (16,), values_block(values))
    assert_refused(with_record(1, dense), "holds NaN or infinite")
    half = record(DENSE, "<f4", (16,), b"\x10" + values.astype(np.float16).tobytes())
    assert_refused(with_record(1, half), "holds NaN or infinite")
    sparse = record(SPARSE, "<f4", (16,), sparse_data(1, [5], values_block([bad])))
    assert_refused(with_record(1, sparse), "holds NaN or infinite")


@pytest.mark.parametrize(
    "offset,step", [(np.nan, 0.1), (np.inf, 0.0), (0.0, np.inf), (0.0, np.nan), (3e38, 1e37)]
)
def test_non_finite_quantization_offset_or_step_is_refused(offset: float, step: float) -> None:
    dense = record(DENSE, "<f4", (16,), quantized_block(offset, step, np.arange(16)))
    assert_refused(with_record(1, dense), "'conv.bias': quantization offset .* not finite")
    four = record(DENSE, "<f4", (16,), quantized_block(offset, step, np.zeros(8), bits=4))
    assert_refused(with_record(1, four), "quantization offset")


@pytest.mark.parametrize(
    "k,gaps,match",
    [
        (3, [2, 0, 4], "sparse indices repeat"),
        (2, [3, 16], "out of range"),
        (2, [15, 1], "sparse index 16 out of range"),
        (17, list(range(17)), "keeps 17 entries of 16"),
        (2, [1], "index block holds 1 varints, expected 2"),
    ],
)
def test_bad_sparse_indices_are_refused(k: int, gaps: list[int], match: str) -> None:
    sparse = record(SPARSE, "<f4", (16,), sparse_data(k, gaps, values_block(np.ones(k))))
    assert_refused(with_record(1, sparse), match)


def test_an_index_block_longer_than_its_indices_can_be_is_refused() -> None:
    index = b"\x80" * 30 + b"\x01"  # one varint of 31 bytes
    data = struct.pack("<QQ", 1, len(index)) + index + values_block([1.0])
    assert_refused(with_record(1, record(SPARSE, "<f4", (16,), data)), "index block of 31 bytes")
    index = b"\x81\x80\x80\x00\x01\x01"  # a 4-byte varint where 2 bytes reach every index
    data = struct.pack("<QQ", 3, len(index)) + index + values_block([1.0, 1.0, 1.0])
    sparse = record(SPARSE, "<f4", (16, 3, 3, 3), data)
    assert_refused(with_record(0, sparse), "'conv.weight': an index gap of 4 bytes")


def test_truncated_trailing_and_foreign_bytes_are_refused() -> None:
    payload = payload_of(legit_records())
    assert_refused(payload[:-3], "truncated payload")
    assert_refused(payload + b"\0", "1 unexpected trailing bytes")
    assert_refused(b"PK\x03\x04" + payload[4:], "bad magic")
    assert_refused(MAGIC + b"\x04" + payload[5:], "unknown payload flags")
    assert_refused(MAGIC + b"\x03" + payload[5:], "unknown payload flags")


def test_compressed_payloads_refuse_truncation_trailing_bytes_and_corruption() -> None:
    packed, _ = encode_update(model_like_update(), CodecSpec(lossless=True))
    assert packed[4] == 2  # Zstandard
    zlib_packed = MAGIC + b"\x01" + zlib.compress(zstd.decompress(packed[5:]))
    from_zlib, from_zstd = decode_update(zlib_packed, LAYOUT), decode_update(packed, LAYOUT)
    for a, b in zip(from_zlib, from_zstd, strict=True):
        np.testing.assert_array_equal(a, b)
    for compressed, stream in ((packed, "Zstandard frame"), (zlib_packed, "zlib stream")):
        assert_refused(compressed[:-10], "truncated compressed payload")
        assert_refused(compressed + b"junk", f"4 unexpected bytes after the {stream}")
        assert_refused(compressed[:5] + b"\x00" + compressed[6:], "corrupted compressed payload")


def test_a_zstandard_frame_wider_than_medfed_s_window_is_refused() -> None:
    layout = [TensorSpec("w", (2**21,), np.float32)]
    body = body_of([record(RAW, "<f4", (2**21,), np.random.default_rng(3).bytes(2**23))])
    wide = zstd.compress(body, options={zstd.CompressionParameter.window_log: 24})
    assert_refused(MAGIC + b"\x02" + wide, "corrupted compressed payload", layout, 3 * 2**23)


def test_random_bytes_are_refused() -> None:
    rng = np.random.default_rng(12)
    for size in (0, 3, 40, LEGIT_SIZE):
        noise = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert_refused(noise, "bad magic")
        assert_refused(MAGIC + b"\x00" + noise, ".")
        assert_refused(MAGIC + b"\x01" + noise, ".")


def test_the_unchecked_decoder_does_not_allocate_for_a_claimed_count() -> None:
    error, peak = peak_while(lambda: decode_update(payload_of([], count=2**32 - 1)))
    assert isinstance(error, CodecError) and peak < BUDGET


def test_the_unchecked_decoder_still_refuses_bad_dtypes_and_flags() -> None:
    with pytest.raises(CodecError, match="bad dtype"):
        decode_update(payload_of([record(RAW, "<f4", (1,), b"\0" * 4)]).replace(b"<f4", b"<zz"))
    with pytest.raises(CodecError, match="flags"):
        decode_update(MAGIC + b"\x04" + body_of([]))


_VALID_PAYLOADS = [
    encode_update(model_like_update(5), spec, rng=np.random.default_rng(1))[0]
    for spec in (
        CodecSpec(),
        CodecSpec(quant_bits=8),
        CodecSpec(quant_bits=4),
        CodecSpec(topk=0.2, dense_below=0),
        CodecSpec(topk=0.2, quant_bits=8, topk_scope="tensor", dense_below=0),
        CodecSpec(topk=0.2, quant_bits=4, lossless=True, dense_below=0),
    )
] + [encode_weights(model_like_update(6), p) for p in ("fp16", "int8")]


def _mutate(payload: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(payload)
    for op, at, value in ops:
        if not data:
            break
        at %= len(data)
        if op == "flip":
            data[at] ^= 1 << (value % 8)
        elif op == "set":
            data[at] = value % 256
        elif op == "cut":
            del data[at:]
        elif op == "drop":
            del data[at : at + 1 + value % 8]
        else:  # splice: repeat a chunk of the payload somewhere else
            start = value % len(data)
            data[at:at] = data[start : start + 1 + value % 32]
    return bytes(data)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(
    which=st.integers(0, len(_VALID_PAYLOADS) - 1),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["flip", "set", "cut", "drop", "splice"]),
            st.integers(0, 2**16),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_property_mutated_payloads_decode_to_the_layout_or_are_refused(which, ops) -> None:
    payload = _mutate(_VALID_PAYLOADS[which], ops)
    decoded: list[np.ndarray] = []
    error, peak = peak_while(lambda: decoded.extend(decode_update(payload, LAYOUT)))
    assert error is None or isinstance(error, CodecError), repr(error)
    assert peak < BUDGET
    if error is None:
        assert [(d.shape, d.dtype) for d in decoded] == [(s.shape, s.dtype) for s in LAYOUT]
        assert all(np.isfinite(d).all() for d in decoded)
