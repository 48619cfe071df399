"""Reply values and the JSON error bodies the REST side of the emulator shares."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JSON_TYPE = "application/json;charset=UTF-8"
HTML_TYPE = "text/html;charset=UTF-8"
XML_TYPE = "text/xml;charset=UTF-8"

INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    reset: bool = False
    close: bool = False


def json_reply(
    status: int, body: Any, *, headers: tuple[tuple[str, str], ...] = (), close: bool = False
) -> Reply:
    data = json.dumps(body, separators=(",", ":")).encode()
    return Reply(status, data, JSON_TYPE, headers, close=close)


def invalid_session() -> Reply:
    return json_reply(401, INVALID_SESSION, headers=(("WWW-Authenticate", "Token"),))


def not_found() -> Reply:
    return json_reply(404, NOT_FOUND)


def method_not_allowed(method: str, allowed: str) -> Reply:
    body = [{
        "errorCode": "METHOD_NOT_ALLOWED",
        "message": f"HTTP Method '{method}' not allowed. Allowed are {allowed}",
    }]
    return json_reply(405, body, headers=(("Allow", allowed),))
