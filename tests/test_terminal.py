"""At a terminal: `status` as a table, audit events as console lines, `rotate --all` progress.
The real CLI runs with its streams on a pseudo-terminal (tests/terminal_run.py)."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import CLIENT_ID, USERNAME, write_config
from tests.terminal_run import run_on_terminal

pytestmark = pytest.mark.integration
ESC = re.compile(r"\x1b\[[0-9;]*m")


def plain(text: str) -> str:
    return ESC.sub("", text)


def fleet(run_cli, endpoint, tmp_path: Path, names: list[str], **daemon) -> Path:
    """Credentials sharing one key (key generation is not under test), the app trusting it."""
    config = write_config(tmp_path / "rotator.toml", login_url=endpoint.url,
                          credentials={name: {} for name in names}, daemon=daemon or None)
    made = run_cli("--config", config, "keys", "init", names[0])
    assert made.code == 0, made.err
    endpoint.register_app(CLIENT_ID, made.out, users=[USERNAME])
    first = tmp_path / "store" / names[0] / "key.json"
    for name in names[1:]:
        (tmp_path / "store" / name).mkdir(mode=0o700)
        shutil.copy2(first, tmp_path / "store" / name / "key.json")
    return config


# ---------------------------------------------------------------------------- status


def test_status_is_a_table_on_a_terminal(run_cli, endpoint, tmp_path: Path) -> None:
    config = fleet(run_cli, endpoint, tmp_path, ["sf", "sf-late"], state_dir="state")
    assert run_cli("--config", config, "rotate", "sf").code == 0
    now = time.time()
    stamp = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
    (tmp_path / "state").mkdir(mode=0o700, exist_ok=True)
    (tmp_path / "state" / "state.json").write_text(json.dumps({
        "version": 1, "pid": 1, "updated_at": stamp(now - 5), "credentials": {
            "sf": {"next_run": stamp(now + 1800), "last_success": stamp(now - 120),
                   "last_error": None, "consecutive_failures": 0},
            "sf-late": {"next_run": stamp(now - 600), "last_success": None, "consecutive_failures": 3,
                        "last_error": "invalid_grant: user hasn't approved \x1b[2J this"},
        }}))

    shown = run_on_terminal("--config", config, "status")
    assert shown.code == 0, shown.err
    lines = plain(shown.out).splitlines()
    assert lines[0].split() == ["CREDENTIAL", "TOKEN", "AGE", "NEXT", "RUN", "CERT", "DAYS", "LEFT",
                                "LAST", "RESULT"]
    columns = [lines[0].index(h) for h in ("TOKEN AGE", "NEXT RUN", "CERT DAYS LEFT", "LAST RESULT")]
    sf, late = lines[1], lines[2]
    assert sf.startswith("sf ") and late.startswith("sf-late ")
    for row in (sf, late):  # aligned: every cell starts under its header
        assert all(row[c - 1] == " " and row[c] != " " for c in columns), row
    assert re.search(r"in 2\dm|in 30m", sf) and "ok, 2m" in sf and " 365 " in sf
    assert "no token" in late and "10m" in late and "overdue" in late and "failed x3: invalid_grant" in late
    # problems in red, the healthy result in green, and the endpoint's escape made visible
    assert "\x1b[31mfailed x3" in shown.out and "\x1b[32mok, 2m" in shown.out
    assert "\x1b[2J" not in shown.tty and "\\x1b[2J" in shown.out
    assert "sf-late: last error: invalid_grant" in plain(shown.out)
    assert re.search(r"daemon state written \d+s ago\n", plain(shown.out))

    no_colour = run_on_terminal("--config", config, "status", env={"NO_COLOR": "1"})
    assert "\x1b[" not in no_colour.tty
    digits = re.compile(r"\d+")  # the clock moved between the two runs
    assert digits.sub("9", plain(shown.out)) == digits.sub("9", no_colour.out)

    piped = run_cli("--config", config, "status")  # not a terminal: the lines of before
    assert piped.out.startswith("sf:") and "3 consecutive failures" in piped.out
    as_json = run_on_terminal("--config", config, "status", "--json")
    assert json.loads(as_json.out)[1]["consecutive_failures"] == 3


# ---------------------------------------------------------------------------- audit events


def test_audit_events_are_console_lines_when_stderr_is_a_terminal(run_cli, endpoint, tmp_path: Path) -> None:
    config = fleet(run_cli, endpoint, tmp_path, ["sf"], audit_log="audit.jsonl")
    shown = run_on_terminal("--config", config, "rotate", "sf", stdout_tty=False, stderr_tty=True)
    assert shown.code == 0, shown.err
    assert json.loads(shown.out)["action"] == "rotated"  # stdout: the JSON line, as ever
    lines = plain(shown.err).splitlines()
    assert lines and not any(line.lstrip().startswith("{") for line in lines), shown.err
    succeeded = next(line for line in lines if "rotation.succeeded" in line)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[info\s*\] rotation\.succeeded\s+ \w",
                    succeeded), succeeded
    assert "credential=sf" in succeeded and "actor" not in succeeded
    assert "\x1b[" in shown.err  # coloured
    # the audit file keeps the full JSON line, whatever the terminal shows
    filed = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    done = next(e for e in filed if e["event"] == "rotation.succeeded")
    assert done["actor"]["pid"] > 0 and done["ts"].endswith("Z") and len(done["rotation_id"]) == 32

    forced = run_on_terminal("--config", config, "--log-format", "json", "rotate", "sf", "--force",
                             stdout_tty=False, stderr_tty=True)
    events = [json.loads(line) for line in forced.err.splitlines()]
    assert "rotation.succeeded" in [e["event"] for e in events]

    bland = run_on_terminal("--config", config, "rotate", "sf", "--force", stdout_tty=False,
                            stderr_tty=True, env={"NO_COLOR": "1"})
    assert "\x1b[" not in bland.tty and "rotation.succeeded" in bland.err

    piped = run_on_terminal("--config", config, "rotate", "sf", "--force", stdout_tty=True)
    assert "rotation.succeeded" in [json.loads(line)["event"] for line in piped.err.splitlines()]


def test_console_lines_are_redacted_like_json(tmp_path: Path) -> None:
    """The console renderer sits after the same redaction processors as the JSON one."""
    import io

    import structlog

    from rotator.audit import pipeline as audit

    out = io.StringIO()
    audit.configure(fmt="console", stream=out, colours=True)
    try:
        jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlX2J5dGVz"
        audit.emit("config.warning", warning=f"token {jwt} leaked", access_token="00D5e000000abcd!AQ")
        pem = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----"
        structlog.get_logger("t").info("x.y", detail=pem)
    finally:
        audit.configure(fmt="json")
    text = out.getvalue()
    assert "config.warning" in text and "x.y" in text
    assert jwt not in text and "00D5e000000abcd" not in text and "MIIE" not in text
    assert "[REDACTED" in text


def test_the_daemon_keeps_json_on_a_terminal(run_cli, endpoint, tmp_path: Path) -> None:
    """`rotator run` under `docker run -t`: its stdout is still a log collector's."""
    config = fleet(run_cli, endpoint, tmp_path, ["sf"])
    shown = run_on_terminal("--config", config, "run", stderr_tty=True,
                            stop_on="daemon.started")
    assert shown.code == 0, shown.out[-2000:]
    events = [json.loads(line) for line in shown.out.splitlines() if line.strip()]
    assert {"daemon.started", "daemon.stopped"} <= {e["event"] for e in events}


