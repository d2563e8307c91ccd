"""Seconds per round of a deployed run against the same work simulated, and the fixed cost of
a deployed round.

Run: ``.venv/bin/python bench/deploy_latency.py [--rounds 4] [--models cancer_cnn resnet18]``
(make the data first with ``.venv/bin/medfed data demo data/demo``).

Deployed: a real SuperLink on loopback behind medfed's gateway, TLS and hospital keys on, and
2 hospitals (`medfed client`'s processes: a SuperNode and the long-lived executor) each reading
its own folder: the images the simulated run gives that hospital (IID partition, same seed).
Each hospital trains with its share of this machine's cores (``--threads``, default cores /
hospitals: one here), as each simulated hospital does (one CPU, one torch thread); real
hospitals each have their own machine. The platform's processes get the cores left (at least
one: here one), as a simulated run's server does. Simulated: the same configuration on Flower's
simulation engine. A round's time is medfed's own ``duration_s``: from its start to the next
round's, one whole train-and-evaluate cycle; the figures are the mean over rounds 2..R-1 (see
:func:`per_round`). The fixed cost is a deployed round with ``federated.local_steps: 0`` (every
hospital sends the model back untrained): messages, polling, the hospitals' evaluation of the
model they receive, the central evaluation and recording. The same round simulated gives the
part of it that is work rather than transport; the difference is the deployment's own cost.
The next column is the fixed cost again with every payload inside Flower's messages, as before
payloads of 1 MiB and more travelled beside them (``blobs.py``): the baseline, in the same run.
The last column is the fixed cost with the demo's compression both ways (``medfed demo``: an
int8 first copy, then top-k 10% 8-bit changes down; top-k 10% 8-bit updates up).
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from _common import add_run_flags, check_data, quiet_logs, run_config, simulate, warm_cache
from medfed.commands.federated import DEMO_SETTINGS
from medfed.config import MedfedConfig
from medfed.federation.blobs import MIN_BYTES_ENV
from medfed.federation.certs import init_certs, write_private
from medfed.federation.hospital import open_hospital
from medfed.federation.hospital_node import HospitalLink, start_hospital
from medfed.federation.hospitals import add_hospital, sync_registrations
from medfed.federation.runner import create_run
from medfed.federation.superlink import start_platform_link, stop_process_group, submit_run
from medfed.store import RunStore
from medfed.store.records import RoundRecord

GOAL_FIXED_S = 3.0
GOAL_RATIO = 1.3
DEMO_COMPRESSION = {k: v for k, v in DEMO_SETTINGS.items() if k.startswith("compression.")}
HOSPITALS = ("north", "south")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_sites(cfg: MedfedConfig, out: Path, classes: list[str]) -> list[Path]:
    """Each simulated hospital's training images as a Kaggle-layout folder of its own."""
    source = Path(cfg.data.path)
    with open(source / "train_labels.csv") as handle:
        rows = list(csv.DictReader(handle))
    files = {p.stem: p for p in (source / "train").iterdir()}
    sites = []
    for pid, name in enumerate(HOSPITALS):
        hospital = open_hospital(
            cfg, {"partition-id": pid, "num-partitions": len(HOSPITALS)}, "bench", classes
        )
        folder = out / name
        (folder / "train").mkdir(parents=True)
        keep = [rows[i] for i in sorted([*hospital.train_idx, *hospital.val_idx])]
        with open(folder / "train_labels.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, ["id", "label"])
            writer.writeheader()
            writer.writerows({"id": r["id"], "label": r["label"]} for r in keep)
        for row in keep:
            image = files[row["id"]]
            (folder / "train" / image.name).symlink_to(image)
        (folder / "classes.txt").write_text("\n".join(classes) + "\n")
        sites.append(folder)
    return sites


def deployed_rounds(
    cfg: MedfedConfig, sites: list[Path], timeout_s: float, threads: int
) -> list[RoundRecord]:
    """One run across a real SuperLink and 2 hospitals on loopback; its recorded rounds."""
    home = Path(cfg.home)
    cfg = cfg.model_copy(
        update={
            "federated": cfg.federated.model_copy(
                update={"server_address": f"127.0.0.1:{free_port()}"}
            ),
            "deployment": cfg.deployment.model_copy(update={"superlink_port": free_port()}),
        }
    )
    init_certs(cfg.certs_dir, ["localhost"], force=True)
    store = RunStore(cfg.database_url)
    links = []
    for name in HOSPITALS:
        if not any(h.name == name and h.registered for h in store.list_hospitals()):
            _, key = add_hospital(cfg, store, name)
            write_private(home / f"{name}.key", key)
        links.append(
            HospitalLink(
                cfg.federated.server_address, cfg.certs_dir / "ca.pem", home / f"{name}.key"
            )
        )
    # The platform's processes get the cores the hospitals leave, at least one, as a simulated
    # run's server does (its round records run beside the hospitals' training).
    inherited = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) - len(HOSPITALS) * threads))
    try:
        platform = start_platform_link(cfg, store.url)
    finally:
        os.environ.pop("OMP_NUM_THREADS")
        if inherited is not None:
            os.environ["OMP_NUM_THREADS"] = inherited
    processes = list(platform.processes)
    try:
        sync_registrations(cfg, store)
        for link, site, name in zip(links, sites, HOSPITALS, strict=True):
            processes.append(
                start_hospital(
                    cfg,
                    link,
                    data_path=site,
                    port=free_port(),
                    name=name,
                    threads=threads,
                    log_file=home / f"{name}.log",
                )
            )
        run_id = create_run(cfg, store, mode="deployment")
        submit_run(cfg, store, run_id)
        deadline = time.monotonic() + timeout_s
        while (status := store.get_run(run_id).status) not in ("finished", "failed", "stopped"):
            if time.monotonic() > deadline:
                raise SystemExit(f"deployed run {run_id} still {status} after {timeout_s:g}s")
            time.sleep(1)
        if status != "finished":
            raise SystemExit(f"deployed run {run_id} {status}: {store.get_run(run_id).error}")
        return store.rounds(run_id)
    finally:
        for process in processes:
            stop_process_group(process)


