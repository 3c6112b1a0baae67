"""The Triton kernels compile for real GPUs (sm80 / sm90) without one: catches what the CPU interpreter lets through.

Runs ``python -m amago_sb.kernels.compile_check`` in a subprocess with the interpreter off (conftest turns
it on for this process). The default test compiles the fp16 head_dim-64 kernels for sm90 (~15 s); the slow
one compiles every dtype / head_dim for both targets and fails on shared memory over the device limit.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ptxas_available() -> bool:
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        return os.path.exists(get_ptxas(90).path)
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not _ptxas_available(), reason="triton's bundled ptxas is not available")


def _run(*args: str) -> str:
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=ROOT)
    res = subprocess.run([sys.executable, "-m", "amago_sb.kernels.compile_check", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    return res.stdout


def test_kernels_compile_for_h100():
    out = _run("--arch", "90", "--quick")
    names = [line.split()[0] for line in out.splitlines()[1:] if line.strip()]
    assert names == ["fwd", "dkdv", "dq", "delta", "decode", "combine"]
    for line in out.splitlines()[1:]:
        cols = line.split()
        assert int(cols[7]) == 0, f"register spills in the fp16 head_dim-64 kernels: {line}"


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["80", "90"])
def test_all_configs_compile_within_shared_memory(arch):
    _run("--arch", arch)
