"""Seconds per round of a medfed simulated run against a minimal plain Flower app doing the same.

Run: ``.venv/bin/python bench/fl_overhead.py [--rounds 3] [--repeats 1]`` (make the data first
with ``.venv/bin/medfed data demo data/demo``).

Both paths train the same model from the same seed on the same hospitals' images (same partition
scheme and seed, same local train/validation split, ``ArrayLoader`` with the same transforms,
``trainer.train``/``trainer.evaluate``, Adam) for the same rounds on Flower's simulation engine
with the same backend config (one CPU and one torch thread per simulated hospital):

- medfed: ``run_simulated`` with compression off and medfed's default ``fraction_evaluate``;
- anchor: a ClientApp with ``@app.train()``/``@app.evaluate()`` returning
  ``ArrayRecord(model.state_dict())`` + ``MetricRecord``, and a ServerApp running Flower's
  ``FedAvg.start(..., evaluate_fn=central test evaluation)``.

A round's time is the wall time between the ends of consecutive rounds, each round ending with
the central evaluation of the new global model on the test set (medfed: its ``round_finished``
event, after the checkpoint and store writes; the first round starts at ``run_started``;
anchor: the timestamp at the end of ``evaluate_fn``; the first round starts when the initial
evaluation ends). Process, Ray and actor start-up before the first round are excluded from both.
The ratio compares whole runs, from the first round's start to the last round's end (both
start the hospitals' Ray actors in their first round): medfed records round r when round
r+1's training replies bring the hospitals' evaluation of its model, so its round ends fall one
training later than the anchor's and per-round figures do not compare. medfed's own
``duration_s`` (from the start of a round to the next round's start) is shown too. medfed does
more per round than the anchor (update encoding, a BatchNorm statistics pass at each hospital,
per-hospital store writes, events, an encrypted checkpoint): the figures include all of it.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from rich.console import Console
from rich.table import Table

from _common import add_run_flags, check_data, quiet_logs, run_config, simulate_run, warm_cache
from medfed.config import MedfedConfig
from medfed.data.datasets import ImageSet, load_image_set, resolve_test_path
from medfed.data.loader import ArrayLoader
from medfed.data.partition import partition_indices
from medfed.data.transforms import eval_transform, train_transform
from medfed.federation.hospital import split_local
from medfed.federation.runtime import quiet_flower_env
from medfed.learning.trainer import evaluate, make_optimizer, set_seed, train
from medfed.models import build_model

TARGET_RATIO = 1.10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_flags(parser, rounds=3)
    parser.add_argument("--partition", default="iid", choices=["iid", "dirichlet"])
    parser.add_argument("--alpha", type=float, default=0.5, help="for --partition dirichlet")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of each path, order alternating"
    )
    return parser.parse_args(argv)


def backend_config() -> dict:
    """The simulation backend settings of ``medfed.federation.simulation``: 1 CPU per client."""
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": os.cpu_count() or 1,
            "num_gpus": 0,
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            "log_to_driver": True,
        },
    }


def fresh_model(cfg: MedfedConfig, num_classes: int) -> torch.nn.Module:
    return build_model(cfg.model.name, cfg.data.channels, num_classes, norm=cfg.model.norm)


def local_rows(cfg: MedfedConfig, data: ImageSet, context: Context) -> tuple[np.ndarray, ...]:
    """This simulated hospital's local training and validation rows (as medfed splits them)."""
    p = cfg.partition
    parts = partition_indices(
        data.labels,
        int(context.node_config["num-partitions"]),
        p.scheme,
        alpha=p.alpha,
        classes_per_client=p.classes_per_client,
        seed=p.seed,
    )
    return split_local(parts[int(context.node_config["partition-id"])], cfg.training.seed)


