"""`medfed runs list|show` and `medfed users add|list` on a populated store."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medfed import cli
from medfed.store import RunStore


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/medfed.db"


@pytest.fixture
def populated(db_url: str) -> dict[str, str]:
    """A failed FedProx run with two rounds, results and checkpoints, and a pending FedAvg run."""
    with RunStore(db_url) as store:
        failed = store.create_run(
            "brain-mri", {}, mode="simulation", strategy="FedProx", num_rounds=5, created_by="ada"
        )
        store.set_status(failed, "running")
        for r, acc in [(1, 0.7125), (2, 0.8875)]:
            store.record_round(
                failed,
                r,
                metrics={"loss": 0.5 / r, "accuracy": acc, "f1": 0.81, "auc": 0.93},
                duration_s=12.5,
                bytes_up=3 * 2**20,
                bytes_down=45 * 2**20,
                epsilon=1.5 * r,
                num_clients_ok=2,
                num_clients_failed=r - 1,
            )
            store.record_client_result(
                failed,
                r,
                hospital="st-marys",
                phase="train",
                status="ok",
                num_examples=321,
                metrics={"loss": 0.42},
                duration_s=4.0,
            )
            store.record_checkpoint(
                failed,
                r,
                f"models/{failed}/round_{r}.pt.enc",
                metric_name="accuracy",
                metric_value=acc,
                size_bytes=45 * 2**20,
            )
        store.record_client_result(
            failed, 2, hospital="charite", phase="train", status="failed", error="timed out"
        )
        store.publish(failed, "round_started", {"round": 1})
        store.publish(failed, "run_note", {"message": "round 1: st-marys [holds] one class"})
        store.set_status(failed, "failed", error="hospital charite stopped answering")
        pending = store.create_run(
            "baseline", {}, mode="deployment", strategy="FedAvg", num_rounds=3
        )
    return {"failed": failed, "pending": pending}


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


def test_runs_list(populated: dict[str, str], db_url: str, capsys) -> None:
    code, out, _ = _run_cli(["runs", "list", "--db", db_url], capsys)
    assert code == 0
    lines = {line.split("│")[2].strip(): line for line in out.splitlines() if "│" in line}
    failed, pending = lines["brain-mri"], lines["baseline"]
    assert populated["failed"][:8] in failed and populated["failed"] not in failed
    for cell in ("simulation", "FedProx", "failed", "2/5", "88.8%"):
        assert cell in failed
    for cell in ("deployment", "FedAvg", "pending", "0/3"):
        assert cell in pending
    assert out.index("baseline") < out.index("brain-mri")  # newest first
    assert "2 of 2 runs" in out


def test_runs_list_filters(populated: dict[str, str], db_url: str, capsys) -> None:
    code, out, _ = _run_cli(["runs", "list", "--db", db_url, "--status", "failed"], capsys)
    assert code == 0 and "brain-mri" in out and "baseline" not in out
    code, out, _ = _run_cli(["runs", "list", "--db", db_url, "--strategy", "FedAvg"], capsys)
    assert code == 0 and "baseline" in out and "brain-mri" not in out
    code, out, _ = _run_cli(["runs", "list", "--db", db_url, "--limit", "1"], capsys)
    assert "1 of 2 runs" in out


def test_runs_show_by_short_id(populated: dict[str, str], db_url: str, capsys) -> None:
    run_id = populated["failed"]
    code, out, _ = _run_cli(["runs", "show", run_id[:6], "--db", db_url], capsys)
    assert code == 0
    assert f"brain-mri ({run_id})" in out and "by ada" in out
    assert "hospital charite stopped answering" in out
    assert "note round 1: st-marys [holds] one class" in out  # notes only, markup kept as text
    assert out.count("note ") == 1
    round_rows = [line for line in out.splitlines() if line.startswith("│     ")]
    assert any(
        "88.8%" in row
        and "0.81" in row
        and "3.0 MB" in row
        and "45.0 MB" in row
        and "1 failed" in row
        for row in round_rows
    )
    assert "hospitals in round 2" in out
    assert "st-marys" in out and "321" in out and "loss=0.42" in out
    assert "charite" in out and "timed out" in out
    assert f"models/{run_id}/round_2.pt.enc" in out and "accuracy=0.8875" in out


def test_runs_show_unknown_run_is_one_line(populated: dict[str, str], db_url: str, capsys) -> None:
    code, _, err = _run_cli(["runs", "show", "ffff", "--db", db_url], capsys)
    assert code == 2
    assert "no run ffff; `medfed runs list` shows the runs" in err
    assert "Traceback" not in err


def test_database_from_config_file(
    populated: dict[str, str], db_url: str, tmp_path, capsys
) -> None:
    config = tmp_path / "medfed.yml"
    config.write_text(f"database:\n  url: {db_url}\n", encoding="utf-8")
    code, out, _ = _run_cli(["runs", "list", "--config", str(config)], capsys)
    assert code == 0 and "brain-mri" in out


def test_unreachable_database_is_one_line(capsys) -> None:
    url = "postgresql+psycopg://ada:s3cret@127.0.0.1:1/medfed"
    code, _, err = _run_cli(["runs", "list", "--db", url], capsys)
    assert code == 2 and "cannot use the database at" in err and "s3cret" not in err


def test_users_add_and_list(db_url: str, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["users", "add", "ada", "--role", "admin"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse\n"))  # piped, not on argv
    code, out, _ = _run_cli([*args, "--db", db_url], capsys)
    assert code == 0 and "user ada added with role admin" in out
    monkeypatch.setattr(sys, "stdin", io.StringIO("correct horse\n"))
    code, _, err = _run_cli([*args, "--db", db_url], capsys)
    assert code == 2 and "user 'ada' already exists" in err
    code, out, _ = _run_cli(["users", "list", "--db", db_url], capsys)
    assert code == 0 and "ada" in out and "admin" in out
    with RunStore(db_url) as store:
        assert store.verify_user("ada", "correct horse") is not None
        entry = store.activity_log()[0]
        assert entry.action == "user.add" and entry.target == "ada"


def test_users_add_prompts_for_hidden_password(db_url: str) -> None:
    cli._register()
    result = CliRunner().invoke(
        cli.app, ["users", "add", "bob", "--db", db_url], input="long secret\nlong secret\n"
    )
    assert result.exit_code == 0, result.output
    assert "long secret" not in result.output
    with RunStore(db_url) as store:
        user = store.verify_user("bob", "long secret")
    assert user is not None and user.role == "viewer"
