"""Pure text formatting for the CLI, matching Ollama's `format` package and tablewriter output."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any, Sequence

KB, MB, GB, TB = 1000, 1000**2, 1000**3, 1000**4
NS_PER_SECOND = 1_000_000_000


def human_bytes(b: int) -> str:
    """format.HumanBytes: decimal units, one decimal below 10 unless whole ("253 MB", "1.3 GB")."""
    for limit, unit in ((TB, "TB"), (GB, "GB"), (MB, "MB"), (KB, "KB")):
        if b >= limit:
            value = b / limit
            break
    else:
        return f"{b} B"
    if value >= 10 or value == math.trunc(value):
        return f"{int(value)} {unit}"
    return f"{_go_fixed(value, 1)} {unit}"


def human_number(n: int) -> str:
    """format.HumanNumber: 8030261248 -> "8.0B", 22000000 -> "22M", 1500 -> "2K"."""
    if n >= 1_000_000_000:
        v = n / 1_000_000_000
        return f"{v:.0f}B" if v == math.floor(v) else f"{_go_fixed(v, 1)}B"
    if n >= 1_000_000:
        v = n / 1_000_000
        return f"{v:.0f}M" if v == math.floor(v) else f"{_go_fixed(v, 2)}M"
    if n >= 1000:
        return f"{_go_fixed(n / 1000, 0)}K"
    return str(n)


def _go_fixed(value: float, digits: int) -> str:
    # Go's %.Nf and Python's format both round the exact binary value half-to-even: identical.
    return f"{value:.{digits}f}"


def _go_round(x: float) -> int:
    """math.Round: half away from zero (Python's round() is half to even)."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def human_duration(seconds: float) -> str:
    """format.humanDuration: "Less than a second", "About a minute", "3 hours", "2 weeks"..."""
    secs = int(seconds)
    if secs < 1:
        return "Less than a second"
    if secs == 1:
        return "1 second"
    if secs < 60:
        return f"{secs} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = _go_round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


_FRACTION = re.compile(r"(\.\d+)")


def parse_time(raw: str | None) -> datetime | None:
    """An RFC 3339 timestamp as Go writes it (nanoseconds, `Z` or offset); None for Go's zero time."""
    if not raw:
        return None
    text = raw.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # fromisoformat takes at most microseconds.
    text = _FRACTION.sub(lambda m: m.group(1)[:7], text, count=1)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    if t.year <= 1:
        return None
    return t


def human_time(raw: str | None, zero_value: str = "Never", now: datetime | None = None) -> str:
    """format.HumanTime: "2 minutes ago", "4 minutes from now", "Forever" (>20 years ahead)."""
    t = parse_time(raw)
    if t is None:
        return zero_value
    now = now or datetime.now(timezone.utc)
    delta = (now - t).total_seconds()
    if _trunc_div(_trunc_div(int(delta / 3600), 24), 365) < -20:
        return "Forever"
    if delta < 0:
        return human_duration(-delta) + " from now"
    return human_duration(delta) + " ago"


def _trunc_div(a: int, b: int) -> int:
    """Go's integer division truncates toward zero."""
    q = abs(a) // b
    return q if a >= 0 else -q


def go_duration(ns: int) -> str:
    """time.Duration.String: "1.234567s", "345.2ms", "12µs", "1m2.5s"."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(int(ns))
    if u < NS_PER_SECOND:
        if u < 1000:
            return f"{sign}{u}ns"
        if u < 1_000_000:
            return f"{sign}{_fraction(u, 1000)}µs"
        return f"{sign}{_fraction(u, 1_000_000)}ms"
    hours, rem = divmod(u, 3600 * NS_PER_SECOND)
    minutes, rem = divmod(rem, 60 * NS_PER_SECOND)
    secs = _fraction(rem, NS_PER_SECOND) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}"
    if minutes:
        return f"{sign}{minutes}m{secs}"
    return f"{sign}{secs}"


def _fraction(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    digits = len(str(unit)) - 1
    frac_text = str(frac).rjust(digits, "0").rstrip("0")
    return f"{whole}.{frac_text}" if frac_text else str(whole)


def processor(size: int, size_vram: int) -> str:
    """The PROCESSOR column of `ollama ps`."""
    if size_vram == 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size == 0:
        return "Unknown"
    cpu = _go_round((size - size_vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def until(expires_at: str | None, now: datetime | None = None) -> str:
    """The UNTIL column of `ollama ps`: past expiry means the runner is being unloaded."""
    now = now or datetime.now(timezone.utc)
    t = parse_time(expires_at)
    if t is not None and (now - t).total_seconds() > 0:
        return "Stopping..."
    return human_time(expires_at, "Never", now)


def wrap_cell(text: str, width: int) -> list[str]:
    """tablewriter's WrapString: greedy word wrap; a word longer than the width stays whole."""
    lines: list[str] = []
    for para in text.split("\n"):
        words = para.split()
        if not words:
            lines.append("")
            continue
        current = words[0]
        for word in words[1:]:
            if len(current) + 1 + len(word) > width:
                lines.append(current)
                current = word
            else:
                current += " " + word
        lines.append(current)
    return lines


def render_table(
    rows: Sequence[Sequence[str]],
    header: Sequence[str] | None = None,
    padding: str = "    ",
    max_width: int = 30,
) -> str:
    """tablewriter with no border, left aligned, NoWhiteSpace and TablePadding, as Ollama sets it.

    Every cell is padded to its column's width and followed by the padding; the header's last
    cell is followed by one space. Cells wider than max_width wrap at word boundaries.
    """
    ncols = max([len(r) for r in rows] + [len(header) if header else 0])
    cells = [[wrap_cell(str(c), max_width) for c in row] for row in rows]
    widths = [0] * ncols
    for cell in [[[h] for h in header]] if header else []:
        for i, lines in enumerate(cell):
            widths[i] = max(widths[i], len(lines[0]))
    for row in cells:
        for i, lines in enumerate(row):
            widths[i] = max(widths[i], max(len(line) for line in lines))
    out: list[str] = []
    if header:
        parts = [h.ljust(widths[i]) + (" " if i == len(header) - 1 else padding) for i, h in enumerate(header)]
        out.append("".join(parts))
    for row in cells:
        height = max(len(lines) for lines in row)
        for k in range(height):
            parts = []
            for i, lines in enumerate(row):
                text = lines[k] if k < len(lines) else ""
                parts.append(text.ljust(widths[i]) + padding)
            out.append("".join(parts))
    return "".join(line + "\n" for line in out)


def metrics_summary(resp: dict[str, Any]) -> str:
    """api.Metrics.Summary, printed by `run --verbose` after each reply."""
    lines: list[str] = []
    total = int(resp.get("total_duration") or 0)
    load = int(resp.get("load_duration") or 0)
    p_count = int(resp.get("prompt_eval_count") or 0)
    p_dur = int(resp.get("prompt_eval_duration") or 0)
    e_count = int(resp.get("eval_count") or 0)
    e_dur = int(resp.get("eval_duration") or 0)
    if total > 0:
        lines.append(f"total duration:       {go_duration(total)}")
    if load > 0:
        lines.append(f"load duration:        {go_duration(load)}")
    if p_count > 0:
        lines.append(f"prompt eval count:    {p_count} token(s)")
    if p_dur > 0:
        lines.append(f"prompt eval duration: {go_duration(p_dur)}")
        lines.append(f"prompt eval rate:     {p_count / (p_dur / NS_PER_SECOND):.2f} tokens/s")
    if e_count > 0:
        lines.append(f"eval count:           {e_count} token(s)")
    if e_dur > 0:
        lines.append(f"eval duration:        {go_duration(e_dur)}")
        lines.append(f"eval rate:            {e_count / (e_dur / NS_PER_SECOND):.2f} tokens/s")
    return "".join(line + "\n" for line in lines)
