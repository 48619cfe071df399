"""The two Metadata API calls rotator needs: read an app's component, replace its certificate.

A small SOAP 1.1 client for exactly `readMetadata` and `updateMetadata` of `ConnectedApp`
(`oauthConfig.certificate`) and `ExtlClntAppGlobalOauthSettings` (`certificate`), rather than
simple-salesforce's Metadata client (zeep with a bundled 1.5 MB WSDL). docs/key-rotation.md
gives the reasons; in short:

* the component read is sent back as it was read, element for element, with only the
  certificate changed — no typed round trip through a WSDL that may be older than the org's
  API and would drop the fields it does not know (updateMetadata replaces the whole component);
* every reply is hostile until parsed: capped at 1 MiB, read with a connect and a read timeout,
  never redirected, refused if it carries a DTD (so no entity is ever expanded), and bounded in
  elements and depth; simple-salesforce builds zeep with settings the caller cannot change and
  a transport without a timeout;
* no new production dependency, and nothing heavy imported by a daemon that never publishes.

The session (an access token) is sent only to `instance_url` as the token endpoint returned it
and `rotator.urls.check_url` accepts it (https, or http on loopback).
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from xml.sax.saxutils import escape

import requests

from rotator import policy
from rotator.config import PublishConfig
from rotator.deadline import DeadlineExceeded, deadline_scope, read_body
from rotator.errors import EndpointError, EndpointProtocolError, EndpointUnavailable
from rotator.providers.base import (
    CONNECT_TIMEOUT,
    MAX_RESPONSE_BYTES,
    _reason,
    retry_after_seconds,
    shared_session,
)
from rotator.urls import check_url

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
MD = "http://soap.sforce.com/2006/04/metadata"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
MAX_ELEMENTS = 5000
MAX_DEPTH = 16
MAX_MESSAGE = 300

PERMISSIONS_HINT = (
    "the publishing user ({user}) needs the Modify Metadata (or Modify All Data) and Customize "
    "Application user permissions{eca}; or set publish.via to a credential whose user has them"
)
ECA_HINT = (", and for External Client Apps the org setting 'Allow Access to OAuth Consumer "
            "Secrets via Metadata API'")

_T = TypeVar("_T")

# (instance_url, access token) for the Metadata session; fresh=True: mint a new token
Session = Callable[[bool], tuple[str, str]]


class MetadataError(EndpointError):
    """The Metadata API refused a call (a SOAP fault or a per-record error)."""

    def __init__(self, url: str, code: str, message: str, *, hint: str | None = None,
                 retryable: bool = False) -> None:
        super().__init__(url, f"Metadata API {code}: {message}", hint=hint)
        self.code = code
        self.retryable = retryable  # type: ignore[misc]


class MetadataSessionInvalid(MetadataError):
    """INVALID_SESSION_ID: the token was revoked or has timed out; a new one may work."""


class MetadataUnavailable(EndpointUnavailable):
    """5xx, a maintenance page, a reset or a timeout: retry later."""


@dataclass(frozen=True)
class Component:
    """One component as read: its child elements (kept as read) and its certificate."""

    children: tuple[ET.Element, ...]
    certificate: str | None


class MetadataPublisher:
    """Reads and replaces one app's certificate, with the session the engine supplies.

    The stored token is tried first; INVALID_SESSION_ID makes one more attempt with a freshly
    minted token. Calls count against the credential's max_requests_per_hour in this process.
    """

    def __init__(self, name: str, settings: PublishConfig, *, session: Session, timeout: float,
                 max_per_hour: int, via: str, clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.settings = settings
        self.app = settings.app
        self.type_name = settings.metadata_type
        self.via = via
        self._session = session
        self._timeout = timeout
        self._max = max_per_hour
        self._clock = clock
        self._calls: deque[float] = deque()
        self._lock = threading.Lock()

    # -- the two operations

    def read(self) -> str | None:
        """The certificate the app holds now (None: none)."""
        return self._with_session(lambda url, token: self._read(url, token)).certificate

    def replace(self, pem: str) -> tuple[str | None, str | None]:
        """Put `pem` in place of the app's certificate: (the old one, the one read back)."""

        def run(url: str, token: str) -> tuple[str | None, str | None]:
            component = self._read(url, token)
            self._update(url, token, component, pem)
            return component.certificate, self._read(url, token).certificate

        return self._with_session(run)

    # -- plumbing

    def _with_session(self, action: Callable[[str, str], _T]) -> _T:
        url, token = self._session(False)
        try:
            return action(check_soap_base(url), token)
        except MetadataSessionInvalid:
            url, token = self._session(True)  # once: a second refusal is final
            return action(check_soap_base(url), token)

    def _endpoint(self, base: str) -> str:
        return f"{base}/services/Soap/m/{self.settings.api_version}"

    def _read(self, base: str, token: str) -> Component:
        body = (f"<md:readMetadata><md:type>{self.type_name}</md:type>"
                f"<md:fullNames>{escape(self.app)}</md:fullNames></md:readMetadata>")
        root = self._call(base, token, body)
        records = root.find(f"{{{SOAP_ENV}}}Body/{{{MD}}}readMetadataResponse/{{{MD}}}result/{{{MD}}}records")
        if records is None or records.get(f"{{{XSI}}}nil") == "true" or not _text(records, "fullName"):
            raise MetadataError(self._endpoint(base), "NOT_FOUND", f"no {self.type_name} named {self.app}",
                                hint="check publish.app (the app's API name, as in Setup) and publish.type")
        path = self._certificate_path()
        node = records
        for name in path:
            found = node.find(f"{{{MD}}}{name}")
            if found is None:
                node = None
                break
            node = found
        certificate = (node.text or "").strip() if node is not None else ""
        return Component(tuple(records), certificate or None)

    def _update(self, base: str, token: str, component: Component, pem: str) -> None:
        children = [_copy(child) for child in component.children]
        _set_certificate(children, self._certificate_path(), pem.strip())
        inner = "".join(ET.tostring(child, encoding="unicode") for child in children)
        body = (f'<md:updateMetadata><md:metadata xsi:type="md:{self.type_name}">{inner}'
                "</md:metadata></md:updateMetadata>")
        root = self._call(base, token, body)
        result = root.find(f"{{{SOAP_ENV}}}Body/{{{MD}}}updateMetadataResponse/{{{MD}}}result")
        if result is None:
            raise EndpointProtocolError(self._endpoint(base), "updateMetadata reply has no result")
        if _text(result, "success") == "true":
            return
        errors = result.findall(f"{{{MD}}}errors")
        code = _text(errors[0], "statusCode") if errors else "UNKNOWN"
        message = _text(errors[0], "message") if errors else "no error given"
        raise self._mapped(self._endpoint(base), code or "UNKNOWN", _unechoed(message or "", token))

    def _certificate_path(self) -> tuple[str, ...]:
        return ("oauthConfig", "certificate") if self.type_name == "ConnectedApp" else ("certificate",)

    def _call(self, base: str, token: str, body: str) -> ET.Element:
        url = self._endpoint(base)
        self._rate_guard(url)
        envelope = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:md="{MD}" xmlns:xsi="{XSI}">'
            f"<soapenv:Header><md:SessionHeader><md:sessionId>{escape(token)}</md:sessionId>"
            f"</md:SessionHeader></soapenv:Header><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
        )
        # one deadline for the whole exchange (connect, send, headers, body): rotator.deadline
        with deadline_scope(self._timeout) as deadline:
            try:
                response = shared_session().post(
                    url, data=envelope.encode(), allow_redirects=False, stream=True,
                    timeout=deadline.timeouts(connect=CONNECT_TIMEOUT),
                    headers={"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": '""'},
                )
                try:
                    raw = read_body(response, deadline, limit=MAX_RESPONSE_BYTES, chunk=64 * 1024)
                finally:
                    response.close()
            except ValueError:
                raise EndpointProtocolError(
                    url, f"reply larger than {MAX_RESPONSE_BYTES} bytes; refusing to read it") from None
            except (requests.exceptions.RequestException, DeadlineExceeded) as exc:
                if deadline.expired or isinstance(exc, requests.exceptions.Timeout):
                    raise MetadataUnavailable(url, f"no reply within {self._timeout:g}s") from None
                raise MetadataUnavailable(url, f"connection failed ({_reason(exc)})") from None
        status = response.status_code
        headers = {k.lower(): v for k, v in response.headers.items()}
        if 300 <= status < 400:
            raise EndpointProtocolError(url, f"HTTP {status} redirect refused",
                                        hint="the session is sent only to instance_url")
        root = _parse(url, raw, status)
        if root is None or status != 200:
            fault = root.find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault") if root is not None else None
            if fault is None:
                if status == 429 or status >= 500:
                    raise MetadataUnavailable(url, f"server error (HTTP {status})", status=status,
                                              retry_after=retry_after_seconds(headers))
                raise EndpointProtocolError(url, f"HTTP {status} without a SOAP fault")
            code = (_plain(fault, "faultcode") or "UNKNOWN").rsplit(":", 1)[-1]
            raise self._mapped(url, code, _unechoed(_plain(fault, "faultstring") or "", token))
        return root

    def _rate_guard(self, url: str) -> None:
        with self._lock:
            now = self._clock()
            while self._calls and self._calls[0] <= now - policy.REQUEST_WINDOW_SECONDS:
                self._calls.popleft()
            wait = policy.request_wait(self._calls, now=now, limit=self._max)
            if wait > 0:
                raise MetadataUnavailable(url, f"{self._max} Metadata API calls in the last hour "
                                          "(max_requests_per_hour)", retry_after=wait)
            self._calls.append(now)

    def _mapped(self, url: str, code: str, message: str) -> MetadataError:
        message = _clean(message)
        if code == "INVALID_SESSION_ID":
            return MetadataSessionInvalid(url, code, message, hint=(
                f"the token of credential {self.via!r} was refused even after a new login; "
                "check that its user can use the API"))
        if code == "INSUFFICIENT_ACCESS":
            eca = ECA_HINT if self.type_name != "ConnectedApp" else ""
            return MetadataError(url, code, message,
                                 hint=PERMISSIONS_HINT.format(user=f"credential {self.via!r}", eca=eca))
        if code in ("INVALID_CROSS_REFERENCE_KEY", "NOT_FOUND"):
            return MetadataError(url, code, message, hint=(
                f"no {self.type_name} named {self.app!r}: check publish.app and publish.type"))
        if code in ("INVALID_TYPE", "UNSUPPORTED_API_VERSION"):
            return MetadataError(url, code, message, hint=(
                f"check publish.api_version ({self.settings.api_version}) and publish.type"))
        # every call-level fault is an HTTP 500 on Salesforce: the code, not the status, decides
        if code in ("UNKNOWN_EXCEPTION", "REQUEST_LIMIT_EXCEEDED", "SERVER_UNAVAILABLE"):
            return MetadataError(url, code, message, retryable=True)
        return MetadataError(url, code, message)


