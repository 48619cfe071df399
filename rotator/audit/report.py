"""`rotator audit report`: what happened to each credential, read from the audit files.

The files are read oldest first, line by line, and the hash chain is checked as they are read
with the checks `rotator audit verify` uses (rotator.audit.chain). A broken chain does not stop
the report: it names FILE:LINE, the lines from there on are counted as *unverified*, and the
exit code is 1. A line counts as verified once the next line's `prev` matches it, so at a
break the line before the break is unverified too (the chain cannot say which of the two was
changed); the file's last line is verified as far as `audit verify` can (compare its `head`).

Only a keyed chain (HMAC under the installation key) is evidence: anyone can write an unkeyed
(legacy) chain from scratch. Legacy lines count as verified only when a keyed anchor that
chains onto them follows (an installation upgraded to keyed chains), or with `allow_unkeyed`;
otherwise the whole report is unverified and the exit code is 1.

Per credential: rotations succeeded / failed / skipped, the first and last rotation, key
changes (created, imported, staged, published, promoted, discarded, with fingerprints), certificate expiry
warnings, and gaps: intervals between successive successful rotations longer than the
schedule allows. See docs/audit-report.md for the gap rule and the JSON and CSV schemas.

Renderers: `text` (an aligned table), `json`, `csv` (one row per credential) and
`csv-events` (one row per event that passes the filters).
"""

from __future__ import annotations

import csv
import fnmatch
import itertools
import json
import statistics
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from rotator.audit import chain as audit_chain
from rotator.audit.chain import ANCHOR, GENESIS
from rotator.clock import parse_rfc3339
from rotator.durations import format_duration, parse_duration
from rotator.errors import InputError

SCHEMA = "rotator.audit-report/1"
FORMATS = ("text", "json", "csv", "csv-events")
KEY_EVENTS = {"key.created": "created", "key.imported": "imported", "key.staged": "staged",
              "key.published": "published", "key.promoted": "promoted",
              "key.discarded": "discarded"}
ROTATION_END = {"rotation.succeeded": "succeeded", "rotation.failed": "failed",
                "rotation.skipped": "skipped", "rotation.superseded": "skipped"}
# Without a schedule from the config: an interval longer than this many medians is a gap,
# once there are at least MIN_INTERVALS intervals to take the median of.
MEDIAN_FACTOR = 2.0
MIN_INTERVALS = 3
# With a schedule: every + 2 x jitter (each run moves by up to +-jitter) + this share of
# every (the run itself, a retry after a brief failure).
GRACE_FRACTION = 0.1
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # audit.timestamp(): fixed width, so strings sort as times


# ---------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filters:
    """Which events count. Times are kept as `ts`-format strings: comparing strings per line
    is much cheaper than parsing every line's time."""

    since: str | None = None
    until: str | None = None
    credentials: frozenset[str] = frozenset()
    events: tuple[str, ...] = ()  # exact names or globs (`key.*`)
    _event_ok: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def event_ok(self, name: str) -> bool:
        known = self._event_ok.get(name)
        if known is None:
            known = not self.events or any(fnmatch.fnmatchcase(name, p) for p in self.events)
            self._event_ok[name] = known
        return known

    def to_json(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until,
                "credential": sorted(self.credentials) or None, "event": list(self.events) or None}


def parse_when(text: str, *, now: datetime, where: str) -> str:
    """`--since`/`--until`: RFC 3339 (`2026-11-28T12:00:00Z`), a date (`2026-11-28`, midnight
    UTC) or a duration before now (`7d`, `12h`); returned in the audit lines' `ts` format."""
    raw = text.strip()
    try:
        if len(raw) == 10 and raw[4] == "-" and raw[7] == "-":
            moment = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
        elif "T" in raw or "t" in raw or " " in raw:
            moment = parse_rfc3339(raw)
        else:
            moment = now - timedelta(seconds=parse_duration(raw))
    except ValueError:
        raise InputError(f"{where} {text!r}: not a time",
                         hint="write RFC 3339 (2026-11-28T12:00:00Z), a date (2026-11-28) "
                              "or an age such as 7d or 12h") from None
    return moment.astimezone(UTC).strftime(_TS_FORMAT)


