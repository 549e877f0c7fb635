"""Which file system a path lies on, from the kernel's mount table."""

from __future__ import annotations

from pathlib import Path

from quicstore.fsinfo import file_system_type


def test_file_system_type_is_the_longest_mount_above_the_path() -> None:
    mountinfo = "\n".join(
        [
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
            "30 22 0:26 / /dev/shm rw,nosuid shared:2 - tmpfs tmpfs rw",
            "31 22 0:27 / /srv/a\\040b rw - ramfs none rw",
            "bad line",
        ]
    )
    assert file_system_type(Path("/dev/shm/x/y"), mountinfo) == "tmpfs"
    assert file_system_type(Path("/dev/shmx"), mountinfo) == "ext4"
    assert file_system_type(Path("/srv/a b/c"), mountinfo) == "ramfs"
    assert file_system_type(Path("/var"), "") is None
