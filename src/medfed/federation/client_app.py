"""The Flower ClientApp: a hospital trains and evaluates the global model on its own images."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp

from medfed.config import MedfedConfig, Strategy
from medfed.errors import FederationError, MedfedError
from medfed.federation import downlink, wire
from medfed.federation.codec import CodecSpec
from medfed.federation.hospital import (
    Hospital,
    evaluate_locally,
    fresh_model,
    hash_name,
    open_hospital,
    round_learning_rate,
    train_locally,
)
from medfed.federation.messages import error_reply
from medfed.federation.runtime import RunSettings
from medfed.federation.scaffold import (
    CONTROL_FILE,
    CONTROL_KEY,
    ControlStore,
    control_layout,
    pack_control,
    unpack_control,
)
from medfed.federation.strategies import DP_WEIGHT_KEY
from medfed.learning.device import training_device
from medfed.privacy.clipping import CLIPPING_NORM_KEY, NORM_BIT_KEY


@dataclass
class RoundInputs:
    """What a message gives a hospital: its run, the round and the received global model."""

    settings: RunSettings
    cfg: MedfedConfig
    class_names: list[str]
    server_round: int
    global_state: dict[str, torch.Tensor]
    model: torch.nn.Module  # holding the global model
    bytes_down: int
    config: ConfigRecord


def _round_inputs(msg: Message, context: Context, fixed: RunSettings | None) -> RoundInputs:
    settings = fixed or RunSettings.from_run_config(dict(context.run_config))
    cfg = settings.cfg
    threads = int(context.node_config.get("threads", cfg.training.threads or 0))
    if threads:
        torch.set_num_threads(threads)
    config = msg.content[wire.CONFIG_KEY]
    class_names = str(config["class-names"]).split("\n")
    model = fresh_model(cfg, len(class_names))
    record = msg.content[wire.ARRAYS_KEY]
    copy_file = downlink.copy_path(cfg, dict(context.node_config), settings.run_id)
    layout = wire.state_layout(model.state_dict())
    global_state = downlink.receive_global(msg.content, layout, copy_file, settings.run_id)
    model.load_state_dict(global_state)
    return RoundInputs(
        settings,
        cfg,
        class_names,
        int(config["server-round"]),
        global_state,
        model,
        wire.record_nbytes(record),
        config,
    )


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
    """Local training from the received global model; replies with the encoded update, and
    first (when the server asks) the evaluation of the received model."""
    start = time.perf_counter()
    round_in = _round_inputs(msg, context, fixed)
    cfg, server_round = round_in.cfg, round_in.server_round
    run_id, num_classes = round_in.settings.run_id, len(round_in.class_names)
    hospital = open_hospital(cfg, dict(context.node_config), run_id, round_in.class_names)
    simulate_failure(cfg, hospital.name, server_round, context)
    content = RecordDict({"info": _info(hospital, cfg)})
    if round_in.config.get(wire.EVALUATE_FIRST_KEY):
        evaluation, stats = _evaluation(hospital, round_in, 0)
        content[wire.EVALUATION_KEY] = evaluation
        if stats is not None:
            content[wire.BN_STATS_KEY] = stats
    controls, control_store = None, None
    if cfg.federated.strategy == Strategy.SCAFFOLD:
        layout = control_layout(wire.state_layout(round_in.global_state))
        server = unpack_control(msg.content.get(CONTROL_KEY), layout)
        control_store = ControlStore(hospital.state_dir / CONTROL_FILE, run_id)
        local = control_store.load(layout)
        names = [spec.name for spec in layout]
        controls = (dict(zip(names, server, strict=True)), dict(zip(names, local, strict=True)))
    update = train_locally(
        hospital,
        cfg,
        round_in.global_state,
        num_classes,
        server_round,
        run_id,
        controls,
        model=round_in.model,
    )
    if controls is not None and control_store is not None and update.control is not None:
        names = list(controls[1])
        new = [update.control[name] for name in names]
        content[CONTROL_KEY] = pack_control(
            [n - controls[1][name] for n, name in zip(new, names, strict=True)]
        )
        control_store.save(new)
    clip = round_in.config.get(CLIPPING_NORM_KEY)
    record, bytes_up, clipped = wire.pack_update(
        round_in.global_state,
        update.state,
        CodecSpec.from_config(cfg.compression),
        hospital.state_dir / "residual.npz",
        run_id,
        seed=cfg.training.seed + server_round + hash_name(hospital.name),
        clip_norm=float(clip) if clip is not None else None,
        learning_rate=round_learning_rate(cfg, server_round),
    )
    if clip is not None:
        update.metrics[NORM_BIT_KEY] = int(clipped)
    content[wire.ARRAYS_KEY] = record
    content["metrics"] = MetricRecord(
        {
            "num-examples": hospital.num_train,
            DP_WEIGHT_KEY: 1,
            **update.metrics,
            "bytes-up": bytes_up,
            "bytes-down": round_in.bytes_down,
            "seconds": time.perf_counter() - start,
            "class-counts": hospital.class_counts(num_classes),
        }
    )
    return Message(content, reply_to=msg)


def handle_evaluate(msg: Message, context: Context, fixed: RunSettings | None = None) -> Message:
    """The received global model on the hospital's local validation images."""
    round_in = _round_inputs(msg, context, fixed)
    hospital = open_hospital(
        round_in.cfg, dict(context.node_config), round_in.settings.run_id, round_in.class_names
    )
    metrics, stats = _evaluation(hospital, round_in, round_in.bytes_down)
    content = RecordDict({"metrics": metrics, "info": _info(hospital, round_in.cfg)})
    if stats is not None:
        content[wire.BN_STATS_KEY] = stats
    return Message(content, reply_to=msg)


def _info(hospital: Hospital, cfg: MedfedConfig) -> ConfigRecord:
    """Who replies, and the device (cpu, cuda, mps) it trains and evaluates on."""
    return ConfigRecord({"hospital": hospital.name, "device": training_device(cfg.training).type})


def _evaluation(
    hospital: Hospital, round_in: RoundInputs, bytes_down: int
) -> tuple[MetricRecord, ArrayRecord | None]:
    """The received model's metrics on the local validation images, and its BatchNorm
    moments on the local training images (None without BatchNorm or under FedBN)."""
    start = time.perf_counter()
    result, stats = evaluate_locally(hospital, round_in.cfg, round_in.model)
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
    if not stats:
        return metrics, None
    metrics[wire.BN_EXAMPLES_KEY] = hospital.num_train
    return metrics, wire.pack_bn_moments(stats, wire.bn_layers(round_in.global_state))


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
