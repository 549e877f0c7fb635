"""Process memory behaviour: the allocator keeps freed heap for reuse, trim gives it back.

mallopt is process-wide, so each check runs in a child interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from quicstore.transport import memory

pytestmark = pytest.mark.skipif(not memory.can_trim(), reason="glibc only")

CHILD = """
import json, resource, sys
from quicstore.transport import memory
if sys.argv[1] == "tuned":
    memory.tune_allocator()
else:
    memory.tune_allocator(trim_threshold=512 * 1024)  # before the heap was kept
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
# Packets as a burst allocates and frees them: 128 x 65,000 bytes (8 MiB) of heap.
burst = [bytearray(65_000) for _ in range(128)]
del burst
before = faults()
burst = [bytearray(65_000) for _ in range(128)]
again = faults() - before
del burst
held = resident()
memory.trim()
print(json.dumps({"faults": again, "returned": held - resident()}))
"""


def run_child(mode: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, int] = json.loads(done.stdout)
    return result


def test_a_freed_burst_of_packets_is_reused_without_page_faults_and_trim_returns_it() -> None:
    tuned = run_child("tuned")
    # 8 MiB of fresh pages would be about 2,000 faults; kept heap needs none.
    assert tuned["faults"] < 200
    assert tuned["returned"] >= 6 * 1024 * 1024


def test_the_old_trim_threshold_faulted_on_every_burst() -> None:
    """The check above can fail: with glibc's trimming at 512 KiB of free heap the same
    burst comes back as fresh pages."""
    assert run_child("trimming")["faults"] > 1000
