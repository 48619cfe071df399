"""The fault matrix: every store x every fault, driven through the daemon's own scheduling.

Each cell runs in-process on a virtual clock: the daemon's `Rotations` (the APScheduler job
function, the failure policy, the hourly cap) and a `CountingEngine`, exactly as `rotator run`
wires them, against real sockets — the Salesforce-compatible endpoint, the Vault emulator,
moto behind the AWS fault proxy, the file store on disk. The clock jumps from one scheduled
run to the next, so minutes of backoff take milliseconds; the endpoint and Vault share it.

A cell: one good rotation; the fault is injected; the credential runs at each time its job is
scheduled for, FAULTED_RUNS times; then the fault clears and the next scheduled run must
rotate. Asserted throughout:

* the job never raises (the daemon stays up) and every failure is a `rotation.failed` audit
  event that validates against the catalogue, with the expected error class, retryability and
  diagnosis;
* the store's current token is the last good one, byte for byte (Vault: version + data;
  AWS: AWSCURRENT's VersionId + SecretString) after every faulted run;
* the runs follow the backoff policy exactly (retry_min 10s, retry_max 2m, a fixed random
  draw), never closer than retry_min (or the server's Retry-After), and each run sends at most
  one token request — none when the store fails before the exchange;
* recovery: the first run after the fault clears stores a new token the endpoint accepts.

Clock skew of +-5 minutes is not a fault Salesforce notices (3-minute `exp` plus a 3-minute
grace); those cells assert no failure, no extra requests and no lost readiness. Skew beyond
that is the `expired authorization code` cell. Real daemon processes for one cell per store
are in test_daemon_faults.py.
"""

from __future__ import annotations

import errno
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from rotator import policy
from rotator.audit import events
from rotator.audit import pipeline as audit
from rotator.config import load_config
from rotator.daemon.metrics import Metrics
from rotator.daemon.scheduling import MIN_DELAY, CountingEngine, Rotations
from rotator.engine import Engine
from rotator.errors import EndpointUnavailable, TokenRejected
from rotator.stores import StoreSet
from tests.conftest import CLIENT_ID, USERNAME
from tests.reliability.conftest import (
    StoreKit,
    VirtualClock,
    credential_config,
    seed_credential,
    vault_rules,
)

pytestmark = pytest.mark.integration

EVERY, RETRY_MIN, RETRY_MAX, RAND = 600.0, 10.0, 120.0, 0.5
SETTINGS = {"every": "10m", "jitter": "0s", "retry_min": "10s", "retry_max": "2m", "timeout": "500ms"}
FAULTED_RUNS = 4
SKEW_RUNS = 6
RETRY_AFTER = 45  # the endpoint's 429 asks for more than the first backoff steps give
LOGIN_BLOCK = 3600.0  # Salesforce blocks an org's logins for about an hour (policy.LOGIN_BLOCK_SECONDS)


# ---------------------------------------------------------------------------- one cell


class Cell:
    """A credential on `kit`, scheduled by the daemon's Rotations on a virtual clock."""

    def __init__(
        self, tmp_path: Path, endpoint: Any, kit: StoreKit, clock: VirtualClock, pair: Any, other_pair: Any
    ) -> None:
        self.endpoint, self.kit, self.clock = endpoint, kit, clock
        self.pair, self.other_pair = pair, other_pair
        self.skew = 0.0  # the rotator host's clock minus the true (endpoint) time
        self.on_exchanged: Callable[[], None] | None = None
        seed_credential(kit, endpoint, pair)
        self.config_path = credential_config(tmp_path, endpoint, kit, **SETTINGS)
        self.config = load_config(self.config_path)
        self.rot = Rotations(Metrics(process=False), workers=1, clock=self.host, rand=lambda: RAND)
        self.sent = 0  # token requests, counted as the daemon counts them (its own window forgets)
        self.engine = CountingEngine(
            self.config,
            stores=StoreSet(self.config.stores),
            clock=self.host,
            on_request=self._request,
            on_step=self._step,
        )
        self.rot.use(self.engine)
        self.rot.add("sf")
        self.runs: list[float] = []  # host time of each run

    def host(self) -> float:
        return self.clock() + self.skew

    def _request(self, name: str) -> None:
        self.sent += 1
        self.rot.on_request(name)

    def _step(self, _name: str, step: str) -> None:
        if step == "exchanged" and self.on_exchanged is not None:
            hook, self.on_exchanged = self.on_exchanged, None
            hook()

    @property
    def state(self) -> Any:
        return self.rot.states["sf"]

    def next_run(self) -> float:
        return self.rot.scheduler.get_job("sf").next_run_time.timestamp()

    def run(self) -> str:
        """The credential's next scheduled run, as the scheduler would start it."""
        job = self.rot.scheduler.get_job("sf")
        planned = job.next_run_time
        self.clock.set(planned.timestamp() - self.skew)
        self.runs.append(self.host())
        self.rot._run("sf")  # the job function itself: it must never raise
        if self.rot.scheduler.get_job("sf").next_run_time == planned:
            # not rescheduled by a decision: the interval trigger carries on from this run
            self.rot.scheduler.modify_job("sf", next_run_time=planned + timedelta(seconds=EVERY))
        return str(self.state.last_result)

    def requests(self) -> int:
        """Token requests the daemon sent (counted before sending, as its cap counts them)."""
        return self.sent

    def token(self) -> dict[str, Any]:
        data = self.kit.read("sf/token")
        assert data is not None
        return data

    def close(self) -> None:
        self.engine.stores.close()


