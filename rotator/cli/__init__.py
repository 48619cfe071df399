"""The command line: argument parsing, the sub-commands, terminal output, status rendering,
the embedded demo and the multi-process fan-out of `rotate --all`.

Owns everything that talks to a terminal. May import every other rotator package (it is the
top layer); nothing else imports it. Only `demo` may import `rotator.testing` (the demo runs
the Salesforce emulator).

`main` is the console script (`rotator = "rotator.cli:main"`) and what `python -m rotator`
runs; it imports the parser on first call, so `import rotator.cli` stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from rotator.cli.app import main as run

    return run(argv)
