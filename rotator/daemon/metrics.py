"""The daemon's Prometheus metrics, in a registry of its own (never the global one).

Names follow cert-manager's, so its dashboards and alerts carry over:

    rotator_rotation_total{credential,result}             success | failure | skipped | superseded
    rotator_rotation_duration_seconds{credential}         histogram of one engine run
    rotator_token_last_success_timestamp_seconds{credential}   issued_at of the stored token
    rotator_token_expiration_timestamp_seconds{credential}     expires_at, when the endpoint says
    rotator_certificate_expiration_timestamp_seconds{credential}
    rotator_credential_ready{credential}                  1 while the token is within its deadline
    rotator_token_requests_total{credential}              exchanges sent to the token endpoint
    rotator_token_requests_limit_per_hour{credential}     max_requests_per_hour (the cap on the above)
    rotator_rotation_interval_seconds{credential}         `every` (token age is judged against it)
    rotator_rotation_errors_total{credential,error_class} failed runs by rotator.errors class
    rotator_certificate_publications_total{credential,result}  Metadata API publications: success | failure
    rotator_runs_coalesced_total                          runs folded into a still queued or running one
    rotator_build_info{version}

Labels carry credential names and fixed words only, never a value read from a record.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

import prometheus_client
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from rotator import __version__, errors

RESULTS = ("success", "failure", "skipped", "superseded")
# RotationResult.action -> the result label
ACTION_RESULT = {
    "rotated": "success",
    "reused": "success",  # the endpoint returned the stored token: a successful run
    "failed": "failure",
    "skipped": "skipped",
    "dry-run": "skipped",
    "superseded": "superseded",
}
# error_class label values: rotator.errors class names only (a fixed set), else "other".
ERROR_CLASSES = frozenset(
    name for name, value in vars(errors).items()
    if isinstance(value, type) and issubclass(value, errors.RotatorError)
)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# `*_created` series double the output and nobody alerts on them.
prometheus_client.disable_created_metrics()


class Metrics:
    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rotations = Counter(
            "rotator_rotation", "Rotation runs by outcome.", ["credential", "result"], registry=r
        )
        self.duration = Histogram(
            "rotator_rotation_duration_seconds", "Time one rotation run took.", ["credential"],
            buckets=DURATION_BUCKETS, registry=r,
        )
        self.last_success = Gauge(
            "rotator_token_last_success_timestamp_seconds",
            "When the token in the store was issued (the last successful exchange).",
            ["credential"], registry=r,
        )
        self.token_expiration = Gauge(
            "rotator_token_expiration_timestamp_seconds",
            "When the token in the store expires, where the endpoint gives a lifetime.",
            ["credential"], registry=r,
        )
        self.cert_expiration = Gauge(
            "rotator_certificate_expiration_timestamp_seconds",
            "not_after of the certificate of the signing key.", ["credential"], registry=r,
        )
        self.ready = Gauge(
            "rotator_credential_ready",
            "1 if the credential has a token within its refresh deadline, else 0.",
            ["credential"], registry=r,
        )
        self.token_requests = Counter(
            "rotator_token_requests", "Token requests sent to the endpoint.", ["credential"],
            registry=r,
        )
        self.requests_limit = Gauge(
            "rotator_token_requests_limit_per_hour",
            "max_requests_per_hour: token requests allowed in a sliding hour.", ["credential"],
            registry=r,
        )
        self.interval = Gauge(
            "rotator_rotation_interval_seconds", "The credential's `every`.", ["credential"],
            registry=r,
        )
        self.errors = Counter(
            "rotator_rotation_errors", "Failed rotation runs by error class (rotator.errors).",
            ["credential", "error_class"], registry=r,
        )
        self.publications = Counter(
            "rotator_certificate_publications",
            "Certificates published into the app through the Metadata API, by outcome.",
            ["credential", "result"], registry=r,
        )
        self.coalesced = Counter(
            "rotator_runs_coalesced",
            "Scheduled runs that found the credential's previous run still queued or running and "
            "were folded into it: more due work than daemon.workers can do.", registry=r,
        )
        self.build_info = Gauge("rotator_build_info", "rotator's version.", ["version"], registry=r)
        self.build_info.labels(__version__).set(1)
        if process:
            # process_resident_memory_bytes, process_cpu_seconds_total, ... (read at scrape time)
            ProcessCollector(registry=r)

    def add_credential(self, name: str) -> None:
        """Create the series at zero, so rate() and absent() work from the first scrape."""
        for result in RESULTS:
            self.rotations.labels(name, result)
        self.token_requests.labels(name)
        self.ready.labels(name).set(0)

    def remove_credential(self, name: str) -> None:
        for result in RESULTS:
            _remove(self.rotations, name, result)
        for result in ("success", "failure"):
            _remove(self.publications, name, result)
        for metric in (self.duration, self.last_success, self.token_expiration,
                       self.cert_expiration, self.ready, self.token_requests,
                       self.requests_limit, self.interval):
            _remove(metric, name)
        for labels in [s.labels for f in self.errors.collect() for s in f.samples
                       if s.labels.get("credential") == name and s.name.endswith("_total")]:
            _remove(self.errors, name, labels["error_class"])

    def schedule(self, name: str, *, every: float, requests_per_hour: int) -> None:
        """The credential's schedule, for dashboards: token age against `every`, requests
        against the cap. The daemon sets it whenever it (re)adds a credential."""
        self.interval.labels(name).set(every)
        self.requests_limit.labels(name).set(requests_per_hour)

    def rotation(self, name: str, action: str, duration: float | None,
                 error: BaseException | None = None) -> None:
        result = ACTION_RESULT.get(action, "failure")
        self.rotations.labels(name, result).inc()
        if result == "failure":
            kind = type(error).__name__ if error is not None else "other"
            self.errors.labels(name, kind if kind in ERROR_CLASSES else "other").inc()
        if duration is not None:
            self.duration.labels(name).observe(duration)

    def certificate_publication(self, name: str, ok: bool) -> None:
        self.publications.labels(name, "success" if ok else "failure").inc()

    def token_request(self, name: str) -> None:
        self.token_requests.labels(name).inc()

    def token(self, name: str, issued_at: datetime | None, expires_at: datetime | None) -> None:
        if issued_at is None:
            _remove(self.last_success, name)
        else:
            self.last_success.labels(name).set(issued_at.timestamp())
        if expires_at is None:
            _remove(self.token_expiration, name)
        else:
            self.token_expiration.labels(name).set(expires_at.timestamp())

    def certificate(self, name: str, not_after: datetime | None) -> None:
        if not_after is None:
            _remove(self.cert_expiration, name)
        else:
            self.cert_expiration.labels(name).set(not_after.timestamp())

    def set_ready(self, name: str, ready: bool) -> None:
        self.ready.labels(name).set(1 if ready else 0)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _remove(metric: Counter | Gauge | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
