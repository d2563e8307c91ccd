"""Deployment on loopback: a real SuperLink, two hospitals' SuperNodes, `medfed run --deploy`."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
import yaml

from medfed.cli import main
from medfed.config import load_config
from medfed.data.synthetic import write_synthetic_dataset
from medfed.federation.superlink import start_superlink, start_supernode
from medfed.store import RunStore

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_hospitals_train_through_a_real_superlink(tmp_path: Path, capsys) -> None:
    for site in range(2):
        write_synthetic_dataset(tmp_path / f"site{site}", n_per_class=10, size=16, seed=site)
    platform_data = write_synthetic_dataset(
        tmp_path / "platform", n_per_class=4, size=16, seed=7, test_per_class=5
    )
    config = tmp_path / "config.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "home": str(tmp_path / "home"),
                "data": {"path": str(platform_data), "image_size": 16},
                "model": {"name": "cancer_cnn"},
                "training": {"batch_size": 8},
                "federated": {
                    "server_address": f"127.0.0.1:{free_port()}",
                    "num_clients": 2,
                    "rounds": 1,
                    "round_timeout": 120,
                },
            }
        )
    )
    cfg = load_config(config)
    store = RunStore(cfg.database_url)
    processes = [start_superlink(cfg, store.url)]
    try:
        for site in range(2):
            processes.append(
                start_supernode(
                    cfg,
                    client_id=site,
                    data_path=tmp_path / f"site{site}",
                    port=free_port(),
                    log=tmp_path / f"site{site}.log",
                )
            )
        assert main(["run", "--deploy", "--config", str(config)]) == 0
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)

    out = capsys.readouterr().out
    assert "submitted to" in out
    runs, _ = store.list_runs()
    run = runs[0]
    assert run.mode == "deployment" and run.status == "finished", run.error
    assert run.flower_run_id is not None
    results = store.client_results(run.id)
    assert {(c.hospital, c.phase, c.status) for c in results} == {
        (f"hospital-{s}", phase, "ok") for s in range(2) for phase in ("train", "evaluate")
    }
    assert {c.num_examples for c in results if c.phase == "train"} == {17}  # 20 minus validation
    rounds = store.rounds(run.id)
    assert len(rounds) == 1 and sum(map(sum, rounds[0].metrics["confusion_matrix"])) == 10
