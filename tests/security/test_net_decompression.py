"""A compressed token reply is decoded a bounded piece at a time (a "decompression bomb").

rotator asks for gzip/deflate (as requests did), and the 1 MiB bound on a reply counts decoded
bytes. urllib3 before 2.6 decoded each raw chunk whole (CVE-2025-66471): a 64 KiB chunk of a
gzip bomb became tens of MB in one allocation before the bound could refuse it. pyproject.toml
requires urllib3>=2.6; this test is the attack.
"""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from rotator.errors import EndpointProtocolError
from rotator.providers.base import MAX_RESPONSE_BYTES, post_form
from tests.security.hostile import HostileEndpoint

pytestmark = pytest.mark.integration


def bomb(decoded_mib: int, wbits: int) -> bytes:
    """`decoded_mib` MiB of zeros compressed (gzip: wbits 31, zlib/deflate: 15): ~1,000:1."""
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = b"\0" * (1 << 20)
    return b"".join(packer.compress(zeros) for _ in range(decoded_mib)) + packer.flush()


@pytest.fixture
def evil() -> Iterator[HostileEndpoint]:
    with HostileEndpoint() as server:
        yield server


@pytest.mark.parametrize(("encoding", "wbits"), [("gzip", 31), ("deflate", 15)])
def test_a_compressed_reply_bomb_is_refused_without_inflating_it(
    evil: HostileEndpoint, encoding: str, wbits: int
) -> None:
    evil.answer(200, bomb(256, wbits))  # 256 MiB decoded from ~256 KB on the wire
    evil.content_encoding = encoding
    tracemalloc.start()
    try:
        with pytest.raises(EndpointProtocolError) as caught:
            post_form(evil.url + "/services/oauth2/token", {"grant_type": "x"}, timeout=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert f"larger than {MAX_RESPONSE_BYTES} bytes" in str(caught.value)
    assert peak < 8 * MAX_RESPONSE_BYTES, f"{peak / 2**20:.1f} MiB allocated while refusing it"


def test_a_compressed_reply_within_the_bound_is_read(evil: HostileEndpoint) -> None:
    body: Any = b'{"ok": "' + b"a" * 500_000 + b'"}'
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    evil.answer(200, packer.compress(body) + packer.flush())
    evil.content_encoding = "gzip"
    reply = post_form(evil.url + "/services/oauth2/token", {"grant_type": "x"}, timeout=10)
    assert reply.status == 200 and reply.body == body
