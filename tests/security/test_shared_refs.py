"""Issue 15 item 8: a STORE:PATH ref shared by two credentials must not destroy a key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rotator.config import load_config
from rotator.engine import Engine
from rotator.errors import ConfigError
from tests.conftest import CLIENT_ID, USERNAME, write_config


def test_config_refuses_a_token_ref_that_is_another_credentials_key(tmp_path: Path) -> None:
    """Attack: credentials.a.token == credentials.b.key passed `check`."""
    path = write_config(tmp_path / "r.toml", login_url="http://127.0.0.1:1", credentials={
        "a": {"token": "local:b/key"}, "b": {},
    })
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "credentials.a.token" in message and "credentials.b.key" in message
    assert "\n" not in message


@pytest.mark.parametrize(("a", "b", "fields"), [
    ({"publish_certificate": "local:shared/cert"}, {"publish_certificate": "local:shared/cert"},
     ("credentials.a.publish_certificate", "credentials.b.publish_certificate")),
    ({"publish_certificate": "local:b/token"}, {},
     ("credentials.a.publish_certificate", "credentials.b.token")),
    ({"key": "local:shared/key"}, {"key": "local:shared/key"},
     ("credentials.a.key", "credentials.b.key")),
    ({"publish_file": "pub/cert.pem"}, {"publish_file": "pub/cert.pem"},
     ("credentials.a.publish_file", "credentials.b.publish_file")),
    ({"publish_file": "store/b/key.json"}, {},
     ("credentials.a.publish_file", "credentials.b.key")),
])
def test_config_refuses_any_ref_used_twice(tmp_path: Path, a: dict, b: dict,
                                           fields: tuple[str, str]) -> None:
    path = write_config(tmp_path / "r.toml", login_url="http://127.0.0.1:1",
                        credentials={"a": a, "b": b})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert all(f in str(err.value) for f in fields), str(err.value)


def test_engine_never_overwrites_key_material_with_a_token(run_cli, endpoint, tmp_path: Path) -> None:
    """Defence in depth: even if config validation were bypassed, the rotation refuses to
    replace a record that holds a private key or certificate with a token."""
    config_path = write_config(tmp_path / "r.toml", login_url=endpoint.url)
    result = run_cli("--config", config_path, "keys", "init", "sf")
    assert result.code == 0, result.err
    endpoint.register_app(CLIENT_ID, result.out, users=[USERNAME])
    config = load_config(config_path)
    cred = config.credentials["sf"]
    # What the shared-ref config would do: the token ref points at the key record.
    bypassed = cred.model_copy(update={"token": cred.key})
    config = type(config)(config.daemon, config.stores, {"sf": bypassed}, config.source)
    key_file = tmp_path / "store" / "sf" / "key.json"
    before = key_file.read_bytes()
    outcome = Engine(config).rotate("sf", force=True)
    assert not outcome.ok
    assert outcome.error is not None and "key material" in outcome.error.diagnostics()
    assert key_file.read_bytes() == before
    assert "private_key" in json.loads(before)
