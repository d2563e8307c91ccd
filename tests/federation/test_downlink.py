"""The downlink: each hospital receives the change since the copy it holds, checked on arrival."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from medfed.config import CompressionConfig, load_config
from medfed.errors import ConfigError
from medfed.federation import wire
from medfed.federation.codec import CodecError, TensorSpec, weights_size
from medfed.federation.downlink import (
    FULL,
    CopyStore,
    DownlinkMismatch,
    DownlinkSender,
    apply_delta,
    copy_path,
    receive_global,
    version_of,
)
from medfed.federation.hospital import open_hospital

RUN = "run-1"


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for field in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, field, 1)  # as the ServerApp's process has


DELTA = CompressionConfig(downlink_topk=0.05, downlink_quant_bits=8)


def model(seed: int = 0) -> dict[str, np.ndarray]:
    """A small state dict: a large conv (sparsified), a bias (sent whole), a counter."""
    rng = np.random.default_rng(seed)
    return {
        "conv.weight": rng.normal(0, 0.1, (64, 32, 3, 3)).astype(np.float32),
        "conv.bias": rng.normal(0, 0.1, (64,)).astype(np.float32),
        "bn.num_batches_tracked": np.array(0, np.int64),
    }


LAYOUT = [TensorSpec(k, v.shape, None) for k, v in model().items()]
NAMES = [spec.name for spec in LAYOUT]


def step(state: dict[str, np.ndarray], seed: int, scale: float = 1e-3) -> dict[str, np.ndarray]:
    """The next global model: a sparse-ish change as averaging a few top-k updates gives,
    and a counter averaged into a float (as FedAvg makes it)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            out[name] = np.asarray(float(value) + 10.5, np.float64)
            continue
        change = rng.normal(0, scale, value.shape) * (rng.random(value.shape) < 0.04)
        out[name] = (value + change).astype(value.dtype)
    return out


def message(node: int, state: dict[str, np.ndarray], server_round: int = 1) -> Message:
    content = RecordDict(
        {
            wire.ARRAYS_KEY: ArrayRecord({k: Array(np.asarray(v)) for k, v in state.items()}),
            wire.CONFIG_KEY: ConfigRecord({"server-round": server_round}),
        }
    )
    return Message(content, dst_node_id=node, message_type="train")


def broadcast(state: dict[str, np.ndarray], nodes: list[int]) -> list[Message]:
    """One message per node sharing one content, as Flower's strategies make them."""
    first = message(nodes[0], state)
    return [first] + [
        Message(first.content, dst_node_id=n, message_type="train") for n in nodes[1:]
    ]


def ok(msg: Message) -> tuple[int, Message]:
    return msg.metadata.dst_node_id, Message(RecordDict(), reply_to=msg)


def failed(msg: Message) -> tuple[int, Message]:
    return msg.metadata.dst_node_id, Message(Error(code=900, reason="x"), reply_to=msg)


def receive(msg: Message, tmp_path: Path, node: int | None = None) -> dict[str, torch.Tensor]:
    node = msg.metadata.dst_node_id if node is None else node
    return receive_global(msg.content, LAYOUT, tmp_path / f"h{node}" / "downlink.npz", RUN)


def held(tmp_path: Path, node: int) -> tuple[str, list[np.ndarray]]:
    kept = CopyStore(tmp_path / f"h{node}" / "downlink.npz", RUN).load(LAYOUT)
    assert kept is not None
    return kept


def addressing(msg: Message) -> tuple[str, str]:
    record = msg.content[wire.DOWNLINK_KEY]
    return str(record["base"]), str(record["version"])


def distance(state: dict[str, np.ndarray], copy: list[np.ndarray]) -> float:
    return float(
        np.sqrt(sum(np.sum((state[n] - c) ** 2) for n, c in zip(NAMES[:2], copy[:2], strict=True)))
    )


# --------------------------------------------------------------------------- the protocol


