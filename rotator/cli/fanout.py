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

from rotator.config import Config

FANOUT_MIN = 100  # below this many credentials per process, forking costs more than it saves

_child_config: Config | None = None


def process_count(credentials: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, credentials // FANOUT_MIN))


def rotate_names(
    config: Config, names: Sequence[str], *, force: bool, dry_run: bool,
    emit: Callable[[dict[str, Any]], None],
) -> int:
    """Rotate `names`, emitting each result line in order; returns how many failed."""
    processes = process_count(len(names))
    if processes == 1:
        lines = _rotate_here(config, list(names), force, dry_run)
    else:
        lines = _rotate_forked(config, list(names), processes, force, dry_run)
    for line in lines:
        emit(line)
    return sum(1 for line in lines if not line["ok"])


def _rotate_here(config: Config, names: list[str], force: bool, dry_run: bool) -> list[dict[str, Any]]:
    from rotator.engine import Engine

    engine = Engine(config)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(config.daemon.workers, len(names)))) as pool:
            results = pool.map(lambda name: engine.rotate(name, force=force, dry_run=dry_run), names)
            return [result.to_json() for result in results]
    finally:
        engine.stores.close()


def _rotate_forked(
    config: Config, names: list[str], processes: int, force: bool, dry_run: bool
) -> list[dict[str, Any]]:
    global _child_config
    _child_config = config  # inherited by the forked children, never pickled
    chunks = [names[i::processes] for i in range(processes)]
    context = multiprocessing.get_context("fork")
    with context.Pool(processes, initializer=_child_start) as pool:
        parts = pool.starmap(_child_rotate, [(chunk, force, dry_run) for chunk in chunks])
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
    assert _child_config is not None
    return _rotate_here(_child_config, names, force, dry_run)
