"""What every benchmark module shares: sizes, result tables, timing, keys, servers, configs.

The emulated servers (Salesforce endpoint, Vault emulator, moto) run in their own processes
(`bench._servers`), the way the real services are remote: the process being measured does
only rotator's work, and the servers do not compete with it for the GIL. On a 2-core machine
that is one core for rotator and one for the server.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
USERNAME = "integration@bench.example.com"
AUDIENCE = "https://login.salesforce.com"


# ---------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Profile:
    """How much of each measurement to run. `full` is `make bench`; `quick` is under a minute."""

    name: str
    mint_round_seconds: float  # one timing round of one variant
    mint_rounds: int  # rounds per variant, interleaved; the median round is reported
    mint_bits: tuple[int, ...]  # RSA sizes beyond 2048 (2048 always runs)
    naive_seconds: float  # PyJWT given PEM bytes: ~50 ms a call, so few calls
    openssl_seconds: int  # 0: skip `openssl speed`
    rotation_n: int  # timed rotations per store
    fleet_sizes: tuple[int, ...]  # in-process `rotate --all`, one pass in a fresh Engine
    fleet_workers: tuple[int, ...]  # thread-pool sizes tried at fleet_workers_n credentials
    fleet_workers_n: int
    fleet_cli: int  # credentials for the real `rotator rotate --all` subprocess
    fleet_vault: int  # credentials on the Vault emulator (0: skip)
    profile_n: int  # credentials in the cProfile of one sequential pass (0: skip)
    latency_n: int  # credentials rotated against an endpoint that answers `latency_ms` late
    latency_ms: int
    latency_workers: tuple[int, ...]
    startup_runs: int  # hyperfine runs per start-up command
    alt_n: int  # tokens per fast alternative (fewer for the slow ones)
    stores: tuple[str, ...] = ("file", "vault", "aws")  # store kinds to try


FULL = Profile(
    name="full", mint_round_seconds=0.15, mint_rounds=9, mint_bits=(3072, 4096),
    naive_seconds=1.5, openssl_seconds=1, rotation_n=300,
    fleet_sizes=(10, 100, 1000, 10000), fleet_workers=(1, 2, 4, 8), fleet_workers_n=1000,
    fleet_cli=1000, fleet_vault=1000, profile_n=300, startup_runs=5, alt_n=300,
    latency_n=100, latency_ms=50, latency_workers=(1, 4, 16),
)
QUICK = Profile(
    name="quick", mint_round_seconds=0.1, mint_rounds=7, mint_bits=(),
    naive_seconds=0.5, openssl_seconds=1, rotation_n=100,
    fleet_sizes=(10, 100), fleet_workers=(1, 4), fleet_workers_n=100,
    fleet_cli=100, fleet_vault=100, profile_n=100, startup_runs=2, alt_n=60,
    latency_n=40, latency_ms=50, latency_workers=(4, 16),
)
SMOKE = Profile(
    name="smoke", mint_round_seconds=0.02, mint_rounds=1, mint_bits=(),
    naive_seconds=0.05, openssl_seconds=0, rotation_n=5,
    fleet_sizes=(3,), fleet_workers=(2,), fleet_workers_n=3,
    fleet_cli=3, fleet_vault=3, profile_n=3, startup_runs=1, alt_n=6,
    latency_n=4, latency_ms=10, latency_workers=(1, 2), stores=("file", "vault"),
)
PROFILES = {p.name: p for p in (FULL, QUICK, SMOKE)}


# ---------------------------------------------------------------------------- results


@dataclass
class Table:
    """One section of docs/benchmarks.md: rows under fixed columns, plus notes and verdicts."""

    key: str  # the marker: <!-- bench:KEY --> ... <!-- /bench:KEY -->
    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: list[Table] = field(default_factory=list)  # sub-tables rendered after this one
    data: dict[str, Any] = field(default_factory=dict)  # raw numbers, for the JSON output

    def add(self, **row: Any) -> None:
        self.rows.append(row)

    def problems(self) -> list[str]:
        """Why this table is not well formed (empty list: it is)."""
        found = []
        if not self.columns:
            found.append(f"{self.key}: no columns")
        for index, row in enumerate(self.rows):
            missing = [c for c in self.columns if c not in row]
            unknown = [c for c in row if c not in self.columns]
            if missing or unknown:
                found.append(f"{self.key} row {index}: missing {missing}, unknown {unknown}")
            for column, value in row.items():
                if not isinstance(value, str | int | float) or isinstance(value, bool):
                    found.append(f"{self.key} row {index} {column}: {type(value).__name__}")
                elif isinstance(value, float) and not math.isfinite(value):
                    found.append(f"{self.key} row {index} {column}: {value}")
        for sub in self.extra:
            found.extend(sub.problems())
        return found

    def markdown(self, *, level: int = 0) -> str:
        lines = []
        if level:
            lines += [f"**{self.title}**", ""]
        if self.rows:
            lines.append("| " + " | ".join(self.columns) + " |")
            lines.append("|" + "|".join(_align(c, self.rows) for c in self.columns) + "|")
            for row in self.rows:
                lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in self.columns) + " |")
        else:
            lines.append("_no rows_")
        if self.notes:
            lines.append("")
            lines.extend(f"- {note}" for note in self.notes)
        text = "\n".join(lines)
        for sub in self.extra:
            text += "\n\n" + sub.markdown(level=level + 1)
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key, "title": self.title, "columns": self.columns, "rows": self.rows,
            "notes": self.notes, "data": self.data, "extra": [t.to_json() for t in self.extra],
        }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return fmt_num(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _align(column: str, rows: list[dict[str, Any]]) -> str:
    numeric = all(isinstance(r.get(column), int | float) for r in rows if r.get(column) != "")
    return "---:" if numeric and rows else "---"


def fmt_num(value: float, digits: int = 3) -> str:
    """Three significant digits, thousands separated: 2,287 / 45.6 / 0.183."""
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def fmt_ms(seconds: float) -> str:
    return fmt_num(seconds * 1000)


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "—"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# ---------------------------------------------------------------------------- context


@dataclass
class Ctx:
    profile: Profile
    workdir: Path
    quiet: bool = False
    _keys: KeyPool | None = None

    def __post_init__(self) -> None:
        with quiet_audit():  # store clients log (e.g. Vault logins) while keys are seeded
            pass

    def log(self, message: str) -> None:
        if not self.quiet:
            print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    @property
    def keys(self) -> KeyPool:
        if self._keys is None:
            self._keys = KeyPool(self.workdir / "keys")
        return self._keys

    def subdir(self, name: str) -> Path:
        path = self.workdir / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path


# ---------------------------------------------------------------------------- timing


def rate(
    fn: Callable[[], Any], seconds: float, *, min_ops: int = 1,
    clock: Callable[[], float] = time.thread_time,
) -> float:
    """Operations per second of `fn` over at least `seconds` (and at least `min_ops` calls).

    The default clock is this thread's CPU time, the divisor `openssl speed` uses too (user
    time): a CPU-bound loop then measures the code, not the other processes on the machine.
    """
    ops = 0
    batch = 1
    start = clock()
    while True:
        for _ in range(batch):
            fn()
        ops += batch
        elapsed = clock() - start
        if elapsed >= seconds and ops >= min_ops:
            return ops / elapsed
        batch = min(batch * 2, 256)


def interleaved_rates(
    variants: dict[str, Callable[[], Any]], *, rounds: int, seconds: float,
    clock: Callable[[], float] = time.thread_time,
) -> dict[str, list[float]]:
    """Rates of each variant, rounds interleaved so that drift hits all variants alike."""
    found: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in variants.items():
            found[name].append(rate(fn, seconds, clock=clock))
    return found


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_devnull: Any = None


@contextlib.contextmanager
def quiet_audit() -> Iterator[None]:
    """Audit events rendered as JSON into /dev/null: the work is done, nothing is shown.

    It stays configured afterwards — benchmarks run in their own process (the smoke test
    starts one too), so there is no other user of the logging set-up to restore it for.
    """
    global _devnull
    from rotator.audit import pipeline as audit

    if _devnull is None:
        _devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        audit.configure(fmt="json", stream=_devnull)
    yield


@contextlib.contextmanager
def environ(**values: str | None) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_PROFILE": None, "AWS_SESSION_TOKEN": None,
}


def child_env(**extra: str | None) -> dict[str, str]:
    """Environment for rotator child processes: no inherited VAULT_/AWS_/ROTATOR_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "AWS_", "ROTATOR_"))}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def rotator_cmd() -> list[str]:
    """The `rotator` console script next to this interpreter, else `python -m rotator`."""
    script = Path(sys.executable).parent / "rotator"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "rotator"]


