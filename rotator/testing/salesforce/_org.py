"""The emulated org's data: three sObjects (Organization, User, Account), their fields and records.

Small on purpose: enough for what clients do right after login (look at the Organization,
the running User, describe, a query or two), shaped like Salesforce's REST replies. Field
types follow Salesforce's describe types; `apex_type` is what ``query?columns=true`` reports.
The caller (the endpoint) holds its lock around every use.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from typing import Any

# describe type -> (apexType for columnMetadata, soapType for describe)
_TYPES: dict[str, tuple[str, str]] = {
    "id": ("Id", "tns:ID"),
    "reference": ("Id", "tns:ID"),
    "string": ("String", "xsd:string"),
    "email": ("String", "xsd:string"),
    "picklist": ("String", "xsd:string"),
    "boolean": ("Boolean", "xsd:boolean"),
    "datetime": ("Datetime", "xsd:dateTime"),
    "date": ("Date", "xsd:date"),
    "int": ("Integer", "xsd:int"),
}

MAX_RECORDS_PER_OBJECT = 10_000  # add_record refuses more: the org stays small


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    label: str
    length: int = 0
    nillable: bool = True
    updateable: bool = False

    @property
    def apex_type(self) -> str:
        return _TYPES[self.type][0]

    @property
    def soap_type(self) -> str:
        return _TYPES[self.type][1]


@dataclass(frozen=True)
class SObject:
    name: str
    label: str
    label_plural: str
    key_prefix: str
    fields: tuple[Field, ...]
    createable: bool = False

    def field(self, name: str) -> Field | None:
        """The field called `name`, matched case-insensitively as SOQL does."""
        wanted = name.lower()
        for candidate in self.fields:
            if candidate.name.lower() == wanted:
                return candidate
        return None


def _f(name: str, type_: str, label: str | None = None, **extra: Any) -> Field:
    length = extra.pop("length", 255 if type_ in ("string", "email", "picklist") else 0)
    if type_ in ("id", "reference"):
        length = 18
    return Field(name, type_, label or name, length=length, **extra)


SOBJECTS: dict[str, SObject] = {
    "Organization": SObject("Organization", "Organization", "Organizations", "00D", (
        _f("Id", "id", "Organization ID", nillable=False),
        _f("Name", "string", "Name", nillable=False),
        _f("InstanceName", "string", "Instance Name"),
        _f("IsSandbox", "boolean", "Is Sandbox", nillable=False),
        _f("OrganizationType", "picklist", "Edition"),
        _f("NamespacePrefix", "string", "Namespace Prefix"),
        _f("TrialExpirationDate", "datetime", "Trial Expiration Date"),
        _f("LanguageLocaleKey", "picklist", "Language"),
        _f("TimeZoneSidKey", "picklist", "Time Zone"),
        _f("CreatedDate", "datetime", "Created Date", nillable=False),
    )),
    "User": SObject("User", "User", "Users", "005", (
        _f("Id", "id", "User ID", nillable=False),
        _f("Username", "string", "Username", nillable=False),
        _f("Name", "string", "Full Name", nillable=False),
        _f("FirstName", "string", "First Name"),
        _f("LastName", "string", "Last Name", nillable=False),
        _f("Email", "email", "Email", nillable=False),
        _f("IsActive", "boolean", "Active", nillable=False),
        _f("UserType", "picklist", "User Type"),
        _f("ProfileId", "reference", "Profile ID"),
        _f("TimeZoneSidKey", "picklist", "Time Zone"),
        _f("LanguageLocaleKey", "picklist", "Language"),
        _f("CreatedDate", "datetime", "Created Date", nillable=False),
    )),
    "Account": SObject("Account", "Account", "Accounts", "001", (
        _f("Id", "id", "Account ID", nillable=False),
        _f("Name", "string", "Account Name", nillable=False, updateable=True),
        _f("Type", "picklist", "Account Type", updateable=True),
        _f("Industry", "picklist", "Industry", updateable=True),
        _f("Website", "string", "Website", updateable=True),
        _f("NumberOfEmployees", "int", "Employees", updateable=True),
        _f("OwnerId", "reference", "Owner ID", nillable=False, updateable=True),
        _f("CreatedDate", "datetime", "Created Date", nillable=False),
    ), createable=True),
}

_ID_CHARS = string.ascii_letters + string.digits
_ID_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def salesforce_id(prefix: str) -> str:
    """A random 18-character, case-safe Salesforce id starting with the 3-character `prefix`."""
    short = prefix + "".join(secrets.choice(_ID_CHARS) for _ in range(15 - len(prefix)))
    suffix = ""
    for start in range(0, 15, 5):
        bits = sum(1 << i for i, char in enumerate(short[start:start + 5]) if char.isupper())
        suffix += _ID_SUFFIX[bits]
    return short + suffix


def sobject(name: str) -> SObject | None:
    """The sObject called `name` (case-insensitive, as Salesforce matches names), or None."""
    wanted = name.lower()
    for candidate in SOBJECTS.values():
        if candidate.name.lower() == wanted:
            return candidate
    return None


@dataclass
class OrgData:
    """The records of every sObject, each a dict of canonical field name -> JSON value."""

    records: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {name: {} for name in SOBJECTS}
    )

    def put(self, object_name: str, record: dict[str, Any]) -> dict[str, Any]:
        """Insert or merge `record` (it must carry its Id); unknown fields raise ValueError."""
        spec = SOBJECTS[object_name]
        clean: dict[str, Any] = {}
        for name, value in record.items():
            found = spec.field(name)
            if found is None:
                raise ValueError(f"no field {name!r} on {object_name}")
            clean[found.name] = value
        table = self.records[object_name]
        existing = table.get(clean["Id"])
        if existing is None:
            if len(table) >= MAX_RECORDS_PER_OBJECT:
                raise ValueError(f"the emulated org holds at most {MAX_RECORDS_PER_OBJECT} {object_name}s")
            existing = table[clean["Id"]] = {f.name: None for f in spec.fields}
        existing.update(clean)
        return existing

    def get(self, object_name: str, record_id: str) -> dict[str, Any] | None:
        table = self.records[object_name]
        found = table.get(record_id)
        if found is None and len(record_id) == 15:  # a 15-character id names the same record
            found = next((r for key, r in table.items() if key[:15] == record_id), None)
        return found

    def all(self, object_name: str) -> list[dict[str, Any]]:
        return list(self.records[object_name].values())


def attributes(object_name: str, record_id: str, version: str) -> dict[str, str]:
    return {"type": object_name, "url": f"/services/data/v{version}/sobjects/{object_name}/{record_id}"}


def describe_global_entry(spec: SObject, version: str) -> dict[str, Any]:
    """One entry of GET /sobjects (describeGlobal), with Salesforce's keys."""
    base = f"/services/data/v{version}/sobjects/{spec.name}"
    return {
        "activateable": False,
        "createable": spec.createable,
        "custom": False,
        "customSetting": False,
        "deepCloneable": False,
        "deletable": spec.createable,
        "deprecatedAndHidden": False,
        "feedEnabled": False,
        "hasSubtypes": False,
        "isInterface": False,
        "isSubtype": False,
        "keyPrefix": spec.key_prefix,
        "label": spec.label,
        "labelPlural": spec.label_plural,
        "layoutable": True,
        "mergeable": spec.createable,
        "mruEnabled": spec.createable,
        "name": spec.name,
        "queryable": True,
        "replicateable": spec.createable,
        "retrieveable": True,
        "searchable": spec.createable,
        "triggerable": spec.createable,
        "undeletable": spec.createable,
        "updateable": spec.createable,
        "urls": {
            "sobject": base,
            "describe": f"{base}/describe",
            "rowTemplate": f"{base}/{{ID}}",
        },
    }


