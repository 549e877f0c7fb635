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


def run_child(mode: str, source: str = CHILD) -> dict[str, int]:
    """Run ``source`` in a fresh interpreter with ``mode`` as its argument; its JSON line."""
    done = subprocess.run(
        [sys.executable, "-c", source, mode], capture_output=True, text=True, timeout=60
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


CLIENT_CHILD = """
import json, resource, sys
from quicstore.transport import memory
if sys.argv[1] == "server-first":
    memory.tune_allocator()
# glibc before any large free (128 KiB and up come from fresh mappings once the heap's
# free top is used up), with a trimmed heap.
memory._libc.mallopt(memory.M_MMAP_THRESHOLD, 128 * 1024)
memory._libc.malloc_trim(0)
memory._tuned = sys.argv[1] == "server-first"
changed = memory.tune_client_allocator() if sys.argv[1] != "untuned" else False
held = []
if sys.argv[1] == "untuned":
    # The premise: no free heap chunk of that size left over from the imports (whether one
    # is depends on what they allocated). Take any such chunks (they lie below the
    # program break) until one comes from a mapping (above it).
    import ctypes
    memory._libc.sbrk.restype = ctypes.c_void_p
    memory._libc.sbrk.argtypes = [ctypes.c_ssize_t]
    while True:
        held.append(bytearray(320 * 1024))
        address = ctypes.addressof(ctypes.c_char.from_buffer(held[-1]))
        if address > memory._libc.sbrk(0):
            del held[-1]
            break
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
# A batch of received datagrams: one buffer to open them into, one for the stream data.
plain = bytearray(320 * 1024); data = bytes(plain); del plain, data
before = faults()
for _ in range(20):
    plain = bytearray(320 * 1024); data = bytes(plain); del plain, data
print(json.dumps({"changed": changed, "faults": faults() - before}))
"""


def run_client_child(mode: str) -> dict[str, int]:
    return run_child(mode, CLIENT_CHILD)


def test_a_client_process_reuses_its_receive_buffers_without_page_faults() -> None:
    tuned = run_client_child("client")
    assert tuned["changed"]
    assert tuned["faults"] < 100  # 20 batches of 640 KiB fresh would be 3,200
    # The check can fail: the same batches from fresh mappings fault every time.
    assert run_client_child("untuned")["faults"] > 1000


def test_a_client_leaves_a_gateway_s_allocator_settings_alone() -> None:
    assert not run_client_child("server-first")["changed"]


def test_the_client_tunes_only_when_its_config_lets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from quicstore.client.client import Client

    calls: list[bool] = []
    monkeypatch.setattr(memory, "tune_client_allocator", lambda: calls.append(True) or True)
    Client("quicstore://127.0.0.1:1", tune_allocator=False)
    assert calls == []
    Client("quicstore://127.0.0.1:1")
    assert calls == [True]


@pytest.mark.parametrize("size", [1, 4096, 256 * 1024 + 3])
@pytest.mark.parametrize("alignment", [64, 4096])
def test_an_aligned_buffer_starts_on_the_boundary_and_holds_exactly_its_size(
    size: int, alignment: int
) -> None:
    import ctypes

    buffers = [memory.aligned_buffer(size, alignment) for _ in range(8)]
    for buffer in buffers:
        assert len(buffer) == size and not buffer.readonly
        assert bytes(buffer) == bytes(size)
        address = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
        assert address % alignment == 0
        buffer[-1] = 7  # writable to its last byte, and no further
        with pytest.raises(IndexError):
            buffer[size] = 7