def make_filters(*, since: str | None = None, until: str | None = None,
                 credential: str | Sequence[str] | None = None,
                 event: str | Sequence[str] | None = None, now: datetime | None = None) -> Filters:
    now = now or datetime.now(UTC)
    start = parse_when(since, now=now, where="--since") if since else None
    end = parse_when(until, now=now, where="--until") if until else None
    if start and end and start > end:
        raise InputError(f"--since {since} is after --until {until}")
    return Filters(start, end, frozenset(_listed(credential)), tuple(_listed(event)))


def _listed(value: str | Sequence[str] | None) -> list[str]:
    """Repeated options and comma-separated values alike."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


# ---------------------------------------------------------------------------- reading


@dataclass(slots=True)
class Line:
    """One audit line as the report sees it (slots: one is made per line)."""

    file: str
    number: int
    data: dict[str, Any] | None  # None: not an audit line (changed, or torn)
    verified: bool

    @property
    def where(self) -> str:
        return f"{self.file}:{self.number}"


@dataclass
class ChainState:
    files: list[str]
    lines: int = 0
    verified: bool = True
    keyed: bool = False  # an HMAC chain under the key given (False: legacy, forgeable)
    problem: str | None = None
    broken_at: str | None = None  # FILE:LINE of the first line that did not chain on
    unverified_lines: int = 0
    chain: str | None = None
    head: str | None = None
    from_genesis: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"verified": self.verified, "keyed": self.keyed, "lines": self.lines, "chain": self.chain,
                "head": self.head, "from_genesis": self.from_genesis, "problem": self.problem,
                "broken_at": self.broken_at, "unverified_lines": self.unverified_lines}


def read_lines(paths: Sequence[Path], state: ChainState, *, key: bytes | None = None,
               allow_unkeyed: bool = False) -> Iterator[Line]:
    """Every line of `paths`, oldest first, checked against the chain as it streams by.

    Uses audit_chain's reader and checks (the same as `audit verify`, keyed chains included:
    a keyed chain needs the installation key, else InputError). After the first problem the
    rest is read without checking and marked unverified.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        if audit_chain._is_empty(path):  # also raises InputError: missing, not an audit log
            state.problem = (f"{path}:1: empty file: an audit log starts with an audit.anchor "
                             "line (truncated?)")
            state.broken_at = f"{path}:1"
            state.verified = False
            yield from _unchecked(paths, 0, state)
            return
    if not allow_unkeyed:
        unpinned = _legacy_problem(paths, key)
        if unpinned is not None:  # not evidence of anything: report it all as unverified
            state.problem, state.broken_at, state.verified = unpinned
            yield from _unchecked(paths, 0, state)
            return
    stream = audit_chain._Stream(paths, key)
    first: audit_chain._Line | None = None
    before: audit_chain._Line | None = None
    pending: audit_chain._Line | None = None  # verified once the next line chains onto it
    count = 0
    for line, problem, keyed in _walk(stream, key):
        count += 1
        if problem is not None:
            state.problem, state.broken_at, state.verified = problem, line.where, False
            if pending is not None:
                state.unverified_lines += 1
                yield Line(pending.file, pending.number, pending.data, False)
            yield from _unchecked(paths, count - 1, state)
            return
        if pending is not None:
            yield Line(pending.file, pending.number, pending.data, True)
        pending = line
        state.keyed = keyed
        if first is None:
            first = line
        before = line
    state.lines = count
    if pending is not None:
        yield Line(pending.file, pending.number, pending.data, True)
    if first is not None and first.data is not None and before is not None:
        state.chain = first.data["chain"]
        state.head = before.mac if state.keyed and before.mac is not None else before.sha
        state.from_genesis = first.data["prev"] == GENESIS


def _walk(stream: audit_chain._Stream, key: bytes | None
          ) -> Iterator[tuple[audit_chain._Line, str | None, bool]]:
    """Each line with its problem (None: it chains on) and whether the chain is keyed there.

    audit_chain's checks, as `audit verify` runs them: a keyed chain needs the key (else
    InputError), and an unkeyed anchor cannot follow a keyed line.
    """
    first: audit_chain._Line | None = None
    before: audit_chain._Line | None = None
    recent: OrderedDict[str, str] = OrderedDict()  # line hash -> where, oldest first
    limit = 2 * audit_chain._RECENT
    problem_of = audit_chain._problem
    keyed = False
    for line in stream:
        line_keyed = keyed
        problem: str | None = None
        if line.data is not None and line.data.get("event") == ANCHOR:
            line_keyed = line.data.get("mac") == audit_chain.MAC
            if keyed and not line_keyed:
                problem = (f"{line.where}: an unkeyed anchor inside a keyed chain (forged, or files "
                           "of two installations?)")
            elif line_keyed and key is None:
                raise InputError(f"{line.where}: a keyed audit chain: verifying it needs the "
                                 "installation's audit HMAC key",
                                 hint="pass the daemon's --config, or --key-file")
        problem = problem or problem_of(line, before, first, stream, recent, line_keyed)
        yield line, problem, line_keyed
        if problem is not None:
            return
        keyed = line_keyed
        if first is None:
            first = line
        for digest in line.hashes:
            recent[digest] = line.where
        while len(recent) > limit:
            recent.popitem(last=False)  # O(1); deleting a dict's first key is not
        before = line


