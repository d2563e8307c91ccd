"""Update / weights codec: exactness, error bounds, top-k, error feedback, storage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medfed.errors import FederationError
from medfed.federation.codec import (
    CodecError,
    CodecSpec,
    ResidualStore,
    decode_update,
    decode_weights,
    encode_update,
    encode_weights,
)


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
    update = [np.array([0.5, -2.0, 1.0], np.float32), np.ones((4, 4), np.float32) * 1e-6]
    spec = CodecSpec(topk=0.001, dense_below=0, topk_scope="tensor")
    back = decode_update(encode_update(update, spec)[0])
    assert np.array_equal(back[0], [0.0, -2.0, 0.0])
    assert np.count_nonzero(back[1]) == 1


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