# ---------------------------------------------------------------------------- the faults


@dataclass(frozen=True)
class Fault:
    name: str
    group: str  # endpoint | oauth | store | skew | race
    inject: Callable[[Cell], None]
    clear: Callable[[Cell], None]
    error_class: str | None = None  # None: the runs must not fail
    diagnosis: str = ""  # regex on the rotation.failed diagnosis
    retryable: bool = True
    reaches_endpoint: bool = True  # each faulted run sends one token request
    retry_after: float | None = None
    stores: tuple[str, ...] = ("file", "vault", "aws")
    # permanent errors: the fixed wait between runs (Salesforce's login block: an hour)
    permanent_wait: float = RETRY_MAX

    def sample(self) -> Exception:
        """An error of this fault's kind, for what the policy says about it."""
        if self.retryable:
            return EndpointUnavailable("u", "x", retry_after=self.retry_after)
        if self.permanent_wait == LOGIN_BLOCK:
            return TokenRejected("u", "invalid_grant", "LOGIN_RATE_EXCEEDED")
        return TokenRejected("u", "invalid_grant", "x")


def _nothing(cell: Cell) -> None:
    return None


def _endpoint_fault(kind: str, **kwargs: Any) -> Callable[[Cell], None]:
    return lambda cell: cell.endpoint.set_fault(kind, **kwargs)


def _clear_endpoint(cell: Cell) -> None:
    cell.endpoint.clear_faults()


def _refuse(cell: Cell) -> None:
    cell.endpoint.stop()


def _unrefuse(cell: Cell) -> None:
    cell.endpoint.start()


def _other_certificate(cell: Cell) -> None:
    cell.endpoint.upload_certificate(CLIENT_ID, cell.other_pair.cert_pem)


def _own_certificate(cell: Cell) -> None:
    cell.endpoint.upload_certificate(CLIENT_ID, cell.pair.cert_pem)


def _audiences(value: frozenset[str] | None) -> Callable[[Cell], None]:
    def apply(cell: Cell) -> None:
        cell.endpoint._audiences = value  # the emulator's accepted audiences (private, no setter)

    return apply


def _skew(seconds: float) -> Callable[[Cell], None]:
    def apply(cell: Cell) -> None:
        cell.skew = seconds

    return apply


def _approved(flag: bool) -> Callable[[Cell], None]:
    return lambda cell: cell.endpoint.add_user(CLIENT_ID, USERNAME, approved=flag)


def _rate_limit(limit: int) -> Callable[[Cell], None]:
    def apply(cell: Cell) -> None:
        cell.endpoint.login_rate_limit = limit
        cell.endpoint.reset_rate_limit()

    return apply


def _drop_app(cell: Cell) -> None:
    with cell.endpoint._lock:
        del cell.endpoint._apps[CLIENT_ID]  # the connected app is gone (private, no remover)


def _admin_approved(flag: bool) -> Callable[[Cell], None]:
    return lambda cell: cell.endpoint.register_app(
        CLIENT_ID, cell.pair.cert_pem, users=[USERNAME], admin_approved=flag
    )


# -- store faults, per store


