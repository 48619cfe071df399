"""Directories rotator creates sit next to secrets: every one it makes is 0700, whatever the umask."""

from __future__ import annotations

import os
from pathlib import Path


def make_private_dirs(directory: Path) -> None:
    """`mkdir -p` where each directory created is 0700. (`Path.mkdir(parents=True, mode=...)`
    gives the missing parents the umask's default mode instead: 0777 under `umask 000`.)
    Directories that exist already are left as they are."""
    missing = []
    for folder in (directory, *directory.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs
        os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask
