"""Schedules that cannot hold: pure checks for `rotator check` (no I/O, unit-tested alone).

Three limits a schedule can run into:

* the per-credential cap, `max_requests_per_hour` (a sliding hour, rotator/policy.py). The
  daemon runs a credential every `every`, moved by up to `jitter`, so its runs can come
  `every - jitter` apart: PEAK = 3600 / (every - jitter) token requests an hour.
  PEAK > cap: the schedule alone exceeds the cap; the daemon pauses the credential whenever
  the window is full (the issue's `every = "2s"`: two minutes of tokens, then 58 minutes of
  skipped runs). 2 x PEAK > cap: no headroom; during a key rollover a run makes two
  requests (the pending key first, then the current one), and retries after failures come
  out of the same cap, so the cap will be hit.
* the org's login limit (Salesforce: about 3,600 logins an hour per org; beyond it every
  login of the org is refused for about an hour). Only `salesforce` credentials count.
  Which org a credential logs in to is not in the config, so credentials are grouped by
  the token URL's host: a My Domain host (`acme.my.salesforce.com`) is one org; a shared
  login host (`login.salesforce.com`, `test.salesforce.com`) pools every credential that
  uses it, which over-counts if they belong to different orgs (the warning says so).
  A group whose PEAK sum exceeds 80% of the limit is warned about, above 100% more loudly.
* AWS Secrets Manager: PutSecretValue at most once every 10 minutes sustained (AWS keeps
  the 100 newest versions and all of the last 24 h); `every` under 10 minutes on an `aws`
  token store runs into the version quota.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from rotator.durations import format_duration

if TYPE_CHECKING:
    from rotator.config import Config

HOUR = 3600.0
ORG_LOGIN_LIMIT = 3600  # Salesforce: about 3,600 logins an hour per org
ORG_WARN_FRACTION = 0.8
REQUESTS_PER_RUN_WORST = 2  # a rollover run: the pending key, then the current one
AWS_MIN_EVERY = 600.0  # Secrets Manager: one PutSecretValue per 10 minutes sustained
SHARED_LOGIN_HOSTS = frozenset({"login.salesforce.com", "test.salesforce.com"})


@dataclass(frozen=True)
class Schedule:
    """What the checks need to know about one credential."""

    name: str
    every: float
    jitter: float
    max_requests_per_hour: int
    provider: str = "salesforce"
    token_host: str = "login.salesforce.com"  # noqa: S105 (a host name, not a secret)
    store_kind: str = "file"  # the token store: file, vault or aws

    @property
    def peak_per_hour(self) -> float:
        """Token requests an hour if every run comes as early as the jitter allows."""
        return HOUR / max(self.every - self.jitter, 1.0)


@dataclass(frozen=True)
class ScheduleWarning:
    code: str  # cap-exceeded | cap-headroom | org-limit-exceeded | org-limit-near | aws-write-rate
    credentials: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        return self.message


def check_schedules(
    schedules: Iterable[Schedule], *, org_login_limit: int = ORG_LOGIN_LIMIT
) -> list[ScheduleWarning]:
    """Every warning for these schedules: per credential in name order, then per org."""
    items = sorted(schedules, key=lambda s: s.name)
    warnings: list[ScheduleWarning] = []
    for item in items:
        warnings += _cap(item)
        warnings += _aws(item)
    warnings += _org(items, org_login_limit)
    return warnings


def _cap(s: Schedule) -> list[ScheduleWarning]:
    peak, cap = s.peak_per_hour, s.max_requests_per_hour
    shape = f"every {_duration(s.every)} (jitter {_duration(s.jitter)})"
    # The shortest `every` with headroom, keeping the jitter: every - jitter >= 2 x 3600 / cap.
    fits = format_duration(_ceil(HOUR * REQUESTS_PER_RUN_WORST / cap + s.jitter))
    if peak > cap:
        return [ScheduleWarning("cap-exceeded", (s.name,), (
            f"credentials.{s.name}.every: {shape} means up to {peak:.0f} token requests an hour, "
            f"more than max_requests_per_hour ({cap}); the daemon will pause it each time the "
            f"hour is full — use every >= {fits} or raise max_requests_per_hour"))]
    if peak * REQUESTS_PER_RUN_WORST > cap:
        return [ScheduleWarning("cap-headroom", (s.name,), (
            f"credentials.{s.name}.every: {shape} means up to {peak:.0f} token requests an hour "
            f"against max_requests_per_hour {cap}, no headroom for a key rollover (two requests "
            f"a run) or retries — use every >= {fits} or raise max_requests_per_hour"))]
    return []


def _aws(s: Schedule) -> list[ScheduleWarning]:
    if s.store_kind != "aws" or s.every >= AWS_MIN_EVERY:
        return []
    return [ScheduleWarning("aws-write-rate", (s.name,), (
        f"credentials.{s.name}.every: {format_duration(s.every)} writes the token faster than "
        f"Secrets Manager's sustained PutSecretValue rate (once per 10 minutes); "
        f"{int(86400 // s.every)} versions a day will run into the version quota — use every >= 10m"))]


def _org(items: Sequence[Schedule], limit: int) -> list[ScheduleWarning]:
    groups: dict[str, list[Schedule]] = defaultdict(list)
    for item in items:
        if item.provider == "salesforce":
            groups[item.token_host.lower()].append(item)
    warnings = []
    for host in sorted(groups):
        members = groups[host]
        total = sum(m.peak_per_hour for m in members)
        if total <= limit * ORG_WARN_FRACTION:
            continue
        names = tuple(m.name for m in members)
        over = total > limit
        plural = "s" if len(names) > 1 else ""
        who = (f"the {len(names)} credential{plural} on the shared login host {host} (if they log "
               "in to one org)" if host in SHARED_LOGIN_HOSTS else
               f"the {len(names)} credential{plural} of org {host}")
        warnings.append(ScheduleWarning("org-limit-exceeded" if over else "org-limit-near", names, (
            f"{who} make up to {total:.0f} logins an hour, "
            f"{'more than' if over else 'over 80% of'} the org's login limit (about {limit} an "
            "hour; beyond it Salesforce refuses every login of the org for about an hour) — "
            f"lengthen every for some of: {', '.join(names[:5])}{', …' if len(names) > 5 else ''}")))
    return warnings


def _duration(seconds: float) -> str:
    """format_duration, but a fraction of a second stays visible (the default jitter of
    every = "2s" is 0.2s)."""
    return f"{seconds:g}s" if 0 < seconds < 1 else format_duration(seconds)


def _ceil(seconds: float) -> float:
    """Rounded up to a whole second, so the suggestion really fits."""
    whole = int(seconds)
    return float(whole if whole == seconds else whole + 1)


# ---------------------------------------------------------------------------- from a config


def schedules_from_config(config: Config) -> list[Schedule]:
    from rotator.config import AwsStoreConfig, FileStoreConfig, VaultStoreConfig

    kinds = {AwsStoreConfig: "aws", VaultStoreConfig: "vault", FileStoreConfig: "file"}
    result = []
    for name, cred in config.credentials.items():
        store = config.stores.get(cred.token.store)
        result.append(Schedule(
            name=name, every=cred.every, jitter=cred.jitter,
            max_requests_per_hour=cred.max_requests_per_hour, provider=cred.provider,
            token_host=(urlsplit(cred.effective_token_url).hostname or "").lower(),
            store_kind=kinds.get(type(store), "other"),
        ))
    return result


def check_config(config: Config, *, org_login_limit: int = ORG_LOGIN_LIMIT) -> list[ScheduleWarning]:
    """For `rotator check`. The AWS write rate is left out: config.py already warns about it
    (config.warnings, printed by check and emitted by the daemon)."""
    return [w for w in check_schedules(schedules_from_config(config), org_login_limit=org_login_limit)
            if w.code != "aws-write-rate"]
