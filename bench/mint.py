"""Mint: signed assertions per second, against the raw signature and `openssl speed`.

rotator's number is `Engine.mint(name, signer)`: the provider's real claims (iss, sub, aud,
iat, exp; jti for jwt-bearer) JSON-encoded and signed by PyJWT with the loaded key object.
The raw number is cryptography's `key.sign()` over a signing input of the same length, in
the same process; `openssl speed` is the practical limit of the machine's OpenSSL. Rounds of
all variants are interleaved (rotator ÷ raw is the median of per-round ratios), timed on
the thread's CPU clock (as `openssl speed` divides by user time, so that other processes on a
shared machine disturb the numbers less), and the median round is reported. Every round is
kept in the JSON output.

Run alone: `python -m bench.mint [--quick]`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench._common import (
    AUDIENCE,
    USERNAME,
    Ctx,
    Table,
    client_id,
    fmt_ms,
    interleaved_rates,
    median,
    rate,
    tool,
)

TARGET = 0.90  # rotator's RSA-2048 mint rate, as a share of the raw signature rate

COLUMNS = ["Algorithm", "Key", "rotator Engine.mint /s", "raw cryptography sign /s",
           "rotator ÷ raw", "openssl speed sign /s", "rotator ÷ openssl"]
NAIVE_COLUMNS = ["How", "per second", "ms each", "rotator is … x faster"]


def _engine(workdir: Path) -> Any:
    from rotator.config import parse_config
    from rotator.engine import Engine

    generic = {"provider": "jwt-bearer", "client_id": client_id(0), "username": USERNAME,
               "token_url": "https://auth.example.com/oauth2/token"}
    raw = {
        "stores": {"local": {"type": "file", "path": str(workdir)}},
        "credentials": {  # every credential owns its refs (config refuses a shared one)
            "sf": {"provider": "salesforce", "client_id": client_id(0), "username": USERNAME,
                   "login_url": AUDIENCE, "key": "local:sf/k", "token": "local:sf/t"},
            "ps": {**generic, "algorithm": "PS256", "key": "local:ps/k", "token": "local:ps/t"},
            "es": {**generic, "algorithm": "ES256", "key": "local:es/k", "token": "local:es/t"},
        },
    }
    return Engine(parse_config(raw, base_dir=workdir))


def _raw_signers(key: Any, algorithm: str, message: bytes) -> Any:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding

    if algorithm == "RS256":
        return lambda: key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    if algorithm == "PS256":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)  # as PyJWT signs
        return lambda: key.sign(message, pss, hashes.SHA256())
    return lambda: key.sign(message, ec.ECDSA(hashes.SHA256()))


def openssl_speed(seconds: int, algorithms: list[str]) -> tuple[dict[str, float], str | None]:
    """sign/s per algorithm name ("rsa2048", "ecdsap256") from `openssl speed`'s table."""
    if not tool("openssl"):
        return {}, "not measured: openssl is not installed"
    if seconds <= 0:
        return {}, "openssl speed skipped in this profile"
    cmd = ["openssl", "speed", "-seconds", str(seconds), *algorithms]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {}, f"not measured: `{' '.join(cmd)}` failed ({exc})"
    found: dict[str, float] = {}
    for line in out.splitlines():
        rsa = re.match(r"^\s*rsa\s+(\d+)\s+bits\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", line)
        if rsa:
            found[f"rsa{rsa.group(1)}"] = float(rsa.group(2))
        ecdsa = re.match(r"^\s*256\s+bits\s+ecdsa\s+\(nistp256\)\s+\S+s\s+\S+s\s+([\d.]+)", line)
        if ecdsa:
            found["ecdsap256"] = float(ecdsa.group(1))
    if not found:
        return {}, f"not measured: could not read `{' '.join(cmd)}`'s table"
    return found, None


def paired_share(ours: list[float], raw: list[float]) -> float:
    """Median of the per-round ratios: each round times both back to back, so a busy moment
    on the machine slows both sides of one ratio rather than one side of the comparison."""
    return median([a / b for a, b in zip(ours, raw, strict=True)])


