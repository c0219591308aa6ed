"""device.cache_host_memory: large blocks stay in the process instead of being mapped afresh."""
import subprocess
import sys

import pytest

from metarun.engine.host_memory import cache_host_memory, glibc_version

# the probe reads mallinfo2, which glibc has since 2.33
MALLINFO2 = (glibc_version() or (0, 0)) >= (2, 33)

# mapped bytes (mallinfo2's hblkhd) while a 64 MiB tensor is alive, before and after the cache
# is switched on; in a fresh interpreter, as the setting is process-wide
PROBE = """
import ctypes, torch
from metarun.engine.host_memory import cache_host_memory
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
def mapped_mib_with_a_64_mib_tensor():
    tensor = torch.empty(16 * 2**20)
    return libc.mallinfo2().hblkhd // 2**20
before = mapped_mib_with_a_64_mib_tensor()
switched = cache_host_memory(True)
print(before, switched, mapped_mib_with_a_64_mib_tensor())
"""


@pytest.mark.skipif(not MALLINFO2, reason="the setting acts on glibc's malloc; the probe needs glibc >= 2.33")
def test_large_tensors_come_from_the_heap_once_the_cache_is_on():
    before, switched, after = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                                             check=True).stdout.split()
    assert switched == "True"
    assert int(before) >= 64  # glibc's default: a block this large is mapped for itself
    assert int(after) < 64, (before, after)


def test_the_cache_is_left_alone_when_switched_off():
    assert cache_host_memory(False) is False
