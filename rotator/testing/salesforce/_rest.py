"""The REST API under /services/data/vXX.X, as far as a client goes right after login.

Served: the resource map, query and queryAll (the SOQL subset of `_soql`, with
``columns=true``), describeGlobal (/sobjects), an sObject's summary and describe, a record by
id, and /limits. Every reply has Salesforce's JSON shape; the endpoint checks the bearer token
before anything here runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from rotator.testing.salesforce._org import (
    SOBJECTS,
    OrgData,
    attributes,
    column_metadata,
    describe_global_entry,
    describe_sobject,
    sobject,
)
from rotator.testing.salesforce._soql import SoqlError, parse
from rotator.testing.salesforce._wire import Reply, json_reply, method_not_allowed, not_found

OLDEST_VERSION = 31  # Salesforce retired API versions 21.0-30.0 in Summer '25
NEWEST_VERSION = 66  # Spring '26
MAX_RECORDS = 2000  # one batch; the emulator never pages (`done` is always true)
DAILY_API_REQUESTS = 15_000


def release_label(major: int) -> str:
    """"Spring '26" for 66: three releases a year, Spring (63 = Spring '25), Summer, Winter."""
    index = major - 63
    year, season = 25 + index // 3, index % 3
    name = ("Spring", "Summer", "Winter")[season]
    return f"{name} '{year + 1 if season == 2 else year:02d}"


VERSIONS: tuple[str, ...] = tuple(f"{major}.0" for major in range(OLDEST_VERSION, NEWEST_VERSION + 1))


def versions_list() -> list[dict[str, str]]:
    """GET /services/data: every served version, oldest first, as Salesforce lists them."""
    return [
        {"label": release_label(int(float(v))), "url": f"/services/data/v{v}", "version": v}
        for v in VERSIONS
    ]


_SOBJECT_PATH = re.compile(r"^/sobjects/([A-Za-z][A-Za-z0-9_]{0,79})(?:/([A-Za-z0-9]{1,18}|describe))?/?$")


class RestApi:
    """Routes one authenticated request under /services/data/vXX.X to its resource."""

    def __init__(self, org: OrgData, identity_url: Callable[[str], str]) -> None:
        self.org = org
        self.identity_url = identity_url
        self.api_requests = 0

    def handle(self, method: str, version: str, rest: str, query: str, user_id: str) -> Reply:
        self.api_requests += 1
        if rest in ("", "/"):
            return self._get(method) or json_reply(200, self._resource_map(version, user_id))
        if rest in ("/query", "/query/", "/queryAll", "/queryAll/"):
            return self._get(method) or self._query(version, query)
        if rest in ("/limits", "/limits/"):
            return self._get(method) or json_reply(200, self._limits())
        if rest in ("/sobjects", "/sobjects/"):
            if (refused := self._get(method)) is not None:
                return refused
            entries = [describe_global_entry(spec, version) for spec in SOBJECTS.values()]
            return json_reply(200, {"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": entries})
        match = _SOBJECT_PATH.match(rest)
        if match:
            return self._get(method) or self._sobject(version, match.group(1), match.group(2), query)
        return not_found()

    @staticmethod
    def _get(method: str) -> Reply | None:
        return None if method in ("GET", "HEAD") else method_not_allowed(method, "GET, HEAD")

    def _resource_map(self, version: str, user_id: str) -> dict[str, str]:
        base = f"/services/data/v{version}"
        return {
            "identity": self.identity_url(user_id),
            "limits": f"{base}/limits",
            "query": f"{base}/query",
            "queryAll": f"{base}/queryAll",
            "sobjects": f"{base}/sobjects",
        }

    def _limits(self) -> dict[str, dict[str, int]]:
        def pair(maximum: int, used: int = 0) -> dict[str, int]:
            return {"Max": maximum, "Remaining": max(0, maximum - used)}

        return {
            "ConcurrentAsyncGetReportInstances": pair(200),
            "DailyApiRequests": pair(DAILY_API_REQUESTS, self.api_requests),
            "DailyAsyncApexExecutions": pair(250_000),
            "DailyBulkApiBatches": pair(15_000),
            "DataStorageMB": pair(5),
            "FileStorageMB": pair(20),
            "HourlyPublishedPlatformEvents": pair(50_000),
            "SingleEmail": pair(15),
        }

    def _query(self, version: str, query: str) -> Reply:
        params = parse_qs(query, keep_blank_values=True)
        soql = (params.get("q") or [""])[0]
        if not soql.strip():
            return json_reply(400, [{"message": "A query string has to be specified",
                                     "errorCode": "MALFORMED_QUERY"}])
        try:
            parsed = parse(soql)
        except SoqlError as refused:
            return json_reply(400, [{"message": refused.message, "errorCode": refused.error_code}])
        columns = (params.get("columns") or ["false"])[0].lower() == "true"
        if columns:
            return json_reply(200, {
                "columnMetadata": [column_metadata(f) for f in parsed.fields],
                "entityName": parsed.sobject.name,
                "groupBy": False,
                "idSelected": any(f.name == "Id" for f in parsed.fields),
                "keyPrefix": parsed.sobject.key_prefix,
            })
        found = [r for r in self.org.all(parsed.sobject.name) if parsed.matches(r)]
        if parsed.limit is not None:
            found = found[:parsed.limit]
        if parsed.count:
            return json_reply(200, {"totalSize": len(found), "done": True, "records": []})
        found = found[:MAX_RECORDS]
        records = [
            {"attributes": attributes(parsed.sobject.name, r["Id"], version),
             **{f.name: r.get(f.name) for f in parsed.fields}}
            for r in found
        ]
        return json_reply(200, {"totalSize": len(records), "done": True, "records": records})

    def _sobject(self, version: str, name: str, tail: str | None, query: str) -> Reply:
        spec = sobject(name)
        if spec is None:
            return not_found()
        if tail is None:
            summary = {"objectDescribe": describe_global_entry(spec, version), "recentItems": []}
            return json_reply(200, summary)
        if tail == "describe":
            return json_reply(200, describe_sobject(spec, version))
        record = self.org.get(spec.name, tail)
        if record is None:
            return not_found()
        wanted = (parse_qs(query).get("fields") or [""])[0]
        fields = [f for f in spec.fields]
        if wanted:
            fields = []
            for raw in wanted.split(",")[:100]:
                found = spec.field(raw.strip())
                if found is None:
                    message = f"No such column '{raw.strip()}' on sobject of type {spec.name}"
                    return json_reply(400, [{"errorCode": "INVALID_FIELD", "message": message}])
                fields.append(found)
        body: dict[str, Any] = {"attributes": attributes(spec.name, record["Id"], version)}
        body.update({f.name: record.get(f.name) for f in fields})
        return json_reply(200, body)