def _file_os_error(target: str, code: int) -> Callable[[Cell], None]:
    """The file system answers `code` (EIO, EACCES, ENOSPC) to reads or writes of the store: the
    FileStore's own conversion runs. (Tests run as root, where chmod denies nothing.)"""

    def apply(cell: Cell) -> None:
        import rotator.stores.file as file_store

        def fail(*_args: Any, **_kwargs: Any) -> Any:
            raise OSError(code, __import__("os").strerror(code))

        cell.kit.extra["saved"] = (target, getattr(file_store, target))
        setattr(file_store, target, fail)

    return apply


def _file_restore(cell: Cell) -> None:
    import rotator.stores.file as file_store

    target, original = cell.kit.extra.pop("saved")
    setattr(file_store, target, original)


def _vault_stop(cell: Cell) -> None:
    cell.kit.server.stop()


def _vault_start(cell: Cell) -> None:
    cell.kit.server.start()


def _vault_token_caps(caps: list[str] | None) -> Callable[[Cell], None]:
    return lambda cell: cell.kit.server.add_policy(
        cell.kit.extra["policy"], vault_rules(cell.kit.prefix, token_caps=caps)
    )


def _vault_seal(cell: Cell) -> None:
    cell.kit.server.seal()


def _vault_unseal(cell: Cell) -> None:
    cell.kit.server.unseal()


def _vault_429(cell: Cell) -> None:
    cell.kit.server.set_fault("429", path_prefix="/v1/secret/")


def _vault_clear(cell: Cell) -> None:
    cell.kit.server.clear_faults()


def _aws_fault(operation: str, code: str, message: str) -> Callable[[Cell], None]:
    return lambda cell: cell.kit.server.set_fault(operation, code, message=message)


def _aws_clear(cell: Cell) -> None:
    cell.kit.server.clear_faults()


def _race(cell: Cell) -> None:
    """Another replica stores a fresh token between this run's exchange and its write."""

    def other_writer() -> None:
        replica = Engine(cell.config, stores=StoreSet(cell.config.stores), clock=cell.host)
        try:
            assert replica.rotate("sf", force=True).action == "rotated"
        finally:
            replica.stores.close()
        cell.kit.extra["theirs"] = cell.kit.snapshot("sf/token")

    cell.on_exchanged = other_writer