# ---------------------------------------------------------------------------- rotate --all progress

PROGRESS = re.compile(r"rotating (\d+)/(\d+)  (\d+) failed  [\d.]+/s  (ETA \S+|in [\d.]+s)")


@pytest.mark.parametrize("count", [12, 250])  # one process with threads; one process per core
def test_rotate_all_draws_a_progress_line_on_a_terminal(run_cli, endpoint, tmp_path: Path,
                                                        count: int) -> None:
    names = [f"c{i:03d}" for i in range(count)]
    config = fleet(run_cli, endpoint, tmp_path, names, audit_log="audit.jsonl", workers=4)
    endpoint.set_fault("5xx", count=3)  # three fail (whichever come first): the count shows them
    shown = run_on_terminal("--config", config, "rotate", "--all", stdout_tty=False, stderr_tty=True)
    assert shown.code == 1, shown.err[-2000:]
    lines = [json.loads(line) for line in shown.out.splitlines()]  # stdout: JSON lines, in order
    assert [line["name"] for line in lines] == names
    assert sum(not line["ok"] for line in lines) == 3
    drawn = [(int(m[1]), int(m[2]), int(m[3])) for m in PROGRESS.finditer(plain(shown.tty))]
    assert drawn[0] == (0, count, 0) and drawn[-1] == (count, count, 3), drawn[-3:]
    assert [d for d, _, _ in drawn] == sorted(d for d, _, _ in drawn)  # counts only go up
    assert "\r\x1b[K" in shown.tty and "\x1b[31m3 failed" in shown.tty
    screen = plain(shown.err).replace("\r\x1b[K", "\n").splitlines()
    assert screen[-1].startswith(f"rotating {count}/{count}  3 failed"), screen[-3:]  # the summary
    if count < 100:  # the events scroll above the line: each whole, none cut by a redraw
        events = [line for line in screen if "rotation.succeeded" in line]
        assert len(events) == count - 3 and all(re.match(r"^\d{4}-", e) for e in events)

    piped = run_on_terminal("--config", config, "rotate", "--all", "--force", stdout_tty=True,
                            stderr_tty=False)  # stderr piped: no progress, JSON events as before
    assert "rotating" not in piped.err and "\r" not in piped.err
    assert all(json.loads(line)["event"] for line in piped.err.splitlines())
    assert [json.loads(line)["name"] for line in piped.out.splitlines()] == names
