"""Client-level and history-based epsilon against Opacus' own RDP accountant; state storage."""

from __future__ import annotations

import math

import pytest
from opacus.accountants import RDPAccountant

from medfed.errors import PrivacyError
from medfed.privacy.accounting import (
    AccountantStore,
    calibrated_noise,
    client_level_epsilon,
    client_noise_multiplier,
    epsilon_from_history,
)


def opacus_epsilon(noise: float, rate: float, steps: int, delta: float) -> float:
    accountant = RDPAccountant()
    for _ in range(steps):
        accountant.step(noise_multiplier=noise, sample_rate=rate)
    return accountant.get_epsilon(delta)


def test_client_level_epsilon_grows_with_rounds() -> None:
    epsilons = [client_level_epsilon(1.0, 0.5, rounds, 1e-5) for rounds in (1, 5, 20, 100)]
    assert all(a < b for a, b in zip(epsilons, epsilons[1:], strict=False))
    assert epsilons[0] > 0


def test_client_level_epsilon_shrinks_with_more_noise_and_fewer_clients() -> None:
    base = client_level_epsilon(1.0, 1.0, 10, 1e-5)
    assert client_level_epsilon(2.0, 1.0, 10, 1e-5) < base
    assert client_level_epsilon(1.0, 0.2, 10, 1e-5) < base


@pytest.mark.parametrize("noise,rate,rounds", [(1.0, 1.0, 10), (0.8, 0.25, 30), (2.5, 0.1, 3)])
def test_client_level_epsilon_equals_opacus_step_by_step(noise, rate, rounds) -> None:
    assert client_level_epsilon(noise, rate, rounds, 1e-5) == pytest.approx(
        opacus_epsilon(noise, rate, rounds, 1e-5), rel=1e-9
    )


def test_history_with_several_phases_matches_opacus() -> None:
    accountant = RDPAccountant()
    for _ in range(7):
        accountant.step(noise_multiplier=1.1, sample_rate=0.05)
    for _ in range(4):
        accountant.step(noise_multiplier=0.9, sample_rate=0.1)
    assert accountant.history == [(1.1, 0.05, 7), (0.9, 0.1, 4)]
    assert epsilon_from_history(accountant.history, 1e-6) == pytest.approx(
        accountant.get_epsilon(1e-6)
    )


def test_no_noise_means_no_privacy_and_no_rounds_means_none_spent() -> None:
    assert math.isinf(client_level_epsilon(0.0, 1.0, 3, 1e-5))
    assert client_level_epsilon(1.0, 1.0, 0, 1e-5) == 0.0


@pytest.mark.slow
def test_noise_for_a_target_epsilon_reaches_it() -> None:
    noise = client_noise_multiplier(4.0, 1e-5, 0.5, rounds=20)
    reached = client_level_epsilon(noise, 0.5, 20, 1e-5)
    assert 3.95 <= reached <= 4.0
    assert client_level_epsilon(noise * 0.9, 0.5, 20, 1e-5) > 4.0


def test_bad_sampling_rate_is_a_privacy_error() -> None:
    with pytest.raises(PrivacyError, match="sampling_rate"):
        client_level_epsilon(1.0, 1.5, 3, 1e-5)


def test_accountant_store_keeps_history_per_run(tmp_path) -> None:
    path = tmp_path / "hospital-0" / "accountant.json"
    store = AccountantStore(path, "run-a")
    assert store.load() == []
    store.save([(1.0, 0.125, 16)])
    assert AccountantStore(path, "run-a").load() == [(1.0, 0.125, 16)]
    assert AccountantStore(path, "run-b").load() == []
    assert [p.name for p in path.parent.iterdir()] == ["accountant.json"]


def test_corrupted_accountant_state_is_an_error_not_a_reset(tmp_path) -> None:
    path = tmp_path / "accountant.json"
    path.write_text("{not json")
    with pytest.raises(PrivacyError, match="accountant.json"):
        AccountantStore(path, "r").load()


@pytest.mark.slow
def test_the_prv_accountant_gives_a_tighter_epsilon_and_less_noise() -> None:
    history = [(1.0, 0.25, 80)]
    rdp = epsilon_from_history(history, 1e-5)
    prv = epsilon_from_history(history, 1e-5, "prv")
    assert 0 < prv < rdp
    assert calibrated_noise(3.0, 1e-5, 0.25, 80, "prv") < calibrated_noise(3.0, 1e-5, 0.25, 80)