ENDPOINT = (
    Fault(
        "token endpoint 5xx",
        "endpoint",
        _endpoint_fault("5xx", status=503),
        _clear_endpoint,
        "EndpointUnavailable",
        r"server error \(HTTP 503\)",
    ),
    Fault(
        "token endpoint 429 + Retry-After",
        "endpoint",
        _endpoint_fault("429", retry_after=RETRY_AFTER),
        _clear_endpoint,
        "EndpointUnavailable",
        r"rate limited \(HTTP 429\)",
        retry_after=RETRY_AFTER,
    ),
    Fault(
        "HTML maintenance page (503)",
        "endpoint",
        _endpoint_fault("html"),
        _clear_endpoint,
        "EndpointUnavailable",
        r"server error \(HTTP 503\)",
    ),
    Fault(
        "HTML body with 200",
        "endpoint",
        _endpoint_fault("html200"),
        _clear_endpoint,
        "EndpointProtocolError",
        r"HTTP 200 reply is not JSON \(text/html\).*maintenance page",
    ),
    Fault(
        "slow, past the timeout",
        "endpoint",
        _endpoint_fault("slow", delay=1.5),
        _clear_endpoint,
        "EndpointUnavailable",
        r"no reply within 0\.5s",
    ),
    Fault(
        "connection reset",
        "endpoint",
        _endpoint_fault("reset"),
        _clear_endpoint,
        "EndpointUnavailable",
        r"connection failed \((connection reset|connection aborted|remote end closed)",
    ),
    Fault(
        "connection refused",
        "endpoint",
        _refuse,
        _unrefuse,
        "EndpointUnavailable",
        r"connection failed \(connection refused\)",
    ),
)
OAUTH = (
    Fault(
        "invalid_grant: invalid assertion",
        "oauth",
        _other_certificate,
        _own_certificate,
        "TokenRejected",
        r"invalid_grant \(invalid assertion\) \(the signature does not verify.*upload it",
        retryable=False,
    ),
    Fault(
        "invalid_grant: audience is invalid",
        "oauth",
        _audiences(frozenset({"https://test.salesforce.com"})),
        _audiences(None),
        "TokenRejected",
        r"invalid_grant \(audience is invalid\) \(aud must be .*set login_url",
        retryable=False,
    ),
    Fault(
        "invalid_grant: expired authorization code (clock 10 min slow)",
        "oauth",
        _skew(-600),
        _skew(0),
        "TokenRejected",
        r"invalid_grant \(expired authorization code\) \(.*clock is off.*NTP",
        retryable=False,
    ),
    Fault(
        "invalid_grant: user hasn't approved this consumer",
        "oauth",
        _approved(False),
        _approved(True),
        "TokenRejected",
        r"invalid_grant \(user hasn't approved this consumer\) \(pre-authorize the user",
        retryable=False,
    ),
    Fault(
        "invalid_grant: LOGIN_RATE_EXCEEDED",
        "oauth",
        _rate_limit(0),
        _rate_limit(3600),
        "TokenRejected",
        r"invalid_grant \(LOGIN_RATE_EXCEEDED\) \(the org's login rate limit",
        retryable=False,
        permanent_wait=LOGIN_BLOCK,
    ),
    Fault(
        "invalid_client_id",
        "oauth",
        _drop_app,
        _admin_approved(True),
        "TokenRejected",
        r"invalid_client_id \(client identifier invalid\) \(client_id \(iss\) must be",
        retryable=False,
    ),
    Fault(
        "invalid_app_access",
        "oauth",
        _admin_approved(False),
        _admin_approved(True),
        "TokenRejected",
        r"invalid_app_access \(user is not admin approved.*Permitted Users",
        retryable=False,
    ),
)
STORE = (
    Fault(
        "store unreachable (EIO)",
        "store",
        _file_os_error("_read_capped", errno.EIO),
        _file_restore,
        "StoreUnavailable",
        r"cannot read: Input/output error",
        reaches_endpoint=False,
        stores=("file",),
    ),
    Fault(
        "store 403 (EACCES on write)",
        "store",
        _file_os_error("_atomic_write", errno.EACCES),
        _file_restore,
        "StoreAccessDenied",
        r"permission denied to write under .*run rotator as the user",
        retryable=False,
        stores=("file",),
    ),
    Fault(
        "store full (ENOSPC on write)",
        "store",
        _file_os_error("_atomic_write", errno.ENOSPC),
        _file_restore,
        "StoreUnavailable",
        r"cannot write: No space left on device",
        stores=("file",),
    ),
    Fault(
        "store unreachable (Vault down)",
        "store",
        _vault_stop,
        _vault_start,
        "StoreUnavailable",
        r"cannot connect to Vault at .*: connection refused",
        reaches_endpoint=False,
        stores=("vault",),
    ),
    Fault(
        "store 403 (policy lacks update)",
        "store",
        _vault_token_caps(["read"]),
        _vault_token_caps(None),
        "StoreAccessDenied",
        r'permission denied: the Vault policy lacks "update" on secret/data/.*sf/token',
        retryable=False,
        stores=("vault",),
    ),
    Fault(
        "store sealed",
        "store",
        _vault_seal,
        _vault_unseal,
        "StoreUnavailable",
        r"Vault at .* is sealed or standby \(503",
        reaches_endpoint=False,
        stores=("vault",),
    ),
    Fault(
        "store throttled (429)",
        "store",
        _vault_429,
        _vault_clear,
        "StoreUnavailable",
        r"throttled by Vault at .* \(429",
        reaches_endpoint=False,
        stores=("vault",),
    ),
    Fault(
        "store unreachable (connection reset)",
        "store",
        _aws_fault("*", "connection-reset", ""),
        _aws_clear,
        "StoreUnavailable",
        r"cannot reach .* \(.*\).*check the network path",
        reaches_endpoint=False,
        stores=("aws",),
    ),
    Fault(
        "store 403 (AccessDenied on PutSecretValue)",
        "store",
        _aws_fault(
            "PutSecretValue",
            "AccessDeniedException",
            "User: arn:aws:iam::123456789012:user/rotator is not authorized to perform: "
            "secretsmanager:PutSecretValue",
        ),
        _aws_clear,
        "StoreAccessDenied",
        r"access denied: secretsmanager:PutSecretValue on secret .*IAM policy must allow",
        retryable=False,
        stores=("aws",),
    ),
    Fault(
        "store throttled (ThrottlingException)",
        "store",
        _aws_fault("PutSecretValue", "ThrottlingException", "Rate exceeded"),
        _aws_clear,
        "StoreUnavailable",
        r"throttled or unavailable \(ThrottlingException\)",
        stores=("aws",),
    ),
)
RACE = (Fault("CAS conflict (another writer first)", "race", _race, _nothing),)
SKEW = (
    Fault("clock skew +5 min", "skew", _skew(300), _skew(0)),
    Fault("clock skew -5 min", "skew", _skew(-300), _skew(0)),
)
FAULTS = ENDPOINT + OAUTH + STORE + RACE + SKEW
CELLS = [
    pytest.param(store, fault, id=f"{store}-{re.sub(r'[^a-z0-9+-]+', '_', fault.name.lower())}")
    for store, fault in itertools.product(("file", "vault", "aws"), FAULTS)
    if store in fault.stores
]


