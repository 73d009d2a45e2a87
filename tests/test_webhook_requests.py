"""What a webhook subscription may hold: an http(s) URL to somewhere else, known events, a usable
secret. Everything else is a 400 naming what is wrong (the end-to-end test checks nothing is stored)."""

from __future__ import annotations

from typing import Any

import pytest

from distribution.settings import DistributionSettings
from distribution.webhook_events import EVENTS
from distribution.webhook_requests import MAX_URL, parse_subscription
from repository.errors import BadRequest

SETTINGS = DistributionSettings(host="127.0.0.1", port=8080, public_url="https://dist.example.com")
BASE = "http://hooks.example/"


def refused(body: dict[str, Any], settings: DistributionSettings = SETTINGS) -> str:
    with pytest.raises(BadRequest) as caught:
        parse_subscription(body, settings)
    return caught.value.message


@pytest.mark.parametrize("length", [MAX_URL - 1, MAX_URL])
def test_a_url_up_to_the_limit_is_accepted(length: int) -> None:
    url = BASE + "a" * (length - len(BASE))
    assert parse_subscription({"url": url, "events": ["*"]}, SETTINGS).url == url


@pytest.mark.parametrize("length", [MAX_URL + 1, 100_000])
def test_a_url_past_the_limit_is_refused(length: int) -> None:
    assert f"at most {MAX_URL}" in refused({"url": BASE + "a" * (length - len(BASE)), "events": ["*"]})


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "'url' is required"),
        ("ftp://hooks.example/", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("http:///path-only", "http or https"),
        ("http://user:pw@hooks.example/", "credentials"),
        ("http://token@hooks.example/", "credentials"),
        ("http://hooks.example:99999/", "invalid port"),
        ("http://hooks.example/a b", "spaces"),
        ("http://hooks.example/\x00", "control characters"),
        ("http://127.0.0.1:8080/hook", "points back"),
        ("http://localhost:8080/hook", "points back"),
        ("http://LOCALHOST.:8080/hook", "points back"),
        ("http://[::1]:8080/hook", "points back"),
        ("http://[::ffff:127.0.0.1]:8080/hook", "points back"),
        ("http://0.0.0.0:8080/hook", "points back"),
        ("http://127.9.9.9:8080/hook", "points back"),
        ("https://dist.example.com/hook", "points back"),
        ("https://DIST.example.com:443/hook", "points back"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, says: str) -> None:
    assert says in refused({"url": url, "events": ["*"]})


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8081/hook",
        "http://localhost:9000/",
        "https://dist.example.com:8443/",
        "http://dist.example.com/",
    ],
)
def test_this_machine_on_another_port_and_other_hosts_are_fine(url: str) -> None:
    assert parse_subscription({"url": url, "events": ["bundle.created"]}, SETTINGS).url == url


def test_events_are_known_names_or_every_event() -> None:
    assert parse_subscription({"url": BASE, "events": "*"}, SETTINGS).events == ("*",)
    assert parse_subscription({"url": BASE, "events": ["bundle.signed", "*"]}, SETTINGS).events == ("*",)
    both = parse_subscription({"url": BASE, "events": ["edge.back", "bundle.created", "edge.back"]}, SETTINGS)
    assert both.events == ("bundle.created", "edge.back")
    assert parse_subscription({"url": BASE, "events": list(EVENTS)}, SETTINGS).events == EVENTS
    for events in ([], None, [1], "bundle", ["bundle.created", "bundle.exploded"], {"a": 1}):
        refused({"url": BASE, "events": events})
    assert "Unknown event 'Bundle.Created'" in refused({"url": BASE, "events": ["Bundle.Created"]})


def test_a_secret_is_generated_unless_a_usable_one_is_given() -> None:
    made = parse_subscription({"url": BASE, "events": ["*"]}, SETTINGS)
    again = parse_subscription({"url": BASE, "events": ["*"]}, SETTINGS)
    assert made.secret_generated and len(made.secret) >= 32 and made.secret != again.secret
    for secret in ["x" * 16, "x" * 512]:
        given = parse_subscription({"url": BASE, "events": ["*"], "secret": secret}, SETTINGS)
        assert (given.secret, given.secret_generated) == (secret, False)
    for secret in ["x" * 15, "x" * 513, " " + "x" * 20, "x" * 20 + "\n", "é" * 20, 12345678901234567, None]:
        assert "'secret' must be" in refused({"url": BASE, "events": ["*"], "secret": secret})


def test_unknown_fields_are_refused() -> None:
    assert "Unknown field 'active'" in refused({"url": BASE, "events": ["*"], "active": True})
    assert "'enabled'" in refused({"url": BASE, "events": ["*"], "enabled": False})


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("webhook_max_attempts", 0),
        ("webhook_max_attempts", 1001),
        ("webhook_retry_base", 0),
        ("webhook_retry_max", 0.5),
        ("webhook_timeout", 0),
        ("webhook_max_parallel", 0),
        ("webhook_max_subscriptions", -1),
        ("webhook_log_days", 0),
        ("public_url", "ftp://dist.example.com"),
    ],
)
def test_webhook_settings_out_of_range_are_refused_by_name(setting: str, value: Any) -> None:
    with pytest.raises(ValueError, match=setting):
        DistributionSettings(**{setting: value})