def check_soap_base(instance_url: str) -> str:
    """The instance URL the session may be sent to (https, or http on loopback)."""
    try:
        return check_url(instance_url)
    except ValueError as exc:
        raise EndpointProtocolError("instance_url", f"refused: {exc}") from None


def _parse(url: str, raw: bytes, status: int) -> ET.Element | None:
    """The reply's XML root; None for a non-XML body (a maintenance page). No DTD, bounded."""
    head = raw[:2048].lower()
    if b"<!doctype" in raw.lower() or b"<!entity" in raw.lower():
        if b"<html" in head:
            return None
        raise EndpointProtocolError(url, "reply carries a DTD; refused (SOAP forbids them)")
    try:
        root = ET.fromstring(raw)  # noqa: S314 - no DTD (checked above), size capped by read_body
    except ET.ParseError:
        if status >= 500 or b"<html" in head:
            return None
        raise EndpointProtocolError(url, f"HTTP {status} reply is not well-formed XML") from None
    for count, _ in enumerate(root.iter(), 1):
        if count > MAX_ELEMENTS:
            raise EndpointProtocolError(url, f"reply has more than {MAX_ELEMENTS} elements")
    if _depth(root) > MAX_DEPTH:
        raise EndpointProtocolError(url, f"reply nests deeper than {MAX_DEPTH} levels")
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        return None
    return root