def expected_gaps(fault: Fault) -> list[float]:
    """The delays rotator's policy gives after the 1st..FAULTED_RUNS-1th consecutive failure."""
    error = fault.sample()
    return [
        max(
            policy.retry_after_failure(
                error, attempt=n, retry_min=RETRY_MIN, retry_max=RETRY_MAX, rand=RAND
            ).delay,
            MIN_DELAY,
        )
        for n in range(1, FAULTED_RUNS)
    ]


# ---------------------------------------------------------------------------- the test


@pytest.mark.parametrize(("store", "fault"), CELLS)
def test_fault_cell(
    store: str, fault: Fault, tmp_path, make_endpoint, make_store, rsa_keys, secret_guard, report
) -> None:
    """Under the fault: no raise, token kept byte for byte, runs per policy, audited; then recovery."""
    clock = VirtualClock()
    endpoint = make_endpoint(clock=clock)
    kit = make_store(store)
    with capture_logs(processors=audit.shared_processors()) as captured:
        cell = Cell(tmp_path, endpoint, kit, clock, rsa_keys[0], rsa_keys[1])
        try:
            outcome = _exercise(cell, fault)
        finally:
            cell.close()
    secret_guard.seen("captured audit events", "\n".join(json.dumps(e, default=str) for e in captured))
    for event in captured:
        assert events.validate(event) == [], event
    failed = [e for e in captured if e["event"] == "rotation.failed"]
    report.record(
        "matrix",
        store=store,
        fault=fault.name,
        group=fault.group,
        order=FAULTS.index(fault),
        gaps=outcome["gaps"],
        faults_injected=1,
        rotations_attempted=outcome["runs"],
        faulted_runs=outcome["faulted_runs"],
        token_requests=outcome["requests"],
        request_bound=outcome["bound"],
        tokens_lost=outcome["lost"],
        recovered=outcome["recovered"],
        audited_failures=len(failed),
        diagnosis=failed[0]["diagnosis"] if failed else None,
    )

    assert outcome["lost"] == 0
    assert outcome["recovered"]
    assert outcome["requests"] <= outcome["bound"]
    if fault.error_class is None:
        assert failed == []
        return
    assert len(failed) == outcome["faulted_runs"]
    for event in failed:
        assert event["error_class"] == fault.error_class, event
        assert event["retryable"] is fault.retryable, event
        assert re.search(fault.diagnosis, event["diagnosis"]), event["diagnosis"]
        assert event["credential"] == "sf" and event["level"] == "error"


