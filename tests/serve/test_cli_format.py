"""The CLI's pure formatting helpers against Ollama's format package and tablewriter output."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from serve.cli.format import (
    go_duration,
    human_bytes,
    human_duration,
    human_number,
    human_time,
    metrics_summary,
    parse_time,
    processor,
    render_table,
    until,
    wrap_cell,
)
from serve.cli.progress import Bar, ProgressPrinter, Progress
from serve.cli.show import show_info

NOW = datetime(2025, 5, 10, 15, 0, 0, tzinfo=timezone.utc)


def _iso(delta: timedelta) -> str:
    return (NOW + delta).isoformat()


@pytest.mark.parametrize(
    "size, text",
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1 KB"),
        (45_600, "45 KB"),
        (1_500, "1.5 KB"),
        (253_000_000, "253 MB"),
        (291_548_160, "291 MB"),
        (1_300_000_000, "1.3 GB"),
        (2_019_393_189, "2.0 GB"),
        (4_000_000_000, "4 GB"),
        (12_345_678_901_234, "12 TB"),
    ],
)
def test_human_bytes_matches_ollama(size: int, text: str) -> None:
    assert human_bytes(size) == text


@pytest.mark.parametrize(
    "n, text",
    [(8_030_261_248, "8.0B"), (7_000_000_000, "7B"), (268_098_176, "268.10M"), (22_000_000, "22M"), (1_500, "2K"), (999, "999")],
)
def test_human_number(n: int, text: str) -> None:
    assert human_number(n) == text


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0.5, "Less than a second"),
        (1, "1 second"),
        (30, "30 seconds"),
        (90, "About a minute"),
        (120, "2 minutes"),
        (3600, "About an hour"),
        (5 * 3600, "5 hours"),
        (3 * 86400, "3 days"),
        (15 * 86400, "2 weeks"),
        (70 * 86400, "2 months"),
        (800 * 86400, "2 years"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_human_time_past_future_forever_and_zero() -> None:
    assert human_time(_iso(-timedelta(minutes=2)), now=NOW) == "2 minutes ago"
    assert human_time(_iso(-timedelta(seconds=70)), now=NOW) == "About a minute ago"
    assert human_time(_iso(timedelta(minutes=4, seconds=30)), now=NOW) == "4 minutes from now"
    assert human_time("2318-01-01T00:00:00Z", now=NOW) == "Forever"
    assert human_time("0001-01-01T00:00:00Z", now=NOW) == "Never"
    assert human_time(None, now=NOW) == "Never"


def test_parse_time_accepts_go_nanoseconds_and_offsets() -> None:
    t = parse_time("2025-05-10T08:06:48.639712648-07:00")
    assert t == datetime(2025, 5, 10, 15, 6, 48, 639712, tzinfo=timezone.utc)
    assert parse_time("2025-05-10T15:00:00Z") == NOW
    assert parse_time("garbage") is None


def test_until_column() -> None:
    assert until(_iso(timedelta(minutes=4, seconds=59)), now=NOW) == "4 minutes from now"
    assert until(_iso(-timedelta(seconds=3)), now=NOW) == "Stopping..."
    assert until("2318-01-01T00:00:00Z", now=NOW) == "Forever"


@pytest.mark.parametrize(
    "size, vram, text",
    [(100, 0, "100% CPU"), (100, 100, "100% GPU"), (100, 52, "48%/52% CPU/GPU"), (100, 200, "Unknown"), (3, 1, "67%/33% CPU/GPU")],
)
def test_processor(size: int, vram: int, text: str) -> None:
    assert processor(size, vram) == text


@pytest.mark.parametrize(
    "ns, text",
    [
        (0, "0s"),
        (999, "999ns"),
        (12_000, "12µs"),
        (1_500, "1.5µs"),
        (345_200_000, "345.2ms"),
        (1_234_567_891, "1.234567891s"),
        (2_000_000_000, "2s"),
        (62_500_000_000, "1m2.5s"),
        (3_600_000_000_000, "1h0m0s"),
        (-5_000_000_000, "-5s"),
    ],
)
def test_go_duration(ns: int, text: str) -> None:
    assert go_duration(ns) == text


def test_metrics_summary_lines() -> None:
    text = metrics_summary(
        {
            "total_duration": 2_500_000_000,
            "load_duration": 12_000_000,
            "prompt_eval_count": 10,
            "prompt_eval_duration": 500_000_000,
            "eval_count": 40,
            "eval_duration": 2_000_000_000,
        }
    )
    assert text == (
        "total duration:       2.5s\n"
        "load duration:        12ms\n"
        "prompt eval count:    10 token(s)\n"
        "prompt eval duration: 500ms\n"
        "prompt eval rate:     20.00 tokens/s\n"
        "eval count:           40 token(s)\n"
        "eval duration:        2s\n"
        "eval rate:            20.00 tokens/s\n"
    )
    assert metrics_summary({"done": True}) == ""


def test_table_pads_columns_like_tablewriter() -> None:
    text = render_table([["llama3.2:latest", "a80c4f17acd5", "2.0 GB", "2 minutes ago"], ["x:1", "b", "1 KB", "Never"]], header=["NAME", "ID", "SIZE", "MODIFIED"])
    assert text == (
        "NAME               ID              SIZE      MODIFIED      \n"
        "llama3.2:latest    a80c4f17acd5    2.0 GB    2 minutes ago    \n"
        "x:1                b               1 KB      Never            \n"
    )


def test_table_header_only_when_empty() -> None:
    assert render_table([], header=["NAME", "ID"]) == "NAME    ID \n"


def test_wrap_cell_keeps_long_words() -> None:
    assert wrap_cell("aaaa bbbb cccc", 9) == ["aaaa bbbb", "cccc"]
    assert wrap_cell("x" * 40, 30) == ["x" * 40]


def test_show_info_summary_layout() -> None:
    resp = {
        "details": {"parameter_size": "268.10M", "quantization_level": "Q4_K_M", "family": "gemma3"},
        "model_info": {"general.architecture": "gemma3", "gemma3.context_length": 32768, "gemma3.embedding_length": 640},
        "capabilities": ["completion"],
        "parameters": 'stop                           "<end_of_turn>"\ntemperature                    1',
        "system": "You are a helpful assistant.\nBe brief.\nThird line.",
        "license": "Gemma Terms of Use",
    }
    lines = [line.rstrip() for line in show_info(resp).splitlines()]
    assert lines == [
        "  Model",
        "    architecture        gemma3",
        "    parameters          268.10M",
        "    context length      32768",
        "    embedding length    640",
        "    quantization        Q4_K_M",
        "",
        "  Capabilities",
        "    completion",
        "",
        "  Parameters",
        '    stop           "<end_of_turn>"',
        "    temperature    1",
        "",
        "  System",
        "    You are a helpful assistant.",
        "    Be brief.",
        "    ...",
        "",
        "  License",
        "    Gemma Terms of Use",
        "",
    ]


def test_show_info_verbose_metadata_shortens_arrays() -> None:
    resp = {
        "details": {},
        "model_info": {"general.architecture": "llama", "tokenizer.ggml.tokens": ["a", "b", "c", "d", "e", "f"], "general.parameter_count": 8030261248},
    }
    text = show_info(resp, verbose=True)
    assert "  Metadata\n" in text
    assert "[a b c ...+3 more]" in text
    assert "8.030261248e+09" in text
    assert "    parameters      8.0B" in text


def test_bar_renders_ollama_style_when_complete() -> None:
    bar = Bar("pulling 6a0746a1ec1a:", 253_000_000, 253_000_000)
    line = bar.render(80)
    assert line.startswith("pulling 6a0746a1ec1a: 100% ▕")
    assert line.endswith("▏ 253 MB")
    assert len(line) <= 80


def test_progress_printer_off_terminal_prints_final_state(capsys: pytest.CaptureFixture[str]) -> None:
    printer = ProgressPrinter("pulling", Progress())
    for resp in [
        {"status": "pulling manifest"},
        {"status": "pulling 6a0746a1ec1a", "digest": "sha256:" + "6a0746a1ec1a" + "0" * 52, "total": 100, "completed": 0},
        {"status": "pulling 6a0746a1ec1a", "digest": "sha256:" + "6a0746a1ec1a" + "0" * 52, "total": 100, "completed": 50},
        {"status": "pulling 6a0746a1ec1a", "digest": "sha256:" + "6a0746a1ec1a" + "0" * 52, "total": 100, "completed": 100},
        {"status": "verifying sha256 digest"},
        {"status": "success"},
    ]:
        printer.update(resp)
    printer.stop()
    lines = [line.rstrip() for line in capsys.readouterr().err.splitlines()]
    assert lines[0] == "pulling manifest"
    assert lines[1].startswith("pulling 6a0746a1ec1a: 100% ▕█")
    assert lines[1].endswith("100 B")
    assert lines[2:] == ["verifying sha256 digest", "success"]
