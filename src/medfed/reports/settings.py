"""The configuration summary of a report: settings by section, privacy and the audit."""

from __future__ import annotations

from typing import Any

from medfed.config import Strategy
from medfed.reports import formatting as fmt
from medfed.store.records import RunRecord

STRATEGY_PARAMETERS = {
    Strategy.FED_PROX: ("proximal_mu",),
    Strategy.FED_TRIMMED_AVG: ("trim_beta",),
    Strategy.KRUM: ("num_malicious_clients",),
    Strategy.FED_ADAM: ("server_learning_rate", "tau"),
    Strategy.FED_YOGI: ("server_learning_rate", "tau"),
    Strategy.FED_AVG_M: ("server_learning_rate", "server_momentum"),
}


def settings_sections(run: RunRecord, config: dict) -> dict[str, list[tuple[str, str]]]:
    federated = config.get("federated", {})
    strategy = federated.get("strategy", run.strategy)
    strategy_keys = ("strategy", *STRATEGY_PARAMETERS.get(strategy, ()))
    data, partition = config.get("data", {}), config.get("partition", {})
    partition_keys = ["scheme", "seed"]
    if partition.get("scheme") == "dirichlet":
        partition_keys.insert(1, "alpha")
    if partition.get("scheme") == "shards":
        partition_keys.insert(1, "classes_per_client")
    return {
        "Strategy": rows(federated, strategy_keys)
        + rows(federated, ("fraction_train", "fraction_evaluate", "bn")),
        "Federation": rows(
            federated,
            ("rounds", "num_clients", "local_epochs", "min_train_clients", "round_timeout"),
        ),
        "Model": rows(config.get("model", {}), ("name", "norm", "pretrained_path")),
        "Local training": rows(
            config.get("training", {}),
            ("optimizer", "learning_rate", "batch_size", "weight_decay", "seed"),
        ),
        "Data": rows(data, ("path", "layout", "test_path", "image_size", "channels", "class_names"))
        + [("augmentation", _augmentation(data))],
        "Partition": rows(partition, partition_keys),
        "Compression": _compression(config.get("compression", {})),
    }


def rows(section: dict, keys: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    return [(key.replace("_", " "), fmt.setting(section.get(key))) for key in keys]


def _augmentation(data: dict) -> str:
    parts = []
    if data.get("rotation"):
        parts.append(f"rotation ±{data['rotation']:g}°")
    if data.get("hflip"):
        parts.append("horizontal flip")
    if data.get("vflip"):
        parts.append("vertical flip")
    return ", ".join(parts) or "none"


def _compression(section: dict) -> list[tuple[str, str]]:
    topk, bits = section.get("topk"), section.get("quant_bits")
    scope = "each tensor" if section.get("topk_scope") == "tensor" else "the whole update"
    rows = [
        ("sparsification", f"top {topk * 100:g}% of entries of {scope}" if topk else "none"),
        ("quantisation", f"{bits}-bit" if bits else "none (fp32)"),
        ("lossless coding", fmt.setting(bool(section.get("lossless")))),
    ]
    if topk or bits:
        rows.append(("error feedback", fmt.setting(section.get("error_feedback"))))
    rows.append(("downlink", fmt.setting(section.get("downlink", "fp32"))))
    return rows


def privacy_keys(section: dict) -> tuple[str, ...]:
    if section.get("mode", "none") == "none":
        return ("mode",)
    return (
        "mode",
        "noise_multiplier",
        "target_epsilon",
        "delta",
        "max_grad_norm",
        "clipping",
        "clip_side",
        "epsilon_budget",
    )


def audit_of(run: RunRecord) -> dict[str, Any] | None:
    audit = (run.final_metrics or {}).get("audit")
    return audit if isinstance(audit, dict) else None


AUDIT_LABELS = {
    "auc": "Attack AUC",
    "tpr_at_1pct_fpr": "True positive rate at 1% false positives",
}


def audit_rows(audit: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not audit:
        return []
    rows = [
        (AUDIT_LABELS[key], fmt.decimal(audit[key]) if key == "auc" else fmt.percent(audit[key]))
        for key in AUDIT_LABELS
        if key in audit
    ]
    canaries = audit.get("canaries")
    if isinstance(canaries, dict):
        planted, held_out = canaries.get("n_members"), canaries.get("n_nonmembers")
        rows += [
            ("Attack AUC on planted canaries", fmt.decimal(canaries.get("auc"))),
            (
                "True positive rate at 1% false positives, canaries",
                fmt.percent(canaries.get("tpr_at_1pct_fpr")),
            ),
            ("Planted / held-out canaries", f"{fmt.integer(planted)} / {fmt.integer(held_out)}"),
        ]
    others = [k for k, v in audit.items() if k not in AUDIT_LABELS and not isinstance(v, dict)]
    return rows + [(key.replace("_", " "), fmt.setting(audit[key])) for key in sorted(others)]


def audit_reading(audit: dict[str, Any] | None) -> str:
    """A plain-language reading of a membership-inference attack's success."""
    auc = (audit or {}).get("auc")
    if not fmt.is_number(auc):
        return ""
    if auc <= 0.55:
        return (
            f"An attack AUC of {auc:.3f} is close to 0.5 (guessing): the attacker could barely "
            "tell the hospitals' training images from unseen ones."
        )
    if auc <= 0.65:
        return (
            f"An attack AUC of {auc:.3f} shows some membership leakage: the model remembers "
            "part of its training images."
        )
    return (
        f"An attack AUC of {auc:.3f} shows substantial membership leakage: consider "
        "differential privacy (privacy.mode) before sharing this model."
    )


def model_name(config: dict) -> str:
    model = config.get("model", {})
    name = model.get("name", fmt.MISSING)
    return f"{name} ({model['norm']} norm)" if model.get("norm") else str(name)
