"""Updates on the wire: hospitals' encoded deltas, and the residual they keep between rounds."""

from __future__ import annotations

import io
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

from medfed.federation import wire
from medfed.federation.codec import (
    CodecError,
    CodecSpec,
    ResidualStore,
    decode_update,
    encode_update,
    max_payload_size,
)


def states(seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    global_state = {
        "conv.weight": torch.randn(40, 50, generator=generator),
        "norm.bias": torch.randn(8, generator=generator),
    }
    local_state = {
        k: v + 0.1 * torch.randn(v.shape, generator=generator) for k, v in global_state.items()
    }
    return global_state, local_state


def sent(record: ArrayRecord) -> list[np.ndarray]:
    return decode_update(record[wire.PAYLOAD_KEY].numpy().tobytes())


def test_lossless_update_rebuilds_the_local_model(tmp_path: Path) -> None:
    global_state, local_state = states(0)
    path = tmp_path / "residual.npz"
    record, nbytes, clipped = wire.pack_update(
        global_state, local_state, CodecSpec(), path, "run", seed=0
    )
    rebuilt = wire.unpack_update(record, ArrayRecord(global_state)).to_torch_state_dict()
    assert not clipped and nbytes == len(record[wire.PAYLOAD_KEY].numpy())
    for key, value in local_state.items():
        torch.testing.assert_close(rebuilt[key], value)
    assert not path.exists()  # nothing left behind, nothing kept


def test_residual_follows_the_learning_rate(tmp_path: Path) -> None:
    spec = CodecSpec(topk=0.05, dense_below=100)
    path = tmp_path / "residual.npz"
    global_state, local_state = states(1)
    wire.pack_update(global_state, local_state, spec, path, "run", seed=0, learning_rate=0.1)
    per_unit = ResidualStore(path, "run").load()
    assert per_unit is not None and np.abs(per_unit[0]).max() > 0
    assert not per_unit[1].any()  # the small tensor went whole

    # nothing new to send at half the rate: the payload and the new residual together carry
    # half of what was left behind
    record, _, _ = wire.pack_update(
        global_state, global_state, spec, path, "run", seed=1, learning_rate=0.05
    )
    after = ResidualStore(path, "run").load()
    assert after is not None
    np.testing.assert_allclose(
        sent(record)[0] + 0.05 * after[0], 0.5 * 0.1 * per_unit[0], rtol=1e-5, atol=1e-7
    )


# --------------------------------------------------------------------------- untrusted replies


def model_state() -> dict[str, torch.Tensor]:
    """A tiny model's state: a conv, a BatchNorm layer (with its counter) and a linear head."""
    generator = torch.Generator().manual_seed(7)
    return {
        "conv.weight": torch.randn(4, 1, 3, 3, generator=generator),
        "bn.weight": torch.ones(4),
        "bn.bias": torch.zeros(4),
        "bn.running_mean": torch.zeros(4),
        "bn.running_var": torch.ones(4),
        "bn.num_batches_tracked": torch.tensor(12, dtype=torch.int64),
        "fc.weight": torch.randn(2, 4, generator=generator),
        "fc.bias": torch.zeros(2),
    }


def deltas(scale: float = 0.01, counter: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [
        np.array(counter, np.int64)
        if v.dtype == torch.int64
        else rng.normal(0, scale, tuple(v.shape)).astype(np.float32)
        for v in model_state().values()
    ]


def payload_record(payload: bytes) -> ArrayRecord:
    return ArrayRecord({wire.PAYLOAD_KEY: Array(np.frombuffer(payload, np.uint8).copy())})


def update_of(arrays: list[np.ndarray], spec: CodecSpec | None = None) -> ArrayRecord:
    return payload_record(encode_update(arrays, spec or CodecSpec())[0])


GLOBAL = ArrayRecord(model_state())
LEGIT = len(encode_update(deltas(), CodecSpec())[0])
BUDGET = 2 * max_payload_size(wire.record_layout(GLOBAL)) + 64 * 1024  # + zlib's fixed state


def refused(call, match: str, error=wire.ReplyRejected, budget: int = BUDGET) -> None:
    """``call`` raises ``error`` matching ``match`` and allocates under ``budget`` meanwhile."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        with pytest.raises(error, match=match):
            call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < budget, f"refusing took {peak} bytes"


def npy_array(dtype: str, shape: tuple[int, ...], data: bytes = b"") -> Array:
    """A Flower array whose .npy header says ``dtype`` and ``shape``, whatever the data."""
    stream = io.BytesIO()
    header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(stream, header)
    return Array(dtype=dtype, shape=shape, stype="numpy.ndarray", data=stream.getvalue() + data)


@pytest.mark.parametrize("spec", [CodecSpec(), CodecSpec(topk=0.3, quant_bits=4, lossless=True)])
def test_a_valid_update_adds_to_the_global_weights(spec: CodecSpec) -> None:
    sent = deltas()
    record = update_of(sent, spec)
    rebuilt = wire.unpack_update(record, GLOBAL, max_update_norm=1.0)
    received = decode_update(record[wire.PAYLOAD_KEY].numpy().tobytes())
    for (key, base), delta in zip(model_state().items(), received, strict=True):
        out = rebuilt[key].numpy()
        assert out.dtype == base.numpy().dtype and out.shape == tuple(base.shape)
        np.testing.assert_allclose(out, base.numpy() + delta, rtol=1e-6)
    assert int(rebuilt["bn.num_batches_tracked"].numpy()) == 15


def test_a_scalar_or_column_never_broadcasts_onto_a_tensor() -> None:
    scalar = deltas()
    scalar[0] = np.float32(0.5)  # onto conv.weight (4, 1, 3, 3)
    refused(
        lambda: wire.unpack_update(update_of(scalar), GLOBAL),
        r"'conv.weight': shape \(\), expected \(4, 1, 3, 3\)",
    )
    column = deltas()
    column[2] = np.zeros((4, 1), np.float32)  # (4, 1) + (4,) would make bn.bias (4, 4)
    refused(
        lambda: wire.unpack_update(update_of(column), GLOBAL),
        r"'bn.bias': shape \(4, 1\), expected \(4,\)",
    )


def test_wrong_count_dtype_and_non_finite_updates_are_refused() -> None:
    refused(lambda: wire.unpack_update(update_of(deltas()[:-1]), GLOBAL), "carries 7 tensors")
    wide = deltas()
    wide[6] = wide[6].astype(np.float64)
    refused(
        lambda: wire.unpack_update(update_of(wide), GLOBAL),
        "'fc.weight': dtype float64, expected float32",
    )
    for bad in (np.nan, np.inf):
        broken = deltas()
        broken[1][2] = bad
        refused(lambda b=broken: wire.unpack_update(update_of(b), GLOBAL), "NaN or infinite")


def test_an_update_beyond_the_norm_bound_is_refused() -> None:
    big = update_of(deltas(scale=1000.0))  # norm about 6,700
    refused(
        lambda: wire.unpack_update(big, GLOBAL, max_update_norm=1e3),
        r"update norm 6704 is above federated.max_update_norm=1000",
    )
    assert wire.unpack_update(big, GLOBAL, max_update_norm=1e4) is not None


@pytest.mark.parametrize(
    "counter,match", [(-13, "from 12 to -1; it may not fall below 0"), (2**40, "grow by more")]
)
def test_a_counter_pushed_negative_or_absurd_is_refused(counter: int, match: str) -> None:
    record = update_of(deltas(counter=counter))
    refused(lambda: wire.unpack_update(record, GLOBAL, max_counter_step=10**6), match)


def test_a_counter_grows_from_wherever_the_global_model_is() -> None:
    pretrained = ArrayRecord({**model_state(), "bn.num_batches_tracked": torch.tensor(450_000)})
    record = update_of(deltas(counter=100))
    rebuilt = wire.unpack_update(record, pretrained, max_counter_step=5000)
    assert int(rebuilt["bn.num_batches_tracked"].numpy()) == 450_100


def test_averaged_counters_stay_counters() -> None:
    # the server's averaging makes the counter a float: it is still kept out of the norm
    averaged = ArrayRecord({**model_state(), "bn.num_batches_tracked": torch.tensor(12.5).double()})
    sent = deltas()
    sent[5] = np.array(10**5, np.float64)
    rebuilt = wire.unpack_update(update_of(sent), averaged, max_update_norm=1.0)
    assert float(rebuilt["bn.num_batches_tracked"].numpy()) == 100_012.5
    sent[5] = np.array(-100.0)
    refused(lambda: wire.unpack_update(update_of(sent), averaged), "counter")


def test_only_one_bounded_uint8_payload_is_accepted() -> None:
    refused(lambda: wire.unpack_update(GLOBAL, GLOBAL), "expected one encoded payload array")
    record = update_of(deltas())
    record["extra"] = Array(np.zeros(3, np.uint8))
    refused(lambda: wire.unpack_update(record, GLOBAL), "expected one encoded payload array")
    floats = ArrayRecord({wire.PAYLOAD_KEY: Array(np.zeros(8, np.float32))})
    refused(lambda: wire.unpack_update(floats, GLOBAL), "float32 array of shape")
    # an .npy header claiming a terabyte: numpy's loader would allocate it
    claimed = ArrayRecord({wire.PAYLOAD_KEY: npy_array("uint8", (2**40,), b"MFC1\x00")})
    refused(lambda: wire.unpack_update(claimed, GLOBAL), "larger than any update")
    short = ArrayRecord({wire.PAYLOAD_KEY: npy_array("uint8", (100,), b"MFC1\x00")})
    refused(lambda: wire.unpack_update(short, GLOBAL), "5 data bytes, its header says 100")
    junk = ArrayRecord({wire.PAYLOAD_KEY: Array("uint8", (5,), "numpy.ndarray", b"\x93NUMPY?")})
    refused(lambda: wire.unpack_update(junk, GLOBAL), "unreadable array header")
    pickled = ArrayRecord({wire.PAYLOAD_KEY: Array("uint8", (5,), "pickle", b"12345")})
    refused(lambda: wire.unpack_update(pickled, GLOBAL), r"not a numpy array \(pickle\)")


def test_truncated_bombed_and_random_payloads_are_refused() -> None:
    payload, _ = encode_update(deltas(), CodecSpec())
    truncated = payload_record(payload[:-3])
    refused(lambda: wire.unpack_update(truncated, GLOBAL), "truncated")
    # 65 KB inflating to 64 MiB
    bomb = payload_record(b"MFC1\x01" + zlib.compress(payload[5:] + bytes(64 * 2**20), 9))
    refused(lambda: wire.unpack_update(bomb, GLOBAL), "larger than any update")
    rng = np.random.default_rng(3)
    for _ in range(20):
        noise = payload_record(b"MFC1" + rng.integers(0, 256, LEGIT, dtype=np.uint8).tobytes())
        refused(lambda n=noise: wire.unpack_update(n, GLOBAL), "update: ")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_the_broadcast_model_is_checked_at_the_hospital(precision: str) -> None:
    state = model_state()
    averaged = ArrayRecord({**state, "bn.num_batches_tracked": torch.tensor(12.5).double()})
    doubles = ArrayRecord({k: v.double() for k, v in state.items()})  # FedAdam sends float64
    for record in (GLOBAL, averaged, doubles):
        sent, nbytes = wire.pack_global(record, precision)
        assert wire.is_payload(sent) and nbytes == wire.payload_nbytes(sent)  # one array
        received = wire.unpack_global(sent, wire.state_layout(state))
        assert list(received) == list(state)
        assert received["fc.weight"].dtype == torch.float32  # float64 weights sent as float32
        assert [tuple(t.shape) for t in received.values()] == [
            tuple(t.shape) for t in state.values()
        ]
    wrong = ArrayRecord({**state, "fc.bias": torch.zeros(3)})
    sent, _ = wire.pack_global(wrong, precision)
    with pytest.raises(CodecError, match=r"'fc.bias': shape \(3,\), expected \(2,\)"):
        wire.unpack_global(sent, wire.state_layout(state))


def test_the_broadcast_arrays_are_float32_weights_and_untouched_counters() -> None:
    state = model_state()
    averaged = {k: v.double() for k, v in state.items()}  # FedAdam's weights, averaged counters
    averaged["bn.num_batches_tracked"] = torch.tensor(12.5).double()
    arrays = wire.broadcast_arrays(ArrayRecord(averaged))
    assert [a.dtype for a in arrays] == [np.float32] * len(arrays)
    kept = wire.broadcast_arrays(ArrayRecord(state))
    assert [a.dtype for a in kept] == [
        np.dtype(np.int64) if n.endswith("tracked") else np.float32 for n in state
    ]
    assert [a.shape for a in kept] == [tuple(t.shape) for t in state.values()]


def test_a_strategys_float64_weights_go_back_to_the_models_dtypes() -> None:
    state = model_state()
    averaged = {k: v.double() for k, v in state.items()}  # FedAdam's weights, averaged counters
    averaged["bn.num_batches_tracked"] = torch.tensor(12.6).double()
    cast = wire.with_dtypes_of(ArrayRecord(averaged), ArrayRecord(state))
    assert list(cast) == list(state)
    assert [np.dtype(cast[k].dtype) for k in cast] == [t.numpy().dtype for t in state.values()]
    assert int(cast["bn.num_batches_tracked"].numpy()) == 13
    np.testing.assert_array_equal(cast["fc.weight"].numpy(), state["fc.weight"].numpy())


def test_a_payload_record_is_one_uint8_array_read_back_without_copying() -> None:
    record = wire.payload_record(b"MFC1\x00abc")
    assert wire.is_payload(record) and wire.payload_nbytes(record) == 8
    assert bytes(wire.payload_view(record, 8)) == b"MFC1\x00abc"
    with pytest.raises(CodecError, match="larger than any update"):
        wire.payload_view(record, 7)


@pytest.mark.parametrize("size", [0, 8, 70_001])
def test_a_payload_record_is_what_flower_makes_of_the_uint8_array(size: int) -> None:
    payload = np.random.default_rng(size).bytes(size)
    made = wire.payload_record(payload)[wire.PAYLOAD_KEY]
    flowers = Array(np.frombuffer(payload, np.uint8))
    assert (made.dtype, made.shape, made.stype, made.data) == (
        flowers.dtype,
        flowers.shape,
        flowers.stype,
        flowers.data,
    )
    assert made.numpy().tobytes() == payload


def test_a_broadcast_with_other_names_is_refused_at_the_hospital() -> None:
    state = model_state()
    renamed = ArrayRecord({("head.bias" if k == "fc.bias" else k): v for k, v in state.items()})
    with pytest.raises(CodecError, match="missing 'fc.bias'; unexpected 'head.bias'"):
        wire.unpack_global(renamed, wire.state_layout(state))
    swapped = dict(reversed(list(state.items())))
    with pytest.raises(CodecError, match="out of order"):
        wire.unpack_global(ArrayRecord(swapped), wire.state_layout(state))


def bn_reply(mean: np.ndarray | None = None, sqmean: np.ndarray | None = None, examples=100):
    mean = np.full(4, 0.5, np.float32) if mean is None else mean
    sqmean = np.full(4, 1.25, np.float32) if sqmean is None else sqmean
    stats = wire.pack_bn_moments({"bn.mean": mean, "bn.sqmean": sqmean}, ["bn"])
    return RecordDict(
        {wire.BN_STATS_KEY: stats, "metrics": MetricRecord({wire.BN_EXAMPLES_KEY: examples})}
    )


def raw_moments(array: Array, name: str = "moments") -> RecordDict:
    reply = bn_reply()
    reply[wire.BN_STATS_KEY] = ArrayRecord({name: array})
    return reply


@pytest.mark.parametrize(
    "reply,match",
    [
        (bn_reply(examples=-5), r"'bn-examples' = -5 is out of range \[1, 1000\]"),
        (bn_reply(examples=0), "out of range"),
        (bn_reply(examples=10**9), "out of range"),
        (bn_reply(examples=[3]), "must be an integer"),
        (bn_reply(examples=2.5), "must be an integer"),
        (bn_reply(mean=np.array([0, np.nan, 0, 0], np.float32)), "'moments': holds NaN"),
        (bn_reply(sqmean=np.array([1, 1, np.inf, 1], np.float32)), "holds NaN or infinite"),
        (bn_reply(sqmean=np.array([1, -1, 1, 1], np.float32)), "'bn.sqmean': a negative mean"),
        (bn_reply(mean=np.zeros(5, np.float32)), r"shape \(9,\), expected \(8,\)"),
        (raw_moments(Array(np.zeros(8, np.float64))), "dtype float64, expected float32"),
        (raw_moments(Array(np.zeros((8, 1), np.float32))), r"shape \(8, 1\), expected \(8,\)"),
    ],
)
def test_bad_batchnorm_moments_are_refused(reply: RecordDict, match: str) -> None:
    refused(lambda: wire.bn_moments(reply, GLOBAL, max_examples=1000), match)


def test_batchnorm_moments_travel_as_one_array_in_layer_order() -> None:
    state = {
        "a.running_mean": np.zeros(2, np.float32),
        "a.running_var": np.ones(2, np.float32),
        "b.running_mean": np.zeros(3, np.float32),
        "b.running_var": np.ones(3, np.float32),
    }
    moments = {
        "b.mean": np.array([5, 6, 7], np.float32),
        "a.sqmean": np.array([3, 4], np.float32),
        "b.sqmean": np.array([8, 9, 10], np.float32),
        "a.mean": np.array([1, 2], np.float32),
    }
    record = wire.pack_bn_moments(moments, wire.bn_layers(state))
    assert list(record.keys()) == ["moments"]
    np.testing.assert_array_equal(record["moments"].numpy(), np.arange(1, 11))
    reply = RecordDict({wire.BN_STATS_KEY: record, "metrics": MetricRecord({"bn-examples": 9})})
    global_record = ArrayRecord({k: Array(v) for k, v in state.items()})
    examples, back = wire.bn_moments(reply, global_record, 100)
    assert examples == 9 and list(back) == ["a.mean", "a.sqmean", "b.mean", "b.sqmean"]
    for name, values in moments.items():
        np.testing.assert_array_equal(back[name], values)


def test_batchnorm_moments_must_be_the_one_packed_array() -> None:
    reply = bn_reply()
    reply[wire.BN_STATS_KEY]["other"] = Array(np.zeros(4, np.float32))
    refused(lambda: wire.bn_moments(reply, GLOBAL, 1000), "unexpected 'other'")
    reply = raw_moments(Array(np.zeros(8, np.float32)), name="bn.mean")
    refused(lambda: wire.bn_moments(reply, GLOBAL, 1000), "missing 'moments'")
    reply = raw_moments(npy_array("float32", (2**40,)))
    refused(lambda: wire.bn_moments(reply, GLOBAL, 1000), r"shape \(1099511627776,\)")


def test_merging_leaves_out_a_bad_reply_and_keeps_the_others() -> None:
    good = [bn_reply(examples=100), bn_reply(np.full(4, 1.5), np.full(4, 3.25), 300)]
    bad = bn_reply(mean=np.full(4, np.nan, np.float32), examples=10**6)
    merged = wire.merge_bn_statistics([*good, bad], GLOBAL, max_examples=1000)
    mean = 0.25 * 0.5 + 0.75 * 1.5
    np.testing.assert_allclose(merged["bn.running_mean"].numpy(), np.full(4, mean), rtol=1e-6)
    var = 0.25 * 1.25 + 0.75 * 3.25 - mean**2
    np.testing.assert_allclose(merged["bn.running_var"].numpy(), np.full(4, var), rtol=1e-6)
    assert merged["bn.running_mean"].numpy().dtype == np.float32
    assert wire.merge_bn_statistics([bad], GLOBAL) is GLOBAL