def anchor_client_app(cfg: MedfedConfig, class_names: list[str]) -> ClientApp:
    """The plain Flower ClientApp: load the partition, train or evaluate, reply."""
    app = ClientApp()

    def received_model(msg: Message) -> torch.nn.Module:
        torch.set_num_threads(1)
        model = fresh_model(cfg, len(class_names))
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        return model

    def local_data(context: Context) -> tuple[ImageSet, np.ndarray, np.ndarray]:
        data = load_image_set(cfg.data.path, cfg.data, cfg.cache_dir, class_names=class_names)
        return data, *local_rows(cfg, data, context)

    @app.train()
    def _train(msg: Message, context: Context) -> Message:
        start = time.perf_counter()
        model = received_model(msg)
        data, train_rows, _ = local_data(context)
        server_round = int(msg.content["config"]["server-round"])
        seed = cfg.training.seed + 1000 * server_round + int(context.node_config["partition-id"])
        set_seed(seed)
        loader = ArrayLoader(
            data.images,
            data.labels,
            indices=train_rows,
            batch_size=cfg.training.batch_size,
            shuffle=True,
            seed=seed,
            transform=train_transform(cfg.data, seed),
        )
        optimizer = make_optimizer(model, cfg.training)
        result = train(model, loader, cfg.federated.local_epochs, optimizer)
        metrics = MetricRecord(
            {
                "num-examples": len(train_rows),
                "train_loss": result.loss,
                "seconds": time.perf_counter() - start,
            }
        )
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
        return Message(content, reply_to=msg)

    @app.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        start = time.perf_counter()
        model = received_model(msg)
        data, _, val_rows = local_data(context)
        loader = ArrayLoader(
            data.images,
            data.labels,
            indices=val_rows,
            batch_size=max(cfg.training.batch_size, 64),
            transform=eval_transform(cfg.data),
        )
        result = evaluate(model, loader)
        metrics = MetricRecord(
            {
                "num-examples": len(val_rows),
                "accuracy": float(result["accuracy"]),
                "loss": float(result["loss"]),
                "seconds": time.perf_counter() - start,
            }
        )
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app


def anchor_server_app(
    cfg: MedfedConfig,
    class_names: list[str],
    round_ends: dict[int, tuple[float, float]],
    hospital_seconds: list[tuple[float, float]],
) -> ServerApp:
    """The plain Flower ServerApp: FedAvg with a central test evaluation after each round.

    ``round_ends[r]`` receives (perf_counter at the end of round r's evaluation, accuracy);
    ``hospital_seconds`` each round's mean seconds of a hospital's train and evaluate replies.
    """
    app = ServerApp()
    f = cfg.federated

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        test_path = resolve_test_path(cfg.data)
        test = load_image_set(test_path, cfg.data, cfg.cache_dir, class_names=class_names)
        loader = ArrayLoader(
            test.images, test.labels, batch_size=128, transform=eval_transform(cfg.data)
        )
        set_seed(cfg.training.seed)
        model = fresh_model(cfg, len(class_names))

        def central_evaluation(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            model.load_state_dict(arrays.to_torch_state_dict())
            result = evaluate(model, loader)
            round_ends[server_round] = (time.perf_counter(), float(result["accuracy"]))
            return MetricRecord({"accuracy": float(result["accuracy"]), "loss": result["loss"]})

        strategy = FedAvg(
            fraction_train=f.fraction_train,
            fraction_evaluate=f.fraction_evaluate,
            min_train_nodes=f.min_train_clients,
            min_evaluate_nodes=f.min_evaluate_clients,
            min_available_nodes=f.min_available_clients,
        )
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=f.rounds,
            evaluate_fn=central_evaluation,
        )
        for server_round in range(1, f.rounds + 1):
            train_phase = result.train_metrics_clientapp[server_round]
            evaluate_phase = result.evaluate_metrics_clientapp.get(server_round, {})
            hospital_seconds.append(
                (float(train_phase["seconds"]), float(evaluate_phase.get("seconds", 0.0)))
            )

    return app


@dataclass
class Timing:
    """Seconds of each round (between consecutive round ends), the final test accuracy, and
    each round's mean seconds of one hospital's train and evaluate replies (handler time)."""

    seconds: list[float]
    accuracy: float
    hospital_seconds: list[tuple[float, float]]
    duration_s: list[float] | None = None


