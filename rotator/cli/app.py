"""The `rotator` command line. Every RotatorError becomes one line on stderr and its exit code.

Data goes to stdout (rotate's JSON lines, PEMs, tokens, status); the audit events of one-shot
commands go to stderr so that `rotator token NAME | jq` works. The daemon (`run`, `demo`)
writes its audit events to stdout, for journald and Kubernetes log collection. When a
one-shot command's stderr is a terminal its events are short console lines, else JSON
(`--log-format` forces either); the daemon writes JSON unless told otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from rotator import __version__
from rotator.audit import pipeline as audit
from rotator.cli.terminal import colour_wanted, is_terminal
from rotator.errors import InternalError, RotatorError, UsageError
from rotator.hardening import harden_process, withheld


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", hint=f"see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rotator", description="Keeps machine credentials fresh.")
    parser.add_argument("--version", action="version", version=f"rotator {__version__}")
    parser.add_argument(
        "--config", help="config file (default: $ROTATOR_CONFIG or /etc/rotator/rotator.toml)"
    )
    parser.add_argument(
        "--log-format", choices=("json", "console"), default=None,
        help="audit events as JSON lines or short console lines (default: console when a one-shot "
             "command's stderr is a terminal, else JSON; the daemon: JSON)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("check", help="validate config, keys and store access; writes nothing")

    rotate = sub.add_parser("rotate", help="rotate now; one JSON line per credential")
    rotate.add_argument("names", nargs="*")
    rotate.add_argument("--all", action="store_true")
    rotate.add_argument("--dry-run", action="store_true", help="load and mint, do not exchange or write")
    rotate.add_argument("--force", action="store_true", help="rotate even if the token is fresh")

    sub.add_parser("run", help="the daemon: rotate on schedule until SIGTERM")

    status = sub.add_parser("status", help="token age, next run, certificate expiry, last error")
    status.add_argument("--json", action="store_true")

    keys = sub.add_parser("keys", help="create, import and roll signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    init = keys_sub.add_parser("init", help="new RSA key + self-signed certificate")
    init.add_argument("name")
    init.add_argument("--days", type=int, default=365)
    init.add_argument("--bits", type=int, default=2048)
    init.add_argument("--cn", help="certificate common name (default: the credential name)")
    init.add_argument("--force", action="store_true", help="replace an existing key record")
    imp = keys_sub.add_parser("import", help="store openssl-made server.key / server.crt")
    imp.add_argument("name")
    imp.add_argument("--key", required=True, type=Path)
    imp.add_argument("--cert", required=True, type=Path)
    imp.add_argument("--passphrase-file", type=Path,
                     help="file holding the key's passphrase (or set ROTATOR_KEY_PASSPHRASE)")
    imp.add_argument("--force", action="store_true", help="replace an existing key record")
    for verb, text in (("rotate", "stage a pending key"), ("promote", "make the pending key current"),
                       ("discard", "drop the pending key")):
        cmd = keys_sub.add_parser(verb, help=text)
        cmd.add_argument("name")
        if verb == "promote":
            cmd.add_argument("--force", action="store_true")
        if verb == "rotate":
            # None: inherit the current key's size and the current certificate's lifetime
            cmd.add_argument("--days", type=int, default=None)
            cmd.add_argument("--bits", type=int, default=None)

    retire = keys_sub.add_parser(
        "retire", help="aws-kms: schedule a rolled-over KMS key for deletion (never automatic)")
    retire.add_argument("name")
    retire.add_argument("--key-id", required=True, help="the old key's id or ARN (not an alias)")
    retire.add_argument("--days", type=int, default=30, help="KMS waiting period, 7-30 days")
    publish = keys_sub.add_parser(
        "publish", help="put a certificate into the app through the Metadata API (publish table)")
    publish.add_argument("name")
    which = publish.add_mutually_exclusive_group()
    which.add_argument("--pending", action="store_true", help="the pending certificate (default)")
    which.add_argument("--current", action="store_true",
                       help="the current certificate: the way back after a bad publication")
    publish.add_argument("--dry-run", action="store_true", help="show what would change; change nothing")

    cert = sub.add_parser("cert", help="certificates")
    cert_sub = cert.add_subparsers(dest="cert_command", required=True, parser_class=_Parser)
    show = cert_sub.add_parser("show", help="subject, serial, validity, fingerprint")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    show.add_argument("--pending", action="store_true", help="the pending certificate")
    show.add_argument("--pem", action="store_true", help="print the PEM alone, to upload")

    jwt_cmd = sub.add_parser("jwt", help="print a freshly signed assertion")
    jwt_cmd.add_argument("name")

    token = sub.add_parser("token", help="print the stored token record (or one field)")
    token.add_argument("name")
    token.add_argument("--field")

    audit_cmd = sub.add_parser("audit", help="audit trail tools")
    audit_sub = audit_cmd.add_subparsers(dest="audit_command", required=True, parser_class=_Parser)
    verify = audit_sub.add_parser("verify", help="check the audit log's hash chain")
    verify.add_argument("files", nargs="+", type=Path)
    verify.add_argument("--key-file", type=Path,
                        help="the audit HMAC key (default: the one --config's daemon section names)")
    verify.add_argument("--expect-head", metavar="HASH",
                        help="a head recorded earlier (audit.checkpoint): it must be in the chain")
    verify.add_argument("--allow-unkeyed", action="store_true",
                        help="accept a legacy unkeyed chain (anyone can forge one)")
    hash_cmd = audit_sub.add_parser(
        "hash", help="keyed fingerprint of a token read from stdin (pass -: never the token in argv)"
    )
    hash_cmd.add_argument("value", metavar="-")
    report = audit_sub.add_parser(
        "report", help="what happened per credential: rotations, key changes, warnings, gaps")
    report.add_argument("files", nargs="*", type=Path,
                        help="audit files, oldest first (default: daemon.audit_log and its copies)")
    report.add_argument("--since", help="RFC 3339 time, date, or age such as 7d")
    report.add_argument("--until", help="RFC 3339 time, date, or age such as 1d")
    report.add_argument("--credential", action="append", help="only this credential (repeatable)")
    report.add_argument("--event", action="append", help="only these events, globs allowed: key.*")
    report.add_argument("--key-file", type=Path,
                        help="the audit HMAC key (default: the one --config's daemon section names)")
    report.add_argument("--allow-unkeyed", action="store_true",
                        help="trust a legacy unkeyed chain (anyone can forge one)")
    shape = report.add_mutually_exclusive_group()
    for flag, fmt, text in (("--json", "json", "JSON (docs/audit-report.md)"),
                            ("--csv", "csv", "CSV, one row per credential"),
                            ("--csv-events", "csv-events", "CSV, one row per event")):
        shape.add_argument(flag, dest="format", action="store_const", const=fmt, help=text)

    demo = sub.add_parser("demo", help="the embedded default: local endpoint + file store, full loop")
    demo.add_argument("--duration", type=float, default=30.0)
    demo.add_argument("--dir", type=Path, default=Path(".demo"))
    demo.add_argument("--every", default="5s")

    completion = sub.add_parser("completion", help="print a bash or zsh completion script")
    completion.add_argument("shell", choices=("bash", "zsh"))
    sub.add_parser("__complete-names")  # hidden: credential names for the completion scripts
    sub.metavar = "{" + ",".join(name for name in sub.choices if not name.startswith("_")) + "}"
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Before anything reads a secret: no core dumps, no same-user /proc peeking, and the
    # secret variables out of the environment children inherit (rotator.hardening).
    harden_process()
    with withheld():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        daemonish = args.command in ("run", "demo")
        stream = sys.stdout if daemonish else sys.stderr
        audit.configure(fmt=_log_format(args.log_format, stream, daemonish), stream=stream,
                        colours=colour_wanted(stream))
        return _dispatch(args)
    except RotatorError as exc:
        print(f"rotator: error: {audit.redact_text(exc.diagnostics())}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: no traceback (it could show secrets) unless asked
        if os.environ.get("ROTATOR_DEBUG") == "1":
            raise
        print(f"rotator: error: {InternalError(exc).diagnostics()}", file=sys.stderr)
        return 1


def _log_format(asked: str | None, stream: TextIO, daemonish: bool) -> str:
    """--log-format if given; else console lines for a person at the terminal a one-shot
    command's events go to, JSON for anything else (pipes, files, journald). The daemon
    writes JSON unless asked: its stdout is a log collector's, even under `docker run -t`."""
    if asked is not None:
        return asked
    return "console" if not daemonish and is_terminal(stream) else "json"


def _dispatch(args: argparse.Namespace) -> int:
    from rotator.cli import commands, completion

    if args.command == "completion":
        sys.stdout.write(completion.script(args.shell, build_parser()))
        return 0
    if args.command == completion.NAMES_COMMAND:
        return completion.print_names(args.config)

    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "check": commands.check,
        "rotate": commands.rotate,
        "run": commands.run,
        "status": commands.status,
        "keys": commands.keys,
        "cert": commands.cert,
        "jwt": commands.jwt_command,
        "token": commands.token,
        "audit": commands.audit_command,
        "demo": commands.demo,
    }
    return handlers[args.command](args)
