"""The Flower ClientApp: a hospital trains and evaluates the global model on its own images."""

from __future__ import annotations

import time

import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from medfed.config import MedfedConfig
from medfed.errors import FederationError, MedfedError
from medfed.federation import wire
from medfed.federation.codec import CodecSpec
from medfed.federation.hospital import (
    bn_statistics,
    build_run_model,
    evaluate_locally,
    hash_name,
    open_hospital,
    round_learning_rate,
    train_locally,
)
from medfed.federation.messages import error_reply
from medfed.federation.runtime import RunSettings
from medfed.federation.strategies import DP_WEIGHT_KEY
from medfed.privacy.clipping import CLIPPING_NORM_KEY, NORM_BIT_KEY


def _round_inputs(
    msg: Message, context: Context, fixed: RunSettings | None
) -> tuple[RunSettings, MedfedConfig, list[str], int, dict[str, torch.Tensor], int]:
    settings = fixed or RunSettings.from_run_config(dict(context.run_config))
    cfg = settings.cfg
    threads = int(context.node_config.get("threads", cfg.training.threads or 0))
    if threads:
        torch.set_num_threads(threads)
    config = msg.content[wire.CONFIG_KEY]
    class_names = str(config["class-names"]).split("\n")
    server_round = int(config["server-round"])
    keys = list(build_run_model(cfg, len(class_names)).state_dict().keys())
    record = msg.content[wire.ARRAYS_KEY]
    bytes_down = wire.record_nbytes(record)
    global_state = wire.unpack_global(record, keys)
    return settings, cfg, class_names, server_round, global_state, bytes_down


def simulate_failure(cfg: MedfedConfig, hospital: str, server_round: int, context: Context) -> None:
    """Fault drills of simulated runs (``federated.simulated_failures``)."""
    if "partition-id" not in context.node_config:
        return
    for drill in cfg.federated.simulated_failures:
        target, _, mode = drill.partition(":")
        if target == f"{hospital}@{server_round}":
            if mode == "hang":
                time.sleep(cfg.federated.round_timeout + 2)
            raise FederationError(f"simulated failure in round {server_round}")


def handle_train(msg: Message, context: Context, fixed: RunSettings | None = None) -> Message:
    """Local training from the received global model; replies with the encoded update."""
    start = time.perf_counter()
    settings, cfg, class_names, server_round, global_state, bytes_down = _round_inputs(
        msg, context, fixed
    )
    hospital = open_hospital(cfg, dict(context.node_config), settings.run_id, class_names)
    simulate_failure(cfg, hospital.name, server_round, context)
    update = train_locally(
        hospital, cfg, global_state, len(class_names), server_round, settings.run_id
    )
    clip = msg.content[wire.CONFIG_KEY].get(CLIPPING_NORM_KEY)
    record, bytes_up, clipped = wire.pack_update(
        global_state,
        update.state,
        CodecSpec.from_config(cfg.compression),
        hospital.state_dir / "residual.npz",
        settings.run_id,
        seed=cfg.training.seed + server_round + hash_name(hospital.name),
        clip_norm=float(clip) if clip is not None else None,
        learning_rate=round_learning_rate(cfg, server_round),
    )
    if clip is not None:
        update.metrics[NORM_BIT_KEY] = bool(clipped)
    metrics = MetricRecord(
        {
            "num-examples": hospital.num_train,
            DP_WEIGHT_KEY: 1,
            **update.metrics,
            "bytes-up": bytes_up,
            "bytes-down": bytes_down,
            "seconds": time.perf_counter() - start,
            "class-counts": hospital.class_counts(len(class_names)),
        }
    )
    info = ConfigRecord({"hospital": hospital.name})
    return Message(
        RecordDict({wire.ARRAYS_KEY: record, "metrics": metrics, "info": info}), reply_to=msg
    )


def handle_evaluate(msg: Message, context: Context, fixed: RunSettings | None = None) -> Message:
    """The global model on the hospital's local validation images."""
    start = time.perf_counter()
    settings, cfg, class_names, _, global_state, bytes_down = _round_inputs(msg, context, fixed)
    hospital = open_hospital(cfg, dict(context.node_config), settings.run_id, class_names)
    result = evaluate_locally(hospital, cfg, global_state, len(class_names))
    stats = bn_statistics(hospital, cfg, global_state, len(class_names))
    metrics = MetricRecord(
        {
            "num-examples": int(result["num_examples"]),
            DP_WEIGHT_KEY: 1,
            "loss": float(result["loss"]),
            "accuracy": float(result["accuracy"]),
            "precision": float(result["precision"]),
            "recall": float(result["recall"]),
            "f1": float(result["f1"]),
            "auc": float(result["auc"]) if result.get("auc") is not None else -1.0,
            "confusion-matrix": [int(v) for row in result["confusion_matrix"] for v in row],
            "bytes-down": bytes_down,
            "seconds": time.perf_counter() - start,
        }
    )
    info = ConfigRecord({"hospital": hospital.name})
    content = RecordDict({"metrics": metrics, "info": info})
    if stats:
        content[wire.BN_STATS_KEY] = ArrayRecord({k: Array(v) for k, v in stats.items()})
        metrics["bn-examples"] = hospital.num_train
    return Message(content, reply_to=msg)


def replying_errors(handler, msg: Message, context: Context, fixed: RunSettings | None) -> Message:
    """A hospital's known failures (bad data, config) go back as a typed error reply."""
    try:
        return handler(msg, context, fixed)
    except MedfedError as exc:
        name = context.node_config.get("hospital")
        if name is None and "partition-id" in context.node_config:
            name = f"hospital-{context.node_config['partition-id']}"
        return error_reply(None if name is None else str(name), str(exc), msg)


def make_client_app(fixed: RunSettings | None = None) -> ClientApp:
    """A ClientApp; ``fixed`` settings (simulation) or the run config (deployment)."""
    client_app = ClientApp()

    @client_app.train()
    def _train(msg: Message, context: Context) -> Message:
        return replying_errors(handle_train, msg, context, fixed)

    @client_app.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        return replying_errors(handle_evaluate, msg, context, fixed)

    return client_app


app = make_client_app()