def test_a_hospital_gets_a_full_copy_then_changes_and_rebuilds_the_servers_copy(tmp_path):
    sender = DownlinkSender(DELTA)
    state = model()
    sizes = []
    for server_round in range(1, 6):
        msg = message(7, state, server_round)
        sizes.append(sender.pack([msg], server_round))
        base, version = addressing(msg)
        assert (base == FULL) == (server_round == 1)
        received = receive(msg, tmp_path)
        sender.settle([ok(msg)])
        # the hospital rebuilt exactly the server's copy of it, and keeps it under its version
        version_held, copy = held(tmp_path, 7)
        assert version_held == version and sender.held[7].version == version
        for mine, theirs, tensor in zip(
            copy, sender.copies[version], received.values(), strict=True
        ):
            assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs)
            assert np.array_equal(tensor.numpy(), mine)
        state = step(state, server_round)
    full = weights_size(list(model().values()), "fp32")
    assert sizes[0] == full
    assert all(size < full / 8 for size in sizes[1:])  # 5% of the entries, 8 bits each


def test_what_a_change_leaves_out_follows_in_later_rounds(tmp_path):
    sender = DownlinkSender(CompressionConfig(downlink_topk=0.05, downlink_quant_bits=8))
    start, target = model(0), model(1)  # a large jump, then the global model stays put
    msg = message(1, start)
    sender.pack([msg], 1)
    receive(msg, tmp_path)
    sender.settle([ok(msg)])
    gaps = []
    for server_round in range(2, 40):
        msg = message(1, target, server_round)
        sender.pack([msg], server_round)
        receive(msg, tmp_path)
        sender.settle([ok(msg)])
        gaps.append(distance(target, held(tmp_path, 1)[1]))
    assert gaps[0] > 0.5 * distance(target, list(start.values()))  # 5% a round: far at first
    assert all(later <= earlier * 1.001 for earlier, later in zip(gaps, gaps[1:], strict=False))
    assert gaps[-1] < 0.02 * gaps[0]  # the copy catches up with the model it did not get at once
    assert held(tmp_path, 1)[1][2] == 0  # the counter: 0 on both sides, never averaged here


def test_hospitals_in_step_share_one_copy_and_one_payload():
    sender = DownlinkSender(DELTA)
    state = model()
    for server_round in (1, 2, 3):
        messages = broadcast(state, [1, 2, 3])
        total = sender.pack(messages, server_round)
        payloads = {
            m.content[wire.ARRAYS_KEY][wire.PAYLOAD_KEY].numpy().tobytes() for m in messages
        }
        assert len(payloads) == 1 and total == 3 * len(payloads.pop())
        assert len({id(m.content) for m in messages}) == 3  # each message its own content
        sender.settle([ok(m) for m in messages])
        assert len(sender.copies) == 1  # one model kept for the three hospitals
        assert sender.memory_bytes == sum(
            a.nbytes
            for a in wire.broadcast_arrays(ArrayRecord({k: Array(v) for k, v in state.items()}))
        )
        state = step(state, server_round)


def test_full_copies_only_are_packed_once_as_before():
    sender = DownlinkSender(CompressionConfig(downlink="int8"))
    messages = broadcast(model(), [1, 2])
    total = sender.pack(messages, 1)
    assert messages[0].content is messages[1].content
    assert wire.DOWNLINK_KEY not in messages[0].content
    assert total == 2 * weights_size(list(model().values()), "int8")
    received = wire.unpack_global(messages[0].content[wire.ARRAYS_KEY], LAYOUT)
    assert list(received) == NAMES


def test_a_failed_or_silent_hospital_gets_a_full_copy_next(tmp_path):
    sender = DownlinkSender(DELTA)
    state = model()
    messages = broadcast(state, [1, 2, 3])
    sender.pack(messages, 1)
    sender.settle([ok(m) for m in messages])
    state = step(state, 1)
    messages = broadcast(state, [1, 2, 3])
    sender.pack(messages, 2)
    sender.settle([ok(messages[0]), failed(messages[1])])  # 3 never answers
    assert set(sender.held) == {1}
    messages = broadcast(step(state, 2), [1, 2, 3])
    sender.pack(messages, 3)
    bases = [addressing(m)[0] for m in messages]
    assert bases[0] != FULL and bases[1] == FULL and bases[2] == FULL


