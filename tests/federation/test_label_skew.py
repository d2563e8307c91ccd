"""Skewed hospitals: loss corrections for a hospital's own labels, and SCAFFOLD."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from tests.simulated import simulate
from torch import nn

from medfed.config import load_config
from medfed.errors import ConfigError
from medfed.federation.codec import CodecError, TensorSpec
from medfed.federation.label_skew import single_class_note
from medfed.federation.replies import ReplyLimits, check_train_reply
from medfed.federation.scaffold import (
    CONTROL_KEY,
    SCAFFOLD,
    ControlStore,
    checked_change,
    control_layout,
    pack_control,
    unpack_control,
)
from medfed.learning.trainer import DriftCorrection, label_correction, train


def test_logit_adjustment_is_the_smoothed_log_prior_scaled_by_tau() -> None:
    fix = label_correction([30, 0], "logit_adjustment", tau=0.5)
    assert fix is not None
    expected = 0.5 * torch.log(torch.tensor([31 / 32, 1 / 32]))
    assert torch.allclose(fix.bias, expected)
    assert torch.equal(fix.scale, torch.ones(2))
    assert label_correction([30, 0], "none") is None
    with pytest.raises(ValueError, match="unknown loss correction"):
        label_correction([1, 1], "focal")


def test_restricted_softmax_scales_only_missing_classes() -> None:
    fix = label_correction([0, 5, 7], "restricted_softmax", alpha=0.25)
    assert fix is not None
    assert fix.scale.tolist() == [0.25, 1.0, 1.0]
    logits = torch.tensor([[4.0, 1.0, -1.0]])
    assert fix.apply(logits).tolist() == [[1.0, 1.0, -1.0]]


def _one_class_batches(label: int, n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    return [(torch.randn(8, 3), torch.full((8,), label)) for _ in range(n)]


def test_logit_adjustment_keeps_a_one_class_hospital_from_pushing_its_class() -> None:
    """Plain cross-entropy on one class drives its bias up; the adjusted loss, whose prior
    already explains that class, barely moves it."""
    biases = {}
    for kind in ("none", "logit_adjustment"):
        torch.manual_seed(0)
        model = nn.Linear(3, 2)
        before = model.bias.detach().clone()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        train(
            model,
            _one_class_batches(1),
            1,
            optimizer,
            correction=label_correction([0, 500], kind),
        )
        after = model.bias.detach()
        biases[kind] = float((after[1] - after[0]) - (before[1] - before[0]))
    assert biases["none"] > 1.0
    assert abs(biases["logit_adjustment"]) < 0.05


def test_drift_correction_adds_c_minus_ci_and_records_the_raw_mean_gradient() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    start = [p.detach().clone() for p in model.parameters()]
    batches = _one_class_batches(0, n=1)
    # the raw gradient of the one step, on a copy
    probe = nn.Linear(3, 2)
    probe.load_state_dict(model.state_dict())
    nn.functional.cross_entropy(probe(batches[0][0]), batches[0][1]).backward()
    raw = [p.grad.detach().clone() for p in probe.parameters()]
    correction = [torch.full_like(p, 0.1) for p in model.parameters()]
    drift = DriftCorrection(correction)
    train(model, batches, 1, torch.optim.SGD(model.parameters(), lr=1.0), drift=drift)
    for before, after, g, c in zip(start, model.parameters(), raw, correction, strict=True):
        assert torch.allclose(after.detach(), before - (g + c), atol=1e-6)
    assert drift.steps == 1
    for mean, g in zip(drift.mean_gradient(), raw, strict=True):
        assert torch.allclose(mean, g, atol=1e-6)
    with pytest.raises(ValueError, match="drift correction has 1 tensors"):
        train(
            model,
            batches,
            1,
            torch.optim.SGD(model.parameters(), lr=1.0),
            drift=DriftCorrection(correction[:1]),
        )


def _layout() -> list[TensorSpec]:
    return [
        TensorSpec("conv.weight", (2, 3), np.dtype(np.float32)),
        TensorSpec("bn.weight", (2,), np.dtype(np.float32)),
        TensorSpec("bn.running_mean", (2,), np.dtype(np.float32)),
        TensorSpec("bn.running_var", (2,), np.dtype(np.float32)),
        TensorSpec("bn.num_batches_tracked", (), np.dtype(np.int64)),
    ]


def test_control_variates_cover_parameters_only_and_are_checked() -> None:
    layout = control_layout(_layout())
    assert [s.name for s in layout] == ["conv.weight", "bn.weight"]
    arrays = [np.ones((2, 3), np.float32), np.full(2, 2.0, np.float32)]
    back = unpack_control(pack_control(arrays), layout)
    assert all(np.array_equal(a, b) for a, b in zip(arrays, back, strict=True))
    with pytest.raises(CodecError):
        unpack_control(pack_control([np.ones((3, 2), np.float32), arrays[1]]), layout)
    with pytest.raises(CodecError):
        unpack_control(pack_control([np.full((2, 3), np.nan, np.float32), arrays[1]]), layout)
    with pytest.raises(CodecError, match="expected the control variate"):
        unpack_control(None, layout)


def _global_record() -> ArrayRecord:
    return ArrayRecord(
        {
            "w": Array(np.zeros((2, 2), np.float32)),
            "b": Array(np.zeros(2, np.float32)),
        }
    )


def test_a_control_change_above_the_norm_bound_is_refused() -> None:
    record = pack_control([np.full((2, 2), 10.0, np.float32), np.zeros(2, np.float32)])
    assert checked_change(record, _global_record(), 100.0)["w"].numpy()[0, 0] == 10.0
    with pytest.raises(CodecError, match="max_update_norm"):
        checked_change(record, _global_record(), 5.0)


def test_scaffold_replies_must_carry_a_sound_control_change() -> None:
    from medfed.federation import wire
    from medfed.federation.codec import CodecSpec

    glob = _global_record()
    state = {k: torch.from_numpy(v.numpy()) for k, v in glob.items()}
    update, _, _ = wire.pack_update(state, state, CodecSpec(), Path("/nonexistent/r.npz"), "r", 0)
    metrics = MetricRecord(
        {
            "num-examples": 4,
            "dp-weight": 1,
            "epsilon": -1.0,
            "budget-exhausted": 0,
            "train_loss": 0.5,
            "train_accuracy": 0.5,
            "train_seconds": 1.0,
            "bytes-up": 1,
            "bytes-down": 1,
            "seconds": 1.0,
            "class-counts": [2, 2],
        }
    )
    info = ConfigRecord({"hospital": "h"})
    limits = ReplyLimits(num_classes=2, scaffold=True)
    reply = RecordDict({"arrays": update, "metrics": metrics, "info": info})
    with pytest.raises(wire.ReplyRejected, match="scaffold"):
        check_train_reply(reply, glob, limits)
    reply[CONTROL_KEY] = pack_control([np.ones((2, 2), np.float32), np.full(2, np.inf, np.float32)])
    with pytest.raises(wire.ReplyRejected, match="NaN or infinite"):
        check_train_reply(reply, glob, limits)
    reply[CONTROL_KEY] = pack_control([np.ones((2, 2), np.float32), np.ones(2, np.float32)])
    clean = check_train_reply(reply, glob, limits)
    assert clean[CONTROL_KEY]["b"].numpy().tolist() == [1.0, 1.0]


def test_the_server_control_variate_moves_by_the_summed_changes_over_all_hospitals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for field in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, field, 1)  # as the ServerApp's process has
    strategy = SCAFFOLD(num_clients=4)
    strategy.names = ["w", "b"]
    strategy.control = [np.zeros((2, 2), np.float32), np.zeros(2, np.float32)]
    replies = []
    for value in (1.0, 3.0):
        content = RecordDict(
            {
                "arrays": ArrayRecord(
                    {
                        "w": Array(np.full((2, 2), value, np.float32)),
                        "b": Array(np.zeros(2, np.float32)),
                    }
                ),
                "metrics": MetricRecord({"num-examples": 1}),
                CONTROL_KEY: ArrayRecord(
                    {
                        "w": Array(np.full((2, 2), value, np.float32)),
                        "b": Array(np.full(2, value, np.float32)),
                    }
                ),
            }
        )
        instruction = Message(RecordDict(), dst_node_id=1, message_type="train")
        replies.append(Message(content, reply_to=instruction))
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    assert np.allclose(arrays["w"].numpy(), 2.0)  # the model: FedAvg
    assert np.allclose(strategy.control[0], (1.0 + 3.0) / 4)  # c: summed changes / N


def test_control_store_keeps_one_runs_variate(tmp_path: Path) -> None:
    layout = control_layout(_layout())
    store = ControlStore(tmp_path / "scaffold.npz", "run-a")
    assert all(not a.any() for a in store.load(layout))
    store.save([np.ones((2, 3)), np.ones(2)])
    assert store.load(layout)[0].sum() == 6
    assert all(not a.any() for a in ControlStore(store.path, "run-b").load(layout))


def test_scaffold_with_differential_privacy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SCAFFOLD"):
        load_config(
            None,
            {
                "federated.strategy": "SCAFFOLD",
                "privacy.mode": "sample",
                "privacy.noise_multiplier": 1.0,
                "model.norm": "group",
            },
        )
    with pytest.raises(ConfigError, match="loss_correction"):
        load_config(None, {"federated.loss_correction": "focal"})


@pytest.mark.slow
def test_a_simulated_scaffold_run_keeps_control_variates_at_each_hospital(
    kaggle_dataset: Path, tmp_path: Path
) -> None:
    store, run_id = simulate(
        kaggle_dataset,
        tmp_path / "home",
        **{
            "federated.strategy": "SCAFFOLD",
            "federated.loss_correction": "logit_adjustment",
            "training.optimizer": "sgd",
            "training.learning_rate": 0.05,
            "partition.scheme": "shards",
        },
    )
    run = store.get_run(run_id)
    assert run.status == "finished", run.error
    rounds = store.rounds(run_id)
    assert len(rounds) == 2 and all(r.num_clients_ok == 2 for r in rounds)
    notes = [e.payload["message"] for e in store.events(run_id) if e.type == "run_note"]
    skew = [n for n in notes if "single class" in n]  # one class each: noted once, in round 1
    assert len(skew) == 1 and skew[0].startswith("round 1: hospital-0 (")
    assert "hospital-1 (" in skew[0]
    files = sorted((tmp_path / "home" / "hospitals").glob(f"*/{run_id}/scaffold.npz"))
    assert len(files) == 2
    with np.load(files[0]) as data:
        assert int(data["count"]) > 0
        assert math.isfinite(float(np.abs(data["a0"]).sum()))
        assert np.abs(data["a0"]).sum() > 0


def test_hospitals_holding_nearly_one_class_are_named_with_their_share() -> None:
    names = ["no", "yes"]
    note = single_class_note({"b": [0, 40], "a": [97, 3], "mixed": [60, 40]}, names)
    assert note is not None
    assert note.startswith("a (97 of its 100 images are 'no'); b (40 of its 40 images are 'yes')")
    assert "mixed" not in note
    assert single_class_note({"a": [94, 6], "empty": [0, 0]}, names) is None
    assert single_class_note({"a": [5]}, ["only"]) is None