def _exercise(cell: Cell, fault: Fault) -> dict[str, Any]:
    assert cell.run() == "rotated"  # the last good token
    good = cell.kit.snapshot("sf/token")
    assert good is not None and cell.endpoint.is_valid(cell.token()["access_token"])
    lost = 0
    if fault.group == "skew":
        return _exercise_skew(cell, fault, good)
    if fault.group == "race":
        return _exercise_race(cell, fault, good)

    fault.inject(cell)
    before_requests, before_endpoint = cell.requests(), cell.endpoint.token_requests
    first_faulted = len(cell.runs)
    try:
        for _ in range(FAULTED_RUNS):
            result = cell.run()
            assert result == "failed", (result, cell.state.last_error)
            if cell.kit.snapshot("sf/token") != good:
                lost += 1
    finally:
        fault.clear(cell)
    faulted = cell.runs[first_faulted:]
    gaps = [b - a for a, b in itertools.pairwise(faulted)]
    requests = cell.requests() - before_requests
    window = faulted[-1] - faulted[0]
    min_gap = max(RETRY_MIN, fault.retry_after or 0, MIN_DELAY) if fault.retryable else fault.permanent_wait
    bound = (1 + int(window // min_gap)) if fault.reaches_endpoint else 0
    assert gaps == pytest.approx(expected_gaps(fault)), gaps
    assert all(gap >= min_gap for gap in gaps)  # never closer than the policy's floor
    # permanent: once per retry_max (an hour for LOGIN_RATE_EXCEEDED)
    assert fault.retryable or all(gap == fault.permanent_wait for gap in gaps)
    assert requests == (FAULTED_RUNS if fault.reaches_endpoint else 0)
    if fault.name != "connection refused" and fault.reaches_endpoint:
        assert cell.endpoint.token_requests - before_endpoint == requests
    assert cell.state.consecutive_failures == FAULTED_RUNS
    assert cell.state.permanent is (not fault.retryable)

    # recovery: the next scheduled run (within retry_max) stores a new, valid token
    assert cell.next_run() - cell.runs[-1] <= max(RETRY_MAX, fault.permanent_wait)
    recovered = cell.run() == "rotated"
    fresh = cell.kit.snapshot("sf/token")
    recovered = recovered and fresh != good and cell.endpoint.is_valid(cell.token()["access_token"])
    if not recovered:
        lost += 1
    assert cell.state.consecutive_failures == 0 and cell.state.last_error is None
    ok, why = cell.state.readiness(_at(cell.host()))
    assert ok, why
    return {
        "runs": len(cell.runs),
        "faulted_runs": FAULTED_RUNS,
        "requests": requests,
        "bound": bound,
        "lost": lost,
        "recovered": recovered,
        "gaps": [round(gap, 1) for gap in gaps],
    }


def _exercise_race(cell: Cell, fault: Fault, good: bytes) -> dict[str, Any]:
    fault.inject(cell)
    before = cell.requests()
    assert cell.run() == "superseded"
    theirs = cell.kit.extra["theirs"]
    lost = int(cell.kit.snapshot("sf/token") != theirs or theirs == good)
    assert cell.requests() - before == 1  # ours only; the winner's request is the other replica's
    # the loser comes back when the winner's token is due, not sooner
    winner = cell.token()
    assert cell.next_run() >= _epoch(winner["issued_at"]) + EVERY - 60 - 1
    recovered = (
        cell.run() == "rotated"
        and cell.kit.snapshot("sf/token") != theirs
        and cell.endpoint.is_valid(cell.token()["access_token"])
    )
    return {
        "runs": len(cell.runs),
        "faulted_runs": 1,
        "requests": cell.requests() - before,
        "bound": 2,
        "lost": lost + (0 if recovered else 1),
        "recovered": recovered,
        "gaps": [],
    }


def _exercise_skew(cell: Cell, fault: Fault, good: bytes) -> dict[str, Any]:
    fault.inject(cell)
    before = cell.requests()
    start = cell.clock()
    lost = 0
    issued: list[float] = []
    try:
        for _ in range(SKEW_RUNS):
            result = cell.run()
            assert result in ("rotated", "skipped"), (result, cell.state.last_error)
            ok, why = cell.state.readiness(_at(cell.host()))
            assert ok, why
            token = cell.token()
            if not cell.endpoint.is_valid(token["access_token"]):
                lost += 1
            issued.append(_epoch(token["issued_at"]))
    finally:
        fault.clear(cell)
    requests = cell.requests() - before
    window = cell.clock() - start
    refreshes = sorted(set(issued))
    gaps = [b - a for a, b in itertools.pairwise(refreshes)]
    # a refresh at least every interval plus the skew (plus the due margin), never a storm
    assert all(EVERY - 60 - 300 - 1 <= gap <= EVERY + 300 + 60 + 1 for gap in gaps), gaps
    bound = 1 + int(window // (EVERY - 60 - 300))
    recovered = cell.run() in ("rotated", "skipped") and cell.endpoint.is_valid(cell.token()["access_token"])
    del good
    return {
        "runs": len(cell.runs),
        "faulted_runs": SKEW_RUNS,
        "requests": requests,
        "bound": bound,
        "lost": lost,
        "recovered": recovered,
        "gaps": [round(gap, 1) for gap in gaps],
    }


def _at(epoch: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, tz=UTC)


def _epoch(text: str) -> float:
    from rotator.clock import parse_rfc3339

    return parse_rfc3339(text).timestamp()
