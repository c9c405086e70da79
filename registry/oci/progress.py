"""Progress messages in Ollama's shape, reported about every 60 ms while a transfer runs."""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator

PROGRESS_INTERVAL_S = 0.06

Progress = dict[str, Any]


def status(text: str) -> Progress:
    return {"status": text}


def layer_progress(verb: str, digest: str, total: int, completed: int) -> Progress:
    """`{"status":"pulling 6a0746a1ec1a","digest":"sha256:…","total":N,"completed":M}`."""
    return {"status": f"{verb} {digest[7:19]}", "digest": digest, "total": total,
            "completed": completed}


def watch(done: threading.Event, report: Callable[[], Progress]) -> Iterator[Progress]:
    """Yield `report()` every interval until `done` is set, then once more."""
    while not done.wait(PROGRESS_INTERVAL_S):
        yield report()
    yield report()


class Background:
    """Run a function on a thread; `done` is set when it returns or raises (`error`)."""

    def __init__(self, fn: Callable[[], None], name: str):
        self.done = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                fn()
            except BaseException as err:  # re-raised on the waiting side
                self.error = err
            finally:
                self.done.set()

        threading.Thread(target=run, name=name, daemon=True).start()
