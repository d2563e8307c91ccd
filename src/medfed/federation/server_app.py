"""The Flower ServerApp: drives the rounds, evaluates the global model, records everything.

The ServerApp is the single writer of a run's progress: each round it stores the global and
per-hospital metrics and publishes an event, so the dashboard and CLI only read the store.
It uses Flower's strategies for sampling and aggregation, and runs the round loop itself so it
can resume from a checkpoint, tolerate hospitals that fail or vanish, and stop on request.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.serverapp import Grid, ServerApp

from medfed.config import MedfedConfig
from medfed.data.datasets import ImageSet, load_image_set, resolve_test_path
from medfed.data.loader import ArrayLoader
from medfed.data.transforms import eval_transform
from medfed.errors import FederationError, MedfedError
from medfed.federation import wire
from medfed.federation.hospital import build_run_model
from medfed.federation.runtime import RunSettings
from medfed.federation.strategies import aggregate_metrics, build_strategy, round_epsilon
from medfed.learning.trainer import evaluate, set_seed
from medfed.privacy.dp import budget_exhausted
from medfed.store import RunStore
from medfed.store.artifacts import ArtifactStore

log = logging.getLogger("medfed.server")
NODE_WAIT_POLL_S = 1.0
HOSPITAL_PREFIX = re.compile(r"^\[([^\]]+)\] (.*)", re.DOTALL)


def stop_flag(home: Path, run_id: str) -> Path:
    """The file whose presence asks a run to stop after its current phase."""
    return home / "runs" / run_id / "STOP"


class RunStopped(Exception):
    """The coordinator asked the run to stop."""


class BudgetSpent(Exception):
    """Too few hospitals have privacy budget left for another round: the run ends early."""


@dataclass
class PhaseOutcome:
    ok: list[Message]
    failed: dict[int, str]  # node id -> reason
    bytes_down: int = 0


@dataclass
class FederatedRun:
    """One run's round loop on a Flower grid."""

    settings: RunSettings
    grid: Grid
    store: RunStore = field(init=False)
    cfg: MedfedConfig = field(init=False)

    def __post_init__(self) -> None:
        self.cfg = self.settings.cfg
        self.store = RunStore(self.settings.store_url)
        self.home = Path(self.settings.home)
        self.run_id = self.settings.run_id
        self.hospital_names: dict[int, str] = {}
        self.artifacts = ArtifactStore(self.home / "artifacts")

    # ----------------------------------------------------------------- the run
    def execute(self) -> str:
        """Run every remaining round; returns the final status, never raises for run faults."""
        try:
            self._execute()
        except RunStopped:
            self.store.set_status(self.run_id, "stopped")
            self.store.publish(self.run_id, "run_stopped", {})
            return "stopped"
        except MedfedError as exc:
            self._fail(str(exc))
            return "failed"
        except Exception as exc:  # a bug or an unexpected runtime fault: record, then report
            log.exception("run %s failed", self.run_id)
            self._fail(f"{type(exc).__name__}: {exc}")
            return "failed"
        return "finished"

    def _fail(self, reason: str) -> None:
        self.store.set_status(self.run_id, "failed", error=reason)
        self.store.publish(self.run_id, "run_failed", {"error": reason})

    def _execute(self) -> None:
        cfg, f = self.cfg, self.cfg.federated
        set_seed(cfg.training.seed)
        test_set, class_names = self._evaluation_data()
        if not cfg.data.class_names:
            self.store.set_class_names(self.run_id, class_names)
        model = build_run_model(cfg, len(class_names))
        arrays = ArrayRecord(model.state_dict())
        first_round = 1
        if self.settings.resume:
            arrays, first_round = self._resume_point(model)
        else:
            self._checkpoint(0, arrays, {})
        self.store.set_status(self.run_id, "running")
        self.store.publish(
            self.run_id,
            "run_started",
            {
                "num_rounds": f.rounds,
                "strategy": f.strategy,
                "first_round": first_round,
                "class_names": class_names,
            },
        )
        strategy = build_strategy(cfg)
        config = {"class-names": "\n".join(class_names)}
        best: dict[str, Any] = {}
        for server_round in range(first_round, f.rounds + 1):
            try:
                if client_budget_spent(cfg, server_round):
                    raise BudgetSpent(
                        f"round {server_round} would pass privacy.epsilon_budget: "
                        f"training ends with round {server_round - 1}"
                    )
                arrays, round_metrics = self._round(
                    strategy, server_round, arrays, config, model, test_set
                )
            except BudgetSpent as exc:
                self.store.publish(self.run_id, "run_note", {"message": str(exc)})
                break
            if round_metrics.get("accuracy", -1) > best.get("accuracy", -1):
                best = {"round": server_round, **round_metrics}
        done = self.store.rounds(self.run_id)
        final = done[-1].metrics if done else {}
        self.store.set_final_metrics(self.run_id, {**final, "best_round": best.get("round")})
        self.store.set_status(self.run_id, "finished")
        self.store.publish(self.run_id, "run_finished", {"final_metrics": final})

    def _evaluation_data(self) -> tuple[ImageSet | None, list[str]]:
        """The held-out test set on the platform host (if any) and the class names."""
        cfg = self.cfg
        cache = cfg.data.cache_dir or self.home / "cache"
        test_path = resolve_test_path(cfg.data)
        test_set = None
        if test_path is not None:
            test_set = load_image_set(test_path, cfg.data, cache, class_names=cfg.data.class_names)
        if cfg.data.class_names:
            return test_set, list(cfg.data.class_names)
        if test_set is not None:
            return test_set, list(test_set.class_names)
        if Path(cfg.data.path).exists():
            return None, list(load_image_set(cfg.data.path, cfg.data, cache).class_names)
        raise FederationError(
            "the server has no test set to learn the classes from: "
            "set data.class_names (e.g. [no, yes]) or data.test_path"
        )

    def _resume_point(self, model: torch.nn.Module) -> tuple[ArrayRecord, int]:
        checkpoint = self.store.latest_checkpoint(self.run_id)
        if checkpoint is None:
            self.store.delete_rounds_after(self.run_id, 0)
            return ArrayRecord(model.state_dict()), 1
        state, _ = self.artifacts.load_state_dict(Path(checkpoint.path))
        self.store.delete_rounds_after(self.run_id, checkpoint.round)
        log.info("resuming run %s after round %d", self.run_id, checkpoint.round)
        return ArrayRecord(state), checkpoint.round + 1

    # --------------------------------------------------------------- one round
    def _round(
        self,
        strategy: Any,
        server_round: int,
        arrays: ArrayRecord,
        config: dict[str, str],
        model: torch.nn.Module,
        test_set: ImageSet | None,
    ) -> tuple[ArrayRecord, dict[str, Any]]:
        f = self.cfg.federated
        self._check_stop()
        self.store.publish(self.run_id, "round_started", {"round": server_round})
        started = time.perf_counter()

        self._wait_for_nodes(f.min_available_clients)
        messages = strategy.configure_train(server_round, arrays, ConfigRecord(config), self.grid)
        train = self._send(messages, server_round, "train", arrays)
        if len(train.ok) < f.min_train_clients:
            raise FederationError(
                f"round {server_round}: {len(train.ok)} hospital(s) replied to training, "
                f"at least {f.min_train_clients} needed (federated.min_train_clients); "
                f"failures: {self._describe(train.failed)}"
            )
        spent = [m for m in train.ok if m.content["metrics"].get("budget-exhausted")]
        training = [m for m in train.ok if m not in spent]
        names = ", ".join(self.hospital_names[m.metadata.src_node_id] for m in spent)
        if spent:
            self.store.publish(
                self.run_id, "privacy_budget_spent", {"round": server_round, "hospitals": names}
            )
        if len(training) < f.min_train_clients:
            raise BudgetSpent(
                f"round {server_round}: the privacy budget (privacy.epsilon_budget) is spent at "
                f"{names}; {len(training)} hospital(s) could still train, "
                f"{f.min_train_clients} needed: training ends with round {server_round - 1}"
            )
        for msg in training:
            msg.content[wire.ARRAYS_KEY] = wire.unpack_update(msg.content[wire.ARRAYS_KEY], arrays)
        new_arrays, train_metrics = strategy.aggregate_train(server_round, training)
        if new_arrays is not None:
            arrays = new_arrays
        self._check_stop()

        evaluate_metrics = None
        evaluation = PhaseOutcome([], {})
        if f.fraction_evaluate > 0:
            messages = strategy.configure_evaluate(
                server_round, arrays, ConfigRecord(config), self.grid
            )
            evaluation = self._send(messages, server_round, "evaluate", arrays)
            if evaluation.ok:
                arrays = wire.merge_bn_statistics([m.content for m in evaluation.ok], arrays)
                evaluate_metrics = strategy.aggregate_evaluate(server_round, evaluation.ok)

        global_metrics = self._central_evaluation(model, arrays, test_set)
        duration = time.perf_counter() - started
        bytes_up = int(sum(int(m.content["metrics"]["bytes-up"]) for m in train.ok))
        self._checkpoint(server_round, arrays, global_metrics)
        failed = set(train.failed) | set(evaluation.failed)
        every_reply = aggregate_metrics([m.content for m in train.ok], "num-examples")
        epsilon = round_epsilon(self.cfg, server_round, dict(every_reply))
        self.store.record_round(
            self.run_id,
            server_round,
            metrics=global_metrics,
            duration_s=duration,
            bytes_up=bytes_up,
            bytes_down=train.bytes_down + evaluation.bytes_down,
            train_metrics=_plain(train_metrics),
            evaluate_metrics=_plain(evaluate_metrics),
            epsilon=epsilon,
            num_clients_ok=len(train.ok),
            num_clients_failed=len(failed),
        )
        self.store.publish(
            self.run_id,
            "round_finished",
            {
                "round": server_round,
                "metrics": global_metrics,
                "duration_s": duration,
                "bytes_up": bytes_up,
                "bytes_down": train.bytes_down + evaluation.bytes_down,
                "epsilon": epsilon,
            },
        )
        return arrays, global_metrics

    def _send(
        self, messages: Iterable[Message], server_round: int, phase: str, arrays: ArrayRecord
    ) -> PhaseOutcome:
        """Send one phase's messages; record each hospital's reply or failure."""
        messages = list(messages)
        bytes_down = 0
        for msg in messages:
            if wire.ARRAYS_KEY in msg.content:
                packed, nbytes = wire.pack_global(
                    msg.content[wire.ARRAYS_KEY], self.cfg.compression.downlink
                )
                msg.content[wire.ARRAYS_KEY] = packed
                bytes_down += nbytes
        sent = {msg.metadata.dst_node_id for msg in messages}
        replies = list(
            self.grid.send_and_receive(messages, timeout=self.cfg.federated.round_timeout)
        )
        ok, failed = [], {}
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                failed[node] = self._failure_reason(node, reply.error.reason or "")
            else:
                self.hospital_names[node] = str(reply.content["info"]["hospital"])
                ok.append(reply)
        replied = {r.metadata.src_node_id for r in replies}
        for node in sent - replied:
            failed[node] = (
                f"no reply within federated.round_timeout={self.cfg.federated.round_timeout:g}s"
            )
        for reply in ok:
            self._record_reply(server_round, phase, reply)
        for node, reason in failed.items():
            hospital = self.hospital_names.get(node, f"node-{node}")
            self.store.record_client_result(
                self.run_id,
                server_round,
                hospital=hospital,
                phase=phase,
                status="failed",
                error=reason[:2000],
            )
            self.store.publish(
                self.run_id,
                "client_failed",
                {"round": server_round, "hospital": hospital, "phase": phase, "error": reason},
            )
        return PhaseOutcome(ok, failed, bytes_down)

    def _record_reply(self, server_round: int, phase: str, reply: Message) -> None:
        metrics = _plain(reply.content["metrics"])
        hospital = self.hospital_names[reply.metadata.src_node_id]
        self.store.record_client_result(
            self.run_id,
            server_round,
            hospital=hospital,
            phase=phase,
            status="ok",
            num_examples=int(metrics.get("num-examples", 0)),
            metrics=metrics,
            duration_s=float(metrics.get("seconds", 0.0)),
            bytes_up=int(metrics.get("bytes-up", 0)),
            bytes_down=int(metrics.get("bytes-down", 0)),
        )
        self.store.touch_hospital(hospital)
        self.store.publish(
            self.run_id,
            "client_replied",
            {
                "round": server_round,
                "hospital": hospital,
                "phase": phase,
                "num_examples": int(metrics.get("num-examples", 0)),
                "metrics": metrics,
            },
        )

    def _central_evaluation(
        self, model: torch.nn.Module, arrays: ArrayRecord, test_set: ImageSet | None
    ) -> dict[str, Any]:
        if test_set is None:
            return {}
        model.load_state_dict(arrays.to_torch_state_dict())
        loader = ArrayLoader(
            test_set.images,
            test_set.labels,
            batch_size=128,
            transform=eval_transform(self.cfg.data),
        )
        return _plain(evaluate(model, loader))

    def _checkpoint(self, server_round: int, arrays: ArrayRecord, metrics: dict) -> None:
        """Encrypted global weights: round 0 (the initial model), every few rounds, the last."""
        f = self.cfg.federated
        if server_round and server_round % f.checkpoint_every and server_round != f.rounds:
            return
        path = self.artifacts.save_state_dict(
            f"{self.run_id}/round-{server_round:04d}",
            arrays.to_torch_state_dict(),
            {"run_id": self.run_id, "round": server_round, "config": self.settings.config},
        )
        self.store.record_checkpoint(
            self.run_id,
            server_round,
            str(path),
            metric_name="accuracy",
            metric_value=metrics.get("accuracy"),
            size_bytes=path.stat().st_size,
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

    def _failure_reason(self, node: int, reason: str) -> str:
        """The one line that matters of a hospital's error; learns its name when given."""
        named = HOSPITAL_PREFIX.match(reason)
        if named:
            self.hospital_names.setdefault(node, named.group(1))
            return named.group(2).strip()
        lines = [line.strip() for line in reason.splitlines() if line.strip()]
        for line in reversed(lines):
            if "Error:" in line or "Exception:" in line:
                return line.split("Message:", 1)[-1].strip()
        return lines[-1] if lines else "the hospital reported an error without a reason"

    def _describe(self, failed: dict[int, str]) -> str:
        if not failed:
            return "none"
        return "; ".join(
            f"{self.hospital_names.get(n, f'node-{n}')}: {reason.splitlines()[0][:200]}"
            for n, reason in failed.items()
        )


def client_budget_spent(cfg: MedfedConfig, server_round: int) -> bool:
    """Client-level DP: would this round take the run past privacy.epsilon_budget?"""
    if cfg.privacy.mode != "client" or cfg.privacy.epsilon_budget is None:
        return False
    return budget_exhausted(round_epsilon(cfg, server_round, {}) or 0.0, cfg.privacy)


def _plain(values: Any) -> dict[str, Any]:
    """JSON-able copy of a MetricRecord or metrics dict; a flat confusion matrix made square."""
    if values is None:
        return {}
    out = {}
    for key, value in dict(values).items():
        if isinstance(value, np.generic):
            value = value.item()
        out[key] = list(value) if isinstance(value, tuple | list) else value
    if "confusion-matrix" in out:
        out["confusion_matrix"] = _square(out.pop("confusion-matrix"))
    return out


def _square(flat: list[int]) -> list[list[int]]:
    n = int(round(len(flat) ** 0.5))
    return [list(flat[i * n : (i + 1) * n]) for i in range(n)]


def make_server_app(fixed: RunSettings | None = None) -> ServerApp:
    """A ServerApp; ``fixed`` settings (simulation) or the run config (deployment)."""
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        settings = fixed or RunSettings.from_run_config(dict(context.run_config))
        status = FederatedRun(settings, grid).execute()
        context.state["medfed"] = ConfigRecord({"status": status})

    return server_app


app = make_server_app()
