"""What kind of file system a path lies on (Linux: /proc/self/mountinfo)."""

from __future__ import annotations

import os
import re
from pathlib import Path

MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})
"""File systems whose reads and writes never wait on a device (unless swapped out): the
store reads them inline, and a download writes to them inline."""


def file_system_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the file system ``path`` lies on ("ext4", "tmpfs", ...), from the longest
    mount point above it in ``mountinfo`` (default: /proc/self/mountinfo); None if unknown."""
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo") as f:
                mountinfo = f.read()
        except OSError:
            return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        # Mount points escape spaces and the like as octal (\040).
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, line.split(" - ", 1)[1].split()[0]
    return best_type
