"""Federated runs on Flower's real simulation engine: rounds recorded, faults, stop and resume."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from flwr.app import MetricRecord, RecordDict
from flwr.serverapp import strategy as fl

from medfed.cli import main
from medfed.config import STRATEGIES, load_config
from medfed.data.datasets import load_image_set
from medfed.federation.recorder import RunRecorder
from medfed.federation.runner import absolute_paths, start_run, stop_run
from medfed.federation.strategies import aggregate_metrics, build_strategy
from medfed.store import RunStore
from medfed.store.artifacts import ArtifactStore
from simulated import simulate, tiny_overrides

pytestmark = pytest.mark.slow


def wait_for(predicate, timeout: float = 180.0, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(every)


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_name_builds_flowers_class(name: str) -> None:
    strategy = build_strategy(load_config(None, {"federated.strategy": name}))
    assert type(strategy).__name__ == name
    assert isinstance(strategy, fl.Strategy)


@pytest.mark.parametrize("name", ["FedAdam", "FedYogi"])
def test_server_optimisers_returning_float64_weights_run_on(
    kaggle_dataset: Path, tmp_path: Path, name: str
) -> None:
    store, run_id = simulate(kaggle_dataset, tmp_path / "home", **{"federated.strategy": name})
    run = store.get_run(run_id)
    assert run.status == "finished", run.error
    assert [r.num_clients_ok for r in store.rounds(run_id)] == [2, 2]


def test_client_level_dp_wraps_the_strategy() -> None:
    cfg = load_config(
        None,
        {"privacy.mode": "client", "privacy.noise_multiplier": 0.8, "model.norm": "group"},
    )
    strategy = build_strategy(cfg)
    assert isinstance(strategy, fl.DifferentialPrivacyServerSideFixedClipping)


def test_metrics_are_weighted_and_confusion_matrices_summed() -> None:
    replies = [
        RecordDict(
            {
                "m": MetricRecord(
                    {
                        "num-examples": 10,
                        "accuracy": 0.9,
                        "bytes-up": 100,
                        "confusion-matrix": [4, 1, 0, 5],
                    }
                )
            }
        ),
        RecordDict(
            {
                "m": MetricRecord(
                    {
                        "num-examples": 30,
                        "accuracy": 0.5,
                        "bytes-up": 50,
                        "confusion-matrix": [10, 5, 10, 5],
                    }
                )
            }
        ),
    ]
    out = aggregate_metrics(replies, "num-examples")
    assert out["num-examples"] == 40
    assert out["accuracy"] == pytest.approx((0.9 * 10 + 0.5 * 30) / 40)
    assert out["bytes-up"] == 150
    assert list(out["confusion-matrix"]) == [14, 6, 10, 10]


def test_simulated_run_records_every_round_and_hospital(kaggle_dataset: Path, tmp_path: Path):
    store, run_id = simulate(
        kaggle_dataset, tmp_path / "home", **{"compression.topk": 0.1, "compression.quant_bits": 8}
    )
    run = store.get_run(run_id)
    assert run.status == "finished", run.error
    rounds = store.rounds(run_id)
    assert [r.round for r in rounds] == [1, 2]
    for r in rounds:
        assert 0.0 <= r.metrics["accuracy"] <= 1.0
        cm = np.array(r.metrics["confusion_matrix"])
        assert cm.sum() == 12  # the held-out test set: 6 per class
        assert r.num_clients_ok == 2 and r.num_clients_failed == 0
        assert r.evaluate_metrics["num-examples"] > 0
    results = store.client_results(run_id)
    assert {(c.round, c.hospital, c.phase) for c in results} == {
        (k, f"hospital-{h}", phase)
        for k in (1, 2)
        for h in (0, 1)
        for phase in ("train", "evaluate")
    }
    train = [c for c in results if c.phase == "train"]
    assert sum(c.num_examples for c in train if c.round == 1) == 32 - 4  # local validation kept
    # top-k 10% + 8-bit: each upload is a small fraction of the fp32 model sent down
    assert all(0 < c.bytes_up < c.bytes_down / 10 for c in train)
    assert rounds[0].bytes_up == sum(c.bytes_up for c in train if c.round == 1)
    checkpoints = store.checkpoints(run_id)
    assert [c.round for c in checkpoints] == [0, 1, 2]  # 0: the initial model
    assert all(Path(c.path).is_file() for c in checkpoints)
    events = store.events(run_id)
    kinds = [e.type for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("round_finished") == 2
    # the class names found in the data label the confusion matrix in the dashboard
    names = load_image_set(kaggle_dataset, load_config(None).data, tmp_path / "c").class_names
    assert run.config["data"]["class_names"] == list(names)
    assert events[0].payload["class_names"] == list(names)


def test_failed_and_silent_hospitals_are_recorded_and_the_run_goes_on(
    kaggle_dataset: Path, tmp_path: Path
):
    store, run_id = simulate(
        kaggle_dataset,
        tmp_path / "home",
        **{
            "federated.num_clients": 3,
            "federated.rounds": 2,
            "federated.round_timeout": 50,
            "federated.simulated_failures": ["hospital-1@1", "hospital-2@2:hang"],
        },
    )
    run = store.get_run(run_id)
    assert run.status == "finished", run.error
    failed = [c for c in store.client_results(run_id) if c.status == "failed"]
    by_round = {c.round: c for c in failed if c.phase == "train"}
    assert "simulated failure" in by_round[1].error
    assert "no reply within" in by_round[2].error
    rounds = store.rounds(run_id)
    assert rounds[0].num_clients_ok == 2 and rounds[0].num_clients_failed >= 1
    assert [r.round for r in rounds] == [1, 2]


def test_too_few_replies_fail_the_run_with_the_reason(kaggle_dataset: Path, tmp_path: Path):
    store, run_id = simulate(
        kaggle_dataset, tmp_path / "home", **{"federated.simulated_failures": ["hospital-0@1"]}
    )
    run = store.get_run(run_id)
    assert run.status == "failed"
    assert "min_train_clients" in run.error and "hospital-0" in run.error
    assert store.events(run_id)[-1].type == "run_failed"


def test_run_cli_follows_a_run_to_the_end(kaggle_dataset: Path, tmp_path: Path, capsys):
    config = tmp_path / "config.yml"
    overrides = tiny_overrides(kaggle_dataset, tmp_path / "home")
    nested: dict = {}
    for key, value in overrides.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    config.write_text(yaml.safe_dump(nested))
    assert main(["run", "--config", str(config), "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "accuracy" in out
    store = RunStore(load_config(config).database_url)
    runs, total = store.list_runs()
    assert total == 1 and runs[0].status == "finished" and runs[0].num_rounds == 1


def _background_run(data: Path, home: Path, rounds: int) -> tuple[RunStore, str, object]:
    cfg = absolute_paths(
        load_config(None, tiny_overrides(data, home, **{"federated.rounds": rounds}))
    )
    home.mkdir(parents=True, exist_ok=True)
    store = RunStore(cfg.database_url)
    return store, start_run(cfg, store), cfg


def test_a_killed_server_resumes_without_losing_or_repeating_rounds(
    kaggle_dataset: Path, tmp_path: Path
):
    store, run_id, cfg = _background_run(kaggle_dataset, tmp_path / "home", rounds=3)
    wait_for(lambda: store.last_completed_round(run_id) >= 1)
    pid = int((Path(cfg.home) / "runs" / run_id / "worker.pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not _alive(pid), timeout=30)
    done_before = {r.round: r.finished_at for r in store.rounds(run_id)}
    # The worker's watchdog saw it go: the run is interrupted, not left "running".
    wait_for(lambda: store.get_run(run_id).status == "interrupted", timeout=30)

    start_run(cfg, store, run_id=run_id, resume=True)
    wait_for(lambda: store.get_run(run_id).status not in ("pending", "running"))
    run = store.get_run(run_id)
    assert run.status == "finished", run.error
    rounds = store.rounds(run_id)
    assert [r.round for r in rounds] == [1, 2, 3]
    checkpointed = max(c.round for c in store.checkpoints(run_id) if c.round in done_before)
    for r in rounds:
        if r.round <= checkpointed:
            assert r.finished_at == done_before[r.round]  # kept, not trained again


def test_resume_skips_a_checkpoint_whose_round_was_never_recorded(tmp_path: Path) -> None:
    """A kill between a round's checkpoint and its record must not lose that round."""
    with RunStore(f"sqlite:///{tmp_path}/medfed.db") as store:
        run_id = store.create_run("r", {}, mode="simulation", strategy="FedAvg", num_rounds=3)
        recorder = RunRecorder(store, run_id, ArtifactStore(tmp_path / "artifacts"))
        for done in (0, 1, 2):
            recorder.checkpoint(done, {"w": torch.full((2,), float(done))}, {}, None)
        store.record_round(run_id, 1, metrics={"accuracy": 0.5}, duration_s=1.0)
        state, done = recorder.resume_point()
        assert done == 1 and state is not None and state["w"].tolist() == [1.0, 1.0]
        assert [c.round for c in store.checkpoints(run_id)] == [0, 1]
        store.delete_rounds_after(run_id, 0)
        state, done = recorder.resume_point()
        assert done == 0 and state is not None and state["w"].tolist() == [0.0, 0.0]


