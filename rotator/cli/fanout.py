"""`rotate --all` for large fleets: one worker process per core, threads inside each.

A rotation is mostly Python work while it holds the GIL (JSON, JWT, HTTP framing, audit
rendering), so one process tops out near one core. Past FANOUT_MIN credentials per process
the names are split round-robin over `os.cpu_count()` forked children. Each child opens its
own store clients, HTTP session and audit file handle (a shared flock'd descriptor would not
exclude the other processes), rotates its share on `daemon.workers` threads, and hands back
only the JSON result lines; the parent prints them in the order the names were given.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rotator.cli.progress import INTERVAL as PROGRESS_INTERVAL
from rotator.cli.progress import Progress
from rotator.config import Config

FANOUT_MIN = 100  # below this many credentials per process, forking costs more than it saves

_child_config: Config | None = None
_child_counts: tuple[Any, Any] | None = None  # shared (done, failed) counters, for progress

OnDone = Callable[[bool], None]


def process_count(credentials: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, credentials // FANOUT_MIN))


def rotate_names(
    config: Config, names: Sequence[str], *, force: bool, dry_run: bool,
    emit: Callable[[dict[str, Any]], None], progress: Progress | None = None,
) -> int:
    """Rotate `names`, emitting each result line in order; returns how many failed.
    `progress` (a terminal's progress line) hears of each rotation as it ends."""
    processes = process_count(len(names))
    if processes == 1:
        lines = _rotate_here(config, list(names), force, dry_run, progress.advance if progress else None)
    else:
        lines = _rotate_forked(config, list(names), processes, force, dry_run, progress)
    if progress is not None:
        progress.finish()
    for line in lines:
        emit(line)
    return sum(1 for line in lines if not line["ok"])


def _rotate_here(config: Config, names: list[str], force: bool, dry_run: bool,
                 on_done: OnDone | None = None) -> list[dict[str, Any]]:
    from rotator.engine import Engine

    engine = Engine(config)

    def one(name: str) -> dict[str, Any]:
        line = engine.rotate(name, force=force, dry_run=dry_run).to_json()
        if on_done is not None:
            on_done(bool(line["ok"]))
        return line

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(config.daemon.workers, len(names)))) as pool:
            return list(pool.map(one, names))
    finally:
        engine.stores.close()


def _rotate_forked(
    config: Config, names: list[str], processes: int, force: bool, dry_run: bool,
    progress: Progress | None,
) -> list[dict[str, Any]]:
    global _child_config, _child_counts
    context = multiprocessing.get_context("fork")
    done, failed = context.Value("i", 0), context.Value("i", 0)
    _child_config, _child_counts = config, (done, failed)  # inherited by the forked children
    chunks = [names[i::processes] for i in range(processes)]
    with context.Pool(processes, initializer=_child_start) as pool:
        pending = pool.starmap_async(_child_rotate, [(chunk, force, dry_run) for chunk in chunks])
        while not pending.ready():
            pending.wait(PROGRESS_INTERVAL if progress is not None else None)
            if progress is not None:
                progress.update(done.value, failed.value)
        parts = pending.get()
    by_name = {line["name"]: line for part in parts for line in part}
    return [by_name[name] for name in names]


def _child_start() -> None:
    """Fresh per-process state: no HTTP connection, store client or audit fd from the parent."""
    from rotator.audit import pipeline as audit
    from rotator.providers import base

    base.reset_shared_session()
    assert _child_config is not None
    audit.use_settings(_child_config.daemon)


def _child_rotate(names: list[str], force: bool, dry_run: bool) -> list[dict[str, Any]]:
    assert _child_config is not None and _child_counts is not None
    done, failed = _child_counts

    def count(ok: bool) -> None:
        with done.get_lock():
            done.value += 1
        if not ok:
            with failed.get_lock():
                failed.value += 1

    return _rotate_here(_child_config, names, force, dry_run, count)
