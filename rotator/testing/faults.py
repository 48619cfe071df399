"""Fault injection for crash-consistency tests: stop a daemon at a chosen step of a rotation.

The engine calls ``on_step(credential, step)`` at each of ``rotator.engine.STEPS`` (start,
key-loaded, minted, exchanged, written), and the key lifecycle at ``rotator.keys.lifecycle.KEY_STEPS``
(staged: the pending key is stored; published: its certificate went to every target).
Production code never imports this module: a test starts the daemon through it instead of
``python -m rotator``::

    python -m rotator.testing.faults --config rotator.toml run

which installs the hook returned by :func:`step_hook_from_env` (through
``rotator.daemon.service.set_step_hook``) and then runs the normal CLI. The hook does nothing
unless these variables are set in the daemon's environment:

``ROTATOR_FAULT_STEP``
    the step to stop at (one of ``rotator.engine.STEPS``); unset: no hook at all.
``ROTATOR_FAULT_NTH``
    stop the N-th time any credential reaches that step (default 1), so a test can let a few
    rotations complete first.
``ROTATOR_FAULT_ACTION``
    ``pause`` (default): hold the rotating thread for ``ROTATOR_FAULT_PAUSE_SECONDS`` (default
    60) — the test kills the process meanwhile, with the other threads still running;
    ``kill``: SIGKILL the process at once, from inside the step.
``ROTATOR_FAULT_MARK``
    a file written (atomically) once the step is reached, holding ``STEP N CREDENTIAL PID``:
    what the test waits for before it sends SIGKILL.

Nothing here reads or writes a secret; the hook sees only a credential name and a step name.
A production daemon never loads this module (the systemd unit and the Kubernetes manifests run
``rotator``), and the hook can only stop or slow the daemon, never change what it writes.

In-process tests can use :class:`StepHook` directly: ``Engine(config, on_step=StepHook(...))``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

STEP_ENV = "ROTATOR_FAULT_STEP"
NTH_ENV = "ROTATOR_FAULT_NTH"
ACTION_ENV = "ROTATOR_FAULT_ACTION"
MARK_ENV = "ROTATOR_FAULT_MARK"
SECONDS_ENV = "ROTATOR_FAULT_PAUSE_SECONDS"
ACTIONS = ("pause", "kill")


class StepHook:
    """An ``on_step`` hook that stops at the ``nth`` arrival at ``step`` (any credential)."""

    def __init__(
        self,
        step: str,
        *,
        nth: int = 1,
        action: str = "pause",
        mark: Path | None = None,
        seconds: float = 60.0,
        callback: Callable[[str, str, int], None] | None = None,
    ) -> None:
        if action not in ACTIONS:
            raise ValueError(f"{ACTION_ENV}: {action!r} is not one of {', '.join(ACTIONS)}")
        if nth < 1:
            raise ValueError(f"{NTH_ENV}: must be at least 1")
        self.step = step
        self.nth = nth
        self.action = action
        self.mark = mark
        self.seconds = seconds
        self.callback = callback
        self.seen = 0
        self._lock = threading.Lock()

    def __call__(self, name: str, step: str) -> None:
        if step != self.step:
            return
        with self._lock:
            self.seen += 1
            hit = self.seen == self.nth
        if not hit:
            return
        if self.mark is not None:
            _write_mark(self.mark, f"{step} {self.nth} {name} {os.getpid()}\n")
        if self.callback is not None:
            self.callback(name, step, self.nth)
        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.seconds)


def step_hook_from_env(environ: Mapping[str, str] | None = None) -> StepHook | None:
    """The hook the ROTATOR_FAULT_* variables describe, or None when ROTATOR_FAULT_STEP is unset."""
    env = os.environ if environ is None else environ
    step = env.get(STEP_ENV)
    if not step:
        return None
    from rotator.engine import STEPS
    from rotator.keys.lifecycle import KEY_STEPS

    if step not in (*STEPS, *KEY_STEPS):
        raise ValueError(f"{STEP_ENV}: {step!r} is not one of {', '.join((*STEPS, *KEY_STEPS))}")
    mark = env.get(MARK_ENV)
    return StepHook(
        step,
        nth=int(env.get(NTH_ENV) or 1),
        action=env.get(ACTION_ENV) or "pause",
        mark=Path(mark) if mark else None,
        seconds=float(env.get(SECONDS_ENV) or 60.0),
    )


def _write_mark(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    """`rotator` with the ROTATOR_FAULT_* hook installed: what the crash tests spawn."""
    from rotator.cli import main as rotator_main
    from rotator.daemon.service import set_step_hook

    set_step_hook(step_hook_from_env())
    return rotator_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