def _pretend_absent() -> set[str]:
    """BENCH_WITHOUT=hyperfine,time,openssl,curl: behave as if those tools were not installed
    (how the smoke test checks that every benchmark degrades to a note)."""
    return {t.strip() for t in os.environ.get("BENCH_WITHOUT", "").split(",") if t.strip()}


def tool(name: str) -> str | None:
    if name in _pretend_absent():
        return None
    return shutil.which(name)


TIME_V = "/usr/bin/time"


def has_time_v() -> bool:
    if "time" in _pretend_absent():
        return False
    return Path(TIME_V).exists() and os.access(TIME_V, os.X_OK)


def run_measured(
    cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
    stdout: Path | None = None, stderr: Path | None = None, timeout: float = 1800,
) -> dict[str, Any]:
    """Run `cmd`; wall seconds, exit code and max RSS (KiB) with user/sys CPU.

    Max RSS comes from `/usr/bin/time -v` where installed, else from wait4()'s rusage of the
    child (the same kernel number).
    """
    out = open(stdout, "wb") if stdout else subprocess.DEVNULL  # noqa: SIM115
    err = open(stderr, "wb") if stderr else subprocess.DEVNULL  # noqa: SIM115
    report = None
    try:
        full = cmd
        if has_time_v():
            report = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-time-{os.getpid()}-{time.time_ns()}"
            full = [TIME_V, "-v", "-o", str(report), *cmd]
        start = time.perf_counter()
        child = subprocess.Popen(full, env=env, cwd=cwd, stdout=out, stderr=err)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                child.kill()
                raise TimeoutError(f"{' '.join(cmd[:3])}… took longer than {timeout:.0f}s")
            time.sleep(0.002)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        result: dict[str, Any] = {
            "wall": wall, "code": child.returncode, "max_rss_kib": usage.ru_maxrss,
            "user": usage.ru_utime, "sys": usage.ru_stime, "rss_source": "wait4",
        }
        if report is not None and report.exists():
            text = report.read_text(errors="replace")
            rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
            code = re.search(r"Exit status: (\d+)", text)
            if rss:
                result["max_rss_kib"] = int(rss.group(1))
                result["rss_source"] = "/usr/bin/time -v"
            if code:
                result["code"] = int(code.group(1))
            cpu = re.search(r"Percent of CPU this job got: (\d+)%", text)
            if cpu:
                result["cpu_percent"] = int(cpu.group(1))
        return result
    finally:
        for handle in (out, err):
            if handle is not subprocess.DEVNULL:
                handle.close()
        if report is not None:
            with contextlib.suppress(FileNotFoundError):
                report.unlink()


