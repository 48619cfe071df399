"""Pure pieces of the terminal output: the progress line's arithmetic, table alignment, colour."""

from __future__ import annotations

import io

import pytest

from rotator.cli.progress import ERASE, LineGuard, Progress
from rotator.cli.terminal import BOLD, RED, colour_wanted, paint, table


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_counts_rate_and_eta() -> None:
    clock, out = Clock(), io.StringIO()
    progress = Progress(1000, out, colour=False, clock=clock)
    assert progress.text() == "rotating 0/1000  0 failed  0.0/s  ETA -"
    clock.now += 2.0
    progress.update(400, 3)
    assert progress.text() == "rotating 400/1000  3 failed  200/s  ETA 3s"
    clock.now += 3.0
    progress.update(1000, 3)
    assert progress.text() == "rotating 1000/1000  3 failed  200/s  in 5.0s"
    progress.finish()
    assert out.getvalue().endswith(ERASE + "rotating 1000/1000  3 failed  200/s  in 5.0s\n")
    progress.advance(True)  # nothing draws after finish
    assert out.getvalue().endswith("5.0s\n")


def test_progress_redraws_at_most_every_interval() -> None:
    clock, out = Clock(), io.StringIO()
    progress = Progress(10, out, colour=False, clock=clock)
    for _ in range(5):
        progress.advance(ok=True)
    assert out.getvalue().count(ERASE) == 1
    clock.now += 1.0
    progress.advance(ok=False)
    assert out.getvalue().count(ERASE) == 2 and "6/10  1 failed" in out.getvalue()


def test_line_guard_puts_whole_events_above_the_line() -> None:
    clock, out = Clock(), io.StringIO()
    progress = Progress(2, out, colour=False, clock=clock)
    guard = LineGuard(out, progress)
    guard.write("event one")
    assert out.getvalue() == ""  # nothing until the line is whole
    guard.write("\n")
    assert out.getvalue() == ERASE + "event one\n" + "rotating 0/2  0 failed  0.0/s  ETA -"


def test_table_aligns_on_the_text_not_the_colour_codes() -> None:
    rows = [[("a", None), ("1", RED), ("x", None)], [("long-name", None), ("12345", None), ("y", RED)]]
    plain_text = table(("NAME", "N", "LAST"), rows, colour=False)
    assert plain_text.splitlines() == ["NAME       N      LAST", "a          1      x",
                                       "long-name  12345  y"]
    coloured = table(("NAME", "N", "LAST"), rows, colour=True)
    assert paint("1    ", RED, True) in coloured and paint("NAME     ", BOLD, True) in coloured


@pytest.mark.parametrize(("tty", "env", "expected"), [
    (True, {}, True), (True, {"NO_COLOR": "1"}, False), (True, {"TERM": "dumb"}, False),
    (False, {}, False), (True, {"NO_COLOR": ""}, True),
])
def test_colour_only_on_a_terminal_without_no_color(monkeypatch, tty, env, expected) -> None:
    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert colour_wanted(Stream()) is expected