def test_a_hospital_without_the_base_refuses_and_recovers_with_a_full_copy(tmp_path):
    sender = DownlinkSender(DELTA)
    state = model()
    msg = message(4, state)
    sender.pack([msg], 1)
    receive(msg, tmp_path)
    sender.settle([ok(msg)])
    (tmp_path / "h4" / "downlink.npz").unlink()  # a restarted hospital that lost its file
    state = step(state, 1)
    msg = message(4, state, 2)
    sender.pack([msg], 2)
    base, _ = addressing(msg)
    with pytest.raises(DownlinkMismatch, match=f"holds no copy of the model.*version {base}"):
        receive(msg, tmp_path)
    assert not (tmp_path / "h4" / "downlink.npz").exists()  # nothing half-applied is kept
    sender.settle([failed(msg)])
    msg = message(4, step(state, 2), 3)
    sender.pack([msg], 3)
    assert addressing(msg)[0] == FULL
    receive(msg, tmp_path)
    assert held(tmp_path, 4)[0] == addressing(msg)[1]


def test_a_hospital_holding_another_version_refuses_the_change(tmp_path):
    sender = DownlinkSender(DELTA)
    state = model()
    first = message(4, state)
    sender.pack([first], 1)
    receive(first, tmp_path)
    sender.settle([ok(first)])
    older = held(tmp_path, 4)
    second = message(4, step(state, 1), 2)
    sender.pack([second], 2)
    receive(second, tmp_path)
    sender.settle([ok(second)])
    CopyStore(tmp_path / "h4" / "downlink.npz", RUN).save(*older)  # e.g. restored from a backup
    third = message(4, step(step(state, 1), 2), 3)
    sender.pack([third], 3)
    with pytest.raises(DownlinkMismatch, match=f"holds version {older[0]}"):
        receive(third, tmp_path)
    assert held(tmp_path, 4)[0] == older[0]


def test_another_runs_copy_is_not_used(tmp_path):
    sender = DownlinkSender(DELTA)
    state = model()
    msg = message(4, state)
    sender.pack([msg], 1)
    receive(msg, tmp_path)
    sender.settle([ok(msg)])
    msg = message(4, step(state, 1), 2)
    sender.pack([msg], 2)
    with pytest.raises(DownlinkMismatch):
        receive_global(msg.content, LAYOUT, tmp_path / "h4" / "downlink.npz", "another-run")


def test_a_new_sender_as_on_resume_starts_everyone_from_a_full_copy(tmp_path):
    state = model()
    first = DownlinkSender(DELTA)
    msg = message(4, state)
    first.pack([msg], 1)
    receive(msg, tmp_path)
    first.settle([ok(msg)])
    resumed = DownlinkSender(DELTA)
    msg = message(4, step(state, 1), 2)
    resumed.pack([msg], 2)
    assert addressing(msg)[0] == FULL
    receive(msg, tmp_path)


def test_a_hospital_that_missed_rounds_gets_their_budget_too(tmp_path):
    config = CompressionConfig(downlink_topk=0.01, downlink_quant_bits=8, dense_below=100)
    sender = DownlinkSender(config)
    states = [model()]
    for server_round in range(1, 5):
        states.append(step(states[-1], server_round, scale=1e-2))
    for node in (1, 2):
        msg = message(node, states[0])
        sender.pack([msg], 1)
        receive(msg, tmp_path)
        sender.settle([ok(msg)])
    for server_round in (2, 3):  # node 2 is not sampled in rounds 2 and 3
        msg = message(1, states[server_round - 1], server_round)
        sender.pack([msg], server_round)
        sender.settle([ok(msg)])
    both = broadcast(states[3], [1, 2])
    sender.pack(both, 4)
    conv = model()["conv.weight"].size
    kept = []
    for m in both:
        base, _ = addressing(m)
        payload = m.content[wire.ARRAYS_KEY][wire.PAYLOAD_KEY].numpy().tobytes()
        from medfed.federation.codec import decode_update

        kept.append(np.count_nonzero(decode_update(payload)[0]))
        assert base != FULL
    assert kept[0] == round(0.01 * conv)
    assert kept[1] == round(0.03 * conv)  # two rounds missed: three rounds' budget