def _legacy_problem(paths: Sequence[Path], key: bytes | None) -> tuple[str, str, bool] | None:
    """(problem, where, False) if the chain starts with legacy lines no keyed chain pins.

    Legacy lines are pinned once a keyed anchor chains onto them without a problem (its prev
    is the HMAC of the last legacy line). Reads only up to the first keyed line: nothing for
    a chain that starts keyed, the legacy files for one upgraded to keyed chains.
    """
    where: str | None = None
    for line, problem, keyed in _walk(audit_chain._Stream(paths, key), key):
        where = where or line.where
        if problem is not None:
            return (f"{where}: an unkeyed (legacy) chain, not continued by a keyed one "
                    f"({problem}); anyone can write one from scratch", where, False)
        if keyed:
            return None
    if where is None:
        return None
    return (f"{where}: an unkeyed (legacy) chain: anyone can write one from scratch; pass "
            "--allow-unkeyed to trust it", where, False)


def _unchecked(paths: Sequence[Path], skip: int, state: ChainState) -> Iterator[Line]:
    """The lines after the first `skip` (across all files), parsed but not checked.

    Read again from the files: finding where a moved line belongs consumes the checked stream.
    """
    parse = audit_chain._parse
    seen = 0
    for path in paths:
        name = str(path)
        try:
            with path.open("rb") as file:
                for number, raw in enumerate(file, start=1):
                    seen += 1
                    if seen <= skip:
                        continue
                    state.unverified_lines += 1
                    body = raw[:-1] if raw.endswith(b"\n") else raw
                    yield Line(name, number, parse(body), False)
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    state.lines = seen


# ---------------------------------------------------------------------------- aggregation


@dataclass
class Gap:
    start: str
    end: str
    seconds: float
    allowed: float

    def to_json(self) -> dict[str, Any]:
        return {"from": self.start, "to": self.end, "seconds": round(self.seconds, 3),
                "allowed_seconds": round(self.allowed, 3)}


@dataclass
class CredentialReport:
    name: str
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    first_rotation: str | None = None
    last_rotation: str | None = None
    last_success: str | None = None
    last_failure: str | None = None
    last_failure_class: str | None = None
    key_changes: list[dict[str, Any]] = field(default_factory=list)
    expiry_warnings: list[dict[str, Any]] = field(default_factory=list)
    unverified_events: int = 0
    gaps: list[Gap] = field(default_factory=list)
    gap_rule: dict[str, Any] = field(default_factory=dict)
    _success_times: list[tuple[float, str]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "credential": self.name,
            "rotations": {"succeeded": self.succeeded, "failed": self.failed, "skipped": self.skipped},
            "first_rotation": self.first_rotation, "last_rotation": self.last_rotation,
            "last_success": self.last_success, "last_failure": self.last_failure,
            "last_failure_class": self.last_failure_class,
            "key_changes": self.key_changes, "expiry_warnings": self.expiry_warnings,
            "gaps": [g.to_json() for g in self.gaps], "gap_rule": self.gap_rule,
            "unverified_events": self.unverified_events,
        }


def _epoch(ts: str) -> float | None:
    try:
        moment = datetime.fromisoformat(ts)  # the `Z` of audit.timestamp() included (3.11+)
    except (ValueError, TypeError):
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


