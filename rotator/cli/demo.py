"""`rotator demo`: the whole JWT-bearer recipe, automated, on this machine.

It starts the Salesforce-compatible endpoint from rotator.testing on loopback, writes a
config with a file store under `--dir`, makes a key and certificate (`keys init`), "uploads"
the certificate to the emulated connected app, then rotates on a short interval; after each
rotation it reads the token from the store and runs a SOQL query with it, as a consumer would.
Tokens are never printed: only their keyed fingerprints.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

import requests

from rotator.audit import pipeline as audit
from rotator.audit.fingerprint import token_fingerprint
from rotator.config import load_config
from rotator.durations import parse_duration
from rotator.engine import Engine
from rotator.errors import InputError
from rotator.keys.generate import init_key_record
from rotator.records import KeyRecord, TokenRecord
from rotator.testing.salesforce import CUSTOMIZE_APPLICATION, MODIFY_METADATA, SalesforceEndpoint

CLIENT_ID = "3MVG9demo.rotator.connected.app.consumer.key"
USERNAME = "integration@example.com"
APP = "Rotator_Demo"
# The demo's keys live 5 minutes (the backdating) plus this long: a rollover every ~12 s.
KEY_LIFE_SECONDS = 12

CONFIG_TEMPLATE = """\
# Written by `rotator demo`. A real config points login_url at https://login.salesforce.com.
[daemon]
listen = ""
audit_log = "audit.jsonl"
audit_hmac_key_file = "audit-hmac.key"

[stores.local]
type = "file"
path = "store"

[credentials.demo]
provider = "salesforce"
client_id = "{client_id}"
username = "{username}"
login_url = "{login_url}"
key = "local:demo/signing-key"
token = "local:demo/access-token"
every = "{every}"
jitter = "0s"
# Zero-touch key rollover: a key older than max_key_age (counted from the certificate's
# not_before, which is backdated 5 minutes for clock skew) is renewed; the new certificate is
# published into the connected app through the Metadata API, tried, and promoted.
max_key_age = "{max_key_age}"
publish = {{ type = "connected-app", app = "{app}" }}
"""


def run_demo(*, directory: Path, duration: float, every: str, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        interval = parse_duration(every)
    except ValueError as exc:
        raise InputError(f"--every: {exc}") from None
    if interval < 1:
        raise InputError("--every: at least 1s")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    stop = threading.Event()
    _stop_on_signals(stop)

    def say(text: str) -> None:
        out.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
        out.flush()

    with SalesforceEndpoint() as endpoint, open(os.devnull, "w") as quiet:
        # The readable lines below are for the person watching; the audit events go to the
        # hash-chained audit file the config names (verify it with `rotator audit verify`).
        audit.configure(fmt="json", stream=quiet)
        say(f"1. Salesforce-compatible token endpoint listening at {endpoint.url}")
        config_path = directory / "rotator.toml"
        config_path.write_text(CONFIG_TEMPLATE.format(
            client_id=CLIENT_ID, username=USERNAME, login_url=endpoint.url, every=every,
            max_key_age=f"{300 + KEY_LIFE_SECONDS}s", app=APP))
        os.chmod(config_path, 0o600)
        config = load_config(config_path)
        audit.use_settings(config.daemon)
        engine = Engine(config)
        cred = config.credential("demo")
        store = engine.stores[cred.key.store]
        say(f"2. config written to {config_path} (file store at {directory / 'store'})")

        existing = store.read(cred.key.path)
        if existing is None:
            cert_pem = init_key_record(store, cred.key.path, name="demo", bits=2048, days=365,
                                       common_name="rotator-demo", force=False)
            say("3. keys init: new RSA-2048 key + self-signed certificate (openssl genrsa/req/x509)")
        else:
            cert_pem = KeyRecord.from_data(existing.data, where=str(cred.key)).current.certificate
            say("3. reusing the key from an earlier demo run")
        endpoint.register_app(CLIENT_ID, cert_pem, users=[USERNAME], name=APP)
        # the integration user may change its own app through the Metadata API (docs/key-rotation.md
        # recommends a separate publishing credential: publish.via)
        endpoint.grant_permissions(USERNAME, MODIFY_METADATA, CUSTOMIZE_APPLICATION)
        keyrec, record = engine.read_key_record("demo")
        loaded = engine.load_pair("demo", keyrec.current, "current", record.version)
        say(f"4. certificate sha256 {loaded.signer.cert_sha256[:16]}… uploaded to the connected app {APP}"
            " (the only manual upload: rotator publishes every later certificate itself)")
        claims = engine.provider("demo").claims(time.time())
        say(f"5. each rotation signs an RS256 assertion: iss={claims['iss'][:12]}… sub={claims['sub']} "
            f"aud={claims['aud']} exp=now+{claims['exp'] - claims['iat']}s, and POSTs it to "
            "/services/oauth2/token")
        say(f"6. rotating every {every}; a consumer reads the token from the store and queries"
            f" (Ctrl-C to stop{'' if duration <= 0 else f', or wait {duration:g}s'})")

        say(f"   keys older than max_key_age are renewed (here every ~{KEY_LIFE_SECONDS}s): staged, published"
            " through the Metadata API, tried first and promoted")

        deadline = time.monotonic() + duration if duration > 0 else None
        rounds = failures = rollovers = 0
        signing = loaded.signer.cert_sha256
        while not stop.is_set():
            rounds += 1
            result = engine.rotate("demo", force=True)
            if not result.ok:
                failures += 1
                say(f"   rotation {rounds}: FAILED {result.error.diagnostics() if result.error else ''}")
            else:
                say(f"   rotation {rounds}: {result.action} in {result.duration * 1000:.0f} ms, "
                    f"token version {str(result.token_version)[:12]}")
                if result.key_sha256 and result.key_sha256 != signing:
                    rollovers += 1
                    held = engine.read_key_record("demo")[0].current.certificate
                    live = endpoint.certificate(CLIENT_ID) or ""
                    where = "the app holds it" if live.strip() == held.strip() else "NOT in the app"
                    say(f"   key rollover: certificate {result.key_sha256[:16]}… published to {APP} through "
                        f"the Metadata API ({where}), tried and promoted; {signing[:16]}… kept as previous")
                    signing = result.key_sha256
                say("   consumer: " + _consume(engine, cred.token.store, cred.token.path))
            if deadline is not None and time.monotonic() + interval > deadline:
                break
            stop.wait(interval)
        engine.stores.close()
        say(f"done: {rounds} rotations, {failures} failed, {rollovers} key rollovers with no human step, "
            f"{endpoint.token_requests} token requests; "
            f"audit trail in {directory / 'audit.jsonl'}")
    return 1 if failures else 0


def _consume(engine: Engine, store_name: str, path: str) -> str:
    """What an application does: read the token record, call the API with it."""
    record = engine.stores[store_name].read(path)
    if record is None:
        return "no token in the store"
    token = TokenRecord.from_data(record.data, where=path)
    reply = requests.get(
        f"{token.instance_url}/services/data/v62.0/query",
        params={"q": "SELECT Id, Name FROM Organization"},
        headers={"Authorization": f"Bearer {token.access_token}"},
        timeout=10,
    )
    if reply.status_code != 200:
        return f"query failed: HTTP {reply.status_code}"
    org = reply.json()["records"][0]
    return (f"SOQL ok — Organization {org['Name']!r} (token {token_fingerprint(token.access_token)[:24]}…)")


def _stop_on_signals(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
