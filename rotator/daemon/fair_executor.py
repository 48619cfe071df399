"""An APScheduler executor whose queue serves the least recently served credential first.

APScheduler's ThreadPoolExecutor queues runs first in, first out. With more due work than the
workers can do, the order in which the scheduler submits due jobs (by next run time, then by
when the job was added) then decides who waits: a credential early in that order was queued
early every second and ran every second, while the others ran every other second (118 token
requests against 60 for most, in a 2-minute run at 1.9x capacity). Here the queue is ordered
by when each job's previous run started, oldest first (a job never run before goes first), so
every credential gets a turn before any gets a second one. Without overload the queue is
empty or short and the order changes nothing.

With max_instances=1 (the daemon's default) a job has at most one run queued or running, so
the queue never holds more runs than there are credentials.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any

from apscheduler.executors.base import BaseExecutor, run_job


class FairExecutor(BaseExecutor):
    def __init__(self, max_workers: int) -> None:
        super().__init__()
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self._max_workers = max_workers
        # (when the job's previous run started, submission order, job, run_times)
        self._queue: list[tuple[float, int, Any, Any]] = []
        self._ready = threading.Condition()
        self._order = itertools.count()
        self._started: dict[str, float] = {}  # job id -> monotonic start of its latest run
        self._threads: list[threading.Thread] = []
        self._closed = False

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        with self._ready:
            while len(self._threads) < self._max_workers:
                # daemon threads: a rotation stuck past shutdown_timeout must not hold the
                # interpreter's exit (the daemon has already given up waiting for it)
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"rotator-worker-{len(self._threads)}")
                thread.start()
                self._threads.append(thread)

    def _do_submit_job(self, job: Any, run_times: Any) -> None:
        with self._ready:
            if self._closed:
                raise RuntimeError("cannot queue a run after shutdown")
            last = self._started.get(job.id, float("-inf"))
            heapq.heappush(self._queue, (last, next(self._order), job, run_times))
            self._ready.notify()

    def forget(self, job_id: str) -> None:
        """Drop what is remembered of a removed job (its last start)."""
        with self._ready:
            self._started.pop(job_id, None)

    def queued(self) -> int:
        with self._ready:
            return len(self._queue)

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return  # queued runs are dropped at shutdown: the daemon is stopping
                _last, _order, job, run_times = heapq.heappop(self._queue)
                self._started[job.id] = time.monotonic()
            try:
                events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
            except BaseException as exc:  # run_job catches the job's own errors; this is its bug
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, events)

    def shutdown(self, wait: bool = True) -> None:
        with self._ready:
            self._closed = True
            self._queue.clear()
            self._ready.notify_all()
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()