def describe_field(spec: Field) -> dict[str, Any]:
    """One entry of `fields` in GET /sobjects/X/describe (the keys clients read most)."""
    return {
        "aggregatable": spec.type not in ("boolean",),
        "autoNumber": False,
        "calculated": False,
        "createable": spec.updateable,
        "custom": False,
        "defaultedOnCreate": spec.type in ("id", "boolean"),
        "filterable": True,
        "groupable": spec.type not in ("datetime",),
        "idLookup": spec.type == "id" or spec.name == "Username",
        "label": spec.label,
        "length": spec.length,
        "name": spec.name,
        "nameField": spec.name == "Name",
        "nillable": spec.nillable,
        "picklistValues": [],
        "referenceTo": ["Profile"] if spec.name == "ProfileId" else (
            ["User"] if spec.name == "OwnerId" else []
        ),
        "relationshipName": None,
        "soapType": spec.soap_type,
        "sortable": True,
        "type": spec.type,
        "unique": spec.name in ("Id", "Username"),
        "updateable": spec.updateable,
    }


def describe_sobject(spec: SObject, version: str) -> dict[str, Any]:
    """GET /sobjects/X/describe: the global entry plus fields and child relationships."""
    body = describe_global_entry(spec, version)
    body["fields"] = [describe_field(f) for f in spec.fields]
    body["childRelationships"] = []
    body["recordTypeInfos"] = []
    layouts = f"/services/data/v{version}/sobjects/{spec.name}/describe/layouts"
    body["urls"] = {**body["urls"], "layouts": layouts}
    return body


def column_metadata(spec: Field) -> dict[str, Any]:
    """One entry of ``columnMetadata`` in a ``query?columns=true`` reply."""
    return {
        "aggregate": False,
        "apexType": spec.apex_type,
        "booleanType": spec.type == "boolean",
        "columnName": spec.name,
        "custom": False,
        "displayName": spec.name,
        "foreignKeyName": None,
        "insertable": spec.updateable,
        "joinColumns": [],
        "numberType": spec.type == "int",
        "textType": spec.type in ("string", "email", "picklist"),
        "updatable": spec.updateable,
    }