def test_stop_ends_a_run_after_its_current_phase(kaggle_dataset: Path, tmp_path: Path):
    store, run_id, cfg = _background_run(kaggle_dataset, tmp_path / "home", rounds=20)
    wait_for(lambda: store.last_completed_round(run_id) >= 1)
    stop_run(run_id, store, cfg.home)
    wait_for(lambda: store.get_run(run_id).status == "stopped", timeout=120)
    assert store.last_completed_round(run_id) < 20
    assert store.events(run_id)[-1].type == "run_stopped"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie child of this test process counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def test_sample_level_dp_reports_growing_epsilon_within_target(
    kaggle_dataset: Path, tmp_path: Path
):
    store, run_id = simulate(
        kaggle_dataset,
        tmp_path / "home",
        **{
            "model.norm": "group",
            "privacy.mode": "sample",
            "privacy.target_epsilon": 6.0,
            "federated.rounds": 2,
        },
    )
    run = store.get_run(run_id)
    assert run.status == "finished", run.error
    epsilons = [r.epsilon for r in store.rounds(run_id)]
    assert all(e is not None for e in epsilons)
    assert 0 < epsilons[0] < epsilons[1] <= 6.0 + 1e-6
    train = [c for c in store.client_results(run_id) if c.phase == "train"]
    assert max(c.metrics["epsilon"] for c in train if c.round == 2) == pytest.approx(epsilons[1])