def test_a_hospital_far_behind_gets_a_full_copy_when_the_change_costs_as_much():
    sender = DownlinkSender(CompressionConfig(downlink_topk=0.5))  # float32 values
    states = [model()]
    for server_round in range(1, 4):
        states.append(step(states[-1], server_round))
    msg = message(1, states[0])
    sender.pack([msg], 1)
    sender.settle([ok(msg)])
    msg = message(1, states[1], 2)
    sender.pack([msg], 2)  # half the entries, in 5 bytes each rather than 4: still smaller
    assert addressing(msg)[0] != FULL
    sender.settle([ok(msg)])
    msg = message(1, states[3], 4)
    sender.pack([msg], 4)  # a round missed: all of them, no smaller than a full copy
    assert addressing(msg)[0] == FULL


def test_averaged_counters_and_float64_weights_arrive_as_in_a_full_copy(tmp_path):
    sender = DownlinkSender(DELTA)
    state = model()
    msg = message(1, state)
    sender.pack([msg], 1)
    receive(msg, tmp_path)
    sender.settle([ok(msg)])
    later = step(state, 1)  # counter 10.5 as float64
    later["conv.weight"] = later["conv.weight"].astype(np.float64)  # FedAdam's weights
    msg = message(1, later, 2)
    sender.pack([msg], 2)
    received = receive(msg, tmp_path)
    full, _ = wire.pack_global(message(1, later).content[wire.ARRAYS_KEY], "fp32")
    as_full_copy = wire.unpack_global(full, LAYOUT)
    for name in NAMES:  # the dtypes a full copy gives, so the update the hospital sends back
        assert received[name].dtype == as_full_copy[name].dtype  # has the dtypes it always had
    assert float(received["bn.num_batches_tracked"]) == 10.5


# --------------------------------------------------------------------------- checks


def delta_message(tmp_path: Path) -> tuple[DownlinkSender, Message]:
    sender = DownlinkSender(DELTA)
    state = model()
    msg = message(1, state)
    sender.pack([msg], 1)
    receive(msg, tmp_path)
    sender.settle([ok(msg)])
    msg = message(1, step(state, 1), 2)
    sender.pack([msg], 2)
    return sender, msg


def with_payload(msg: Message, payload: bytes, base: str | None = None) -> RecordDict:
    old_base, _ = addressing(msg)
    base = old_base if base is None else base
    return RecordDict(
        {
            wire.ARRAYS_KEY: wire.payload_record(payload),
            wire.DOWNLINK_KEY: ConfigRecord({"base": base, "version": version_of(base, payload)}),
        }
    )


def test_a_payload_that_does_not_make_its_version_is_refused(tmp_path):
    _, msg = delta_message(tmp_path)
    before = held(tmp_path, 1)[0]
    record = msg.content[wire.ARRAYS_KEY][wire.PAYLOAD_KEY].numpy().copy()
    record[-1] ^= 1
    msg.content[wire.ARRAYS_KEY] = ArrayRecord({wire.PAYLOAD_KEY: Array(record)})
    with pytest.raises(CodecError, match="does not make the version it names"):
        receive(msg, tmp_path)
    assert held(tmp_path, 1)[0] == before


@pytest.mark.parametrize(
    ("record", "match"),
    [
        (ConfigRecord({"base": "", "version": "not-hex"}), "bad version"),
        (ConfigRecord({"base": "../x", "version": "0" * 32}), "bad base"),
        (ConfigRecord({"version": "0" * 32}), "bad base"),
    ],
)
def test_bad_addressing_is_refused(tmp_path, record: ConfigRecord, match: str):
    _, msg = delta_message(tmp_path)
    msg.content[wire.DOWNLINK_KEY] = record
    with pytest.raises(CodecError, match=match):
        receive(msg, tmp_path)


