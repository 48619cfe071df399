"""Shell completion: the scripts `rotator completion bash|zsh` print, run in the real shells
with the words of a command line, completing against the real CLI (names from the config)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import rotator_subprocess_env, write_config

ZSH = shutil.which("zsh")


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    """PATH with a `rotator` that runs this checkout, a config with three credentials."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "rotator"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rotator "$@"\n')
    wrapper.chmod(0o755)
    write_config(tmp_path / "rotator.toml", login_url="https://login.salesforce.com",
                 credentials={"sf-prod": {}, "sf-dev": {}, "hr": {}})
    (tmp_path / "other.toml").write_text('[credentials.elsewhere]\nprovider = "salesforce"\n')
    env = rotator_subprocess_env()
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


_SCRIPTS: dict[str, str] = {}


def script(shell: str, tmp_path: Path, env: dict[str, str]) -> Path:
    """The script the real CLI prints (made once per shell: it depends on the parser only)."""
    if shell not in _SCRIPTS:
        made = subprocess.run(["rotator", "completion", shell], capture_output=True, text=True,
                              env=env, check=True, timeout=60)
        assert made.stderr == ""
        _SCRIPTS[shell] = made.stdout
    path = tmp_path / "bin" / f"rotator.{shell}"  # not in the cwd, where files are completed
    path.write_text(_SCRIPTS[shell])
    return path


def bash_complete(tmp_path: Path, env: dict[str, str], line: str, **extra: str) -> list[str]:
    """COMPREPLY for `line`, the cursor at its end (a trailing space: a new, empty word)."""
    words = line.split(" ")
    source = script("bash", tmp_path, env)
    program = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _rotator; '
               'printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", program, "bash", str(source), *words],
                          capture_output=True, text=True, env={**env, **extra}, cwd=tmp_path,
                          timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return [word for word in done.stdout.splitlines() if word]


CASES = [
    ("rotator ", ["check", "rotate", "run", "status", "keys", "cert", "jwt", "token", "audit",
                  "demo", "completion"]),
    ("rotator ke", ["keys"]),
    ("rotator keys ", ["init", "import", "rotate", "promote", "discard", "retire", "publish"]),
    ("rotator --config rotator.toml rotate --", ["--help", "--all", "--dry-run", "--force"]),
    ("rotator --log-format ", ["json", "console"]),
    ("rotator completion ", ["bash", "zsh"]),
    ("rotator --config rotator.toml rotate ", ["hr", "sf-dev", "sf-prod"]),
    ("rotator --config rotator.toml rotate hr sf-", ["sf-dev", "sf-prod"]),
    ("rotator --config rotator.toml keys init sf-prod ", []),  # one name only
    ("rotator --config rotator.toml keys init --days 30 s", ["sf-dev", "sf-prod"]),
    ("rotator --config rotator.toml audit report --credential h", ["hr"]),
    ("rotator --config=other.toml token ", ["elsewhere"]),
    ("rotator --config rot", ["rotator.toml"]),
    ("rotator status --", ["--help", "--json"]),
]


@pytest.mark.parametrize(("line", "expected"), CASES)
def test_bash_completes_commands_options_and_names(tmp_path, shell_env, line, expected) -> None:
    assert sorted(bash_complete(tmp_path, shell_env, line)) == sorted(expected)


def test_names_come_from_the_config_every_command_uses(tmp_path, shell_env) -> None:
    """No --config: $ROTATOR_CONFIG, as for every other command; no config at all: nothing,
    and no error text in the middle of the user's command line."""
    line = "rotator jwt "
    assert bash_complete(tmp_path, shell_env, line, ROTATOR_CONFIG=str(tmp_path / "other.toml")) == [
        "elsewhere"]
    assert bash_complete(tmp_path, shell_env, line, ROTATOR_CONFIG=str(tmp_path / "missing.toml")) == []


