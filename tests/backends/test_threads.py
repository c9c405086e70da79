"""backends.threads.in_own_thread: torch work off the engine threads leaves no OpenMP team behind."""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import textwrap
import threading

import pytest

from backends.threads import in_own_thread

REQUEST = contextvars.ContextVar("request", default="none")


def test_returns_the_result_on_a_thread_that_then_ends():
    caller = threading.current_thread()
    seen: list[threading.Thread] = []

    def work(a, b=0):
        seen.append(threading.current_thread())
        return a + b, REQUEST.get()

    async def main():
        REQUEST.set("req-1")
        return await in_own_thread(work, 2, b=3)

    assert asyncio.run(main()) == (5, "req-1")  # the caller's context travels with the call
    (worker,) = seen
    assert worker is not caller
    worker.join(timeout=10)
    assert not worker.is_alive()


def test_raises_what_the_call_raised():
    def fail():
        raise ValueError("bad weights")

    with pytest.raises(ValueError, match="bad weights"):
        asyncio.run(in_own_thread(fail))


# In a fresh process, so no earlier test's threads are counted: a parallel torch op on a pooled
# thread (asyncio's executor) leaves that thread's OpenMP worker running after the call; under
# in_own_thread the thread and its worker are gone once the call returns.
PROBE = textwrap.dedent("""
    import asyncio, os, sys, time
    import torch
    from backends.threads import in_own_thread

    def count():
        return len(os.listdir("/proc/self/task"))

    def work():
        x = torch.randn(1024, 1024)
        (x @ x).sum()
        return count()

    def settled(target, timeout=10.0):
        end = time.monotonic() + timeout
        while count() != target and time.monotonic() < end:
            time.sleep(0.02)
        return count()

    async def main():
        torch.set_num_threads(2)
        before = count()
        during = await (in_own_thread(work) if sys.argv[1] == "own" else asyncio.to_thread(work))
        print(before, during, settled(before, 3.0))

    asyncio.run(main())
""")


def _threads(mode: str) -> tuple[int, int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         timeout=120, check=True)
    before, during, after = map(int, out.stdout.split())
    return before, during, after


def test_the_calls_openmp_team_ends_with_its_thread():
    before, during, after = _threads("own")
    assert during >= before + 2  # the call's thread and its OpenMP worker
    assert after == before
    # What in_own_thread avoids: the executor's thread keeps its team after the call.
    before, during, after = _threads("pooled")
    assert during >= before + 2 and after >= before + 2
