"""Non-Python Salesforce clients for the emulator tests: jsforce from the npm registry.

``ensure_jsforce()`` installs a pinned jsforce into ``.cache/node`` (outside git) once, with a
stamp file, under a file lock so parallel test workers install it only once. ``make test``
runs it first (``make node-clients``); a test that finds it missing runs it itself. If npm
cannot install it (no registry, no node) the caller fails loudly: the test never skips.

    python -m tests.testing.node_clients      # install (what `make node-clients` runs)
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
from pathlib import Path

JSFORCE_VERSION = "3.10.16"
REPO = Path(__file__).resolve().parents[2]
NODE_CACHE = REPO / ".cache" / "node"
STAMP = NODE_CACHE / f".jsforce-{JSFORCE_VERSION}"
INSTALL_TIMEOUT = 300


class NodeClientUnavailable(RuntimeError):
    """node or npm is missing, or npm could not install the client."""


def node_modules() -> Path:
    return NODE_CACHE / "node_modules"


def ensure_jsforce() -> Path:
    """The node_modules directory holding jsforce, installed if needed."""
    if STAMP.exists():
        return node_modules()
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise NodeClientUnavailable(f"{tool} is not on PATH: install Node.js to run the jsforce tests")
    NODE_CACHE.mkdir(parents=True, exist_ok=True)
    with open(NODE_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if STAMP.exists():  # another worker installed it while we waited
            return node_modules()
        command = ["npm", "install", "--prefix", str(NODE_CACHE), "--no-audit", "--no-fund",
                   "--no-save", "--ignore-scripts", f"jsforce@{JSFORCE_VERSION}"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise NodeClientUnavailable(f"npm install jsforce took over {INSTALL_TIMEOUT} s") from None
        if done.returncode != 0 or not (node_modules() / "jsforce").is_dir():
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise NodeClientUnavailable("npm install jsforce failed: " + " | ".join(tail))
        STAMP.touch()
    return node_modules()


if __name__ == "__main__":
    try:
        print(ensure_jsforce())
    except NodeClientUnavailable as problem:
        print(f"node-clients: {problem}", file=sys.stderr)
        sys.exit(1)
