"""deploy/grafana/rotator-dashboard.json imports and shows metrics that exist (issue #19).

The JSON is checked as a Grafana dashboard model (what import needs: the DS_PROMETHEUS
input, unique panel ids, panels on the 24-column grid without overlap), every PromQL
expression parses (promql-parser, as tests/test_deploy.py parses the PrometheusRule), and
every metric the dashboard or the PrometheusRule reads is on a running daemon's /metrics.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.conftest import CLIENT_ID
from tests.test_daemon import (  # noqa: F401  (start_daemon and key_files are fixtures)
    free_port,
    import_keys,
    key_files,
    make_config,
    metric,
    start_daemon,
    wait_for,
)
from tests.test_deploy import _alerts, _selectors

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "rotator-dashboard.json"
# Grafana's variables, replaced by what Grafana would send, so that the PromQL parses.
VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s",
             "$credential": ".*", "$org_login_limit": "3600"}
# Set only where the token endpoint gives a lifetime (expires_in); Salesforce does not.
NEEDS_A_LIFETIME = {"rotator_token_expiration_timestamp_seconds"}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return found


def expressions(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(board) for t in p.get("targets", [])]


def substituted(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):  # $__range before $__r...
        expr = expr.replace(name, VARIABLES[name])
    assert "$" not in expr, f"unknown variable in {expr!r}"
    return expr


def dashboard_metrics() -> set[str]:
    return {metric for expr in expressions(dashboard()) for metric, _ in _selectors(substituted(expr))}


def test_is_an_importable_dashboard() -> None:
    board = dashboard()
    assert {"title", "uid", "panels", "templating", "schemaVersion", "time", "__inputs"} <= set(board)
    assert 36 <= board["schemaVersion"] <= 41 and board["id"] is None
    assert re.fullmatch(r"[a-z0-9-]{1,40}", board["uid"])
    (source,) = board["__inputs"]
    assert source["name"] == "DS_PROMETHEUS" and source["type"] == "datasource"
    assert source["pluginId"] == "prometheus"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    credential = variables["credential"]
    assert credential["type"] == "query" and credential["includeAll"] and credential["multi"]
    assert credential["datasource"]["uid"] == "${DS_PROMETHEUS}"
    assert "rotator_" in credential["definition"]


def test_panels_have_unique_ids_and_sit_on_the_grid_without_overlap() -> None:
    all_panels = panels(dashboard())
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels:
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"} and all(isinstance(v, int) for v in grid.values())
        assert grid["w"] >= 1 and grid["h"] >= 1 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in panel["targets"])


def test_every_expression_parses() -> None:
    exprs = expressions(dashboard())
    assert len(exprs) >= 12
    for expr in exprs:
        _selectors(substituted(expr))  # raises ValueError on bad PromQL


def test_covers_what_operators_asked_for() -> None:
    """Rotations by result, failures, token age against every, certificate days left and
    next expiry, store and auth errors, and requests against the hourly cap."""
    used = dashboard_metrics()
    assert {"rotator_rotation_total", "rotator_token_last_success_timestamp_seconds",
            "rotator_rotation_interval_seconds", "rotator_certificate_expiration_timestamp_seconds",
            "rotator_rotation_errors_total", "rotator_token_requests_total",
            "rotator_token_requests_limit_per_hour"} <= used
    exprs = expressions(dashboard())
    assert any("rate(rotator_rotation_total" in e and "result" in e for e in exprs)
    assert any('result="failure"' in e for e in exprs)


def _exposed(text: str) -> tuple[set[str], set[str]]:
    """(families declared by # TYPE, names that have samples) on a /metrics page."""
    declared, sampled = set(), set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            declared.add(name)
            declared.update(name + s for s in {"counter": ("_total",),
                                               "histogram": ("_bucket", "_sum", "_count")}.get(kind, ()))
        elif line and not line.startswith("#"):
            sampled.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return declared, sampled


def test_every_metric_exists_on_a_running_daemon(tmp_path, endpoint, run_cli, key_files,  # noqa: F811
                                                 start_daemon, secret_guard) -> None:  # noqa: F811
    """The dashboard's and the PrometheusRule's metrics, scraped from `rotator run` after one
    failed run (a 5xx: rotator_rotation_errors_total gets a sample) and a success."""
    port = free_port()
    config = make_config(tmp_path, endpoint, port=port, creds={"sf": {
        "every": "30s", "jitter": "0s", "retry_min": "200ms", "retry_max": "1s", "timeout": "2s"}})
    import_keys(run_cli, endpoint, config, key_files, "sf")
    endpoint.set_fault("5xx", count=1)
    daemon = start_daemon(config, port=port)
    daemon.wait_ready(timeout=30)

    def scraped() -> str | None:
        status, text = daemon.http("/metrics")
        done = status == 200 and 'rotator_rotation_errors_total{credential="sf"' in text
        return text if done and metric(text, "rotator_rotation_total", credential="sf",
                                       result="success") else None

    text = wait_for(scraped, 30, "a failure and a success on /metrics")
    secret_guard.seen("/metrics", text)
    declared, sampled = _exposed(text)
    used = dashboard_metrics() | {m for a in _alerts().values() for m, _ in _selectors(a["expr"])}
    assert not used - declared, f"not on /metrics: {sorted(used - declared)}"
    assert not used - NEEDS_A_LIFETIME - sampled, f"no samples: {sorted(used - NEEDS_A_LIFETIME - sampled)}"
    assert 'rotator_rotation_errors_total{credential="sf",error_class="EndpointUnavailable"} 1.0' in text
    assert 'rotator_token_requests_limit_per_hour{credential="sf"} 60.0' in text
    assert 'rotator_rotation_interval_seconds{credential="sf"} 30.0' in text
    assert CLIENT_ID not in text  # labels carry credential names and fixed words only
    code, _ = daemon.stop()
    assert code == 0