def run(ctx: Ctx) -> Table:
    import jwt

    from rotator.keys.crypto import load_private_key
    from rotator.keys.signer import PemSigner as Signer

    prof = ctx.profile
    table = Table("mint", "Mint: assertions per second", COLUMNS)
    workdir = ctx.subdir("mint")
    engine = _engine(workdir)

    cases: list[tuple[str, str, str, Any, str]] = []  # (label, key label, credential, key, speed name)
    for bits in (2048, *prof.mint_bits):
        ctx.log(f"mint: RSA-{bits} key")
        cases.append(("RS256", f"RSA-{bits}", "sf", ctx.keys.rsa(bits)[0], f"rsa{bits}"))
    cases.append(("PS256", "RSA-2048", "ps", ctx.keys.rsa(2048)[0], ""))
    cases.append(("ES256", "EC P-256", "es", ctx.keys.ec()[0], "ecdsap256"))

    variants: dict[str, Any] = {}
    for algorithm, key_label, cred, key, _ in cases:
        signer = Signer(key, algorithm, "bench")
        sample = engine.mint(cred, signer)
        message = sample.rsplit(".", 1)[0].encode("ascii")  # a real signing input
        variants[f"{algorithm} {key_label} rotator"] = (
            lambda cred=cred, signer=signer: engine.mint(cred, signer)
        )
        variants[f"{algorithm} {key_label} raw"] = _raw_signers(key, algorithm, message)
    ctx.log(f"mint: {len(variants)} variants x {prof.mint_rounds} rounds x {prof.mint_round_seconds}s")
    rates = interleaved_rates(variants, rounds=prof.mint_rounds, seconds=prof.mint_round_seconds)

    ctx.log("mint: openssl speed")
    speed_names = sorted({c[4] for c in cases if c[4]})
    speed, speed_note = openssl_speed(prof.openssl_seconds, speed_names)
    if speed_note:
        table.notes.append(f"`openssl speed`: {speed_note}.")

    for algorithm, key_label, _, _, speed_name in cases:
        ours = median(rates[f"{algorithm} {key_label} rotator"])
        raw = median(rates[f"{algorithm} {key_label} raw"])
        share = paired_share(rates[f"{algorithm} {key_label} rotator"], rates[f"{algorithm} {key_label} raw"])
        limit = speed.get(speed_name) if speed_name else None
        table.add(**{
            "Algorithm": algorithm, "Key": key_label,
            "rotator Engine.mint /s": round(ours), "raw cryptography sign /s": round(raw),
            "rotator ÷ raw": f"{100 * share:.0f}%",
            "openssl speed sign /s": round(limit) if limit else "—",
            "rotator ÷ openssl": f"{100 * ours / limit:.0f}%" if limit else "—",
        })
        table.data[f"{algorithm} {key_label}"] = {
            "rotator_per_s": rates[f"{algorithm} {key_label} rotator"],
            "raw_per_s": rates[f"{algorithm} {key_label} raw"], "openssl_per_s": limit,
        }

    headline = table.data["RS256 RSA-2048"]
    share = paired_share(headline["rotator_per_s"], headline["raw_per_s"])
    verdict = "met" if share >= TARGET else "MISSED"
    table.notes.insert(0, (
        f"Target: rotator's RSA-2048 mint rate ≥ {TARGET:.0%} of the raw signature rate in the same "
        f"process — **{verdict}** ({share:.0%}). The gap is PyJWT's JSON encoding and base64url "
        "of header and claims; the signature itself is the same call."
    ))
    beaten = [f"{a} {k}" for a, k, _, _, name in cases
              if speed.get(name) and median(rates[f"{a} {k} rotator"]) > 1.05 * speed[name]]
    if beaten:
        table.notes.append(
            f"rotator beats `openssl speed` at {', '.join(beaten)}: the CLI's OpenSSL and the one "
            "cryptography bundles are different builds (see the machine facts), and the newer one "
            "is faster there. For rotator the practical limit is the raw column."
        )
    if speed.get("rsa2048"):
        table.notes.append(
            "`openssl speed` links the system OpenSSL (CLI), cryptography its bundled one (see the "
            "machine facts); `openssl speed` also signs a bare digest, with no hashing and no "
            "encoding, so it is an upper bound no Python caller reaches."
        )
    table.notes.append("PS256 has no `openssl speed` counterpart (its sign cost is RSA's plus PSS "
                       "padding); ES256's raw rate includes no DER-to-JOSE conversion, PyJWT's does.")

    # -- why the key cache: PyJWT given PEM bytes parses (and validates) the key every call
    ctx.log("mint: the naive way (PyJWT given PEM bytes)")
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from rotator.keys.crypto import check_pair, load_certificate

    _, pem, cert_pem = ctx.keys.rsa(2048)
    pem_bytes = pem.encode("ascii")
    cert = load_certificate(cert_pem)
    claims = engine.provider("sf").claims(0)
    seconds = prof.naive_seconds
    naive = rate(lambda: jwt.encode(claims, pem_bytes, algorithm="RS256"), seconds, min_ops=3)
    parse = rate(lambda: load_pem_private_key(pem_bytes, None), seconds, min_ops=3)
    ours_load = rate(lambda: check_pair(load_private_key(pem_bytes), cert, where="bench"), seconds,
                     min_ops=3)
    ours = median(headline["rotator_per_s"])
    sub = Table("mint-naive", "Why the key cache: RS256 with RSA-2048, one assertion at a time",
                NAIVE_COLUMNS)
    sub.add(**{"How": "rotator: key parsed once (KeyCache), `Engine.mint`", "per second": round(ours),
               "ms each": fmt_ms(1 / ours), "rotator is … x faster": "1x"})
    sub.add(**{"How": "naive: `jwt.encode(claims, pem_bytes, 'RS256')` each call",
               "per second": round(naive, 1), "ms each": fmt_ms(1 / naive),
               "rotator is … x faster": f"{ours / naive:.0f}x"})
    sub.add(**{"How": "of which: `load_pem_private_key(pem, None)`, with cryptography's RSA key checks",
               "per second": round(parse, 1), "ms each": fmt_ms(1 / parse),
               "rotator is … x faster": "—"})
    sub.add(**{"How": "rotator's own key load: `load_private_key` (checks skipped) + `check_pair` "
                      "(probe sign + verify)",
               "per second": round(ours_load, 1), "ms each": fmt_ms(1 / ours_load),
               "rotator is … x faster": "—"})
    sub.notes.append(
        "cryptography validates an RSA private key when it loads it (primality and CRT checks): "
        "tens of milliseconds, so a signer that re-reads the PEM for every assertion spends nearly "
        "all its time there. rotator parses each key once per process (KeyCache), skips those "
        "checks and proves the key with a probe signature verified against the certificate."
    )
    table.extra.append(sub)
    table.data["naive_per_s"] = naive
    table.data["parse_per_s"] = parse
    table.data["rotator_load_per_s"] = ours_load
    return table


def main(argv: list[str] | None = None) -> int:
    from bench._common import FULL, QUICK

    args = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory(prefix="rotator-bench-") as tmp:
        ctx = Ctx(QUICK if "--quick" in args else FULL, Path(tmp))
        print(run(ctx).markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