def test_a_change_is_checked_against_the_hospitals_layout_before_it_is_applied(tmp_path):
    from medfed.federation.codec import CodecSpec, encode_delta

    delta_message(tmp_path)
    base = held(tmp_path, 1)[0]
    spec = CodecSpec(topk=0.05, quant_bits=8, error_feedback=False, dense_below=100)
    wrong_shape = [np.zeros((64, 32, 3, 2), np.float32), np.zeros(64, np.float32), np.array(0)]
    content = with_payload_content(encode_delta(wrong_shape, spec)[0], base)
    with pytest.raises(CodecError, match=r"'conv.weight': shape \(64, 32, 3, 2\)"):
        receive_global(content, LAYOUT, tmp_path / "h1" / "downlink.npz", RUN)
    complex_counter = [np.zeros((64, 32, 3, 3), np.float32), np.zeros(64, np.float32), 1j]
    content = with_payload_content(encode_delta(complex_counter, spec)[0], base)
    with pytest.raises(CodecError, match="'bn.num_batches_tracked': dtype complex128, expected a"):
        receive_global(content, LAYOUT, tmp_path / "h1" / "downlink.npz", RUN)
    missing = [np.zeros((64, 32, 3, 3), np.float32), np.zeros(64, np.float32)]
    content = with_payload_content(encode_delta(missing, spec)[0], base)
    with pytest.raises(CodecError, match="payload carries 2 tensors, the model has 3"):
        receive_global(content, LAYOUT, tmp_path / "h1" / "downlink.npz", RUN)
    nan = [np.full((64, 32, 3, 3), np.nan, np.float32), np.zeros(64, np.float32), np.array(0)]
    content = with_payload_content(encode_delta(nan, CodecSpec(error_feedback=False))[0], base)
    with pytest.raises(CodecError, match="'conv.weight': holds NaN or infinite values"):
        receive_global(content, LAYOUT, tmp_path / "h1" / "downlink.npz", RUN)
    assert held(tmp_path, 1)[0] == base  # none of them touched the copy


def with_payload_content(payload: bytes, base: str) -> RecordDict:
    return RecordDict(
        {
            wire.ARRAYS_KEY: wire.payload_record(payload),
            wire.DOWNLINK_KEY: ConfigRecord({"base": base, "version": version_of(base, payload)}),
        }
    )


def test_an_oversized_payload_is_refused_before_decoding(tmp_path):
    from medfed.federation.codec import max_payload_size

    delta_message(tmp_path)
    base = held(tmp_path, 1)[0]
    bomb = b"MFC1\x00" + bytes(max_payload_size(LAYOUT))
    content = with_payload_content(bomb, base)
    with pytest.raises(CodecError, match="larger than any update of this model"):
        receive_global(content, LAYOUT, tmp_path / "h1" / "downlink.npz", RUN)


def test_apply_delta_keeps_integers_exact_and_in_range():
    base = [np.array([1, 2], np.int64), np.array([0.5], np.float32)]
    out = apply_delta(base, [np.array([3, -1], np.int64), np.array([0.25], np.float32)])
    assert out[0].dtype == np.int64 and out[0].tolist() == [4, 1]
    assert out[1].dtype == np.float32 and out[1].tolist() == [0.75]
    with pytest.raises(CodecError, match="beyond"):
        apply_delta(base, [np.array([2**62, 0], np.int64), np.array([0.0], np.float32)])
    top = [np.array([3e38], np.float32)]
    with pytest.raises(CodecError, match="'w': the change makes it NaN or infinite"):
        apply_delta(top, [np.array([3e38], np.float32)], ["w"])


# --------------------------------------------------------------------------- configuration


def test_config_turns_deltas_on_with_either_key_and_refuses_a_pointless_one():
    assert not CompressionConfig().downlink_delta
    assert CompressionConfig(downlink_topk=0.01).downlink_delta
    assert CompressionConfig(downlink_quant_bits=4).downlink_delta
    with pytest.raises(ConfigError, match="downlink_topk=1 without downlink_quant_bits"):
        load_config(None, {"compression.downlink_topk": 1.0})
    with pytest.raises(ConfigError, match="compression.downlink_quant_bits"):
        load_config(None, {"compression.downlink_quant_bits": 16})
    with pytest.raises(ConfigError, match="compression.downlink_topk"):
        load_config(None, {"compression.downlink_topk": 0})


