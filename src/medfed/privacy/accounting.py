"""Privacy accounting with Opacus' RDP accountant (or its PRV accountant, tighter, for
sample-level DP with ``privacy.accountant: prv``), for sample-level and client-level DP.

An accountant history is a list of ``(noise_multiplier, sampling_rate, steps)`` triples, exactly
``opacus.accountants.RDPAccountant.history``. Sample-level DP (DP-SGD at a hospital) records one
step per optimizer step with ``sampling_rate = 1 / batches_per_epoch``. Client-level DP (Flower's
``DifferentialPrivacy*Clipping`` wrappers add Gaussian noise of ``noise_multiplier * clip /
num_sampled_clients`` to the average of clipped client updates) is the same sampled Gaussian
mechanism with one step per round and ``sampling_rate`` = the fraction of hospitals per round.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from medfed.errors import PrivacyError

HistoryEntry = tuple[float, float, int]
ACCOUNTANTS = ("rdp", "prv")


def epsilon_from_history(
    history: Sequence[Sequence[float]], delta: float, accountant: str = "rdp"
) -> float:
    """Epsilon at ``delta`` spent by a history of ``(noise, rate, steps)`` under ``accountant``
    (``rdp`` or ``prv``); inf for noise 0."""
    entries = [(float(n), float(q), int(s)) for n, q, s in history if int(s) > 0]
    if not entries:
        return 0.0
    if any(noise <= 0 for noise, _, _ in entries):
        return math.inf
    if accountant == "prv":
        prv = PRVAccountant()
        prv.history = entries
        with _quiet_rdp_orders():
            return float(prv.get_epsilon(delta))
    rdp = RDPAccountant()
    rdp.history = entries
    return float(rdp.get_epsilon(delta))


def client_level_epsilon(
    noise_multiplier: float, sampling_rate: float, rounds: int, delta: float
) -> float:
    """Client-level epsilon after ``rounds`` rounds of central DP (Gaussian noise on the mean).

    ``sampling_rate`` is the probability a hospital takes part in a round. Amplification by
    sampling assumes Poisson sampling of hospitals; Flower samples a fixed number without
    replacement, so pass ``1.0`` for the conservative (no amplification) figure.
    """
    _check_rate(sampling_rate, "sampling_rate")
    return epsilon_from_history([(noise_multiplier, sampling_rate, rounds)], delta)


def client_noise_multiplier(
    target_epsilon: float, delta: float, sampling_rate: float, rounds: int
) -> float:
    """The smallest noise multiplier (within 0.01 epsilon) that keeps ``rounds`` rounds within
    ``target_epsilon`` at ``delta``: use it when ``privacy.target_epsilon`` is set in client mode.
    """
    _check_rate(sampling_rate, "sampling_rate")
    return calibrated_noise(target_epsilon, delta, sampling_rate, steps=rounds)


@lru_cache(maxsize=64)
def calibrated_noise(
    target_epsilon: float, delta: float, sampling_rate: float, steps: int, accountant: str = "rdp"
) -> float:
    """Noise multiplier reaching ``target_epsilon`` at ``delta`` after ``steps`` sampled steps
    under ``accountant`` (``rdp`` or ``prv``)."""
    if steps < 1:
        raise PrivacyError(f"cannot calibrate noise for {steps} steps: need at least one")
    try:
        with _quiet_rdp_orders():
            return float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon,
                    target_delta=delta,
                    sample_rate=sampling_rate,
                    steps=steps,
                    accountant=accountant,
                )
            )
    except ValueError as exc:
        raise PrivacyError(
            f"privacy.target_epsilon={target_epsilon} is out of reach at delta={delta} over "
            f"{steps} steps ({exc}): raise target_epsilon or train fewer steps"
        ) from None


@contextmanager
def _quiet_rdp_orders() -> Iterator[None]:
    """Silence RDP's note that a larger order might tighten its bound: the bound holds as it
    is, and the PRV accountant asks RDP for its domain at every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        yield


def _check_rate(rate: float, name: str) -> None:
    if not 0 < rate <= 1:
        raise PrivacyError(f"{name}={rate}: must be in (0, 1]")


class AccountantStore:
    """An RDP accountant history kept in one JSON file between rounds, keyed by run id.

    Each round runs in a fresh process, so the history a hospital has spent lives on disk.
    :meth:`load` returns an empty history for another run's file; writes are atomic.
    """

    def __init__(self, path: Path, run_id: str | int):
        self.path = Path(path)
        self.run_id = str(run_id)

    def load(self) -> list[HistoryEntry]:
        """This run's history, or ``[]`` when there is none yet."""
        if not self.path.is_file():
            return []
        try:
            content = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PrivacyError(
                f"{self.path}: unreadable privacy accountant state ({exc}); it records the "
                "privacy already spent, so restore it from a backup rather than deleting it"
            ) from None
        if content.get("run_id") != self.run_id:
            return []
        return [(float(n), float(q), int(s)) for n, q, s in content.get("history", [])]

    def save(self, history: Sequence[Sequence[float]]) -> None:
        """Replace the stored history atomically."""
        content = {
            "run_id": self.run_id,
            "mechanism": RDPAccountant.mechanism(),
            "history": [[float(n), float(q), int(s)] for n, q, s in history],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(content, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
