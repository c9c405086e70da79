"""bench/guidellm.py without GuideLLM: the scenario it writes and how it reads the json report."""

from __future__ import annotations

from pathlib import Path

from bench.guidellm import Sweep, guidellm_argv, scenario, summary_rows, summary_table


def test_scenario_carries_the_sweep_per_level():
    spec = scenario(Sweep([1, 4, 16]), target="http://h:1", model="m", tokenizer="/t")["spec"]
    assert spec["profile"] == {"kind": "concurrent", "streams": [1, 4, 16]}
    assert spec["backend"]["request_format"] == "/v1/chat/completions"
    assert "api_key" not in spec["backend"]
    assert spec["tokenizer"] == {"kind": "huggingface_auto", "model": "/t"}
    assert spec["constraints"][0] == {"kind": "max_requests", "count": [8, 8, 32]}
    keyed = scenario(Sweep([2], requests=[3]), target="t", model="m", tokenizer="/t", api_key="k")
    assert keyed["spec"]["backend"]["api_key"] == "k"
    assert keyed["spec"]["constraints"][0]["count"] == [3]


def test_argv_asks_for_every_report_format(tmp_path: Path):
    argv = guidellm_argv(tmp_path / "s.json", tmp_path, binary=Path("/bin/guidellm"))
    assert argv[:4] == ["/bin/guidellm", "run", "-c", str(tmp_path / "s.json")]
    outputs = [argv[i + 1] for i, a in enumerate(argv) if a == "--output"]
    assert [o.split(",")[0] for o in outputs] == ["kind=json", "kind=html", "kind=csv", "kind=console"]


def _bench(streams: int, ok: int, errored: int) -> dict:
    def dist(median: float, mean: float) -> dict:
        return {"successful": {"median": median, "mean": mean}, "total": {"median": median, "mean": mean}}

    return {"config": {"strategy": {"streams": streams}}, "duration": 10.0, "metrics": {
        "request_totals": {"successful": ok, "errored": errored, "incomplete": 0},
        "requests_per_second": dist(0.5, 0.4), "output_tokens_per_second": dist(3.0, 3.2),
        "time_to_first_token_ms": dist(120.0, 130.0), "inter_token_latency_ms": dist(40.0, 41.0),
        "output_token_count": dist(8.0, 8.0)}}


def test_summary_rows_and_table():
    rows = summary_rows({"benchmarks": [_bench(1, 2, 0), _bench(4, 7, 1)]})
    assert [(r["streams"], r["completed"], r["errored"]) for r in rows] == [(1, 2, 0), (4, 7, 1)]
    assert rows[0]["requests_per_s"] == 0.4 and rows[0]["output_tok_per_s"] == 3.2
    assert rows[0]["ttft_ms_p50"] == 120.0 and rows[0]["itl_ms_p50"] == 40.0
    table = summary_table(rows).splitlines()
    assert len(table) == 4 and table[2].startswith("| 1 | 2 | 0 | 0 | 0.40 | 3.2 | 120 | 40 |")
