"""Scenarios and the whole `python -m bench` pipeline against the fake server; bounded, no model."""

from __future__ import annotations

import asyncio
import json
import stat
import sys
import time
from pathlib import Path

import pytest

from bench import cli, scenarios
from bench.prompts import PromptSource

FAKES_PATH = Path(__file__).with_name("fakes.py")

pytestmark = pytest.mark.timeout(120)


def test_prefix_cache_scenario_unloads_to_go_cold(fake_url: str, fake_state) -> None:
    result = asyncio.run(scenarios.prefix_cache(fake_url, "gemma3:270m", PromptSource("t"), reps=2, turns=2,
                                                num_predict=2, time_limit_s=60))
    assert result.status is None
    assert result.base is not None and result.subject is not None
    unloads = [b for b in fake_state.bodies if b.get("keep_alive") == 0]
    assert len(unloads) == 2
    # The warm-up turn is the history up to its last user message; the follow-up extends it.
    chats = [b["messages"] for b in fake_state.bodies if b.get("messages")]
    assert chats[0][-1]["role"] == "user" and chats[1][: len(chats[0])] == chats[0]


def test_busy_ttft_runs_probes_while_others_decode(fake_url: str, fake_state) -> None:
    result = asyncio.run(scenarios.busy_ttft(fake_url, "m", PromptSource("t"), others=3, reps=2, num_predict=2,
                                             background_predict=400, time_limit_s=60))
    assert result.base is not None and result.subject is not None
    assert "[3, 3]" in result.detail  # all three background streams were still decoding at each probe
    # The background streams were cancelled: the server sees the disconnects shortly after.
    deadline = time.monotonic() + 10
    while fake_state.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_state.active == 0


def test_structured_reports_not_supported_on_4xx(fake_url: str, fake_state) -> None:
    fake_state.reject_format = True
    result, phases = asyncio.run(scenarios.structured(fake_url, "m", PromptSource("t"), concurrency=4,
                                                      requests_per_client=1, num_predict=8, time_limit_s=60))
    assert result.status == "not supported" and "HTTP 400" in result.detail
    assert phases == []


def test_structured_measures_both_mixes(fake_url: str, fake_state) -> None:
    result, phases = asyncio.run(scenarios.structured(fake_url, "m", PromptSource("t"), concurrency=4,
                                                      requests_per_client=1, num_predict=8, time_limit_s=60))
    assert result.status is None and result.base and result.subject
    assert "valid JSON: yes" in result.detail
    assert "constrained/free 7/8" in result.detail  # the fake's JSON answer has 7 pieces
    assert [p.system for p in phases] == ["corral (no format)", "corral (half format)"]


def test_bench_cli_against_a_running_server(fake_url: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code = cli.main(["--server-url", fake_url, "--skip-transformers", "--concurrency", "1,4", "--num-predict", "4",
                     "--requests-per-client", "1", "--batch", "4", "--reps", "1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert printed.strip() == report.strip()
    assert "| Corral@4 / Corral@1 |" in report
    assert "| Prefix cache TTFT warm / cold |" in report
    assert "| Corral@4 / llama-server@4 | – | ≥ 1× | not measured |" in report
    data = json.loads((out / "results.json").read_text())
    assert [(p["system"], p["concurrency"], p["errors"]) for p in data["phases"]] == [("corral", 1, 0), ("corral", 4, 0)]
    verdicts = {r["key"]: r["verdict"] for r in data["ratios"]}
    assert verdicts["prefix_cache"] in ("PASS", "MISS")
    assert verdicts["structured"] in ("PASS", "MISS")
    assert verdicts["load_time"] == "not measured"  # needs servers of its own, not with --server-url
    if _has_matplotlib():
        assert (out / "throughput.png").exists()


def test_bench_cli_drives_a_llama_server_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = tmp_path / "llama-server"
    binary.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKES_PATH} \"$@\"\n")
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(cli, "gguf_path", lambda: tmp_path / "model.gguf")
    out = tmp_path / "out"
    code = cli.main(["--skip-corral", "--skip-transformers", "--llama-server", str(binary), "--concurrency", "1,2",
                     "--num-predict", "3", "--requests-per-client", "1", "--start-timeout", "60", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    assert [(p["system"], p["concurrency"], p["output_tokens"]) for p in data["phases"]] == [
        ("llama-server", 1, 3), ("llama-server", 2, 6)]
    log = (out / "logs" / "llama-server-np2.log")
    assert log.exists()


def test_bench_cli_starts_its_own_corral(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import procs

    monkeypatch.setattr(procs, "corral_argv", lambda: [sys.executable, str(FAKES_PATH), "serve"])
    monkeypatch.setattr(cli, "CACHE", tmp_path / "cache")
    out = tmp_path / "out"
    code = cli.main(["--skip-transformers", "--concurrency", "1,2", "--num-predict", "3", "--requests-per-client", "1",
                     "--batch", "2", "--reps", "1", "--start-timeout", "60", "--out", str(out)])
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    assert [(p["system"], p["concurrency"], p["errors"]) for p in data["phases"]] == [("corral", 1, 0), ("corral", 2, 0)]
    assert [s["key"] for s in data["scenarios"]] == ["prefix_cache", "structured", "lora_throughput", "lora_memory",
                                                     "busy_ttft", "load_time"]
    assert all(s["status"] is None for s in data["scenarios"]), data["scenarios"]
    assert {r["key"]: r["verdict"] for r in data["ratios"]}["load_time"] in ("PASS", "MISS")
    logs = sorted(p.name for p in (out / "logs").iterdir())
    assert logs == ["corral-load-first.log", "corral-load-second.log", "corral.log"]


def test_missing_llama_binary_is_a_usage_error(tmp_path: Path) -> None:
    assert cli.main(["--llama-server", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2


def test_quick_defaults() -> None:
    cfg = cli.parse_args(["--quick"])
    assert cfg.concurrency == [1, 4] and cfg.num_predict == 16 and cfg.batch == 4
    full = cli.parse_args(["--concurrency", "32,1,16,16"])
    assert full.concurrency == [1, 16, 32] and full.num_predict == 64 and full.requests_per_client == 2
    with pytest.raises(SystemExit):
        cli.parse_args(["--concurrency", "0"])


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True
