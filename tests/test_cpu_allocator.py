"""amago_sb.cpu_allocator: AMAGO on CPU keeps freed memory in glibc's heap, once per process, unless the user decides."""

import os
import subprocess
import sys
import textwrap

import pytest

from amago_sb import cpu_allocator

CHILD = textwrap.dedent("""
    import ctypes
    import torch
    from amago_sb import AMAGO, cpu_allocator

    class MallInfo2(ctypes.Structure):  # glibc >= 2.33
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    def mmapped_mib_while_a_64_mib_tensor_lives():
        x = torch.empty(2**24)  # 64 MiB: above glibc's largest default mmap threshold
        return libc.mallinfo2().hblkhd // 2**20
    before = mmapped_mib_while_a_64_mib_tensor_lives()
    model = AMAGO("Transformer", "popgym-RepeatPreviousEasy-v0", n_envs=1, policy_kwargs=dict(d_model=16, n_layers=1,
                  n_heads=2))
    print(cpu_allocator.keep_freed_memory(), cpu_allocator.keep_freed_memory(), before,
          mmapped_mib_while_a_64_mib_tensor_lives())
""")


def _child(env: dict) -> list[str]:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=300, check=True)
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_amago_keeps_freed_memory_on_glibc():
    """Set once on construction (idempotent): a 64 MiB tensor then lives in the heap, not in a fresh mmap."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    applied, again, mmapped_before, mmapped_after = _child(env)
    assert applied == again == "True"
    assert int(mmapped_before) >= 64 and int(mmapped_after) < 64


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_users_malloc_environment_decides():
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    applied, again, _, mmapped_after = _child(env)
    assert applied == again == "False" and int(mmapped_after) >= 64


def test_idempotent_in_this_process():
    assert cpu_allocator.keep_freed_memory() == cpu_allocator.keep_freed_memory()
