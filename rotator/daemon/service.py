"""`rotator run`: the daemon systemd and Kubernetes start, built to run for months unattended.

Lifecycle (the supervisor hears each step through sd_notify, operators through audit events):

    start   load the config (config.loaded), listen on [daemon] listen, check the stores,
            plan every credential (a fresh stored token is reused, no login), start the
            scheduler (daemon.started), READY=1; WATCHDOG=1 every WATCHDOG_USEC/2 after that
    SIGHUP  RELOADING=1; a valid new config is applied (config.reloaded: jobs added, removed,
            rescheduled), an invalid one is refused and the old one keeps running
            (config.rejected with the one-line diagnosis); READY=1
    SIGTERM / SIGINT
            STOPPING=1 (daemon.stopping); no new runs; running rotations get up to
            daemon.shutdown_timeout to finish; daemon.stopped; exit 0

Signals only append to a queue and wake the main thread through a pipe
(signal.set_wakeup_fd): all work happens in the main loop, never inside a handler.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rotator.audit import pipeline as audit
from rotator.clock import rfc3339, utc_now
from rotator.config import Config, load_config
from rotator.daemon.health import HealthServer, read_metrics_token
from rotator.daemon.metrics import Metrics
from rotator.daemon.schedule_check import check_config as check_schedules
from rotator.daemon.scheduling import CountingEngine, Rotations
from rotator.daemon.sdnotify import Notifier
from rotator.daemon.statefile import read_recent_requests, write_state
from rotator.engine import Engine
from rotator.errors import RotatorError
from rotator.keys.crypto import KeyCache
from rotator.stores import StoreSet

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STATE_WRITE_INTERVAL = 2.0  # seconds between state.json rewrites, at most
IDLE_WAKEUP = 3600.0  # with no watchdog to feed, the main loop only wakes for signals

_log = logging.getLogger("rotator.daemon")  # WARNING+ goes through the audit pipeline


def load_daemon_config(path: Path) -> Config:
    """The config plus the audit settings it names (fingerprint key, audit_log file), as
    every command applies them."""
    config = load_config(path)
    audit.use_settings(config.daemon)
    for warning in config.warnings:
        audit.emit("config.warning", level="warning", warning=warning)
    return config


def emit_schedule_warnings(config: Config) -> None:
    """The schedule warnings `rotator check` prints, one `schedule.warning` each: a daemon
    started without `check` (systemd, Kubernetes) still says in its log that a credential
    will be paused by its request cap or that an org nears its login limit."""
    for warning in check_schedules(config):
        audit.emit("schedule.warning", level="warning", code=warning.code,
                   credentials=list(warning.credentials), warning=warning.message)


# The crash-consistency tests stop a daemon at a named engine step. They install their hook
# from outside (`python -m rotator.testing.faults ...` calls set_step_hook, then the CLI), so
# production code never imports the fault injector. None in every real daemon.
_step_hook: Callable[[str, str], None] | None = None


def set_step_hook(hook: Callable[[str, str], None] | None) -> None:
    """Engines the daemon builds from now on call `hook(credential, step)` at each engine step."""
    global _step_hook
    _step_hook = hook


class Daemon:
    def __init__(self, config_path: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.config_path = config_path
        self.notifier = Notifier(env)
        self.metrics = Metrics()
        self.keys = KeyCache()
        self._on_step = _step_hook  # crash tests only (rotator.testing.faults); else None
        self.config: Config | None = None
        self.engine: Engine | None = None
        self.rotations: Rotations | None = None
        self.health: HealthServer | None = None
        self.abandoned = 0
        self._signals: deque[int] = deque()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._state_lock = threading.Lock()
        self._state_error: str | None = None
        self._state_last_write = 0.0  # monotonic
        self._state_timer: threading.Timer | None = None
        self._last_status: str | None = None
        self._started = False  # every credential planned: /readyz may say yes from now on
        self._born = time.monotonic()

    # ------------------------------------------------------------------ signals

    def install_signal_handlers(self) -> None:
        """Main thread only. Handlers just queue the signal; the main loop does the work."""
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in (*STOP_SIGNALS, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals.append(signum)

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        config = self.config = load_daemon_config(self.config_path)
        audit.emit("config.loaded", path=str(self.config_path), credentials=len(config.credentials),
                   stores=len(config.stores))
        emit_schedule_warnings(config)
        rotations = self.rotations = Rotations(
            self.metrics, workers=config.daemon.workers, on_change=self._changed
        )
        self.engine = self._engine(config, StoreSet(config.stores))
        rotations.use(self.engine)
        if config.daemon.listen:
            self.health = HealthServer(
                config.daemon.listen, readiness=self._readiness, metrics=self._metrics,
                liveness=self._alive, token=read_metrics_token(config.daemon.metrics_token_file),
            ).start()
        rotations.check_stores()
        _start_renewers(self.engine, rotations)
        earlier = read_recent_requests(config.daemon.state_dir)
        for name in sorted(config.credentials):
            rotations.add(name, requests=earlier.get(name, ()))
        rotations.start()
        self._started = True
        audit.emit(
            "daemon.started", credentials=len(config.credentials),
            listen=self.health.address if self.health else "", workers=config.daemon.workers,
            state_dir=str(config.daemon.state_dir) if config.daemon.state_dir else None,
        )
        self._write_state()
        self.notifier.ready(rotations.summary())

    def _engine(self, config: Config, stores: StoreSet) -> Engine:
        assert self.rotations is not None
        return CountingEngine(config, stores=stores, key_cache=self.keys,
                              on_request=self.rotations.on_request, on_step=self._on_step,
                              on_publication=self.rotations.metrics.certificate_publication)

    def _alive(self) -> bool:
        """Starting, or scheduling: a dead scheduler thread is worth a restart."""
        return not self._started or (self.rotations is not None and self.rotations.alive())

    def _readiness(self) -> tuple[bool, dict[str, Any]]:
        if not self._started or self.rotations is None:
            return False, {"ready": False, "config": "loading", "reason": "starting up"}
        return self.rotations.readiness()

    def _metrics(self) -> tuple[bytes, str]:
        if self.rotations is not None:
            self.rotations.readiness()  # refreshes rotator_credential_ready
        return self.metrics.render()

    # ------------------------------------------------------------------ main loop

    def serve(self) -> int:
        """Wait for signals (feeding the watchdog meanwhile); returns the exit code."""
        interval = self.notifier.watchdog_interval
        next_ping = time.monotonic()
        while True:
            if interval is not None and time.monotonic() >= next_ping:
                if self.rotations is not None and self.rotations.alive():
                    self.notifier.watchdog()
                next_ping = time.monotonic() + interval
            if not self._signals:
                timeout = IDLE_WAKEUP if interval is None else max(0.0, next_ping - time.monotonic())
                with contextlib.suppress(InterruptedError):
                    select.select([self._wake_r], [], [], timeout)
            self._drain_wakeups()
            while self._signals:
                signum = self._signals.popleft()
                if signum == signal.SIGHUP:
                    self.reload()
                else:
                    return self.stop(reason="signal", signame=signal.Signals(signum).name)

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._wake_r, 512):
                pass

    # ------------------------------------------------------------------ reload

    def reload(self) -> bool:
        """Apply the config file anew; a config that does not validate changes nothing."""
        assert self.config is not None and self.rotations is not None and self.engine is not None
        self.notifier.reloading()
        try:
            new = load_daemon_config(self.config_path)
        except RotatorError as exc:
            audit.emit("config.rejected", level="error", outcome="failure",
                       path=str(self.config_path), error_class=exc.kind,
                       diagnosis=exc.diagnostics(), kept="the running configuration")
            self.notifier.ready(f"config reload rejected: {exc.diagnostics()}"[:400])
            return False
        old, rotations = self.config, self.rotations
        stores_changed = dict(old.stores) != dict(new.stores)
        stores = StoreSet(new.stores) if stores_changed else self.engine.stores
        self.engine = self._engine(new, stores)
        self.config = new
        rotations.use(self.engine)
        if stores_changed:
            rotations.check_stores()
            _start_renewers(self.engine, rotations)
        added = sorted(set(new.credentials) - set(old.credentials))
        removed = sorted(set(old.credentials) - set(new.credentials))
        changed = sorted(
            name for name in set(new.credentials) & set(old.credentials)
            if new.credentials[name] != old.credentials[name]
            or (stores_changed and _stores_of(new, name) != _stores_of(old, name))
        )
        for name in removed:
            rotations.remove(name)
        for name in (*added, *changed):
            rotations.add(name)
        restart = [f"daemon.{key}" for key in ("listen", "workers", "metrics_token_file")
                   if getattr(old.daemon, key) != getattr(new.daemon, key)]
        audit.emit("config.reloaded", path=str(self.config_path), added=added, removed=removed,
                   changed=changed, credentials=len(new.credentials),
                   needs_restart=restart or None)
        emit_schedule_warnings(new)
        self._write_state()
        self.notifier.ready(rotations.summary())
        return True

    # ------------------------------------------------------------------ stop

    def stop(self, *, reason: str, signame: str | None = None) -> int:
        timeout = self.config.daemon.shutdown_timeout if self.config else 0.0
        audit.emit("daemon.stopping", reason=reason, signal=signame, shutdown_timeout_s=timeout)
        self.notifier.stopping()
        abandoned = self.rotations.stop(timeout) if self.rotations else 0
        if self.health is not None:
            self.health.stop()
        self._write_state()
        if not abandoned and self.rotations is not None:
            self.rotations.close()
        self.abandoned = abandoned
        audit.emit("daemon.stopped", level="warning" if abandoned else None, reason=reason,
                   exit_code=0, uptime_s=round(time.monotonic() - self._born, 3),
                   abandoned_rotations=abandoned)
        self.notifier.close()
        return 0

    def abort(self) -> None:
        """Start-up failed (the caller reports why): release what was started, quietly."""
        if self.rotations is not None:
            self.rotations.stop(0)
            self.rotations.close()
        if self.health is not None:
            self.health.stop()
        self.notifier.close()

    # ------------------------------------------------------------------ state.json, STATUS=

    def _changed(self) -> None:
        """After each run: state.json for `rotator status`, STATUS= for `systemctl status`."""
        self._write_state_soon()
        if self.rotations is not None:
            summary = self.rotations.summary()
            if summary != self._last_status:
                self._last_status = summary
                self.notifier.status(summary)

    def _write_state_soon(self) -> None:
        """At most one state.json write per STATE_WRITE_INTERVAL: with many credentials on a
        short interval, rewriting it after every run costs more than the rotations (soak:
        920 -> 578 rotations per 30 s). A deferred write catches the last change."""
        with self._state_lock:
            wait = self._state_last_write + STATE_WRITE_INTERVAL - time.monotonic()
            if wait > 0:
                if self._state_timer is None:
                    self._state_timer = threading.Timer(wait, self._write_state)
                    self._state_timer.daemon = True
                    self._state_timer.start()
                return
        self._write_state()

    def _write_state(self) -> None:
        with self._state_lock:
            if self._state_timer is not None:
                self._state_timer.cancel()
                self._state_timer = None
            self._state_last_write = time.monotonic()
        config, rotations = self.config, self.rotations
        if config is None or rotations is None or config.daemon.state_dir is None:
            return
        with self._state_lock:
            try:
                write_state(config.daemon.state_dir, {
                    "pid": os.getpid(),
                    "updated_at": rfc3339(utc_now()),
                    "credentials": rotations.entries(),
                })
                self._state_error = None
            except OSError as exc:
                problem = f"{config.daemon.state_dir}: cannot write state.json ({exc.strerror})"
                if problem != self._state_error:  # once per distinct problem, not every run
                    self._state_error = problem
                    _log.warning("%s; `rotator status` shows stale data", problem)


def _stores_of(config: Config, name: str) -> tuple[Any, ...]:
    cred = config.credentials[name]
    return tuple(config.stores.get(ref.store) for ref in (cred.key, cred.token))


def _start_renewers(engine: Engine, rotations: Rotations) -> None:
    """Stores with a token (Vault) renew it on their own timer, apart from the rotations;
    a token that cannot be kept alive marks the store not ready (/readyz)."""
    for name in engine.stores.names():
        start = getattr(engine.stores[name], "start_renewer", None)
        if start is not None:
            start(lambda exc: exc is not None and rotations._store_trouble(exc))


def run_daemon(config_path: Path, *, log_format: str | None = None) -> int:
    """The `run` command. Audit JSON lines already go to stdout (`cli.main` set that up)."""
    del log_format  # the pipeline is configured by the CLI; kept for the command's signature
    daemon = Daemon(config_path)
    daemon.install_signal_handlers()
    try:
        daemon.start()
    except BaseException:
        daemon.abort()
        raise
    code = daemon.serve()
    if daemon.abandoned:
        # Rotations still running past shutdown_timeout: leave without joining their threads
        # (a store write is compare-and-set, so an interrupted rotation changes nothing).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
