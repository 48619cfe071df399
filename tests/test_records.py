"""The two record shapes of CONTRACT.md, read and written (pure logic: no store, no network).

Every record read from a store goes through these parsers, so a field they drop or a bad
value they let through reaches every consumer: each rule here is asserted both ways.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from rotator.errors import RecordError
from rotator.records import MAX_PEM_CHARS, KeyPair, KeyRecord, TokenRecord

WHERE = "store 'local', sf/token"
KEY, CERT = "-----BEGIN PRIVATE KEY-----\nAAAA\n", "-----BEGIN CERTIFICATE-----\nBBBB\n"


def token_data(**overrides: Any) -> dict[str, Any]:
    data = {
        "access_token": "00Dxx!secret-token",
        "instance_url": "https://example.my.salesforce.com",
        "token_type": "Bearer",
        "scope": "api web",
        "id": "https://login.salesforce.com/id/00Dxx/005xx",
        "issued_at": "2026-11-28T12:00:00Z",
        "expires_at": "2026-11-28T14:00:00Z",
        "credential": "sf",
        "key_sha256": "ab" * 32,
        "rotation_id": "r-1",
    }
    data.update(overrides)
    return data


def refused(data: Any, message: str, kind: type = TokenRecord) -> RecordError:
    """`data` is refused with exactly this message (it names the field an operator must fix)."""
    with pytest.raises(RecordError) as caught:
        kind.from_data(data, where=WHERE)
    assert caught.value.diagnostics() == f"{WHERE}: {message}"
    return caught.value


# ---------------------------------------------------------------------------- token record


def test_token_record_reads_every_field() -> None:
    record = TokenRecord.from_data(token_data(), where=WHERE)
    assert record.access_token == "00Dxx!secret-token"
    assert record.instance_url == "https://example.my.salesforce.com"
    assert record.token_type == "Bearer"
    assert record.scope == "api web"
    assert record.id == "https://login.salesforce.com/id/00Dxx/005xx"
    assert record.issued_at == datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    # the expiry is what every deadline is computed from: a token read from a store keeps it
    assert record.expires_at == datetime(2026, 11, 28, 14, 0, tzinfo=UTC)
    assert record.credential == "sf"
    assert record.key_sha256 == "ab" * 32
    assert record.rotation_id == "r-1"


def test_token_record_round_trips_exactly() -> None:
    data = token_data()
    assert TokenRecord.from_data(data, where=WHERE).to_data() == data
    bare = token_data(expires_at=None, scope=None, id=None, instance_url=None, rotation_id=None)
    assert TokenRecord.from_data(bare, where=WHERE).to_data() == bare


def test_token_record_timestamps_are_utc_whatever_the_offset() -> None:
    record = TokenRecord.from_data(token_data(issued_at="2026-11-28T13:00:00+01:00",
                                              expires_at="2026-11-28T15:00:00+01:00"), where=WHERE)
    assert record.issued_at == datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert record.to_data()["issued_at"] == "2026-11-28T12:00:00Z"
    assert record.to_data()["expires_at"] == "2026-11-28T14:00:00Z"


@pytest.mark.parametrize("expires", [None, ""])
def test_token_record_without_expiry(expires: str | None) -> None:
    record = TokenRecord.from_data(token_data(expires_at=expires), where=WHERE)
    assert record.expires_at is None and record.to_data()["expires_at"] is None
    data = token_data()
    del data["expires_at"]
    assert TokenRecord.from_data(data, where=WHERE).expires_at is None


def test_token_record_defaults_for_optional_fields() -> None:
    data = {"access_token": "t", "issued_at": "2026-11-28T12:00:00Z"}
    record = TokenRecord.from_data(data, where=WHERE)
    assert record.token_type == "Bearer"
    assert record.credential == "" and record.key_sha256 == ""
    assert record.instance_url is None and record.scope is None and record.id is None
    assert record.rotation_id is None and record.expires_at is None
    assert TokenRecord.from_data({**data, "token_type": ""}, where=WHERE).token_type == "Bearer"
    assert TokenRecord.from_data({**data, "token_type": "MAC"}, where=WHERE).token_type == "MAC"


@pytest.mark.parametrize("data", [None, [], "token", 3])
def test_token_record_must_be_an_object(data: Any) -> None:
    refused(data, "token record is not a JSON object")


@pytest.mark.parametrize("value", ["", 123, None, ["t"]])
def test_token_record_access_token_must_be_a_non_empty_string(value: Any) -> None:
    refused(token_data(access_token=value), "access_token is missing or not a string")
    data = token_data()
    del data["access_token"]
    refused(data, "access_token is missing or not a string")


@pytest.mark.parametrize("field", ["issued_at", "expires_at"])
@pytest.mark.parametrize("value", ["yesterday", "2026-11-28T12:00:00", 1795867200, ["2026-11-28"]])
def test_token_record_timestamps_must_be_rfc3339_with_a_zone(field: str, value: Any) -> None:
    refused(token_data(**{field: value}), "issued_at/expires_at are not RFC 3339 timestamps")


def test_token_record_issued_at_is_required() -> None:
    data = token_data()
    del data["issued_at"]
    refused(data, "issued_at/expires_at are not RFC 3339 timestamps")
    refused(token_data(issued_at=None), "issued_at/expires_at are not RFC 3339 timestamps")


@pytest.mark.parametrize("field", ["issued_at", "expires_at"])
def test_token_record_year_bounds(field: str) -> None:
    """1970 and 9000 are the first and last years accepted (deadline arithmetic stays in range)."""
    for edge in ("1970-01-01T00:00:00Z", "9000-12-31T23:59:59Z"):
        assert TokenRecord.from_data(token_data(**{field: edge}), where=WHERE)
    for outside in ("1969-12-31T23:59:59Z", "9001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"):
        refused(token_data(**{field: outside}), "issued_at/expires_at are outside the years 1970-9000")


@pytest.mark.parametrize("field", ["instance_url", "scope", "id", "rotation_id"])
@pytest.mark.parametrize("value", [123, ["api"], {"a": 1}, True])
def test_token_record_text_fields_must_be_strings(field: str, value: Any) -> None:
    refused(token_data(**{field: value}), f"{field} must be a string or null")


def test_token_record_hides_the_token_from_repr() -> None:
    record = TokenRecord.from_data(token_data(), where=WHERE)
    assert "secret-token" not in repr(record) and "issued_at" in repr(record)


def test_token_record_age() -> None:
    record = TokenRecord.from_data(token_data(), where=WHERE)
    assert record.age(datetime(2026, 11, 28, 12, 1, 30, tzinfo=UTC)) == 90.0


# ---------------------------------------------------------------------------- key record


def key_data(**overrides: Any) -> dict[str, Any]:
    return {"private_key": KEY, "certificate": CERT, **overrides}


def test_key_record_current_only() -> None:
    record = KeyRecord.from_data(key_data(), where=WHERE)
    assert record.current == KeyPair(KEY, CERT, None)
    assert record.pending is None and record.previous is None
    assert record.extra == {} and record.damaged == ()
    assert record.to_data() == key_data()


def test_key_record_all_slots_round_trip_and_extra_fields_are_kept() -> None:
    data = key_data(
        passphrase="pw-current",
        pending_private_key="PK2", pending_certificate="PC2", pending_passphrase="pw-pending",
        previous_private_key="PK0", previous_certificate="PC0",
        note="rolled by ops", rolled_at="2026-11-01",
    )
    record = KeyRecord.from_data(data, where=WHERE)
    assert record.current == KeyPair(KEY, CERT, "pw-current")
    assert record.pending == KeyPair("PK2", "PC2", "pw-pending")
    assert record.previous == KeyPair("PK0", "PC0", None)
    assert record.extra == {"note": "rolled by ops", "rolled_at": "2026-11-01"}
    assert record.to_data() == data


def test_key_record_previous_without_pending_is_written() -> None:
    data = key_data(previous_private_key="PK0", previous_certificate="PC0", previous_passphrase="pw0")
    record = KeyRecord.from_data(data, where=WHERE)
    assert record.pending is None and record.previous == KeyPair("PK0", "PC0", "pw0")
    assert record.to_data() == data


def test_key_record_empty_passphrase_means_none_and_is_not_written() -> None:
    record = KeyRecord.from_data(key_data(passphrase=""), where=WHERE)
    assert record.current.passphrase is None
    assert "passphrase" not in record.to_data()


@pytest.mark.parametrize("data", [None, [], "pem"])
def test_key_record_must_be_an_object(data: Any) -> None:
    refused(data, "key record is not a JSON object", kind=KeyRecord)


def test_key_record_without_a_key_says_how_to_make_one() -> None:
    with pytest.raises(RecordError) as caught:
        KeyRecord.from_data({"note": "x"}, where=WHERE)
    assert caught.value.diagnostics() == (
        f"{WHERE}: key record has no private_key/certificate (nor key_ref/certificate) "
        "(write it with `rotator keys init` or `keys import`)"
    )


@pytest.mark.parametrize("field", ["private_key", "certificate"])
@pytest.mark.parametrize("value", [None, "", "  \n", 42])
def test_key_record_current_pair_must_be_non_blank_strings(field: str, value: Any) -> None:
    data = key_data(**{field: value})
    refused(data, f"{field} is missing or not a string", kind=KeyRecord)
    del data[field]
    refused(data, f"{field} is missing or not a string", kind=KeyRecord)


@pytest.mark.parametrize("field", ["private_key", "certificate"])
def test_key_record_size_bound(field: str) -> None:
    assert KeyRecord.from_data(key_data(**{field: "x" * MAX_PEM_CHARS}), where=WHERE)
    refused(key_data(**{field: "x" * (MAX_PEM_CHARS + 1)}), f"{field} is larger than 65536 characters",
            kind=KeyRecord)


def test_key_record_passphrase_must_be_a_string() -> None:
    refused(key_data(passphrase=1234), "passphrase must be a string", kind=KeyRecord)


@pytest.mark.parametrize("role", ["pending", "previous"])
def test_key_record_damaged_side_slot_is_ignored_and_kept(role: str) -> None:
    """A half-written pending/previous slot does not stop the current key; its fields survive a rewrite."""
    data = key_data(**{f"{role}_private_key": "PK", f"{role}_passphrase": 7, "note": "n"})
    record = KeyRecord.from_data(data, where=WHERE)
    assert record.current == KeyPair(KEY, CERT, None)
    assert getattr(record, role) is None
    assert len(record.damaged) == 1
    assert record.damaged[0] == f"{WHERE}: {role}_certificate is missing or not a string"
    assert record.extra == {"note": "n", f"{role}_private_key": "PK", f"{role}_passphrase": 7}
    assert record.to_data() == data
    other = "previous" if role == "pending" else "pending"
    assert getattr(record, other) is None


def test_key_record_damaged_passphrase_in_side_slot() -> None:
    data = key_data(pending_private_key="PK", pending_certificate="PC", pending_passphrase=["x"])
    record = KeyRecord.from_data(data, where=WHERE)
    assert record.pending is None
    assert record.damaged == (f"{WHERE}: pending_passphrase must be a string",)


def test_key_record_hides_key_material_from_repr() -> None:
    record = KeyRecord.from_data(key_data(passphrase="pw-secret", note="n"), where=WHERE)
    shown = repr(record)
    assert "AAAA" not in shown and "BBBB" not in shown and "pw-secret" not in shown
