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
