"""The fleet's settings of the Distribution service: from the environment, within their bounds."""

from __future__ import annotations

import pytest

from distribution.settings import MAX_HEARTBEAT_HISTORY, load_distribution_settings
from wire.fleet import MAX_POLL_SECONDS, MIN_POLL_SECONDS

LIMITS = [
    ("fleet_poll_interval", MIN_POLL_SECONDS, MAX_POLL_SECONDS),
    ("fleet_offline_after_polls", 1, 100),
    ("fleet_heartbeat_history", 0, MAX_HEARTBEAT_HISTORY),
]


@pytest.mark.parametrize(("key", "low", "high"), LIMITS)
def test_fleet_settings_are_taken_within_their_bounds(key: str, low: int, high: int) -> None:
    for value in (low, low + 1, high - 1, high):
        settings = load_distribution_settings(env={f"DISTRIBUTION_{key.upper()}": str(value)})
        assert getattr(settings, key) == value


@pytest.mark.parametrize(("key", "low", "high"), LIMITS)
def test_fleet_settings_outside_their_bounds_are_refused_naming_the_key(key: str, low: int, high: int) -> None:
    for value in (low - 1, high + 1):
        with pytest.raises(ValueError, match=key):
            load_distribution_settings(env={f"DISTRIBUTION_{key.upper()}": str(value)})


def test_fleet_defaults() -> None:
    settings = load_distribution_settings(env={})
    assert (settings.fleet_poll_interval, settings.fleet_offline_after_polls, settings.fleet_heartbeat_history) == (
        30,
        3,
        100,
    )