def test_sample_level_budget_ends_training_early_and_says_so(kaggle_dataset: Path, tmp_path):
    store, run_id = simulate(
        kaggle_dataset,
        tmp_path / "home",
        **{
            "model.norm": "group",
            "privacy.mode": "sample",
            "privacy.target_epsilon": 8.0,
            "privacy.epsilon_budget": 6.0,
            "federated.rounds": 3,
        },
    )
    run = store.get_run(run_id)
    assert run.status == "finished", run.error
    assert len(store.rounds(run_id)) < 3
    notes = [e.payload["message"] for e in store.events(run_id) if e.type == "run_note"]
    assert notes and "privacy budget" in notes[0]


def test_client_level_dp_epsilon_follows_the_rdp_accountant(kaggle_dataset: Path, tmp_path):
    from medfed.privacy.accounting import client_level_epsilon

    store, run_id = simulate(
        kaggle_dataset,
        tmp_path / "home",
        **{
            "model.norm": "group",
            "privacy.mode": "client",
            "privacy.noise_multiplier": 0.3,
            "privacy.max_grad_norm": 5.0,
        },
    )
    run = store.get_run(run_id)
    assert run.status == "finished", run.error
    for r in store.rounds(run_id):
        assert r.epsilon == pytest.approx(client_level_epsilon(0.3, 1.0, r.round, 1e-5))