@pytest.mark.parametrize("deployed", [False, True])
def test_the_copy_lives_in_the_hospitals_state_folder(kaggle_dataset: Path, tmp_path, deployed):
    cfg = load_config(
        None,
        {"home": str(tmp_path / "home"), "data.path": str(kaggle_dataset), "data.image_size": 16},
    )
    if deployed:
        node_config = {"data-path": str(kaggle_dataset), "hospital": "north", "home": str(tmp_path)}
    else:
        node_config = {"partition-id": 1, "num-partitions": 2}
    hospital = open_hospital(cfg, node_config, RUN, ["0", "1"])
    assert copy_path(cfg, node_config, RUN) == hospital.state_dir / "downlink.npz"


# --------------------------------------------------------------------------- a simulated run


@pytest.mark.slow
def test_a_run_sends_changes_and_a_full_copy_after_a_failure(kaggle_dataset: Path, tmp_path):
    from simulated import simulate

    store, run_id = simulate(
        kaggle_dataset,
        tmp_path / "home",
        **{
            "federated.num_clients": 3,
            "federated.min_train_clients": 2,
            "federated.min_evaluate_clients": 2,
            "federated.rounds": 3,
            "federated.simulated_failures": ["hospital-1@2"],
            "compression.topk": 0.1,
            "compression.quant_bits": 8,
            "compression.downlink_topk": 0.05,
            "compression.downlink_quant_bits": 8,
            "compression.dense_below": 256,
        },
    )
    run = store.get_run(run_id)
    assert run.status == "finished", run.error
    train = {(c.round, c.hospital): c for c in store.client_results(run_id) if c.phase == "train"}
    full = train[(1, "hospital-0")].bytes_down
    assert all(train[(1, f"hospital-{h}")].bytes_down == full for h in (0, 1, 2))
    assert train[(2, "hospital-1")].status == "failed"
    for h in (0, 2):  # changes since their copy
        assert 0 < train[(2, f"hospital-{h}")].bytes_down < full / 8
        assert 0 < train[(3, f"hospital-{h}")].bytes_down < full / 8
    # it failed: a full copy again (its BatchNorm counters now averaged floats)
    assert abs(train[(3, "hospital-1")].bytes_down - full) < full / 100
    rounds = store.rounds(run_id)
    assert rounds[1].bytes_down < rounds[0].bytes_down / 4
    assert all(0.0 <= r.metrics["accuracy"] <= 1.0 for r in rounds)
    copies = list((tmp_path / "home" / "hospitals").glob(f"hospital-*/{run_id}/downlink.npz"))
    assert len(copies) == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        {"federated.strategy": "FedAvgM", "federated.server_momentum": 0.9},
        {
            "model.norm": "group",
            "privacy.mode": "client",
            "privacy.clip_side": "client",
            "privacy.noise_multiplier": 0.3,
            "privacy.max_grad_norm": 5.0,
        },
    ],
    ids=["FedAvgM", "client-level DP"],
)
def test_server_optimisers_and_client_level_dp_run_over_the_compressed_downlink(
    kaggle_dataset: Path, tmp_path, extra: dict
):
    from simulated import simulate

    downlink = {"compression.downlink_topk": 0.05, "compression.downlink_quant_bits": 8}
    store, run_id = simulate(kaggle_dataset, tmp_path / "home", **downlink, **extra)
    run = store.get_run(run_id)
    assert run.status == "finished", run.error
    results = store.client_results(run_id)
    assert all(c.status == "ok" for c in results)
    rounds = store.rounds(run_id)
    assert [r.round for r in rounds] == [1, 2]
    assert rounds[1].bytes_down < rounds[0].bytes_down  # round 2 and the last evaluation: changes


def test_the_demo_compresses_both_ways(tmp_path):
    from medfed.commands.federated import DEMO_SETTINGS

    cfg = load_config(None, {**DEMO_SETTINGS, "data.path": str(tmp_path)})
    c = cfg.compression
    assert c.topk is not None and c.quant_bits is not None  # uploads
    assert c.downlink_delta and c.downlink_topk is not None  # downloads: changes only
    assert c.downlink != "fp32"  # and a smaller first copy