class Aggregator:
    """Folds the events that pass the filters into one CredentialReport per credential."""

    def __init__(self, filters: Filters, on_event: Callable[[Line], None] | None = None) -> None:
        self.filters = filters
        self.reports: dict[str, CredentialReport] = {}
        self.events = 0  # events that passed the filters
        self.on_event = on_event

    def add(self, line: Line) -> None:
        data = line.data
        if data is None:
            return
        name = data.get("event")
        if not isinstance(name, str) or name == ANCHOR:
            return
        f = self.filters
        ts = data.get("ts")
        if not isinstance(ts, str):
            ts = ""
        if (f.since is not None and ts < f.since) or (f.until is not None and ts > f.until):
            return
        cred = data.get("credential")
        if f.credentials and cred not in f.credentials:
            return
        if not f.event_ok(name):
            return
        self.events += 1
        if self.on_event is not None:
            self.on_event(line)
        if not isinstance(cred, str):
            return  # store, config and daemon events: in csv-events, not per credential
        report = self.reports.get(cred)
        if report is None:
            report = self.reports[cred] = CredentialReport(cred)
        if not line.verified:
            report.unverified_events += 1
        end = ROTATION_END.get(name)
        if end is not None:
            self._rotation(report, end, ts, data)
        elif name in KEY_EVENTS:
            report.key_changes.append(_key_change(name, ts, data, line))
        elif name == "certificate.expiry_warning":
            report.expiry_warnings.append({
                "ts": ts, "key_sha256": data.get("key_sha256"), "days_left": data.get("days_left"),
                "threshold": data.get("threshold"), "not_after": data.get("not_after"),
                "verified": line.verified, "where": line.where})

    @staticmethod
    def _rotation(report: CredentialReport, end: str, ts: str, data: Mapping[str, Any]) -> None:
        if end == "skipped":
            report.skipped += 1
            return
        if report.first_rotation is None:
            report.first_rotation = ts
        report.last_rotation = ts
        if end == "succeeded":
            report.succeeded += 1
            report.last_success = ts
            moment = _epoch(ts)
            if moment is not None:
                report._success_times.append((moment, ts))
        else:
            report.failed += 1
            report.last_failure = ts
            error_class = data.get("error_class")
            report.last_failure_class = error_class if isinstance(error_class, str) else None

    def finish(self, schedules: Mapping[str, tuple[float, float]] | None) -> list[CredentialReport]:
        for report in self.reports.values():
            schedule = (schedules or {}).get(report.name)
            report.gaps, report.gap_rule = find_gaps(report._success_times, schedule)
        return [self.reports[name] for name in sorted(self.reports)]


def _key_change(name: str, ts: str, data: Mapping[str, Any], line: Line) -> dict[str, Any]:
    change: dict[str, Any] = {"ts": ts, "change": KEY_EVENTS[name], "key_sha256": data.get("key_sha256")}
    if name == "key.staged":
        change["current_sha256"] = data.get("current_sha256")
    elif name == "key.promoted":
        change["previous_sha256"] = data.get("previous_sha256")
    elif name == "key.published":
        change["target"], change["ok"] = data.get("target"), data.get("ok")
    for extra in ("not_after", "serial", "via", "reason"):
        if data.get(extra) is not None:
            change[extra] = data[extra]
    change["verified"], change["where"] = line.verified, line.where
    return change


def find_gaps(
    successes: Sequence[tuple[float, str]], schedule: tuple[float, float] | None
) -> tuple[list[Gap], dict[str, Any]]:
    """Intervals between successive successful rotations longer than allowed.

    With a schedule (every, jitter): allowed = every + 2 x jitter + 10% of every. Without:
    allowed = 2 x the median interval, once there are at least 3 intervals; fewer: no gaps.
    """
    times = sorted(successes)
    intervals = [(b[0] - a[0], a[1], b[1]) for a, b in itertools.pairwise(times)]
    if schedule is not None:
        every, jitter = schedule
        allowed = every + 2 * jitter + GRACE_FRACTION * every
        rule: dict[str, Any] = {"source": "config", "every_seconds": every,
                                "jitter_seconds": jitter, "allowed_seconds": round(allowed, 3)}
    elif len(intervals) >= MIN_INTERVALS:
        median = statistics.median(i[0] for i in intervals)
        allowed = MEDIAN_FACTOR * median
        rule = {"source": "median", "median_seconds": round(median, 3),
                "allowed_seconds": round(allowed, 3)}
    else:
        return [], {"source": "none", "reason": f"fewer than {MIN_INTERVALS} intervals and no schedule"}
    gaps = [Gap(start, end, seconds, allowed) for seconds, start, end in intervals if seconds > allowed]
    return gaps, rule


# ---------------------------------------------------------------------------- the report


