"""Schedules that cannot hold (issue #19): the pure checks, their boundaries, and `check`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rotator.config import parse_config
from rotator.daemon.schedule_check import Schedule, check_config, check_schedules, schedules_from_config
from rotator.durations import parse_duration
from tests.conftest import CLIENT_ID, USERNAME, write_config

MY_DOMAIN = "acme.my.salesforce.com"


def sched(name: str = "sf", every: float = 1800, jitter: float = 60, cap: int = 60, **kw: Any) -> Schedule:
    return Schedule(name=name, every=every, jitter=jitter, max_requests_per_hour=cap, **kw)


def codes(*schedules: Schedule, **kw: Any) -> list[str]:
    return [w.code for w in check_schedules(schedules, **kw)]


def test_defaults_hold() -> None:
    assert codes(sched()) == []


def test_the_issue_case_every_2s_with_the_default_cap() -> None:
    """every 2s (jitter 0.2s by default): up to 2,000 requests an hour against 60."""
    (warning,) = check_schedules([sched(every=2, jitter=0.2)])
    assert warning.code == "cap-exceeded" and warning.credentials == ("sf",)
    assert warning.message.startswith("credentials.sf.every: every 2s (jitter 0.2s)")
    assert "up to 2000 token requests an hour" in warning.message
    assert "max_requests_per_hour (60)" in warning.message
    assert "use every >= 2m1s" in warning.message  # 2 x 3600/60 + 0.2s jitter, rounded up


@pytest.mark.parametrize(("every", "jitter", "cap", "expected"), [
    (59, 0, 60, ["cap-exceeded"]),   # 61 an hour
    (60, 0, 60, ["cap-headroom"]),   # exactly the cap: fits, but a rollover doubles it
    (119, 0, 60, ["cap-headroom"]),  # 2 x 30.25 > 60
    (120, 0, 60, []),                # 2 x 30 = 60: fits with the rollover's second request
    (120, 1, 60, ["cap-headroom"]),  # the jitter brings runs closer: 3600 / 119
    (121, 1, 60, []),
    (3, 0, 1800, ["cap-headroom"]),  # the largest cap: 1,200 an hour, 2 x 1,200 > 1,800
    (4, 0, 1800, []),
])
def test_cap_boundaries(every: float, jitter: float, cap: int, expected: list[str]) -> None:
    assert codes(sched(every=every, jitter=jitter, cap=cap)) == expected


def test_suggested_every_fits() -> None:
    """The every the warning suggests passes the check it failed."""
    for every, jitter, cap in ((2, 0.2, 60), (30, 3, 60), (10, 0, 100), (5, 1, 7)):
        for warning in check_schedules([sched(every=every, jitter=jitter, cap=cap)]):
            suggested = warning.message.split("use every >= ")[1].split(" ")[0]
            assert codes(sched(every=parse_duration(suggested), jitter=jitter, cap=cap)) == []


def test_tiny_interval_is_clamped_not_divided_by_zero() -> None:
    """every - jitter counts as at least 1s: 3,600 an hour, alone near the org's limit too."""
    assert codes(sched(every=1, jitter=0.99, cap=1800)) == ["cap-exceeded", "org-limit-near"]


def fleet(count: int, every: float = 30, host: str = MY_DOMAIN, **kw: Any) -> list[Schedule]:
    return [sched(f"c{i:03d}", every=every, jitter=0, cap=1800, token_host=host, **kw)
            for i in range(count)]


@pytest.mark.parametrize(("count", "expected"), [
    (24, []),                      # 24 x 120 = 2,880 = 80% of 3,600: not over
    (25, ["org-limit-near"]),      # 3,000
    (30, ["org-limit-near"]),      # 3,600 = the limit: near, not over
    (31, ["org-limit-exceeded"]),  # 3,720
])
def test_org_limit_boundaries(count: int, expected: list[str]) -> None:
    assert codes(*fleet(count)) == expected


def test_org_warning_names_the_org_and_some_credentials() -> None:
    (warning,) = check_schedules(fleet(31))
    assert f"the 31 credentials of org {MY_DOMAIN}" in warning.message
    assert "up to 3720 logins an hour, more than the org's login limit" in warning.message
    assert warning.message.endswith("c000, c001, c002, c003, c004, …")
    assert len(warning.credentials) == 31