def rounds_inside_flower(cfg: MedfedConfig, sites: list[Path], args: argparse.Namespace) -> float:
    """Seconds per round with every payload inside Flower's messages (no blobs)."""
    os.environ[MIN_BYTES_ENV] = str(2**62)
    try:
        return per_round(deployed_rounds(cfg, sites, args.timeout, args.threads))
    finally:
        os.environ.pop(MIN_BYTES_ENV)


def per_round(rounds: list[RoundRecord]) -> float:
    """Mean seconds per round over rounds 2..R-1. A round's ``duration_s`` runs from its start
    to the next round's: its training and the evaluation of the model it received (its own
    record runs beside the next round); round 1 also warms up the hospitals and round R's
    evaluation is a phase of its own."""
    middle = [r.duration_s for r in rounds if 1 < r.round < len(rounds)]
    return statistics.mean(middle or [r.duration_s for r in rounds])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_flags(parser, rounds=4)
    parser.add_argument("--models", nargs="+", default=["cancer_cnn", "resnet18"])
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per deployed run")
    parser.add_argument(
        "--threads",
        type=int,
        default=max(1, (os.cpu_count() or 1) // len(HOSPITALS)),
        help="torch threads per deployed hospital",
    )
    args = parser.parse_args()
    args.hospitals = len(HOSPITALS)
    check_data(args.data)
    quiet_logs()
    console = Console(width=160)
    table = Table(title="seconds per round: 2 hospitals on loopback (TLS, hospital keys)")
    for column in (
        "model",
        "simulated",
        "deployed",
        "deployed / simulated",
        "fixed cost",
        "fixed cost simulated",
        "fixed cost inside Flower's messages",
        "fixed cost compressed",
    ):
        table.add_column(column, justify="right")
    verdicts = []
    for model in args.models:
        with tempfile.TemporaryDirectory(prefix="medfed-latency-") as tmp:
            home = args.home or Path(tmp)
            args.model = model
            extra = {
                "partition.scheme": "iid",
                "federated.min_train_clients": 2,
                "federated.min_evaluate_clients": 2,
                "federated.min_available_clients": 2,
                "data.class_names": None,
            }
            cfg = run_config(args, home / model / "sim", **extra)
            classes = warm_cache(cfg)
            cfg = run_config(args, home / model / "sim", **{**extra, "data.class_names": classes})
            simulated = per_round(simulate(cfg))
            console.print(f"{model}: simulated {simulated:.1f} s per round")
            deploy_home = home / model / "deploy"
            cfg = run_config(args, deploy_home, **{**extra, "data.class_names": classes})
            warm_cache(cfg)
            sites = write_sites(cfg, deploy_home / "sites", classes)
            deployed = per_round(deployed_rounds(cfg, sites, args.timeout, args.threads))
            console.print(f"{model}: deployed {deployed:.1f} s per round")
            fixed_extra = {**extra, "data.class_names": classes, "federated.local_steps": 0}
            # A SuperLink of its own: no node of the last run lingers.
            fixed_cfg = run_config(args, home / model / "fixed", **fixed_extra)
            fixed = per_round(deployed_rounds(fixed_cfg, sites, args.timeout, args.threads))
            fixed_simulated = per_round(
                simulate(run_config(args, home / model / "fixed-sim", **fixed_extra))
            )
            inside_cfg = run_config(args, home / model / "fixed-inside", **fixed_extra)
            inside = rounds_inside_flower(inside_cfg, sites, args)
            compressed_cfg = run_config(
                args, home / model / "fixed-compressed", **fixed_extra, **DEMO_COMPRESSION
            )
            compressed = per_round(
                deployed_rounds(compressed_cfg, sites, args.timeout, args.threads)
            )
            console.print(
                f"{model}: fixed cost {fixed:.1f} s per round ({fixed_simulated:.1f} s "
                f"simulated, {inside:.1f} s inside Flower's messages, {compressed:.1f} s "
                "compressed both ways)"
            )
        ratio = deployed / simulated
        table.add_row(
            model,
            f"{simulated:.1f}",
            f"{deployed:.1f}",
            f"{ratio:.2f}x",
            f"{fixed:.1f}",
            f"{fixed_simulated:.1f}",
            f"{inside:.1f}",
            f"{compressed:.1f}",
        )
        verdicts.append(
            f"{model}: deployed {ratio:.2f}x simulated (goal <= {GOAL_RATIO}x), fixed cost "
            f"{fixed:.1f} s per round (goal <= {GOAL_FIXED_S:g} s), of which "
            f"{max(0.0, fixed - fixed_simulated):.1f} s transport (the rest: evaluation); "
            f"{inside:.1f} s with payloads inside Flower's messages ({fixed / inside:.2f}x); "
            f"{compressed:.1f} s compressed both ways"
        )
    console.print(table)
    for line in verdicts:
        console.print(line)


if __name__ == "__main__":
    main()
