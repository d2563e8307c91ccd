"""A SQLite run store shared by processes loses no write when another process comes and goes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medfed.store import RunStore


@pytest.mark.slow
def test_writes_survive_a_second_store_and_another_process_closing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'medfed.db'}"
    first = RunStore(url)  # as the run's worker process opens it
    run_id = first.create_run("r", {}, mode="simulation", strategy="FedAvg", num_rounds=3)
    writer = RunStore(url)  # and then its ServerApp, in the same process
    reader = f"from medfed.store import RunStore; RunStore({url!r}).events({run_id!r})"
    for round_number in (1, 2, 3):
        writer.publish(run_id, "round_started", {"round": round_number})
        first.get_run(run_id)
        done = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    rounds = [e.payload["round"] for e in RunStore(url).events(run_id)]
    assert rounds == [1, 2, 3]
    assert (tmp_path / "medfed.db-wal").exists()  # the log of the open stores is still there