@dataclass
class Report:
    chain: ChainState
    filters: Filters
    credentials: list[CredentialReport]
    events: int
    generated_at: str

    @property
    def exit_code(self) -> int:
        return 0 if self.chain.verified else 1

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "generated_at": self.generated_at, "files": self.chain.files,
                "filters": self.filters.to_json(), "chain": self.chain.to_json(),
                "events": self.events, "credentials": [c.to_json() for c in self.credentials]}


def files_of(audit_log: Path, keep: int = audit_chain.KEEP) -> list[Path]:
    """`audit_log` and its rotated copies that exist, oldest first (.5 .. .1, then the file)."""
    older = [audit_log.with_name(f"{audit_log.name}.{i}") for i in range(keep, 0, -1)]
    return [p for p in older if p.exists()] + [audit_log]


def build_report(paths: Sequence[Path], filters: Filters, *,
                 schedules: Mapping[str, tuple[float, float]] | None = None,
                 on_event: Callable[[Line], None] | None = None,
                 now: datetime | None = None, key: bytes | None = None,
                 allow_unkeyed: bool = False) -> Report:
    if not paths:
        raise InputError("audit report: name at least one audit file (oldest first)",
                         hint="or pass the --config whose daemon.audit_log to read")
    state = ChainState([str(p) for p in paths])
    aggregator = Aggregator(filters, on_event)
    add = aggregator.add
    for line in read_lines(paths, state, key=key, allow_unkeyed=allow_unkeyed):
        add(line)
    credentials = aggregator.finish(schedules)
    generated = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Report(state, filters, credentials, aggregator.events, generated)


def run_report(
    paths: Sequence[Path], *, since: str | None = None, until: str | None = None,
    credential: str | Sequence[str] | None = None, event: str | Sequence[str] | None = None,
    fmt: str = "text", out: TextIO | None = None,
    schedules: Mapping[str, tuple[float, float]] | None = None, now: datetime | None = None,
    key: bytes | None = None, allow_unkeyed: bool = False,
) -> int:
    """`rotator audit report FILE...`: print the report; 0, or 1 if the chain is broken
    (the report is printed either way). Bad input raises InputError (exit 2)."""
    out = out or sys.stdout
    if fmt not in FORMATS:
        raise InputError(f"audit report: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    filters = make_filters(since=since, until=until, credential=credential, event=event, now=now)
    if fmt == "csv-events":
        writer = SafeCsvWriter(out)
        writer.writerow(EVENT_COLUMNS)
        report = build_report(paths, filters, schedules=schedules, now=now, key=key,
                              allow_unkeyed=allow_unkeyed,
                              on_event=lambda line: writer.writerow(event_row(line)))
        if not report.chain.verified:
            print(f"# chain broken: {report.chain.problem}", file=out)
        return report.exit_code
    report = build_report(paths, filters, schedules=schedules, now=now, key=key,
                          allow_unkeyed=allow_unkeyed)
    if fmt == "json":
        out.write(json.dumps(report.to_json(), indent=2) + "\n")
    elif fmt == "csv":
        render_csv(report, out)
    else:
        out.write(render_text(report))
    return report.exit_code


# ---------------------------------------------------------------------------- renderers

CSV_COLUMNS = ("credential", "succeeded", "failed", "skipped", "first_rotation", "last_rotation",
               "last_success", "last_failure", "key_changes", "last_key_sha256", "expiry_warnings",
               "gaps", "longest_gap_seconds", "allowed_gap_seconds", "gap_rule", "unverified_events",
               "chain_verified")
EVENT_COLUMNS = ("ts", "event", "credential", "outcome", "key_sha256", "rotation_id", "detail",
                 "where", "verified")


# Evidence packs are opened in spreadsheets. A credential name or a reason taken from a
# changed audit line could start with "=", "+", "-", "@" (or a tab / CR) and run as a formula
# there (CSV injection); such text cells get a leading apostrophe, as OWASP advises. Numbers
# are written as numbers.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


class SafeCsvWriter:
    def __init__(self, out: TextIO) -> None:
        self._writer = csv.writer(out, lineterminator="\n")

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([csv_cell(cell) for cell in row])


def render_csv(report: Report, out: TextIO) -> None:
    writer = SafeCsvWriter(out)
    writer.writerow(CSV_COLUMNS)
    for c in report.credentials:
        last_key = next((k["key_sha256"] for k in reversed(c.key_changes)  # the key made current
                         if k["change"] in ("created", "imported", "promoted")), "")
        writer.writerow([
            c.name, c.succeeded, c.failed, c.skipped, c.first_rotation or "", c.last_rotation or "",
            c.last_success or "", c.last_failure or "", len(c.key_changes), last_key or "",
            len(c.expiry_warnings), len(c.gaps),
            round(max((g.seconds for g in c.gaps), default=0.0), 3) if c.gaps else "",
            c.gap_rule.get("allowed_seconds", ""), c.gap_rule.get("source", ""),
            c.unverified_events, "true" if report.chain.verified else "false",
        ])


def event_row(line: Line) -> list[Any]:
    data = line.data or {}
    detail = next((str(data[k]) for k in ("reason", "error_class", "target", "store", "warning")
                   if data.get(k) is not None), "")
    return [data.get("ts", ""), data.get("event", ""), data.get("credential") or "",
            data.get("outcome") or "", data.get("key_sha256") or "", data.get("rotation_id") or "",
            detail, line.where, "true" if line.verified else "false"]


# Terminal safety: a changed audit line could carry escape sequences (clear screen, rewrite
# the line above). Every control character but the newline becomes "?" in the text output.
_CONTROLS = {c: "?" for c in (*range(0x00, 0x20), *range(0x7F, 0xA0)) if c != 0x0A}
NAME_WIDTH = 64  # credential names from the file are cut here in the table


def _name(name: str) -> str:
    return name if len(name) <= NAME_WIDTH else name[:NAME_WIDTH - 1] + "…"


def _short(ts: str | None) -> str:
    return ts[:19].replace("T", " ") if ts else "—"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                      for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in rows]