def time_anchor(cfg: MedfedConfig, class_names: list[str]) -> Timing:
    quiet_flower_env(cfg.home)
    round_ends: dict[int, tuple[float, float]] = {}
    hospital_seconds: list[tuple[float, float]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_simulation(
            server_app=anchor_server_app(cfg, class_names, round_ends, hospital_seconds),
            client_app=anchor_client_app(cfg, class_names),
            num_supernodes=cfg.federated.num_clients,
            backend_config=backend_config(),
        )
    rounds = cfg.federated.rounds
    if sorted(round_ends) != list(range(rounds + 1)):
        raise SystemExit(f"anchor run ended after rounds {sorted(round_ends)}, not {rounds}")
    ends = [round_ends[r][0] for r in range(rounds + 1)]
    return Timing(list(np.diff(ends)), round_ends[rounds][1], hospital_seconds)


def time_medfed(cfg: MedfedConfig) -> Timing:
    store, run_id = simulate_run(cfg)
    events = store.events(run_id)
    marks = [e.created_at for e in events if e.type in ("run_started", "round_finished")]
    seconds = [(b - a).total_seconds() for a, b in zip(marks, marks[1:], strict=False)]
    rounds = store.rounds(run_id)
    hospital_seconds = [
        (float(r.train_metrics["seconds"]), float((r.evaluate_metrics or {}).get("seconds", 0.0)))
        for r in rounds
    ]
    accuracy = float(rounds[-1].metrics["accuracy"])
    return Timing(seconds, accuracy, hospital_seconds, [r.duration_s for r in rounds])


def report(console: Console, medfed: list[Timing], anchor: list[Timing]) -> None:
    table = Table(title="seconds per round (between consecutive round ends)")
    headers = (
        "run",
        "round",
        "medfed s",
        "medfed duration_s",
        "anchor s",
        "medfed/anchor",
        "hospital train s medfed | anchor",
        "hospital evaluate s medfed | anchor",
    )
    for header in headers:
        table.add_column(header, justify="right")
    for run, (ours, theirs) in enumerate(zip(medfed, anchor, strict=True), start=1):
        for index, (a, b) in enumerate(zip(ours.seconds, theirs.seconds, strict=True)):
            (our_train, our_eval), (their_train, their_eval) = (
                ours.hospital_seconds[index],
                theirs.hospital_seconds[index],
            )
            table.add_row(
                str(run),
                f"{index + 1}" + (" (actor start)" if index == 0 else ""),
                f"{a:.1f}",
                f"{ours.duration_s[index]:.1f}",
                f"{b:.1f}",
                f"{a / b:.3f}",
                f"{our_train:.1f} | {their_train:.1f}",
                f"{our_eval:.1f} | {their_eval:.1f}",
            )
    console.print(table)
    ours = float(np.mean([sum(t.seconds) for t in medfed]))
    theirs = float(np.mean([sum(t.seconds) for t in anchor]))
    ratio = ours / theirs
    verdict = "[green]meets[/]" if ratio <= TARGET_RATIO else "[red]misses[/]"
    summary = Table(title="whole run, first round's start to last round's end (mean over runs)")
    for header in ("path", "seconds", "final test accuracy"):
        summary.add_column(header, justify="right")
    summary.add_row("medfed", f"{ours:.1f}", ", ".join(f"{t.accuracy:.4f}" for t in medfed))
    summary.add_row("anchor", f"{theirs:.1f}", ", ".join(f"{t.accuracy:.4f}" for t in anchor))
    console.print(summary)
    console.print(f"medfed/anchor = {ratio:.3f} ({verdict} the <= {TARGET_RATIO} target)")
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1):
        console.print(
            f"[yellow]load average {load:.1f} on {os.cpu_count()} CPUs: other processes "
            "compete, so per-round figures are noisy (use --repeats)[/]"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_data(args.data)
    if args.rounds < 2:
        raise SystemExit("--rounds must be at least 2: the first round also starts the actors")
    quiet_logs()
    console = Console()
    medfed: list[Timing] = []
    anchor: list[Timing] = []
    with tempfile.TemporaryDirectory(prefix="medfed-overhead-") as scratch:
        base = (args.home or Path(scratch)).resolve()
        extra = {"partition.scheme": args.partition, "partition.alpha": args.alpha}
        class_names = warm_cache(run_config(args, base))
        console.print(
            f"[bold]{args.model}[/], {args.image_size} px, {args.data}, {args.hospitals} "
            f"hospitals ({args.partition}), {args.rounds} rounds of {args.local_epochs} local "
            f"epoch(s), batch {args.batch_size}, Adam lr {args.lr:g}, compression off"
        )
        cfg = run_config(args, base, **extra)
        for repeat in range(args.repeats):
            for path in ("medfed", "anchor") if repeat % 2 == 0 else ("anchor", "medfed"):
                if path == "medfed":
                    medfed.append(time_medfed(cfg))
                else:
                    anchor.append(time_anchor(cfg, class_names))
    report(console, medfed, anchor)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
