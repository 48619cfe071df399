"""What each CLI command does. Thin: the work lives in engine, keys, stores and daemon."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rotator.audit import pipeline as audit
from rotator.cli.output import print_json, read_secret_arg
from rotator.config import Config, load_config, resolve_config_path
from rotator.engine import Engine
from rotator.errors import InputError, RecordError, RotatorError, UsageError
from rotator.fsutil import trusted_dir_problem
from rotator.keys.crypto import cert_info, load_certificate
from rotator.keys.generate import import_key_record, init_key_record

if TYPE_CHECKING:
    from rotator.cli.progress import Progress


def load(args: argparse.Namespace, *, read_only: bool = False) -> Config:
    config = load_config(resolve_config_path(args.config))
    if not read_only:  # `check` writes nothing: no audit file, no HMAC key file
        _use_audit_settings(config)
    for warning in config.warnings:
        audit.emit("config.warning", level="warning", warning=warning)
    return config


def _use_audit_settings(config: Config) -> None:
    audit.use_settings(config.daemon)  # token-fingerprint key + hash-chained audit_log file


def _names(args: argparse.Namespace, config: Config) -> list[str]:
    if getattr(args, "all", False):
        if args.names:
            raise UsageError("give credential names or --all, not both")
        return sorted(config.credentials)
    if not args.names:
        raise UsageError("name at least one credential, or pass --all")
    for name in args.names:
        config.credential(name)
    return list(args.names)


# ---------------------------------------------------------------------------- check


def check(args: argparse.Namespace) -> int:
    config = load(args, read_only=True)
    engine = Engine(config)
    failures = 0
    audit_log = config.daemon.audit_log
    if audit_log is not None:
        folder = next((p for p in (audit_log.parent, *audit_log.parents) if p.exists()), None)
        untrusted = trusted_dir_problem(audit_log.parent)
        if untrusted is not None:
            failures += 1
            print(f"audit_log: FAILED {untrusted}")
        elif folder is None or not os.access(folder, os.W_OK | os.X_OK):
            failures += 1
            print(f"audit_log: FAILED {audit_log} cannot be created or appended to")
        else:
            print(f"audit_log: ok ({audit_log})")
    for warning in config.warnings:
        print(f"warning: {warning}")
    from rotator.daemon.schedule_check import check_config

    for warning in check_config(config):  # schedules that run into the request caps
        print(f"warning: {warning}")
    for name in engine.stores.names():
        store = engine.stores[name]
        try:
            store.check()
            print(f"store {name}: ok ({store.describe()})")
        except RotatorError as exc:
            failures += 1
            print(f"store {name}: FAILED {exc.diagnostics()}")
    usage_error: RotatorError | None = None
    for name in sorted(config.credentials):
        try:
            keyrec, record = engine.read_key_record(name)
            loaded = engine.load_pair(name, keyrec.current, "current", record.version)
            engine.mint(name, loaded.signer)
            engine.read_token(name)
            days = (loaded.not_after - engine.now()).total_seconds() / 86400
            print(f"credential {name}: ok (key {loaded.signer.cert_sha256[:16]}, "
                  f"certificate expires in {days:.0f} days)")
        except RotatorError as exc:
            failures += 1
            usage_error = usage_error or (exc if exc.exit_code == 2 else None)
            print(f"credential {name}: FAILED {exc.diagnostics()}")
    engine.stores.close()
    if usage_error is not None:
        raise usage_error
    return 1 if failures else 0


# ---------------------------------------------------------------------------- rotate


def rotate(args: argparse.Namespace) -> int:
    from rotator.cli.fanout import rotate_names

    config = load(args)
    names = _names(args, config)
    # daemon.workers threads (endpoint round trips and fsyncs overlap), and for large fleets
    # one process per core; output in the order given, one JSON line per credential.
    failed = rotate_names(config, names, force=args.force, dry_run=args.dry_run, emit=print_json,
                          progress=_progress(len(names)))
    return 1 if failed else 0


def _progress(total: int) -> Progress | None:
    """A progress line on stderr when it is a terminal and there is more than one credential
    (the audit events then pass below it); None when piped: stderr stays as it was."""
    from rotator.cli.progress import LineGuard, Progress
    from rotator.cli.terminal import colour_wanted, is_terminal

    if total < 2 or not is_terminal(sys.stderr):
        return None
    progress = Progress(total, sys.stderr, colour=colour_wanted(sys.stderr))
    audit.use_stream(LineGuard(sys.stderr, progress))  # type: ignore[arg-type]
    progress.draw(force=True)
    return progress


def run(args: argparse.Namespace) -> int:
    from rotator.daemon.service import run_daemon

    return run_daemon(resolve_config_path(args.config), log_format=args.log_format)


# ---------------------------------------------------------------------------- status


def status(args: argparse.Namespace) -> int:
    from rotator.cli.status import collect_status, exit_code, render_status, render_status_table
    from rotator.cli.terminal import colour_wanted, is_terminal

    config = load(args)
    rows = collect_status(config)
    if args.json:
        print_json(rows)
    elif is_terminal(sys.stdout):  # piped: the one-line-per-credential text scripts may read
        sys.stdout.write(render_status_table(rows, config, colour=colour_wanted(sys.stdout)))
    else:
        sys.stdout.write(render_status(rows))
    return exit_code(rows)


# ---------------------------------------------------------------------------- keys / cert


def keys(args: argparse.Namespace) -> int:
    config = load(args)
    engine = Engine(config)
    name = args.name
    cred = config.credential(name)
    store = engine.stores[cred.key.store]
    if args.keys_command == "init" and cred.signer != "pem":
        # keyless (docs/keyless.md): the key is made in / named in Vault Transit or AWS KMS
        from rotator.keys.generate import init_remote_key_record

        try:
            pem = init_remote_key_record(engine.key_context(name), bits=args.bits, days=args.days,
                                         common_name=args.cn or name, force=args.force)
        finally:
            engine.stores.close()
        sys.stdout.write(pem)
        return 0
    if args.keys_command == "import" and cred.signer != "pem":
        raise InputError(f"{name}: keys import stores a PEM key; signer = \"{cred.signer}\" keeps "
                         "its key in the key service", hint=f"use `rotator keys init {name}`")
    if args.keys_command == "init":
        pem = init_key_record(
            store, cred.key.path, name=name, bits=args.bits, days=args.days,
            common_name=args.cn or name, force=args.force,
        )
        sys.stdout.write(pem)
        return 0
    if args.keys_command == "import":
        passphrase = read_secret_arg(args.passphrase_file, "ROTATOR_KEY_PASSPHRASE")
        pem = import_key_record(
            store, cred.key.path, name=name, key_file=args.key, cert_file=args.cert,
            passphrase=passphrase, algorithm=cred.algorithm, force=args.force,
        )
        sys.stdout.write(pem)
        return 0
    from rotator.cli.keys import keys_command

    return keys_command(engine, name, args)


def cert(args: argparse.Namespace) -> int:
    config = load(args)
    engine = Engine(config)
    keyrec, _ = engine.read_key_record(args.name)
    cred = config.credential(args.name)
    pair = keyrec.current
    if args.pending:
        if keyrec.pending is None:
            raise InputError(
                f"{args.name}: no pending key", hint=f"stage one: rotator keys rotate {args.name}"
            )
        pair = keyrec.pending
    certificate = load_certificate(pair.certificate, where=str(cred.key))
    if args.pem:
        sys.stdout.write(pair.certificate if pair.certificate.endswith("\n") else pair.certificate + "\n")
        return 0
    info = cert_info(certificate)
    now = datetime.now(UTC)
    row: dict[str, Any] = {
        "credential": args.name,
        "role": "pending" if args.pending else "current",
        "subject": info.subject,
        "issuer": info.issuer,
        "serial": info.serial,
        "not_before": info.not_before.isoformat(),
        "not_after": info.not_after.isoformat(),
        "days_left": round(info.days_left(now), 1),
        "sha256": info.sha256,
    }
    if args.json:
        print_json(row)
    else:
        width = max(len(k) for k in row)
        for key, value in row.items():
            print(f"{key:<{width}}  {value}")
    return 0


# ---------------------------------------------------------------------------- jwt / token


def jwt_command(args: argparse.Namespace) -> int:
    config = load(args)
    engine = Engine(config)
    keyrec, record = engine.read_key_record(args.name)
    loaded = engine.load_pair(args.name, keyrec.current, "current", record.version)
    print(engine.mint(args.name, loaded.signer))
    return 0


def token(args: argparse.Namespace) -> int:
    config = load(args)
    cred = config.credential(args.name)
    engine = Engine(config)
    record = engine.stores[cred.token.store].read(cred.token.path)
    if record is None:
        raise RecordError(str(cred.token), "no token yet", hint=f"run `rotator rotate {args.name}`")
    if args.field:
        if args.field not in record.data:
            raise InputError(f"--field {args.field}: not in the token record",
                             hint="fields: " + ", ".join(sorted(record.data)))
        value = record.data[args.field]
        print(value if isinstance(value, str) else json.dumps(value))
    else:
        print_json(record.data)
    return 0


# ---------------------------------------------------------------------------- audit / demo


def audit_command(args: argparse.Namespace) -> int:
    if args.audit_command == "hash":
        from rotator.audit.fingerprint import cli_fingerprint

        if args.value != "-":  # a token in argv is readable by every user in /proc/<pid>/cmdline
            raise UsageError("audit hash: pass - and the token on stdin, never the token itself",
                             hint="printf '%s\\n' \"$TOKEN\" | rotator audit hash -")
        if args.config or _config_exists():
            load(args)
        print(cli_fingerprint(sys.stdin.readline().strip()))
        return 0
    if args.audit_command == "report":
        return _audit_report(args)
    from rotator.audit.chain import verify_files

    return verify_files(args.files, key=_verify_key(args), expect_head=args.expect_head,
                        allow_unkeyed=args.allow_unkeyed)


def _verify_key(args: argparse.Namespace) -> bytes | None:
    """The installation key for `audit verify`: --key-file, else the one the config names.
    Read only: verify never creates a key."""
    from rotator.audit.fingerprint import key_path_for, read_key_file

    if args.key_file is not None:
        return read_key_file(args.key_file)
    if not (args.config or _config_exists()):
        return None
    path = key_path_for(load(args, read_only=True).daemon)
    return read_key_file(path) if path is not None and path.exists() else None


def _audit_report(args: argparse.Namespace) -> int:
    from rotator.audit.report import files_of, run_report

    # With a config (--config, or the default one if present) gaps follow each `every`, and
    # without FILEs the report reads daemon.audit_log and its rotated copies.
    schedules, files = None, list(args.files)
    if args.config or _config_exists():
        config = load_config(resolve_config_path(args.config))
        schedules = {n: (c.every, c.jitter) for n, c in config.credentials.items()}
        if not files and config.daemon.audit_log is not None:
            files = files_of(config.daemon.audit_log)
    return run_report(files, since=args.since, until=args.until, credential=args.credential,
                      event=args.event, fmt=args.format or "text", schedules=schedules,
                      key=_verify_key(args), allow_unkeyed=args.allow_unkeyed)


def _config_exists() -> bool:
    return resolve_config_path(None).exists()


def demo(args: argparse.Namespace) -> int:
    from rotator.cli.demo import run_demo

    return run_demo(directory=args.dir, duration=args.duration, every=args.every)
