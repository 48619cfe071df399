"""The Metadata API's CRUD calls for the one field rotator needs: an app's certificate.

``POST /services/Soap/m/XX.X`` takes SOAP 1.1 envelopes with ``SessionHeader/sessionId`` (an
access token of this emulator) and serves ``readMetadata`` and ``updateMetadata`` for two types:

* ``ConnectedApp`` — the certificate is ``oauthConfig.certificate``;
* ``ExtlClntAppGlobalOauthSettings`` — the certificate is ``certificate`` (API 60.0 and
  later; the type itself exists from 59.0; the org setting that allows OAuth consumer secrets
  through the Metadata API must be on).

Both are views of the endpoint's app registry: a component's ``consumerKey`` is the app's
client id, and updating its certificate changes at once which key the token endpoint
accepts. ``updateMetadata`` replaces the whole component, as Salesforce does: a component
sent without a certificate leaves the app without one, and one without its required fields
gets a per-record REQUIRED_FIELD_MISSING — so clients must read, change the certificate, and
send everything back.

Errors come as Salesforce shapes them: call-level SOAP faults (HTTP 500) with ``faultcode``
``sf:INVALID_SESSION_ID``, ``sf:INSUFFICIENT_ACCESS``, ``sf:INVALID_TYPE``,
``sf:LIMIT_EXCEEDED``, ``soapenv:Client``; per-record errors in ``SaveResult.errors``
(``INVALID_CROSS_REFERENCE_KEY`` for an unknown full name, ``REQUIRED_FIELD_MISSING``,
``FIELD_INTEGRITY_EXCEPTION``); an unknown name on read is ``<records xsi:nil="true"/>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Union
from xml.sax.saxutils import escape, quoteattr

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
MD = "http://soap.sforce.com/2006/04/metadata"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

CONNECTED_APP = "ConnectedApp"
ECA_OAUTH = "ExtlClntAppGlobalOauthSettings"
TYPES = (CONNECTED_APP, ECA_OAUTH)
ECA_TYPE_SINCE = 59.0
ECA_CERTIFICATE_SINCE = 60.0
MAX_NAMES = 10  # Salesforce's limit per CRUD call
MAX_ELEMENTS = 2000  # per request: a component is a few dozen elements
MAX_DEPTH = 12

# Permissions the emulator's users can hold (Salesforce's API names of the user permissions).
MODIFY_ALL_DATA = "ModifyAllData"
MODIFY_METADATA = "ModifyMetadata"
CUSTOMIZE_APPLICATION = "CustomizeApplication"
MANAGE_CONNECTED_APPS = "ManageConnectedApps"  # the emulator accepts it in place of CustomizeApplication
PERMISSIONS = frozenset({MODIFY_ALL_DATA, MODIFY_METADATA, CUSTOMIZE_APPLICATION, MANAGE_CONNECTED_APPS})

# A component: (element name, text or nested component) pairs, in document order.
Tree = list[tuple[str, Union[str, "Tree"]]]


class SoapFault(Exception):
    """A call-level fault: the whole request fails with HTTP `status` (500 as on Salesforce)."""

    def __init__(self, code: str, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class SoapRequest:
    operation: str
    session_id: str | None
    type_name: str | None = None
    full_names: tuple[str, ...] = ()
    records: tuple[tuple[str | None, Tree], ...] = ()  # (xsi:type local name, component)


@dataclass(frozen=True)
class SaveResult:
    full_name: str
    errors: tuple[tuple[str, str], ...] = ()  # (statusCode, message)

    @property
    def success(self) -> bool:
        return not self.errors


def parse_request(body: bytes) -> SoapRequest:
    """The operation, session and arguments of a Metadata API envelope; SoapFault if unusable."""
    lowered = body.lower()
    if b"<!doctype" in lowered or b"<!entity" in lowered:
        # SOAP forbids DTDs; refusing them first means no entity can ever be expanded below
        raise SoapFault("soapenv:Client", "DTDs are not allowed in SOAP messages")
    try:
        root = ET.fromstring(body)  # noqa: S314 - no DTD (checked above), size capped by the handler
    except ET.ParseError:
        raise SoapFault("soapenv:Client", "Unable to parse the request: not well-formed XML") from None
    if sum(1 for _ in root.iter()) > MAX_ELEMENTS:
        raise SoapFault("soapenv:Client", f"Request has more than {MAX_ELEMENTS} elements")
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise SoapFault("soapenv:VersionMismatch", "Wrong SOAP version: expected a SOAP 1.1 Envelope")
    session_id = None
    header = root.find(f"{{{SOAP_ENV}}}Header")
    if header is not None:
        element = header.find(f"{{{MD}}}SessionHeader/{{{MD}}}sessionId")
        if element is not None and element.text:
            session_id = element.text.strip()
    soap_body = root.find(f"{{{SOAP_ENV}}}Body")
    call = soap_body[0] if soap_body is not None and len(soap_body) else None
    if call is None:
        raise SoapFault("soapenv:Client", "No operation in the SOAP Body")
    operation = call.tag.rsplit("}", 1)[-1]
    if call.tag != f"{{{MD}}}{operation}" or operation not in ("readMetadata", "updateMetadata"):
        raise SoapFault(
            "soapenv:Client",
            f"No operation available for request {call.tag}, please check the WSDL for the service.",
        )
    if operation == "readMetadata":
        type_element = call.find(f"{{{MD}}}type")
        names = tuple((e.text or "").strip() for e in call.findall(f"{{{MD}}}fullNames"))
        type_name = (type_element.text or "").strip() if type_element is not None else None
        return SoapRequest(operation, session_id, type_name=type_name, full_names=names)
    records = tuple(
        (_xsi_type(element), _tree(element, 0)) for element in call.findall(f"{{{MD}}}metadata")
    )
    return SoapRequest(operation, session_id, records=records)


def _xsi_type(element: ET.Element) -> str | None:
    raw = element.get(f"{{{XSI}}}type")
    return raw.rsplit(":", 1)[-1] if raw else None


def _tree(element: ET.Element, depth: int) -> Tree:
    if depth > MAX_DEPTH:
        raise SoapFault("soapenv:Client", "Request nests elements too deeply")
    tree: Tree = []
    for child in element:
        if child.get(f"{{{XSI}}}nil") == "true":
            continue
        name = child.tag.rsplit("}", 1)[-1]
        tree.append((name, _tree(child, depth + 1) if len(child) else (child.text or "")))
    return tree


def get(tree: Tree, *path: str) -> str | Tree | None:
    """The value at `path` (first match at each level), or None."""
    node: str | Tree | None = tree
    for name in path:
        if not isinstance(node, list):
            return None
        node = next((value for key, value in node if key == name), None)
    return node


def put(tree: Tree, path: tuple[str, ...], value: str | None, *, after: str | None = None) -> None:
    """Set (or, with None, remove) the text at `path`, creating parents; new leaves go after `after`."""
    node = tree
    for name in path[:-1]:
        child = get(node, name)
        if not isinstance(child, list):
            child = []
            node.append((name, child))
        node = child
    leaf = path[-1]
    index = next((i for i, (key, _) in enumerate(node) if key == leaf), None)
    if value is None:
        if index is not None:
            del node[index]
        return
    if index is not None:
        node[index] = (leaf, value)
        return
    anchor = next((i for i, (key, _) in enumerate(node) if key == after), None)
    node.insert(len(node) if anchor is None else anchor + 1, (leaf, value))


def certificate_path(type_name: str) -> tuple[str, ...]:
    return ("oauthConfig", "certificate") if type_name == CONNECTED_APP else ("certificate",)


def consumer_key_path(type_name: str) -> tuple[str, ...]:
    return ("oauthConfig", "consumerKey") if type_name == CONNECTED_APP else ("consumerKey",)


def required_fields(type_name: str, tree: Tree) -> list[str]:
    """The required fields (per Salesforce's WSDL) missing from `tree`."""
    if type_name == CONNECTED_APP:
        wanted = [("contactEmail",), ("label",)]
        if get(tree, "oauthConfig") is not None:
            wanted.append(("oauthConfig", "callbackUrl"))
    else:
        wanted = [("externalClientApplication",)]
    return [".".join(path) for path in wanted if not get(tree, *path)]


def default_component(type_name: str, full_name: str, client_id: str, admin_approved: bool) -> Tree:
    """What the emulator holds for a newly registered app (the certificate is put in after)."""
    callback = "https://login.salesforce.com/services/oauth2/success"
    if type_name == CONNECTED_APP:
        return [
            ("fullName", full_name),
            ("contactEmail", "admin@example.com"),
            ("label", full_name),
            ("oauthConfig", [
                ("callbackUrl", callback),
                ("consumerKey", client_id),
                ("isAdminApproved", "true" if admin_approved else "false"),
                ("scopes", "Api"),
            ]),
            ("oauthPolicy", [("ipRelaxation", "ENFORCE"), ("refreshTokenPolicy", "infinite")]),
        ]
    return [
        ("fullName", full_name),
        ("callbackUrl", callback),
        ("consumerKey", client_id),
        ("externalClientApplication", full_name),
        ("isConsumerSecretOptional", "true"),
    ]


# ---------------------------------------------------------------------------- replies


def _envelope(body: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns="{MD}" xmlns:xsi="{XSI}">'
        f"<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    ).encode()


def fault_body(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" xmlns:sf="{MD}">'
        f"<soapenv:Body><soapenv:Fault><faultcode>{escape(code)}</faultcode>"
        f"<faultstring>{escape(message)}</faultstring></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    ).encode()


def _xml(tree: Tree) -> str:
    parts = []
    for name, value in tree:
        inner = _xml(value) if isinstance(value, list) else escape(value)
        parts.append(f"<{name}>{inner}</{name}>")
    return "".join(parts)


def read_body(type_name: str, records: list[Tree | None]) -> bytes:
    parts = []
    for record in records:
        if record is None:
            parts.append('<records xsi:nil="true"/>')
        else:
            parts.append(f"<records xsi:type={quoteattr(type_name)}>{_xml(record)}</records>")
    return _envelope(f"<readMetadataResponse><result>{''.join(parts)}</result></readMetadataResponse>")


def update_body(results: list[SaveResult]) -> bytes:
    parts = []
    for result in results:
        errors = "".join(
            f"<errors><message>{escape(message)}</message><statusCode>{escape(code)}</statusCode></errors>"
            for code, message in result.errors
        )
        parts.append(
            f"<result>{errors}<fullName>{escape(result.full_name)}</fullName>"
            f"<success>{'true' if result.success else 'false'}</success></result>"
        )
    return _envelope(f"<updateMetadataResponse>{''.join(parts)}</updateMetadataResponse>")
