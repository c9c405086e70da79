from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from bench.memory import peak_rss, vm_rss_bytes


def test_vm_rss_of_self_and_of_a_missing_process() -> None:
    assert vm_rss_bytes(os.getpid()) > 1 << 20
    assert vm_rss_bytes(2**22 + 12345) is None  # above pid_max: never a live process


def test_peak_follows_a_process_that_grows() -> None:
    # A child that touches 200 MiB and holds it: the sampled peak sees it.
    code = "import time; b = bytearray(200 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        async def measure() -> int | None:
            async with peak_rss(child.pid, interval_s=0.05) as peak:
                for _ in range(600):
                    if (peak.peak or 0) > 150 << 20:
                        break
                    await asyncio.sleep(0.05)
            return peak.peak

        assert (asyncio.run(measure()) or 0) > 150 << 20
    finally:
        child.kill()
        child.wait()


def test_no_pid_measures_nothing() -> None:
    async def measure() -> int | None:
        async with peak_rss(None) as peak:
            await asyncio.sleep(0)
        return peak.peak

    assert asyncio.run(measure()) is None
