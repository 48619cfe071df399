"""One APScheduler job per credential, and the failure policy applied to every run.

Each credential runs on an interval trigger (`every`, `jitter`) with max_instances=1 and
coalescing, in a bounded pool of daemon.workers threads (FairExecutor: least recently served
credential first), so one slow credential never delays another and an overloaded daemon
serves every credential in turn. What a run decides (rotated, reused, failed) moves only that
credential's next run:

* start-up (and a reload): a token still fresh in the store is reused; its next run is when
  policy.token_due will first call it due. A missing, stale or unreadable one runs at once;
* failure: the next run moves to policy.retry_after_failure's delay (backoff with full
  jitter, Retry-After honoured; permanent errors retry once per retry_max);
* success: the interval trigger carries on from this run;
* the per-credential cap (max_requests_per_hour, sliding window): when it is reached, the
  run waits until a request fits again.

Everything a run learns (token issue time and refresh deadline, certificate expiry, store
reachability) is kept for /readyz, /metrics and state.json.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from rotator import policy
from rotator.audit import pipeline as audit
from rotator.clock import rfc3339
from rotator.config import CredentialConfig
from rotator.daemon.fair_executor import FairExecutor
from rotator.daemon.memory import Trimmer
from rotator.daemon.metrics import Metrics
from rotator.durations import format_duration
from rotator.engine import Engine, RotationResult
from rotator.errors import InternalError, RotatorError, StoreAuthError, StoreUnavailable
from rotator.keys.crypto import cert_info_from_pem
from rotator.providers import Provider
from rotator.providers.base import TokenResponse
from rotator.records import TokenRecord

STORE_CHECK_INTERVAL = 60.0
STORE_CHECK_JOB = "__stores__"  # credential names start with a letter or digit: no clash
MIN_DELAY = 0.1  # no decision reschedules a credential sooner (guards a retry_min of 0)

_log = logging.getLogger("rotator.scheduling")  # WARNING+ goes through the audit pipeline


class CountingEngine(Engine):
    """An Engine whose every token request is counted before it is sent: the per-hour cap
    and rotator_token_requests_total see each exchange (a rotation can make two while a
    pending key is tried first)."""

    def __init__(self, *args: Any, on_request: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_request = on_request

    def provider(self, name: str) -> Provider:
        return _CountedProvider(super().provider(name), name, self._on_request)


class _CountedProvider:
    def __init__(self, inner: Provider, name: str, on_request: Callable[[str], None]) -> None:
        self._inner, self._name, self._on_request = inner, name, on_request
        self.token_url = inner.token_url

    def claims(self, now: float) -> dict[str, Any]:
        return self._inner.claims(now)

    def exchange(self, assertion: str) -> TokenResponse:
        self._on_request(self._name)
        return self._inner.exchange(assertion)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)


class RequestTimes:
    """Epoch times of one credential's token requests, oldest first: the sliding window of
    max_requests_per_hour. Kept as C doubles (8 bytes a request; a deque of float objects
    took about 32), because a busy credential holds up to an hour of them: at 1,800 requests
    an hour, 14 KiB instead of 56 KiB per credential."""

    __slots__ = ("_start", "_times")

    def __init__(self, times: Iterable[float] = ()) -> None:
        self._times = array("d", times)
        self._start = 0  # entries before it are pruned, not yet cut off

    def append(self, moment: float) -> None:
        self._times.append(moment)

    def extend(self, moments: Iterable[float]) -> None:
        self._times.extend(moments)

    def prune(self, before: float) -> None:
        """Forget the requests at or before `before` (from the oldest on)."""
        times, start = self._times, self._start
        while start < len(times) and times[start] <= before:
            start += 1
        if start and 2 * start >= len(times):  # cut the dead head off: amortised O(1)
            del times[:start]
            start = 0
        self._start = start

    def __len__(self) -> int:
        return len(self._times) - self._start

    def __iter__(self) -> Iterator[float]:
        return itertools.islice(self._times, self._start, None)

    def __getitem__(self, index: int) -> float:
        if not -len(self) <= index < len(self):
            raise IndexError("request time index out of range")
        return self._times[self._start + index] if index >= 0 else self._times[index]


@dataclass
class CredentialState:
    """What the daemon knows about one credential (guarded by Rotations._lock)."""

    name: str
    requests: RequestTimes = field(default_factory=RequestTimes)  # epoch times of token requests
    consecutive_failures: int = 0
    last_error: str | None = None
    permanent: bool = False
    last_success: float | None = None
    last_result: str | None = None
    runs: int = 0
    # the rotation id of the token this daemon wrote last: due by the schedule, not by its age
    own_rotation_id: str | None = None
    # the last observation of the stores
    token_issued_at: datetime | None = None
    token_expires_at: datetime | None = None
    deadline: datetime | None = None
    problem: str | None = "not read yet"
    cert_not_after: datetime | None = None
    key_sha256: str | None = None

    def readiness(self, now: datetime) -> tuple[bool, str]:
        """Ready while the stored token is within policy.refresh_deadline; else say why."""
        tail = f"; last error: {self.last_error}" if self.last_error else ""
        if self.deadline is None or self.token_issued_at is None:
            return False, f"{self.problem or 'no token'}{tail}"
        if now >= self.deadline:
            return False, (
                f"token issued {rfc3339(self.token_issued_at)} is past its refresh deadline "
                f"{rfc3339(self.deadline)}{tail}"
            )
        return True, (
            f"token issued {rfc3339(self.token_issued_at)}, refresh deadline {rfc3339(self.deadline)}"
        )


class Rotations:
    def __init__(
        self,
        metrics: Metrics,
        *,
        workers: int,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.metrics = metrics
        self.on_change = on_change or (lambda: None)
        self.clock = clock
        self.rand = rand
        self.engine: Engine | None = None
        self.states: dict[str, CredentialState] = {}
        self.stores: dict[str, str | None] = {}  # store name -> None (reachable) or diagnosis
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._users: dict[int, int] = {}  # id(engine) -> runs using it
        self._retired: list[Engine] = []
        self._stopping = False
        self.trimmer = Trimmer()  # freed heap memory back to the kernel (rotator.daemon.memory)
        self.executor = FairExecutor(workers)  # least recently served credential first
        self.scheduler = BackgroundScheduler(
            executors={"default": self.executor},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC,
        )

    # ------------------------------------------------------------------ wiring

    def use(self, engine: Engine) -> None:
        """Run every later job with `engine`; an engine whose stores were replaced is closed
        once no running job holds it."""
        with self._lock:
            old, self.engine = self.engine, engine
            if old is not None and old.stores is not engine.stores:
                self._retired.append(old)
        self._close_retired()

    def on_request(self, name: str) -> None:
        """A token request for `name` is about to be sent (see CountingEngine)."""
        with self._lock:
            state = self.states.get(name)
            if state is not None:
                state.requests.append(self.clock())
        self.metrics.token_request(name)

    def start(self) -> None:
        self.scheduler.add_job(
            self._check_stores_job, IntervalTrigger(seconds=STORE_CHECK_INTERVAL, timezone=UTC),
            id=STORE_CHECK_JOB, name="check stores", misfire_grace_time=int(STORE_CHECK_INTERVAL),
        )
        self.scheduler.add_listener(self._coalesced, EVENT_JOB_MAX_INSTANCES)
        self.scheduler.start()

    def _coalesced(self, event: JobSubmissionEvent) -> None:
        """A run came due while the credential's previous one still waited for a worker or
        ran: APScheduler drops it (the earlier run is as good), and logs a warning that the
        audit pipeline passes on once a minute; the counter keeps every one."""
        if event.job_id != STORE_CHECK_JOB:
            self.metrics.coalesced.inc()

    def alive(self) -> bool:
        """The scheduler thread runs (what the systemd watchdog vouches for)."""
        thread = getattr(self.scheduler, "_thread", None)
        return bool(self.scheduler.running and thread is not None and thread.is_alive())

    # ------------------------------------------------------------------ credentials

    def add(self, name: str, *, requests: Iterable[float] = ()) -> datetime:
        """Schedule `name` (or reschedule it after a config change); returns its first run.

        A fresh token in the store is reused: no token request until policy.token_due says
        so. A missing, stale or unreadable token (or a store that cannot be read) runs now.
        """
        engine = self._engine()
        cred = engine.config.credential(name)
        state = CredentialState(name)
        with self._lock:
            previous = self.states.get(name)
        if previous is not None:  # a reload keeps the request history: the cap still holds
            state.requests, state.last_success = previous.requests, previous.last_success
            state.own_rotation_id = previous.own_rotation_id
        state.requests.extend(sorted(requests))
        now = self.clock()
        _prune(state.requests, now)
        token, known = self._observe(engine, state, key=True)
        first = self._first_run(cred, state, token, known, now)
        self.metrics.add_credential(name)
        self.metrics.schedule(name, every=cred.every, requests_per_hour=cred.max_requests_per_hour)
        trigger = IntervalTrigger(seconds=cred.every, jitter=cred.jitter or None, timezone=UTC)
        with self._lock:
            self.states[name] = state
            self.scheduler.add_job(
                self._run, trigger, args=(name,), id=name, name=f"rotate {name}",
                next_run_time=_at(first), replace_existing=True,
                # A late run always runs (coalesced into one), however late. A grace period
                # drops a run that waited longer than it in the worker queue: at more due work
                # than the workers can do, that starved whichever credentials sat at the back
                # of the queue on every turn (2 token requests against 120 in one 2-minute
                # run). The queue holds at most one run per credential (max_instances=1) and
                # FairExecutor starts the least recently served first: every credential gets
                # its turn. docs/daemon.md.
                misfire_grace_time=None,
            )
        return _at(first)

    def remove(self, name: str) -> None:
        with self._lock:
            self.states.pop(name, None)
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(name)
        self.executor.forget(name)
        self.metrics.remove_credential(name)

    def _first_run(
        self, cred: CredentialConfig, state: CredentialState, token: TokenRecord | None,
        known: bool, now: float,
    ) -> float:
        at = now
        if known and token is not None:
            due = policy.token_due(token, every=cred.every, jitter=cred.jitter, now=_at(now),
                                   key_sha256=state.key_sha256)
            if not due.due:
                at = policy.due_at(token, every=cred.every, jitter=cred.jitter).timestamp()
        wait = policy.request_wait(state.requests, now=now, limit=cred.max_requests_per_hour)
        return max(at, now + wait)

    # ------------------------------------------------------------------ one run

    def _run(self, name: str) -> None:
        """The job. Never raises: APScheduler would log a traceback (locals and all)."""
        with self._lock:
            state = self.states.get(name)
            engine = self.engine
            if self._stopping or state is None or engine is None:
                return
            self._users[id(engine)] = self._users.get(id(engine), 0) + 1
        try:
            self._run_once(engine, state)
        except Exception as exc:  # the engine converts everything; this is the last net
            error = InternalError(exc)
            self._guarded(lambda: self._failed(engine, state, error))
        finally:
            self._release(engine)
            self._guarded(lambda: self._rerun_if_replaced(state))
            self._guarded(self.on_change)
            self._guarded(self._trim_when_drained)

    def _trim_when_drained(self) -> None:
        """The last run of a busy stretch: give what it freed back (at most every 10 s)."""
        with self._lock:
            drained = not self._users and self.executor.queued() == 0
        if drained:
            self.trimmer.trim()

    def _rerun_if_replaced(self, state: CredentialState) -> None:
        """A reload replaced this credential while it ran: the new job's first run may have
        been refused (max_instances=1, this run held the slot), so give it one now."""
        with self._lock:
            current = self.states.get(state.name)
            if self._stopping or current is None or current is state or current.runs:
                return
            with contextlib.suppress(JobLookupError):
                self.scheduler.modify_job(state.name, next_run_time=_at(self.clock()))

    def _run_once(self, engine: Engine, state: CredentialState) -> None:
        name = state.name
        cred = engine.config.credential(name)
        now = self.clock()
        with self._lock:
            _prune(state.requests, now)
            wait = policy.request_wait(state.requests, now=now, limit=cred.max_requests_per_hour)
        if wait > 0:
            self._defer(cred, state, now, wait)
            return
        with self._lock:
            own = state.own_rotation_id
        result = engine.rotate(name, own=own)
        self.metrics.rotation(name, result.action, result.duration, result.error)
        key_changed = bool(result.key_sha256) and result.key_sha256 != state.key_sha256
        token, _known = self._observe(engine, state, key=key_changed, written=result.token)
        with self._lock:
            state.runs += 1
            state.last_result = result.action
        if result.ok:
            self._succeeded(cred, state, result, token)
        else:
            self._failed(engine, state, result.error or InternalError(RuntimeError("no error")))

    def _defer(self, cred: CredentialConfig, state: CredentialState, now: float, wait: float) -> None:
        reason = (
            f"{cred.max_requests_per_hour} token requests in the last hour "
            f"(max_requests_per_hour); next attempt in {format_duration(wait)}"
        )
        with audit.bound_contextvars(rotation_id=uuid.uuid4().hex, credential=state.name):
            audit.emit("rotation.skipped", level="warning", outcome="skipped", reason=reason,
                       duration_s=0.0)
        self.metrics.rotation(state.name, "skipped", None)
        with self._lock:
            state.last_result = "deferred"
            state.last_error = reason
        self._reschedule(state, now + max(wait, MIN_DELAY))

    def _succeeded(
        self, cred: CredentialConfig, state: CredentialState, result: RotationResult,
        token: TokenRecord | None,
    ) -> None:
        now = self.clock()
        with self._lock:
            state.consecutive_failures = 0
            state.last_error = None
            state.permanent = False
            state.last_success = now
            if result.action in ("rotated", "reused"):
                state.own_rotation_id = result.rotation_id
            self.stores[cred.key.store] = None
            self.stores[cred.token.store] = None
        if result.action in ("skipped", "superseded") and token is not None:
            # Someone else (another replica) refreshed it: come back when *their* token is due.
            at = policy.due_at(token, every=cred.every, jitter=cred.jitter).timestamp()
            self._reschedule(state, min(max(at, now + MIN_DELAY), now + cred.every))

    def _failed(self, engine: Engine, state: CredentialState, error: RotatorError) -> None:
        cred = engine.config.credential(state.name)
        with self._lock:
            state.consecutive_failures += 1
            attempt = state.consecutive_failures
        retry = policy.retry_after_failure(
            error, attempt=attempt, retry_min=cred.retry_min, retry_max=cred.retry_max,
            rand=self.rand(),
        )
        with self._lock:
            state.last_error = error.diagnostics()
            state.permanent = retry.permanent
        self._store_trouble(error)
        self._reschedule(state, self.clock() + max(retry.delay, MIN_DELAY))

    def _reschedule(self, state: CredentialState, when: float) -> None:
        with self._lock:
            if self._stopping or self.states.get(state.name) is not state:
                return  # stopped, or reloaded meanwhile: the reload planned this credential
            with contextlib.suppress(JobLookupError):
                self.scheduler.modify_job(state.name, next_run_time=_at(when))

    # ------------------------------------------------------------------ observing the stores

    def _observe(
        self, engine: Engine, state: CredentialState, *, key: bool, written: TokenRecord | None = None,
    ) -> tuple[TokenRecord | None, bool]:
        """Read the stored token (and the certificate): (token or None, whether it was read).
        `written`: the token this process has just stored (compare-and-set, so it is what the
        store holds): used as is rather than read back."""
        name = state.name
        cred = engine.config.credential(name)
        try:
            token = written if written is not None else engine.read_token(name)[0]
        except RotatorError as exc:
            self._store_trouble(exc)
            with self._lock:
                if state.deadline is None:
                    state.problem = f"token not readable: {exc.diagnostics()}"
            token, known = None, False
        else:
            with self._lock:
                self.stores[cred.token.store] = None
                if token is None:
                    state.token_issued_at = state.token_expires_at = state.deadline = None
                    state.problem = "no usable token in the store"
                else:
                    state.token_issued_at = token.issued_at
                    state.token_expires_at = token.expires_at
                    state.deadline = policy.refresh_deadline(token, every=cred.every)
                    state.problem = None
            self.metrics.token(name, state.token_issued_at, state.token_expires_at)
            known = True
        if key:
            try:
                keyrec, _ = engine.read_key_record(name)
                info = cert_info_from_pem(keyrec.current.certificate, str(cred.key))
            except RotatorError as exc:
                self._store_trouble(exc)
            else:
                with self._lock:
                    state.cert_not_after, state.key_sha256 = info.not_after, info.sha256
                self.metrics.certificate(name, info.not_after)
        return token, known

    def check_stores(self, engine: Engine | None = None) -> None:
        """Prove every store reachable (read-only); /readyz reports the outcome."""
        engine = engine or self._engine()
        results: dict[str, str | None] = {}
        for name in engine.stores.names():
            try:
                engine.stores[name].check()
                results[name] = None
            except RotatorError as exc:
                results[name] = exc.diagnostics()
            except Exception as exc:
                results[name] = InternalError(exc).diagnostics()
        with self._lock:
            self.stores = results

    def _check_stores_job(self) -> None:
        with self._lock:
            engine = self.engine
            if self._stopping or engine is None:
                return
            self._users[id(engine)] = self._users.get(id(engine), 0) + 1
        try:
            self._guarded(lambda: self.check_stores(engine))
        finally:
            self._release(engine)
        self._guarded(lambda: self.trimmer.trim(force=True))  # a daemon that is never idle too

    def _store_trouble(self, error: BaseException) -> None:
        if isinstance(error, StoreUnavailable | StoreAuthError):
            with self._lock:
                if error.store in self.stores:
                    self.stores[error.store] = error.diagnostics()

    # ------------------------------------------------------------------ reports

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        now = _at(self.clock())
        with self._lock:
            states = list(self.states.values())
            stores = dict(self.stores)
            engine = self.engine
        expected = engine.stores.names() if engine is not None else []
        creds: dict[str, Any] = {}
        for state in states:
            ok, reason = state.readiness(now)
            creds[state.name] = {"ready": ok, "reason": reason}
            self.metrics.set_ready(state.name, ok)
        store_view: dict[str, Any] = {}
        for name in expected:
            problem = stores.get(name, "not checked yet")
            store_view[name] = {"reachable": problem is None, **({"error": problem} if problem else {})}
        ready = (engine is not None and all(c["ready"] for c in creds.values())
                 and all(s["reachable"] for s in store_view.values()))
        return ready, {"ready": ready, "config": "loaded" if engine else "none",
                       "credentials": creds, "stores": store_view}

    def snapshot(self) -> dict[str, Any]:
        """The per-credential part of state.json."""
        return dict(self.entries())

    def entries(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """The per-credential part of state.json, one credential at a time: a writer that
        streams them holds one credential's request history as Python floats at once (at most
        max_requests_per_hour of them), not the whole fleet's (at 1,800 an hour per credential
        that would be tens of MB, allocated every state write)."""
        runs = {job.id: job.next_run_time for job in self.scheduler.get_jobs()}
        with self._lock:
            names = sorted(self.states)
        for name in names:
            with self._lock:
                state = self.states.get(name)
                if state is None:
                    continue  # removed meanwhile (a reload)
                next_run = runs.get(name)
                entry = {
                    "next_run": rfc3339(next_run) if next_run else None,
                    "last_error": state.last_error,
                    "permanent_error": state.permanent,
                    "last_success": rfc3339(_at(state.last_success)) if state.last_success else None,
                    "last_result": state.last_result,
                    "consecutive_failures": state.consecutive_failures,
                    "recent_requests": [round(t, 3) for t in state.requests],
                }
            yield name, entry

    def summary(self) -> str:
        """One line for systemd's STATUS=."""
        with self._lock:
            states = list(self.states.values())
        failing = [s for s in states if s.consecutive_failures]
        text = f"{len(states)} credentials, {len(states) - len(failing)} healthy"
        if failing:
            worst = max(failing, key=lambda s: (s.permanent, s.consecutive_failures))
            kind = "permanent error" if worst.permanent else f"{worst.consecutive_failures} failures"
            text += f"; {worst.name}: {kind}: {worst.last_error or ''}"
        return text[:400]

    # ------------------------------------------------------------------ stop

    def stop(self, timeout: float) -> int:
        """No new runs; wait up to `timeout` for running ones. Returns how many still run."""
        with self._lock:
            self._stopping = True
        with contextlib.suppress(SchedulerNotRunningError):  # start-up failed early
            self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._busy() and (left := deadline - time.monotonic()) > 0:
                self._cv.wait(left)
            return self._busy()

    def close(self) -> None:
        """Close every engine's stores (only once nothing runs)."""
        with self._lock:
            engines = [*self._retired, *([self.engine] if self.engine else [])]
            self._retired.clear()
        for engine in engines:
            engine.stores.close()

    # ------------------------------------------------------------------ helpers

    def _engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("Rotations.use(engine) first")
        return self.engine

    def _busy(self) -> int:
        return sum(self._users.values())

    def _release(self, engine: Engine) -> None:
        with self._cv:
            left = self._users.get(id(engine), 1) - 1
            if left > 0:
                self._users[id(engine)] = left
            else:
                self._users.pop(id(engine), None)
            self._cv.notify_all()
        self._close_retired()

    def _close_retired(self) -> None:
        with self._lock:
            idle = [e for e in self._retired if id(e) not in self._users]
            self._retired = [e for e in self._retired if id(e) in self._users]
        for engine in idle:
            engine.stores.close()

    @staticmethod
    def _guarded(action: Callable[[], Any]) -> None:
        try:
            action()
        except Exception as exc:  # reported by type only: a message could hold anything
            _log.error("internal error (%s) in the scheduler", type(exc).__name__)


def _prune(requests: RequestTimes, now: float) -> None:
    requests.prune(now - policy.REQUEST_WINDOW_SECONDS)


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)
