"""The ServerApp's round loop in this process, its hospitals answering through the ClientApp's
own handlers: a round's record runs while the hospitals train the next round."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Message

from medfed.config import load_config
from medfed.federation.local_grid import LocalGrid, inline_run
from medfed.federation.runner import absolute_paths, create_run
from medfed.federation.runtime import RunSettings
from medfed.federation.server_app import FederatedRun
from medfed.store import RunStatus, RunStore
from simulated import tiny_overrides

pytestmark = pytest.mark.slow


class InProcessGrid(LocalGrid):
    """Hospitals answering in this process; notes when each round's training messages left."""

    def __init__(self, settings: RunSettings, hospitals: int) -> None:
        super().__init__(settings, hospitals)
        self.train_sent: dict[int, float] = {}

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        messages = list(messages)
        for msg in messages:
            if msg.metadata.message_type == "train":
                server_round = int(msg.content["config"]["server-round"])
                self.train_sent.setdefault(server_round, time.time())
        return super().push_messages(messages)


def federated_run(data: Path, home: Path, rounds: int) -> tuple[FederatedRun, InProcessGrid]:
    cfg = absolute_paths(
        load_config(None, tiny_overrides(data, home, **{"federated.rounds": rounds}))
    )
    home.mkdir(parents=True)
    store = RunStore(cfg.database_url)
    run_id = create_run(cfg, store)
    grid = InProcessGrid(RunSettings(run_id, cfg.to_dict(), store.url, str(cfg.home)), 2)
    return inline_run(grid), grid


def test_a_rounds_record_runs_while_the_next_round_trains(
    kaggle_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, grid = federated_run(kaggle_dataset, tmp_path / "home", rounds=4)
    evaluated: dict[int, tuple[float, float]] = {}  # round: central evaluation's start, end
    exactly: dict[int, bool] = {}  # round: evaluated in float32
    niceness: dict[str, int] = {}  # thread: its CPU niceness while recording
    central = FederatedRun._central_evaluation
    recording = FederatedRun._record

    def slow_central(self: FederatedRun, arrays: Any, exact: bool) -> dict[str, Any]:
        start = time.time()
        time.sleep(1.0)
        evaluated[self.evaluating] = (start, time.time())
        exactly[self.evaluating] = exact
        return central(self, arrays, exact)

    def noting_round(self: FederatedRun, state: Any, evaluation: Any) -> None:
        self.evaluating = state.round
        thread = threading.current_thread().name
        niceness[thread] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert threading.current_thread().name.startswith("medfed-record") or (state.round == 4), (
            f"round {state.round} recorded on the round loop's thread"
        )
        recording(self, state, evaluation)

    monkeypatch.setattr(FederatedRun, "_central_evaluation", slow_central)
    monkeypatch.setattr(FederatedRun, "_record", noting_round)

    loop_niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert run.execute() == RunStatus.FINISHED
    # records beside a round yield the CPU to it; the last, after every round, does not
    assert niceness.pop(threading.current_thread().name) == loop_niceness
    assert set(niceness.values()) == {min(19, loop_niceness + 10)}, niceness
    rounds = run.store.rounds(run.run_id)
    assert [r.round for r in rounds] == [1, 2, 3, 4]
    assert [c.round for c in run.store.checkpoints(run.run_id)] == [0, 1, 2, 3, 4]
    # rounds 1 and 2 are recorded after round 2's (3's) replies, while round 3 (4) trains
    for server_round in (1, 2):
        start, end = evaluated[server_round]
        assert grid.train_sent[server_round + 2] < end, (server_round, grid.train_sent, start)
    finished = [e.payload["round"] for e in run.store.events(run.run_id, type="round_finished")]
    assert finished == [1, 2, 3, 4]
    assert exactly == {1: False, 2: False, 3: False, 4: True}  # the final metrics in float32
    # a round lasts from its start to the next one's, whenever its record ends
    for r in rounds[:3]:
        pace = grid.train_sent[r.round + 1] - grid.train_sent[r.round]
        assert r.duration_s == pytest.approx(pace, abs=0.25), (r.round, r.duration_s, pace)


def test_a_round_that_cannot_be_recorded_fails_the_run_with_the_reason(
    kaggle_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, _ = federated_run(kaggle_dataset, tmp_path / "home", rounds=3)
    checkpoint = run.recorder.checkpoint

    def failing(server_round: int, *args: Any, **kwargs: Any) -> Any:
        if server_round == 1:
            raise OSError("No space left on device")
        return checkpoint(server_round, *args, **kwargs)

    monkeypatch.setattr(run.recorder, "checkpoint", failing)

    assert run.execute() == RunStatus.FAILED
    stored = run.store.get_run(run.run_id)
    assert "No space left on device" in (stored.error or "")
    assert run.store.rounds(run.run_id) == []  # round 1's record never finished