def test_names_helper_is_hidden_and_quiet(tmp_path, shell_env) -> None:
    (tmp_path / "bad.toml").write_text("[credentials\n")
    (tmp_path / "odd.toml").write_text('[credentials."$(touch pwned)"]\n[credentials.ok]\n')
    run = [sys.executable, "-m", "rotator"]
    for name, expected in (("bad.toml", ""), ("odd.toml", "ok\n"), ("rotator.toml", "hr\nsf-dev\nsf-prod\n")):
        done = subprocess.run([*run, "--config", str(tmp_path / name), "__complete-names"],
                              capture_output=True, text=True, env=shell_env, timeout=60)
        assert (done.returncode, done.stdout, done.stderr) == (0, expected, "")
    helped = subprocess.run([*run, "--help"], capture_output=True, text=True, env=shell_env, timeout=60)
    assert "completion" in helped.stdout and "__complete" not in helped.stdout


@pytest.mark.skipif(ZSH is None, reason="zsh is not installed")
def test_zsh_script_completes_the_same(tmp_path, shell_env) -> None:
    """compadd and _files are the completion system's; stand-ins print what they are given."""
    source = script("zsh", tmp_path, shell_env)
    program = ('compdef() { :; }; compadd() { [[ $1 == -- ]] && shift; print -l -- "$@"; }; '
               '_files() { print -- @files; }; source "$1"; shift; words=("$@"); '
               'CURRENT=$#; _rotator')
    for line, expected in [("rotator keys ", CASES[2][1]),
                           ("rotator --config rotator.toml rotate sf", ["sf-dev", "sf-prod"]),
                           ("rotator --config ", ["@files"])]:
        done = subprocess.run([str(ZSH), "-f", "-c", program, "zsh", str(source), *line.split(" ")],
                              capture_output=True, text=True, env=shell_env, cwd=tmp_path, timeout=60)
        got = [w for w in done.stdout.splitlines() if w]
        # compadd leaves the filtering by prefix to zsh: compare what starts with the word typed
        typed = line.split(" ")[-1]
        assert sorted(w for w in got if w.startswith(typed) or w == "@files") == sorted(expected), done.stderr


def test_script_tables_follow_the_parser() -> None:
    """A new command or option shows up in the script without touching completion.py."""
    from rotator.cli.app import build_parser
    from rotator.cli.completion import command_tree

    tree = command_tree(build_parser())
    assert tree["rotate"].positional == "names" and tree["keys init"].positional == "name"
    assert tree["audit verify"].positional == "files" and tree[""].values["--config"] == "file"
    assert "__complete-names" not in tree[""].subcommands
    assert tree["audit report"].values["--credential"] == "name"


# A real interactive zsh on a pty (zsh/zpty): compinit, the script sourced, the line typed with
# a TAB, then a key bound to a widget that writes the edit buffer to a file.
ZPTY_DRIVER = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1='> '; autoload -U compinit; compinit -u -d ${(q)3}.dump; source ${(q)1}"
zpty -w z "dump() { print -r -- \$BUFFER > ${(q)3}.tmp && mv ${(q)3}.tmp ${(q)3} }"
zpty -w z "zle -N dump; bindkey '^X' dump"
zpty -w -n z "$2"$'\t'$'\x18'
integer deadline=$(( SECONDS + 30 ))
while (( SECONDS < deadline )) && [[ ! -e $3 ]]; do
  zpty -r -t z chunk; sleep 0.05
done
zpty -d z
"""


@pytest.mark.skipif(ZSH is None, reason="zsh is not installed")
@pytest.mark.parametrize(("typed", "completed"), [
    ("rotator ke", "rotator keys "),
    ("rotator --config rotator.toml rotate sf-p", "rotator --config rotator.toml rotate sf-prod "),
    ("rotator --config rotator.toml audit report --credential h",
     "rotator --config rotator.toml audit report --credential hr "),
    ("rotator --log-format c", "rotator --log-format console "),
])
def test_zsh_completes_at_a_real_prompt(tmp_path, shell_env, typed, completed) -> None:
    source = script("zsh", tmp_path, shell_env)
    buffer = tmp_path / "buffer.txt"
    subprocess.run([str(ZSH), "-f", "-c", ZPTY_DRIVER, "zsh", str(source), typed, str(buffer)],
                   env=shell_env, cwd=tmp_path, timeout=60, capture_output=True, check=False)
    assert buffer.exists(), "zsh never ran the widget"
    assert buffer.read_text() == completed + "\n"
