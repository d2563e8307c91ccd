"""``medfed report``: files written where it says, and one clear line for an unknown run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from test_report import run_config, seed_run

from medfed import cli, commands
from medfed.store import RunStore


@pytest.fixture(autouse=True)
def _report_command(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    if "report" not in commands.MODULES:
        monkeypatch.setattr(commands, "MODULES", (*commands.MODULES, "report"))


@pytest.fixture
def platform(tmp_path: Path, kaggle_dataset: Path) -> tuple[Path, str]:
    """A config file whose home and database hold one finished run."""
    home = tmp_path / "home"
    url = f"sqlite:///{tmp_path / 'medfed.db'}"
    config = tmp_path / "medfed.yml"
    config.write_text(yaml.safe_dump({"home": str(home), "database": {"url": url}}))
    with RunStore(url) as store:
        run_id = seed_run(store, run_config(home, kaggle_dataset))
    return config, run_id


@pytest.mark.slow
def test_report_command_writes_both_formats_and_says_where(platform, tmp_path, capsys):
    config, run_id = platform
    out = tmp_path / "reports"

    code = cli.main(
        ["report", run_id[:8], "--format", "both", "--out", str(out), "-c", str(config)]
    )

    printed = capsys.readouterr().out
    html, pdf = out / f"medfed-report-{run_id}.html", out / f"medfed-report-{run_id}.pdf"
    assert code == 0
    assert html.is_file() and pdf.read_bytes().startswith(b"%PDF")
    assert f"HTML report: {html.resolve()}" in printed
    assert f"PDF report: {pdf.resolve()}" in printed
    assert "no ROC curve: No model checkpoint is stored" in printed


def test_report_command_defaults_to_html_in_the_home(platform, tmp_path):
    config, run_id = platform

    assert cli.main(["report", run_id, "--config", str(config)]) == 0
    assert sorted(p.name for p in (tmp_path / "home" / "reports").iterdir()) == [
        f"medfed-report-{run_id}.html"
    ]


def test_report_command_unknown_run_is_one_line_and_exit_2(platform, tmp_path, capsys):
    config, _ = platform

    code = cli.main(["report", "feedbeef", "--out", str(tmp_path / "r"), "-c", str(config)])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0
    assert "no run feedbeef" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