def _depth(element: ET.Element, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    return max((_depth(child, level + 1) for child in element), default=level)


def _text(element: ET.Element, name: str) -> str | None:
    found = element.find(f"{{{MD}}}{name}")
    return (found.text or "").strip() if found is not None else None


def _plain(element: ET.Element, name: str) -> str | None:
    """A fault's child by its local name (Salesforce leaves faultcode unqualified; some
    proxies put it in a namespace)."""
    found = next((c for c in element if c.tag.rsplit("}", 1)[-1] == name), None)
    return (found.text or "").strip() if found is not None else None


def _unechoed(message: str, token: str) -> str:
    """A server (or a proxy) may echo the request: never let the session into a diagnosis."""
    return message.replace(token, "(the session id)") if token else message


def _clean(message: str) -> str:
    """A server message, bounded and printable (it ends up in a diagnosis)."""
    text = "".join(ch if ch.isprintable() else " " for ch in message)
    return " ".join(text.split())[:MAX_MESSAGE]


def _copy(element: ET.Element) -> ET.Element:
    clone = ET.Element(element.tag, dict(element.attrib))
    clone.text, clone.tail = element.text, None
    clone.extend(_copy(child) for child in element)
    return clone


def _set_certificate(children: list[ET.Element], path: tuple[str, ...], pem: str) -> None:
    """Replace (or add, after callbackUrl, as the schema orders it) the certificate element."""
    siblings: list[ET.Element] = children
    parent: ET.Element | None = None
    for name in path[:-1]:
        found = next((c for c in siblings if c.tag == f"{{{MD}}}{name}"), None)
        if found is None:
            found = ET.Element(f"{{{MD}}}{name}")
            siblings.append(found)
        parent, siblings = found, list(found)
    tag = f"{{{MD}}}{path[-1]}"
    existing = next((c for c in siblings if c.tag == tag), None)
    if existing is not None:
        existing.text = pem
        return
    leaf = ET.Element(tag)
    leaf.text = pem
    anchor = next((i for i, c in enumerate(siblings) if c.tag == f"{{{MD}}}callbackUrl"), None)
    index = len(siblings) if anchor is None else anchor + 1
    if parent is None:
        children.insert(index, leaf)
    else:
        parent.insert(index, leaf)