def render_text(report: Report) -> str:
    """An aligned table, then key changes, expiry warnings and gaps per credential (times UTC)."""
    lines: list[str] = []
    rows = [["CREDENTIAL", "OK", "FAILED", "SKIPPED", "FIRST ROTATION", "LAST ROTATION",
             "KEY CHANGES", "WARNINGS", "GAPS"]]
    for c in report.credentials:
        rows.append([_name(c.name) + (" *" if c.unverified_events else ""), str(c.succeeded), str(c.failed),
                     str(c.skipped), _short(c.first_rotation), _short(c.last_rotation),
                     str(len(c.key_changes)), str(len(c.expiry_warnings)), str(len(c.gaps))])
    if report.credentials:
        lines += _table(rows, {1, 2, 3, 6, 7, 8})
    else:
        lines.append("no credential events match")
    for c in report.credentials:
        details: list[str] = []
        for k in c.key_changes:
            extra = ""
            if k["change"] == "promoted" and k.get("previous_sha256"):
                extra = f" (replaces {k['previous_sha256'][:16]})"
            elif k["change"] == "published":
                extra = f" to {k.get('target')}" + ("" if k.get("ok") else " FAILED")
            details.append(f"  {_short(k['ts'])}  key {k['change']:<9} {str(k['key_sha256'])[:16]}"
                           f"{extra}{'' if k['verified'] else '  (unverified)'}")
        for w in c.expiry_warnings:
            details.append(f"  {_short(w['ts'])}  certificate {str(w['key_sha256'])[:16]}: "
                           f"{w['days_left']} days left (threshold {w['threshold']})"
                           f"{'' if w['verified'] else '  (unverified)'}")
        for g in c.gaps:
            details.append(f"  {_short(g.start)}  gap of {format_duration(g.seconds)} until "
                           f"{_short(g.end)} (allowed {format_duration(g.allowed)})")
        if c.failed:
            details.append(f"  last failure {_short(c.last_failure)} ({c.last_failure_class or '?'})")
        if details:
            lines += ["", f"{_name(c.name)}:", *details]
    chain = report.chain
    lines.append("")
    if chain.verified:
        text = f"chain: ok, {chain.lines} lines, chain {chain.chain}, head {chain.head}, "
        text += "keyed" if chain.keyed else "UNKEYED (legacy: anyone can forge it; --allow-unkeyed)"
        if not chain.from_genesis:
            text += " (the first file continues an older one not given)"
        lines.append(text)
    else:
        lines.append(f"chain: BROKEN: {chain.problem}")
        lines.append(f"  {chain.unverified_lines} lines from {chain.broken_at} on are unverified "
                     "(credentials marked *)")
    lines.append(f"{report.events} events matched; times are UTC")
    return ("\n".join(lines) + "\n").translate(_CONTROLS)