# ---------------------------------------------------------------------------- keys


class KeyPool:
    """Keys made once per run and shared: key generation is the slow part (RSA-4096: seconds)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._rsa: dict[tuple[int, int], tuple[Any, str, str]] = {}
        self._ec: tuple[Any, str, str] | None = None

    def rsa(self, bits: int = 2048, index: int = 0) -> tuple[Any, str, str]:
        """(key object, PKCS#8 PEM, certificate PEM)."""
        from rotator.keys.crypto import cert_to_pem, generate_rsa_key, key_to_pem, self_signed_certificate

        if (bits, index) not in self._rsa:
            key = generate_rsa_key(bits)
            cert = self_signed_certificate(key, common_name=f"bench-{bits}-{index}", days=365)
            self._rsa[(bits, index)] = (key, key_to_pem(key), cert_to_pem(cert))
        return self._rsa[(bits, index)]

    def ec(self) -> tuple[Any, str, str]:
        from rotator.keys.crypto import cert_to_pem, generate_ec_key, key_to_pem, self_signed_certificate

        if self._ec is None:
            key = generate_ec_key()
            cert = self_signed_certificate(key, common_name="bench-ec", days=365)
            self._ec = (key, key_to_pem(key), cert_to_pem(cert))
        return self._ec

    def key_file(self, bits: int = 2048, index: int = 0) -> Path:
        """The PEM on disk (0600), for openssl and for `keys import`."""
        path = self.directory / f"rsa{bits}-{index}.key"
        if not path.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(self.rsa(bits, index)[1])
        return path


def client_id(index: int) -> str:
    """The connected app of key `index`: one app per key, as Salesforce holds one certificate each."""
    return f"3MVG9bench.app{index}"


# ---------------------------------------------------------------------------- servers


class ServerProcess:
    """`python -m bench._servers KIND SPEC`: a server in its own process, until stop()."""

    def __init__(self, kind: str, spec: dict[str, Any], workdir: Path) -> None:
        self.kind = kind
        workdir.mkdir(parents=True, exist_ok=True)
        spec_file = workdir / f"{kind}-spec.json"
        spec_file.write_text(json.dumps(spec))
        self.log_file = workdir / f"{kind}-server.log.txt"
        self._log = open(self.log_file, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench._servers", kind, str(spec_file)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            env=child_env(), cwd=REPO,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        spec_file.unlink()
        if not line:
            self.stop()
            raise RuntimeError(
                f"{kind} server did not start: {self.log_file.read_text(errors='replace')[-400:]}"
            )
        self.info: dict[str, Any] = json.loads(line)

    @property
    def url(self) -> str:
        return self.info["url"]

    def cpu_seconds(self) -> float | None:
        return proc_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def salesforce_server(
    ctx: Ctx, apps: list[dict[str, Any]], *, name: str = "salesforce", delay: float = 0.0,
) -> ServerProcess:
    """The emulated token endpoint; `apps` are {client_id, cert_pem, users}; `delay` seconds
    added to every token request (the round trip to a remote endpoint)."""
    spec = {"apps": apps, "login_rate_limit": 10**9, "delay": delay}
    return ServerProcess("salesforce", spec, ctx.workdir / "servers" / name)


# ---------------------------------------------------------------------------- stores


@dataclass
class StoreSetup:
    """A store kind ready to benchmark: its TOML block, env and server (None: file)."""

    kind: str
    name: str  # the store's name in the config
    block: str
    env: dict[str, str | None]
    server: ServerProcess | None = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


class NotMeasured(Exception):
    """A measurement that cannot run here; the message says why."""


def store_module_problem(kind: str) -> str | None:
    """Why the store backend `kind` cannot be measured now, or None."""
    needs = {"vault": ("rotator.stores.vault", "hvac"),
             "aws": ("rotator.stores.aws", "boto3", "moto.server")}.get(kind, ())
    for module in needs:
        try:
            importlib.import_module(module)
        except Exception as exc:
            if module.startswith("rotator.") and isinstance(exc, ModuleNotFoundError) and exc.name == module:
                return f"{module} does not exist yet"
            return f"cannot import {module} ({type(exc).__name__}: {exc})"
    return None


def start_store(ctx: Ctx, kind: str, directory: Path) -> StoreSetup:
    """A store of `kind` (file, vault, aws) for configs under `directory`; raises NotMeasured."""
    if kind not in ctx.profile.stores:
        raise NotMeasured(f"not in the {ctx.profile.name} profile")
    problem = store_module_problem(kind)
    if problem:
        raise NotMeasured(problem)
    if kind == "file":
        return StoreSetup("file", "local", '[stores.local]\ntype = "file"\npath = "store"', {})
    if kind == "vault":
        server = ServerProcess("vault", {}, ctx.workdir / "servers" / f"vault-{directory.name}")
        token_file = directory / "vault-token"
        directory.mkdir(parents=True, exist_ok=True)
        token_file.write_text(server.info["token"] + "\n")
        token_file.chmod(0o600)
        block = (
            f'[stores.vault]\ntype = "vault"\nurl = "{server.url}"\n'
            f'auth = {{ method = "token", token_file = "{token_file}" }}'
        )
        return StoreSetup("vault", "vault", block, {}, server)
    if kind == "aws":
        server = ServerProcess("moto", {}, ctx.workdir / "servers" / f"moto-{directory.name}")
        block = f'[stores.aws]\ntype = "aws"\nregion = "us-east-1"\nendpoint_url = "{server.url}"'
        return StoreSetup("aws", "aws", block, dict(AWS_ENV), server)
    raise ValueError(kind)


# ---------------------------------------------------------------------------- configs


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def cred_name(index: int) -> str:
    return f"c{index:05d}"


@dataclass
class Fleet:
    """N credentials over a few shared keys: each credential has its own key record."""

    config: Path
    names: list[str]
    store: StoreSetup


def user(index: int) -> str:
    return f"bot{index}@bench.example.com"


def fleet_apps(ctx: Ctx, n: int, keys: int = 4) -> list[dict[str, Any]]:
    """The connected apps the endpoint needs for credentials 0..n-1: app k holds key k's
    certificate and pre-authorizes the users of the credentials that sign with key k."""
    keys = max(1, min(keys, n))
    return [{"client_id": client_id(k), "cert_pem": ctx.keys.rsa(2048, k)[2],
             "users": [user(i) for i in range(k, n, keys)]} for k in range(keys)]


def write_fleet(
    ctx: Ctx, directory: Path, store: StoreSetup, n: int, *, login_url: str, keys: int = 4,
    daemon: dict[str, Any] | None = None, seed_tokens: bool = False,
) -> Fleet:
    """A config with `n` Salesforce credentials on `store`, every key record seeded.

    Credential i signs with shared key i % keys (its own key record, the same material):
    generating 10,000 RSA keys would take longer than the benchmark. `seed_tokens` also
    writes an hour-old token record for each, so that a forced first pass does what a
    steady-state pass does (read the old token, keep it as the previous version).
    """
    directory.mkdir(parents=True, exist_ok=True)
    keys = max(1, min(keys, n))
    lines = ["[daemon]", 'listen = ""']
    lines.extend(f"{k} = {toml_value(v)}" for k, v in (daemon or {}).items())
    lines.append(store.block)
    names = []
    for i in range(n):
        name = cred_name(i)
        names.append(name)
        body = {
            "provider": "salesforce", "client_id": client_id(i % keys), "username": user(i),
            "login_url": login_url,
            "key": f"{store.name}:fleet/{name}/key", "token": f"{store.name}:fleet/{name}/token",
            "every": "30m", "jitter": "0s",
        }
        lines.append(f"[credentials.{name}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in body.items())
    config = directory / "rotator.toml"
    config.write_text("\n".join(lines) + "\n")
    seed_key_records(ctx, directory, config, store, names, keys, seed_tokens=seed_tokens)
    return Fleet(config, names, store)


def key_record(ctx: Ctx, index: int, bits: int = 2048) -> dict[str, str]:
    _, key_pem, cert_pem = ctx.keys.rsa(bits, index)
    return {"private_key": key_pem, "certificate": cert_pem}


def token_record(ctx: Ctx, index: int, name: str) -> dict[str, Any]:
    """An hour-old token record of the documented shape (the token is a placeholder)."""
    from rotator.keys.crypto import fingerprint, load_certificate

    issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    return {
        "access_token": f"00Dbench!placeholder.{name}", "instance_url": "https://bench.invalid",
        "token_type": "Bearer", "scope": "api", "id": None, "issued_at": issued,
        "expires_at": None, "credential": name,
        "key_sha256": fingerprint(load_certificate(ctx.keys.rsa(2048, index)[2])),
        "rotation_id": None,
    }


def seed_key_records(
    ctx: Ctx, directory: Path, config_path: Path, store: StoreSetup, names: list[str], keys: int,
    *, seed_tokens: bool = False,
) -> None:
    """Key (and token) records for every credential: the file store's documented layout
    (<root>/<path>.json, 0600) written directly, other stores through SecretStore.write."""
    records = []
    for i, name in enumerate(names):
        records.append((f"fleet/{name}/key", key_record(ctx, i % keys)))
        if seed_tokens:
            records.append((f"fleet/{name}/token", token_record(ctx, i % keys, name)))
    if store.kind == "file":
        root = directory / "store"
        for path, data in records:
            target = root / f"{path}.json"
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            payload = json.dumps(data, indent=2, sort_keys=True) + "\n"
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(payload)
        return
    from rotator.config import load_config
    from rotator.stores import build_store

    with environ(**store.env):
        config = load_config(config_path)
        backend = build_store(store.name, config.stores[store.name])
        try:
            for path, data in records:
                backend.write(path, data, expected_version=None)
        finally:
            backend.close()


# ---------------------------------------------------------------------------- machine facts


def machine_facts() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    mem = ""
    with contextlib.suppress(OSError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    openssl = "not installed"
    if tool("openssl"):
        openssl = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    facts = {
        "CPU": f"{cpu}, {os.cpu_count()} logical CPUs ({usable} usable)",
        "Memory": mem or "unknown",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "OpenSSL (CLI)": openssl,
    }
    with contextlib.suppress(Exception):
        import cryptography
        from cryptography.hazmat.backends.openssl.backend import backend

        facts["OpenSSL (cryptography)"] = (
            f"{backend.openssl_version_text()} (cryptography {cryptography.__version__})"
        )
    facts["Packages"] = ", ".join(f"{n} {v}" for n, v in package_versions().items())
    facts["File system of the stores"] = file_system(Path(os.environ.get("TMPDIR", "/tmp")))
    facts["Tools"] = ", ".join(
        f"{name} {'yes' if present else 'absent'}"
        for name, present in (("hyperfine", tool("hyperfine")), ("/usr/bin/time", has_time_v()),
                              ("openssl", tool("openssl")), ("curl", tool("curl")))
    )
    return facts


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("rotator", "PyJWT", "requests", "pydantic", "structlog", "hvac", "boto3",
                 "moto", "simple-salesforce"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


def file_system(path: Path) -> str:
    with contextlib.suppress(OSError, IndexError, ValueError):
        out = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True).stdout
        fields = out.splitlines()[1].split()
        return f"{fields[1]} ({path})"
    return f"unknown ({path})"


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
