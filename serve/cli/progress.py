"""Ollama-style progress on stderr: a spinner per status line and a bar per layer digest.

On a terminal the lines redraw in place (rich Live); elsewhere only the final state is printed,
one line per status, so logs and tests read like Ollama's finished output.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from serve.cli.format import human_bytes

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Spinner:
    def __init__(self, message: str) -> None:
        self.message = message
        self.started = time.monotonic()
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def render(self, width: int) -> str:
        text = self.message.strip()
        if not self.stopped:
            frame = SPINNER[int((time.monotonic() - self.started) * 10) % len(SPINNER)]
            text = f"{text} {frame} " if text else f"{frame} "
        return text


class Bar:
    def __init__(self, message: str, total: int, completed: int) -> None:
        self.message = message
        self.total = total
        self.initial = completed
        self.current = completed
        self.started = time.monotonic()
        self.stopped_at: float | None = time.monotonic() if completed >= total else None

    def set(self, value: int) -> None:
        self.current = min(value, self.total)
        if self.current >= self.total and self.stopped_at is None:
            self.stopped_at = time.monotonic()

    def percent(self) -> float:
        return self.current / self.total * 100 if self.total > 0 else 0.0

    def _rate(self) -> float:
        elapsed = round(time.monotonic() - self.started)
        return (self.current - self.initial) / elapsed if elapsed > 0 else 0.0

    def render(self, width: int) -> str:
        pre = f"{self.message.strip()} {self.percent():3.0f}%"
        total = human_bytes(self.total)
        if self.stopped_at is None:
            current = human_bytes(self.current)
            suf = current.rjust(6) + "/" + total.rjust(6)
            rate = self._rate()
            if rate > 0:
                remaining = int((self.total - self.current) / rate)
                suf += "  " + human_bytes(int(rate)).rjust(6) + "/s" + "  " + _eta(remaining).rjust(6)
            else:
                suf += " " * 18
        else:
            suf = total.rjust(6) + " " * 7 + " " * 18
        fill = max(width - len(pre) - len(suf) - 5, 0)
        n = int(fill * self.percent() / 100)
        return f"{pre} ▕{'█' * n}{' ' * (fill - n)}▏ {suf}".rstrip()


def _eta(seconds: int) -> str:
    if seconds >= 100 * 3600:
        return "99h+"
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


class _Render:
    def __init__(self, progress: "Progress") -> None:
        self.progress = progress

    def __rich__(self) -> Text:
        with self.progress.lock:
            lines = [state.render(self.progress.width) for state in self.progress.states]
        return Text("\n".join(lines), no_wrap=True, overflow="crop")


class Progress:
    """Lines of spinners and bars on stderr, as Ollama's progress.Progress draws them."""

    def __init__(self, transient: bool = False, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=False)
        # Bars fill the terminal; off one nothing redraws, so lines (digests) are never cropped
        # and bars take Ollama's default width of 80.
        self.width = self.console.width if self.console.is_terminal else 80
        if not self.console.is_terminal:
            self.console = Console(stderr=True, highlight=False, soft_wrap=False, width=100_000)
        self.states: list[Spinner | Bar] = []
        self.lock = threading.Lock()
        self.transient = transient
        self._live: Live | None = None
        if transient and not self.console.is_terminal:
            return  # a transient spinner off a terminal would print nothing useful
        self._live = Live(
            _Render(self),
            console=self.console,
            refresh_per_second=10,
            transient=transient,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()

    def add(self, state: Spinner | Bar) -> None:
        with self.lock:
            self.states.append(state)

    def stop(self) -> None:
        """Stop redrawing; the final lines stay (unless transient)."""
        for state in self.states:
            if isinstance(state, Spinner):
                state.stop()
        if self._live is not None:
            self._live.stop()
            self._live = None


class ProgressPrinter:
    """Turns a stream of ProgressResponse objects into spinners and per-digest bars."""

    def __init__(self, verb: str = "pulling", progress: Progress | None = None) -> None:
        # pull labels bars "pulling <id>:" and skips 0% announcements; push and create label
        # them with the server's status text (cmd/cmd.go pullModelWithProgress, PushHandler).
        self.verb = verb
        self.progress = progress or Progress()
        self.bars: dict[str, Bar] = {}
        self.status = ""
        self.spinner: Spinner | None = None

    def status_line(self, message: str) -> None:
        if self.spinner is not None:
            self.spinner.stop()
        self.status = message
        self.spinner = Spinner(message)
        self.progress.add(self.spinner)

    def update(self, resp: dict[str, Any]) -> None:
        digest = resp.get("digest") or ""
        if digest:
            completed = int(resp.get("completed") or 0)
            total = int(resp.get("total") or 0)
            if self.verb == "pulling" and completed == 0 and digest not in self.bars:
                return  # the announcement before a download starts
            if self.spinner is not None:
                self.spinner.stop()
            bar = self.bars.get(digest)
            if bar is None:
                name = digest.removeprefix("sha256:").strip()[:12]
                if self.verb == "pulling":
                    label = f"pulling {name}:"
                else:
                    label = str(resp.get("status") or f"{self.verb} {name}...")
                bar = Bar(label, total, completed)
                self.bars[digest] = bar
                self.progress.add(bar)
            bar.set(completed)
        elif resp.get("status") and resp["status"] != self.status:
            self.status_line(str(resp["status"]))

    def stop(self) -> None:
        self.progress.stop()
