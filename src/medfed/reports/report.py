"""Build a run's evaluation report from the run store: HTML, PDF, or both."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from medfed.config import MedfedConfig, config_from_dict
from medfed.errors import ConfigError, MedfedError, StoreError
from medfed.reports.clinical import (
    FinalEvaluation,
    evaluation_from_predictions,
    load_final_evaluation,
)
from medfed.reports.content import ReportContent, gather_content
from medfed.reports.html import render_html
from medfed.reports.pdf import write_pdf
from medfed.reports.roc import RocData, score_checkpoint
from medfed.store import ArtifactStore, CheckpointRecord, RunRecord, RunStore
from medfed.store.artifacts import home_of_checkpoint

FORMATS = ("html", "pdf")


def build_report(
    store: RunStore,
    run_id: str,
    out_dir: Path,
    fmt: Literal["html", "pdf"] = "html",
    *,
    roc: RocData | None = None,
    platform: MedfedConfig | None = None,
) -> Path:
    """Write the report of run ``run_id`` into ``out_dir`` and return the file's path.

    Without ``roc`` the ROC curve is computed from the run's latest checkpoint, decrypted with
    the ``platform`` configuration's key (without it: the key of the home whose artifacts hold
    the checkpoint), on the run's held-out test set; when any of these is missing the report
    says why in place of the curve.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"report format {fmt!r} is not known: use html or pdf")
    content = report_content(store, run_id, roc=roc, platform=platform)
    return write_report(content, out_dir, fmt)


def report_content(
    store: RunStore,
    run_id: str,
    *,
    roc: RocData | None = None,
    platform: MedfedConfig | None = None,
    evaluation: FinalEvaluation | None = None,
) -> ReportContent:
    """Read everything the report shows about ``run_id`` (a StoreError when it is unknown).

    Calibration, operating points and heat maps come from the evaluation stored with the run
    after its last round, else are computed here from its latest checkpoint.
    """
    run = store.get_run(run_id)
    checkpoint = store.latest_checkpoint(run.id)
    roc_note = ""
    if roc is None:
        roc, computed, roc_note = _scores_of_run(run, checkpoint, platform)
        evaluation = evaluation or computed
    return gather_content(
        run,
        store.rounds(run.id),
        store.client_results(run.id),
        checkpoint,
        roc,
        roc_note,
        evaluation=evaluation,
    )


def write_report(content: ReportContent, out_dir: Path, fmt: Literal["html", "pdf"]) -> Path:
    """Write already gathered content as ``out_dir/medfed-report-<run id>.<fmt>``."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"report folder {out_dir} cannot be created: {exc.strerror}") from None
    path = out_dir / f"medfed-report-{content.run_id}.{fmt}"
    try:
        if fmt == "html":
            path.write_text(render_html(content), encoding="utf-8")
        else:
            write_pdf(content, path)
    except OSError as exc:
        raise StoreError(f"report {path} cannot be written: {exc.strerror}") from None
    return path


def _scores_of_run(
    run: RunRecord, checkpoint: CheckpointRecord | None, platform: MedfedConfig | None
) -> tuple[RocData | None, FinalEvaluation | None, str]:
    """The ROC and final evaluation of the run's latest checkpoint, or None and the reason
    they are not available."""
    if checkpoint is None:
        return (
            None,
            None,
            "No model checkpoint is stored for this run, so the model cannot be scored.",
        )
    if platform is None:
        home = home_of_checkpoint(checkpoint.path)
        if home is None:
            return (
                None,
                None,
                (
                    "The platform's configuration (home and model key) was not given, so the "
                    "checkpoint cannot be decrypted and scored."
                ),
            )
        platform = config_from_dict({"home": str(home)})
    try:
        artifacts = ArtifactStore.for_config(platform, create_key=False)
        scored = score_checkpoint(
            run.config,
            Path(checkpoint.path),
            artifacts,
            cache_dir=platform.cache_dir,
            run_id=run.id,
            round=checkpoint.round,
        )
        stored = load_final_evaluation(artifacts, run.id)
        if stored is None or stored.round != checkpoint.round:
            stored = evaluation_from_predictions(
                scored.model,
                scored.test_set,
                scored.transform,
                scored.class_names,
                checkpoint.round,
                scored.y_true,
                scored.y_prob,
            )
    except MedfedError as exc:
        return None, None, f"The round-{checkpoint.round} checkpoint could not be scored: {exc}"
    return scored.roc, stored, ""
