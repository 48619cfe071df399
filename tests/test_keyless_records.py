"""Keyless key records (certificate + key reference, never private_key): parsing and writing."""

from __future__ import annotations

from typing import Any

import pytest

from rotator.errors import RecordError
from rotator.records import KeyPair, KeyRecord

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_a_keyless_record_round_trips_without_private_key() -> None:
    data = {"certificate": CERT, "key_ref": "sf-prod", "key_version": 3,
            "pending_certificate": CERT, "pending_key_ref": "arn:aws:kms:eu-west-1:123456789012:key/abc",
            "note": "kept"}
    record = KeyRecord.from_data(data, where="vault:sf/key")
    assert record.current == KeyPair(None, CERT, None, "sf-prod", 3) and record.current.remote
    assert record.pending is not None and record.pending.key_version is None
    assert record.to_data() == data
    assert not any("private_key" in k for k in record.to_data())


def test_pem_records_are_unchanged() -> None:
    data = {"private_key": "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n", "certificate": CERT}
    record = KeyRecord.from_data(data, where="x")
    assert not record.current.remote and record.to_data() == data


@pytest.mark.parametrize(("data", "message"), [
    ({"certificate": CERT, "key_ref": "k", "private_key": "pem"}, "exclude each other"),
    ({"certificate": CERT, "key_ref": "k", "key_version": 0}, "key_version must be a key version number"),
    ({"certificate": CERT, "key_ref": "k", "key_version": True}, "key_version must be"),
    ({"certificate": CERT, "key_ref": "k", "key_version": "3"}, "key_version must be"),
    ({"certificate": CERT, "key_ref": "two words"}, "is not a key reference"),
    ({"certificate": CERT, "key_ref": ""}, "key_ref is missing"),
    ({"key_ref": "k"}, "certificate is missing"),
    ({"certificate": CERT, "private_key": "pem", "key_version": 2}, "key_version without key_ref"),
])
def test_malformed_keyless_slots_are_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(RecordError, match=message):
        KeyRecord.from_data(data, where="x")


def test_a_damaged_pending_keyless_slot_does_not_stop_the_current_key() -> None:
    data = {"certificate": CERT, "key_ref": "k", "key_version": 1, "pending_key_ref": "k",
            "pending_key_version": -1}
    record = KeyRecord.from_data(data, where="x")
    assert record.pending is None and record.damaged
    assert record.to_data()["pending_key_version"] == -1  # kept as it was on rewrite
