"""The Flower ServerApp: drives the rounds, evaluates the global model, records everything.

The round loop has the shape of Flower's ``Strategy.start()`` — a train phase, an evaluate
phase, then a record step — and uses Flower's strategies for sampling and aggregation. It runs
the loop itself so it can resume from a checkpoint, check every reply before a strategy sees
it, tolerate hospitals that fail or vanish, and stop on request. The :class:`RunRecorder` is
the single writer of the run's progress.

A round's record (the central evaluation, the checkpoint, the round's row) runs on a thread of
its own while the hospitals train the next round: off the round's critical path. Records are
written one at a time, in round order, and a round counts as finished (and resumable) only
once its checkpoint is written, as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
from flwr.serverapp import Grid, ServerApp

from medfed.config import MedfedConfig, run_definition
from medfed.errors import FederationError, MedfedError
from medfed.federation import wire
from medfed.federation.blobs import PlatformBlobs
from medfed.federation.downlink import DownlinkSender
from medfed.federation.flower_pulls import quicken_pulls
from medfed.federation.hospital import build_run_model
from medfed.federation.label_skew import single_class_note
from medfed.federation.phases import (
    Evaluation,
    HospitalNames,
    PhaseResult,
    exchange,
    sort_replies,
    split_evaluations,
)
from medfed.federation.platform_eval import CentralEvaluation, evaluation_data
from medfed.federation.recorder import RoundSummary, RunRecorder, plain
from medfed.federation.replies import ReplyLimits, check_evaluate_reply, check_train_reply
from medfed.federation.round_state import BudgetSpent, RoundState, RunStopped
from medfed.federation.run_paths import stop_flag
from medfed.federation.runtime import RunSettings
from medfed.federation.strategies import aggregate_metrics, build_strategy, round_epsilon
from medfed.learning.trainer import set_seed
from medfed.privacy.dp import budget_exhausted
from medfed.store import Metric, Phase, RunStatus, RunStore
from medfed.store.artifacts import ArtifactStore

log = logging.getLogger("medfed.server")
NODE_WAIT_POLL_S = 0.5
# A round's record (the central evaluation, the checkpoint) runs beside the next round at this
# much lower CPU priority: the round's own work (packing, checking, averaging, and the hospitals
# when they share the machine) goes first, the record takes the cores left.
RECORD_NICENESS = 10


@dataclass
class FederatedRun:
    """One run's round loop on a Flower grid."""

    settings: RunSettings
    grid: Grid
    cfg: MedfedConfig = field(init=False)

    def __post_init__(self) -> None:
        self.cfg = self.settings.cfg
        self.home = Path(self.settings.home)
        self.run_id = self.settings.run_id
        self.store = RunStore(self.settings.store_url)
        self.recorder = RunRecorder(self.store, self.run_id, ArtifactStore(self.home / "artifacts"))
        self.names = HospitalNames(self.store, self.settings.deployed)
        self.downlink = DownlinkSender(self.cfg.compression)  # what each hospital holds
        self.recorder_thread = ThreadPoolExecutor(
            1, thread_name_prefix="medfed-record", initializer=lower_thread_priority
        )
        self.recording: Future[None] | None = None  # the round being recorded, if any

    # ----------------------------------------------------------------- the run
    def execute(self) -> RunStatus:
        """Run every remaining round; returns the final status, never raises for run faults."""
        try:
            with self.recorder_thread:
                try:
                    self._execute()
                finally:
                    self._settle_record(raising=False)
        except RunStopped:
            self.recorder.stopped()
            return RunStatus.STOPPED
        except MedfedError as exc:
            self.recorder.failed(str(exc))
            return RunStatus.FAILED
        except Exception as exc:  # a bug or an unexpected runtime fault: record, then report
            log.exception("run %s failed", self.run_id)
            self.recorder.failed(f"{type(exc).__name__}: {exc}")
            return RunStatus.FAILED
        return RunStatus.FINISHED

    def _execute(self) -> None:
        cfg, f = self.cfg, self.cfg.federated
        set_seed(cfg.training.seed)
        test_set, class_names = evaluation_data(cfg, self.home)
        if not cfg.data.class_names:
            self.store.set_class_names(self.run_id, class_names)
        self.model = build_run_model(cfg, len(class_names))
        self.central = CentralEvaluation(cfg, self.model, test_set)
        self.limits = ReplyLimits.from_config(cfg, len(class_names))
        arrays, first_round = self._starting_point()
        # Deployed: payloads of 1 MiB and more travel beside Flower's messages.
        self.blobs: PlatformBlobs | None = None
        if self.settings.deployed:
            max_bytes = wire.max_payload_size(wire.record_layout(arrays))
            self.blobs = PlatformBlobs(self.home, self.store, self.run_id, max_bytes)
        self.recorder.started(f.rounds, f.strategy, first_round, class_names)
        strategy = build_strategy(cfg)
        self.config = {"class-names": "\n".join(class_names)}
        self.labels_checked: set[str] = set()  # hospitals whose class counts were looked at
        self.best: dict[str, Any] = {}
        previous: RoundState | None = None
        for server_round in range(first_round, f.rounds + 1):
            try:
                previous = self._round(strategy, RoundState(server_round, arrays), previous)
            except BudgetSpent as exc:
                self.recorder.note(str(exc))
                break
            arrays = previous.arrays
        self._settle_record()
        if previous is not None and not previous.recorded:
            previous.last = True
            self._record(previous, self._evaluate_phase(strategy, previous))
        try:  # calibration, operating points and heat maps of the final model, stored once
            from medfed.reports.clinical import record_final_evaluation

            artifacts, model = self.recorder.artifacts, self.model
            test_set = self.central.test_set
            record_final_evaluation(self.store, artifacts, self.run_id, cfg, model, test_set)
        except Exception:  # explaining the model never fails the run
            log.exception("run %s: the final model could not be explained", self.run_id)
        self.recorder.finished(self.best.get("round"))

    def _starting_point(self) -> tuple[ArrayRecord, int]:
        """The initial model (checkpointed as round 0), or the last checkpoint on resume."""
        if self.settings.resume:
            state, done = self.recorder.resume_point()
            if state is not None:
                log.info("resuming run %s after round %d", self.run_id, done)
                return ArrayRecord(state), done + 1
        arrays = ArrayRecord(self.model.state_dict())
        self._checkpoint(0, arrays, {})
        return arrays, 1

    # --------------------------------------------------------------- one round
    def _round(self, strategy: Any, state: RoundState, previous: RoundState | None) -> RoundState:
        """Train ``state.round``; its messages also bring back the evaluation of ``previous``'s
        model, which is then recorded: one phase a round."""
        self._check_stop()
        if client_budget_spent(self.cfg, state.round):
            raise BudgetSpent(
                f"round {state.round} would pass privacy.epsilon_budget: "
                f"training ends with round {state.round - 1}"
            )
        self.recorder.round_started(state.round)
        self._wait_for_nodes(self.cfg.federated.min_available_clients)
        evaluate_first = previous is not None and self.cfg.federated.fraction_evaluate > 0
        evaluation = self._train_phase(strategy, state, evaluate_first)
        if previous is not None:
            previous.ended = state.started
            self._settle_record()
            self.recording = self.recorder_thread.submit(self._record, previous, evaluation)
        self._aggregate(strategy, state)
        return state

    def _settle_record(self, raising: bool = True) -> None:
        """Wait for the round being recorded; its failure is the run's (``raising``), or is
        only logged when the run already ends on another failure."""
        recording, self.recording = self.recording, None
        if recording is None:
            return
        try:
            recording.result()
        except Exception:
            if raising:
                raise
            log.exception("run %s: a round could not be recorded", self.run_id)

    def _train_phase(self, strategy: Any, state: RoundState, evaluate_first: bool) -> Evaluation:
        f = self.cfg.federated
        config = ConfigRecord({**self.config, wire.EVALUATE_FIRST_KEY: int(evaluate_first)})
        messages = strategy.configure_train(state.round, state.arrays, config, self.grid)
        global_arrays = state.arrays
        state.train = self._phase(
            messages,
            state,
            lambda content: check_train_reply(content, global_arrays, self.limits, evaluate_first),
        )
        for reply in state.train.replies:
            hospital = state.train.hospitals[reply.metadata.src_node_id]
            self.recorder.replied(state.round, Phase.TRAIN, hospital, reply.content)
        for failure in state.train.failures:
            self.recorder.failed_hospital(state.round, Phase.TRAIN, failure)
        self._note_single_class_hospitals(state)
        ok = state.train.replies
        if len(ok) < f.min_train_clients:
            failures = "; ".join(f"{x.hospital}: {x.reason[:200]}" for x in state.train.failures)
            raise FederationError(
                f"round {state.round}: {len(ok)} hospital(s) replied to training, "
                f"at least {f.min_train_clients} needed (federated.min_train_clients); "
                f"failures: {failures or 'none'}"
            )
        return split_evaluations(state.train) if evaluate_first else Evaluation()

    def _note_single_class_hospitals(self, state: RoundState) -> None:
        """A run note, once per hospital, when its training images are nearly one class (its
        class counts, in every reply, do not change during a run: each is looked at once)."""
        counts = {}
        for reply in state.train.replies:
            hospital = state.train.hospitals[reply.metadata.src_node_id]
            if hospital not in self.labels_checked:
                counts[hospital] = [int(c) for c in reply.content["metrics"]["class-counts"]]
        self.labels_checked.update(counts)
        note = single_class_note(counts, self.config["class-names"].split("\n"))
        if note:
            self.recorder.note(f"round {state.round}: {note}")

    def _aggregate(self, strategy: Any, state: RoundState) -> None:
        """The new global model from the hospitals that trained (not those whose privacy
        budget is spent)."""
        f = self.cfg.federated
        ok = state.train.replies
        spent = [m for m in ok if m.content["metrics"].get("budget-exhausted")]
        training = [m for m in ok if m not in spent]
        if spent:
            names = [state.train.hospitals[m.metadata.src_node_id] for m in spent]
            self.recorder.budget_spent(state.round, names)
            if len(training) < f.min_train_clients:
                raise BudgetSpent(
                    f"round {state.round}: the privacy budget (privacy.epsilon_budget) is spent "
                    f"at {', '.join(names)}; {len(training)} hospital(s) could still train, "
                    f"{f.min_train_clients} needed: training ends with round {state.round - 1}"
                )
        arrays, state.train_metrics = strategy.aggregate_train(state.round, training)
        if arrays is not None:
            state.arrays = wire.with_dtypes_of(arrays, state.arrays)

    def _evaluate_phase(self, strategy: Any, state: RoundState) -> Evaluation:
        """The hospitals' evaluation of the last round's model, in a phase of its own."""
        if self.cfg.federated.fraction_evaluate <= 0:
            return Evaluation()
        config = ConfigRecord(self.config)
        messages = strategy.configure_evaluate(state.round, state.arrays, config, self.grid)
        global_arrays = state.arrays
        result = self._phase(
            messages,
            state,
            lambda content: check_evaluate_reply(content, global_arrays, self.limits),
        )
        return Evaluation(
            [(result.hospitals[m.metadata.src_node_id], m.content) for m in result.replies],
            result.failures,
        )

    def _phase(self, messages: Any, state: RoundState, check: Any) -> PhaseResult:
        """Send one phase's messages, the global model packed for the downlink (a full copy,
        or the change since the copy each hospital holds); the checked replies and the
        hospitals that failed."""
        messages = list(messages)
        state.bytes_down += self.downlink.pack(messages, state.round)
        if self.blobs is not None:
            self.blobs.offload(messages)
        timeout = self.cfg.federated.round_timeout
        try:
            replies, silent = exchange(self.grid, messages, timeout, self._check_stop)
        finally:
            if self.blobs is not None:
                self.blobs.clear_sent()
        self.downlink.settle(replies)  # a reply confirms the copy sent; a failure forgets it
        fetch = None if self.blobs is None else self.blobs.fetch
        return sort_replies(replies, silent, self.names, check, timeout, fetch)

    def _record(self, state: RoundState, evaluation: Evaluation) -> None:
        """The hospitals' evaluation, the central evaluation, the checkpoint and the round's
        record, once the round's model has been evaluated."""
        for hospital, content in evaluation.replies:
            self.recorder.replied(state.round, Phase.EVALUATE, hospital, content)
        for failure in evaluation.failures:
            self.recorder.failed_hospital(state.round, Phase.EVALUATE, failure)
        contents = [content for _, content in evaluation.replies]
        evaluate_metrics = None
        if contents:
            max_examples = self.limits.max_examples
            state.arrays = wire.merge_bn_statistics(contents, state.arrays, max_examples)
            evaluate_metrics = aggregate_metrics(contents, "num-examples")
        metrics = self._central_evaluation(state.arrays, exact=state.last)
        train_contents: list[RecordDict] = [m.content for m in state.train.replies]
        self._checkpoint(state.round, state.arrays, metrics)
        failed = {x.node_id for x in state.train.failures + evaluation.failures}
        self.recorder.round_finished(
            RoundSummary(
                round=state.round,
                metrics=metrics,
                duration_s=state.duration_s(),
                bytes_up=sum(int(c["metrics"]["bytes-up"]) for c in train_contents),
                bytes_down=state.bytes_down,
                train_metrics=plain(state.train_metrics),
                evaluate_metrics=plain(evaluate_metrics),
                epsilon=round_epsilon(
                    self.cfg, state.round, dict(aggregate_metrics(train_contents, "num-examples"))
                ),
                num_ok=len(state.train.replies),
                num_failed=len(failed),
            )
        )
        state.recorded = True
        if metrics.get(Metric.ACCURACY, -1) > self.best.get(Metric.ACCURACY, -1):
            self.best = {"round": state.round, **metrics}

    def _central_evaluation(self, arrays: ArrayRecord, exact: bool) -> dict[str, Any]:
        return self.central(arrays, exact)

    def _checkpoint(self, server_round: int, arrays: ArrayRecord, metrics: dict) -> None:
        """Encrypted global weights: round 0 (the initial model), every few rounds, the last."""
        f = self.cfg.federated
        if server_round and server_round % f.checkpoint_every and server_round != f.rounds:
            return
        self.recorder.checkpoint(
            server_round,
            arrays.to_torch_state_dict(),
            run_definition(self.settings.config),
            metrics.get(Metric.ACCURACY),
        )

    def _wait_for_nodes(self, minimum: int) -> None:
        deadline = time.monotonic() + self.cfg.federated.round_timeout
        while len(list(self.grid.get_node_ids())) < minimum:
            if time.monotonic() > deadline:
                connected = len(list(self.grid.get_node_ids()))
                raise FederationError(
                    f"only {connected} hospital(s) connected after "
                    f"{self.cfg.federated.round_timeout:g}s, {minimum} needed "
                    "(federated.min_available_clients): start more `medfed client`s"
                )
            self._check_stop()
            time.sleep(NODE_WAIT_POLL_S)

    def _check_stop(self) -> None:
        if stop_flag(self.home, self.run_id).exists():
            raise RunStopped()


def lower_thread_priority(by: int = RECORD_NICENESS) -> None:
    """Lower the calling thread's CPU priority (Linux schedules each thread on its own;
    elsewhere, or when not allowed, nothing changes)."""
    with contextlib.suppress(OSError, AttributeError):
        thread = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, niceness + by))


def client_budget_spent(cfg: MedfedConfig, server_round: int) -> bool:
    """Client-level DP: would this round take the run past privacy.epsilon_budget?"""
    if cfg.privacy.mode != "client" or cfg.privacy.epsilon_budget is None:
        return False
    return budget_exhausted(round_epsilon(cfg, server_round, {}) or 0.0, cfg.privacy)


def make_server_app(fixed: RunSettings | None = None) -> ServerApp:
    """A ServerApp; ``fixed`` settings (simulation) or the run config (deployment)."""
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        if fixed is None:  # deployed: replies come through the SuperLink
            from flwr.superlink.grid import http_grid

            quicken_pulls(http_grid, "pull_objects")
        settings = fixed or RunSettings.from_run_config(dict(context.run_config))
        status = FederatedRun(settings, grid).execute()
        context.state["medfed"] = ConfigRecord({"status": status.value})

    return server_app


app = make_server_app()
