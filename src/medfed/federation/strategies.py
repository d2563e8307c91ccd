"""Flower strategies by name, built from the run configuration."""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp import strategy as fl

from medfed.config import MedfedConfig, Strategy
from medfed.errors import ConfigError
from medfed.federation.scaffold import SCAFFOLD
from medfed.privacy.accounting import client_level_epsilon, client_noise_multiplier

SUMMED_KEYS = {"num-examples", "bytes-up", "bytes-down", "confusion-matrix", "class-counts"}
MAX_KEYS = {"seconds", "train_seconds", "epsilon", "budget-exhausted"}
DP_WEIGHT_KEY = "dp-weight"  # every hospital weighs 1 under client-level DP


def aggregate_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Weighted means of the hospitals' metrics; counts, bytes and confusion matrices summed.

    Replies are checked before they get here (:mod:`medfed.federation.replies`); still, a
    metric that not every reply carries alike (a number everywhere, or lists of one length)
    is left out rather than failing the round.
    """
    metric_records = [next(iter(r.metric_records.values())) for r in records]
    weights = [float(m[weight_key]) for m in metric_records]
    total = sum(weights) or 1.0
    out: dict[str, int | float | list[int] | list[float]] = {weight_key: int(total)}
    keys = [
        k
        for k in metric_records[0]
        if k != weight_key and _alike([m.get(k) for m in metric_records])
    ]
    if weight_key == DP_WEIGHT_KEY and "num-examples" in metric_records[0]:
        weights = [float(m["num-examples"]) for m in metric_records]
        total = sum(weights) or 1.0
    for key in keys:
        values = [m[key] for m in metric_records]
        if key in SUMMED_KEYS:
            if isinstance(values[0], list):
                out[key] = [sum(col) for col in zip(*values, strict=True)]
            else:
                out[key] = sum(values)
        elif key in MAX_KEYS:
            out[key] = max(values)
        elif key == "auc":
            valid = [(v, w) for v, w in zip(values, weights, strict=True) if v >= 0]
            weight = sum(w for _, w in valid)
            out[key] = sum(v * w for v, w in valid) / weight if weight else -1.0
        else:
            out[key] = sum(float(v) * w for v, w in zip(values, weights, strict=True)) / total
    return MetricRecord(out)


def _alike(values: list) -> bool:
    """Numbers everywhere, or lists of numbers of one length everywhere."""

    def number(v: object) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    if all(number(v) for v in values):
        return True
    lists = [v for v in values if isinstance(v, list)]
    return (
        len(lists) == len(values)
        and len({len(v) for v in lists}) == 1
        and all(number(x) for v in lists for x in v)
    )


def _fedadam(common: dict, cfg: MedfedConfig) -> fl.Strategy:
    f = cfg.federated
    return fl.FedAdam(**common, eta=f.server_learning_rate, tau=f.tau)


def _fedyogi(common: dict, cfg: MedfedConfig) -> fl.Strategy:
    f = cfg.federated
    return fl.FedYogi(**common, eta=f.server_learning_rate, tau=f.tau)


BUILDERS: dict[Strategy, Callable[[dict, MedfedConfig], fl.Strategy]] = {
    Strategy.FED_AVG: lambda common, cfg: fl.FedAvg(**common),
    Strategy.FED_PROX: lambda common, cfg: fl.FedProx(
        **common, proximal_mu=cfg.federated.proximal_mu
    ),
    Strategy.FED_MEDIAN: lambda common, cfg: fl.FedMedian(**common),
    Strategy.FED_TRIMMED_AVG: lambda common, cfg: fl.FedTrimmedAvg(
        **common, beta=cfg.federated.trim_beta
    ),
    Strategy.KRUM: lambda common, cfg: fl.Krum(
        **common, num_malicious_nodes=cfg.federated.num_malicious_clients
    ),
    Strategy.FED_ADAM: _fedadam,
    Strategy.FED_YOGI: _fedyogi,
    Strategy.FED_AVG_M: lambda common, cfg: fl.FedAvgM(
        **common,
        server_learning_rate=cfg.federated.server_learning_rate,
        server_momentum=cfg.federated.server_momentum,
    ),
    Strategy.SCAFFOLD: lambda common, cfg: SCAFFOLD(
        **common, num_clients=cfg.federated.num_clients
    ),
}


def build_strategy(cfg: MedfedConfig) -> fl.Strategy:
    """The configured Flower strategy, wrapped for client-level DP when asked."""
    f = cfg.federated
    if f.strategy not in BUILDERS:
        raise ConfigError(f"federated.strategy = {f.strategy!r}: not one of {', '.join(BUILDERS)}")
    common = {
        "fraction_train": f.fraction_train,
        "fraction_evaluate": f.fraction_evaluate,
        "min_train_nodes": f.min_train_clients,
        "min_evaluate_nodes": f.min_evaluate_clients if f.fraction_evaluate > 0 else 0,
        "min_available_nodes": f.min_available_clients,
        "weighted_by_key": DP_WEIGHT_KEY if cfg.privacy.mode == "client" else "num-examples",
        "train_metrics_aggr_fn": aggregate_metrics,
        "evaluate_metrics_aggr_fn": aggregate_metrics,
    }
    strategy = BUILDERS[f.strategy](common, cfg)
    if cfg.privacy.mode == "client":
        strategy = wrap_client_dp(strategy, cfg)
    return strategy


def clients_per_round(cfg: MedfedConfig) -> int:
    f = cfg.federated
    return max(int(f.num_clients * f.fraction_train), f.min_train_clients)


def client_sampling_rate(cfg: MedfedConfig) -> float:
    return min(1.0, clients_per_round(cfg) / cfg.federated.num_clients)


def client_noise(cfg: MedfedConfig) -> float:
    """The noise multiplier of client-level DP: given, or calibrated to the target epsilon."""
    p = cfg.privacy
    if p.noise_multiplier is not None:
        return p.noise_multiplier
    if p.target_epsilon is None:
        raise ConfigError(
            "privacy.mode = 'client' needs privacy.noise_multiplier (e.g. 1.0) "
            "or privacy.target_epsilon (e.g. 8)"
        )
    return client_noise_multiplier(
        p.target_epsilon, p.delta, client_sampling_rate(cfg), cfg.federated.rounds
    )


def round_epsilon(cfg: MedfedConfig, server_round: int, train_metrics: dict) -> float | None:
    """Epsilon spent after ``server_round`` rounds (at ``privacy.delta``), or None without DP.

    Sample-level: the largest of the hospitals' own accountants. Client-level: the RDP
    accountant over the rounds so far, with the fraction of hospitals sampled per round.
    """
    mode = cfg.privacy.mode
    if mode == "sample":
        value = train_metrics.get("epsilon")
        return float(value) if value is not None and value >= 0 else None
    if mode == "client":
        return client_level_epsilon(
            client_noise(cfg), client_sampling_rate(cfg), server_round, cfg.privacy.delta
        )
    return None


def wrap_client_dp(strategy: fl.Strategy, cfg: MedfedConfig) -> fl.Strategy:
    """Client-level DP with Flower's wrappers: fixed or adaptive clipping, server or client side."""
    p = cfg.privacy
    noise = client_noise(cfg)
    sampled = clients_per_round(cfg)
    if p.clipping == "fixed":
        cls = (
            fl.DifferentialPrivacyServerSideFixedClipping
            if p.clip_side == "server"
            else fl.DifferentialPrivacyClientSideFixedClipping
        )
        return cls(strategy, noise, p.max_grad_norm, sampled)
    cls = (
        fl.DifferentialPrivacyServerSideAdaptiveClipping
        if p.clip_side == "server"
        else fl.DifferentialPrivacyClientSideAdaptiveClipping
    )
    return cls(strategy, noise, sampled, initial_clipping_norm=p.max_grad_norm)