def test_orgs_are_grouped_by_token_host() -> None:
    """Two My Domain hosts are two orgs; hosts compare case-insensitively."""
    assert codes(*fleet(20), *fleet(20, host="other.my.salesforce.com")) == []
    mixed = fleet(13) + [sched(f"d{i}", every=30, jitter=0, cap=1800, token_host=MY_DOMAIN.upper())
                         for i in range(13)]
    assert codes(*mixed) == ["org-limit-near"]


def test_shared_login_host_is_pooled_and_says_so() -> None:
    (warning,) = check_schedules(fleet(25, host="login.salesforce.com"))
    assert "shared login host login.salesforce.com (if they log in to one org)" in warning.message


def test_only_salesforce_counts_against_the_org_limit() -> None:
    assert codes(*fleet(40, provider="jwt-bearer")) == []


def test_org_limit_is_a_parameter() -> None:
    assert codes(*fleet(4), org_login_limit=600) == []  # 480 = 80%
    assert codes(*fleet(5), org_login_limit=600) == ["org-limit-near"]  # 600
    assert codes(*fleet(6), org_login_limit=600) == ["org-limit-exceeded"]  # 720


@pytest.mark.parametrize(("every", "kind", "expected"), [
    (599, "aws", ["aws-write-rate"]),
    (600, "aws", []),
    (60, "file", []),
    (60, "vault", []),
])
def test_aws_write_rate(every: float, kind: str, expected: list[str]) -> None:
    assert codes(sched(every=every, jitter=0, cap=1800, store_kind=kind)) == expected


# ---------------------------------------------------------------------------- from a config


def config(tmp_path: Path, creds: dict[str, dict[str, Any]], stores: dict[str, Any] | None = None) -> Any:
    base = {"provider": "salesforce", "client_id": CLIENT_ID, "username": USERNAME,
            "key": "local:k", "token": "local:t"}
    return parse_config({
        "stores": stores or {"local": {"type": "file", "path": str(tmp_path)}},
        "credentials": {name: {**base, **body} for name, body in creds.items()},
    }, base_dir=tmp_path)


def test_schedules_from_config(tmp_path: Path) -> None:
    cfg = config(tmp_path, {
        "a": {"every": "2s"},
        "b": {"login_url": "https://Acme.my.salesforce.com", "key": "local:k2", "token": "local:t2"},
        "c": {"provider": "jwt-bearer", "token_url": "https://idp.example.com/token",
              "key": "local:k3", "token": "local:t3", "max_requests_per_hour": 5},
    })
    by = {s.name: s for s in schedules_from_config(cfg)}
    assert by["a"] == Schedule("a", 2.0, 0.2, 60, "salesforce", "login.salesforce.com", "file")
    assert by["b"].token_host == "acme.my.salesforce.com" and by["b"].jitter == 60
    assert (by["c"].provider, by["c"].token_host, by["c"].max_requests_per_hour) == (
        "jwt-bearer", "idp.example.com", 5)
    assert [w.code for w in check_config(cfg)] == ["cap-exceeded"]


def test_check_config_leaves_the_aws_warning_to_config(tmp_path: Path) -> None:
    """config.py already warns about Secrets Manager's write rate: not twice."""
    cfg = config(tmp_path, {"a": {"every": "5m", "token": "sm:t"}},
                 stores={"local": {"type": "file", "path": str(tmp_path)},
                         "sm": {"type": "aws", "region": "eu-west-1"}})
    assert [w.code for w in check_schedules(schedules_from_config(cfg))] == ["aws-write-rate"]
    assert check_config(cfg) == [] and len(cfg.warnings) == 1


@pytest.mark.integration
def test_rotator_check_prints_the_warning(tmp_path: Path, endpoint: Any, run_cli) -> None:
    cfg = write_config(tmp_path / "rotator.toml", login_url=endpoint.url,
                       credentials={"sf": {"every": "2s"}})
    init = run_cli("--config", cfg, "keys", "init", "sf")
    endpoint.register_app(CLIENT_ID, init.out, users=[USERNAME])
    result = run_cli("--config", cfg, "check")
    assert result.code == 0, result.out + result.err
    warnings = [line for line in result.out.splitlines() if line.startswith("warning: ")]
    assert warnings == [warnings[0]] and "credentials.sf.every: every 2s (jitter 0s)" in warnings[0]
    assert "more than max_requests_per_hour (60)" in warnings[0]
