"""The Metadata API client against hostile replies, over real loopback sockets: DTDs and entity
bombs, oversize and deep bodies, redirects (the session must not follow), slow replies, HTML
pages; and the session is only ever sent to a checked instance URL."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rotator.config import PublishConfig
from rotator.errors import EndpointProtocolError, EndpointUnavailable
from rotator.providers.metadata import MetadataError, MetadataPublisher

pytestmark = pytest.mark.integration

SESSION = "00Dfake!SESSION.never.to.be.leaked.anywhere"
ENVELOPE = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns="http://soap.sforce.com/2006/04/metadata">'
            '<soapenv:Body>{}</soapenv:Body></soapenv:Envelope>')


class Hostile:
    """A loopback server whose every POST is answered by `reply(body) -> (status, headers, bytes)`."""

    def __init__(self, reply: Callable[[bytes], tuple[int, dict[str, str], bytes]]) -> None:
        self.reply = reply
        self.bodies: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.bodies.append(body)
                status, headers, payload = outer.reply(body)
                self.send_response(status)
                for key, value in {"Content-Length": str(len(payload)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True)
        thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile(secret_guard) -> Iterator[Callable[..., Hostile]]:
    secret_guard.add(SESSION)
    servers: list[Hostile] = []

    def make(reply: Callable[[bytes], tuple[int, dict[str, str], bytes]]) -> Hostile:
        servers.append(Hostile(reply))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def publisher(url: str, *, timeout: float = 2.0, sessions: list[bool] | None = None) -> MetadataPublisher:
    def session(fresh: bool) -> tuple[str, str]:
        if sessions is not None:
            sessions.append(fresh)
        return url, SESSION

    return MetadataPublisher("sf", PublishConfig(type="connected-app", app="App"), session=session,
                             timeout=timeout, max_per_hour=60, via="sf")


def xml(body: str, status: int = 200) -> Callable[[bytes], tuple[int, dict[str, str], bytes]]:
    return lambda _: (status, {"Content-Type": "text/xml"}, ENVELOPE.format(body).encode())


def test_entity_expansion_is_refused_before_parsing(hostile):
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            + "".join(f'<!ENTITY lol{i} "{"&lol" + str(i - 1) + ";" if i > 1 else "&lol;"}' * 10 + '">'
                      for i in range(1, 10))
            + ']><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
            "<soapenv:Body>&lol9;</soapenv:Body></soapenv:Envelope>")
    server = hostile(lambda _: (200, {"Content-Type": "text/xml"}, bomb.encode()))
    started = time.monotonic()
    with pytest.raises(EndpointProtocolError, match="DTD"):
        publisher(server.url).read()
    assert time.monotonic() - started < 2


def test_external_entities_are_refused(hostile, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-FILE-CONTENT")
    body = (f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file://{secret}">]>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
            "<soapenv:Body><soapenv:Fault><faultcode>sf:X</faultcode><faultstring>&xxe;</faultstring>"
            "</soapenv:Fault></soapenv:Body></soapenv:Envelope>")
    server = hostile(lambda _: (500, {"Content-Type": "text/xml"}, body.encode()))
    with pytest.raises(EndpointProtocolError) as caught:
        publisher(server.url).read()
    assert "TOP-SECRET" not in caught.value.diagnostics()


def test_an_oversize_reply_is_not_read(hostile):
    huge = ENVELOPE.format("<x>" + "a" * (2 * 1024 * 1024) + "</x>").encode()
    server = hostile(lambda _: (200, {"Content-Type": "text/xml"}, huge))
    with pytest.raises(EndpointProtocolError, match="larger than"):
        publisher(server.url).read()


def test_deep_or_wide_replies_are_refused(hostile):
    deep = hostile(xml("<a>" * 50 + "</a>" * 50))
    with pytest.raises(EndpointProtocolError, match="nests deeper"):
        publisher(deep.url).read()
    wide = hostile(xml("<a/>" * 6000))
    with pytest.raises(EndpointProtocolError, match="elements"):
        publisher(wide.url).read()


def test_a_redirect_is_not_followed_with_the_session(hostile):
    elsewhere = hostile(xml("<readMetadataResponse/>"))
    server = hostile(lambda _: (307, {"Location": f"{elsewhere.url}/services/Soap/m/66.0"}, b""))
    with pytest.raises(EndpointProtocolError, match="redirect refused"):
        publisher(server.url).read()
    assert len(server.bodies) == 1 and elsewhere.bodies == []


def test_a_slow_reply_times_out_and_is_retryable(hostile):
    def slow(_: bytes) -> tuple[int, dict[str, str], bytes]:
        time.sleep(1.5)
        return 200, {}, b""

    server = hostile(slow)
    with pytest.raises(EndpointUnavailable) as caught:
        publisher(server.url, timeout=0.3).read()
    assert caught.value.retryable


def test_maintenance_pages_and_unknown_exceptions_are_retryable(hostile):
    page = hostile(lambda _: (503, {"Content-Type": "text/html"}, b"<!DOCTYPE html><html>down</html>"))
    with pytest.raises(EndpointUnavailable) as caught:
        publisher(page.url).read()
    assert caught.value.retryable and caught.value.status == 503
    fault = ("<soapenv:Fault><faultcode>sf:UNKNOWN_EXCEPTION</faultcode>"
             "<faultstring>UNKNOWN_EXCEPTION: try again</faultstring></soapenv:Fault>")
    server = hostile(xml(fault, 500))
    with pytest.raises(MetadataError) as error:
        publisher(server.url).read()
    assert error.value.retryable and "UNKNOWN_EXCEPTION" in error.value.diagnostics()


def test_a_fault_message_is_bounded_and_printable(hostile):
    fault = ("<soapenv:Fault><faultcode>sf:INSUFFICIENT_ACCESS</faultcode><faultstring>"
             + "\u202e\u200b[31m" + "x" * 5000 + "</faultstring></soapenv:Fault>")
    server = hostile(xml(fault, 500))
    with pytest.raises(MetadataError) as caught:
        publisher(server.url).read()
    text = caught.value.diagnostics()
    assert "\u200b" not in text and "\u202e" not in text and len(text) < 1000
    assert "Modify Metadata" in text and not caught.value.retryable


def test_a_fault_echoing_the_session_does_not_leak_it(hostile):
    fault = ("<soapenv:Fault><faultcode>sf:INVALID_FIELD</faultcode>"
             f"<faultstring>bad sessionId {SESSION} in header</faultstring></soapenv:Fault>")
    server = hostile(xml(fault, 500))
    with pytest.raises(MetadataError) as caught:
        publisher(server.url).read()
    assert SESSION not in caught.value.diagnostics()
    assert "(the session id)" in caught.value.diagnostics()


def test_invalid_session_mints_once_then_gives_up(hostile):
    fault = ("<soapenv:Fault><faultcode>sf:INVALID_SESSION_ID</faultcode>"
             "<faultstring>INVALID_SESSION_ID: Invalid Session ID</faultstring></soapenv:Fault>")
    server = hostile(xml(fault, 500))
    sessions: list[bool] = []
    with pytest.raises(MetadataError, match="INVALID_SESSION_ID"):
        publisher(server.url, sessions=sessions).read()
    assert sessions == [False, True] and len(server.bodies) == 2


@pytest.mark.parametrize("url", ["http://example.com", "ftp://127.0.0.1", "https://user:pw@example.com"])
def test_the_session_goes_only_to_a_checked_instance_url(url):
    with pytest.raises(EndpointProtocolError, match="refused"):
        publisher(url).read()


def test_the_session_is_escaped_into_the_envelope(hostile):
    server = hostile(xml('<readMetadataResponse><result><records xsi:nil="true" '
                         'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/></result></readMetadataResponse>'))
    with pytest.raises(MetadataError, match="no ConnectedApp named App"):
        publisher(server.url).read()
    assert b"<md:sessionId>" + SESSION.encode() + b"</md:sessionId>" in server.bodies[0]


def test_metadata_calls_count_against_max_requests_per_hour(hostile):
    """The rate guard: the call over the cap is not sent, and says when one fits again."""
    server = hostile(xml('<readMetadataResponse><result><records xsi:nil="true" '
                         'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/></result></readMetadataResponse>'))
    now = [1_000_000.0]
    guarded = MetadataPublisher("sf", PublishConfig(type="connected-app", app="App"),
                                session=lambda _fresh: (server.url, SESSION), timeout=2.0,
                                max_per_hour=2, via="sf", clock=lambda: now[0])
    for _ in range(2):
        with pytest.raises(MetadataError, match="no ConnectedApp"):
            guarded.read()
    with pytest.raises(EndpointUnavailable, match="max_requests_per_hour") as caught:
        guarded.read()
    assert caught.value.retryable and caught.value.retry_after == pytest.approx(3600.0)
    assert len(server.bodies) == 2
    now[0] += 3601
    with pytest.raises(MetadataError, match="no ConnectedApp"):
        guarded.read()
    assert len(server.bodies) == 3
