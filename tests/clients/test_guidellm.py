"""GuideLLM (its own venv, `.venv-guidellm`, built by `make install-test`) against a live Corral's
`/v1`: the real CLI, a tiny concurrency sweep (what `make loadtest` runs, small), the tokenizer
from `corral tokenizer`, offline. Failures show GuideLLM's output and the server log's tail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.guidellm import Sweep, run_guidellm, summary_rows, warm_up
from tests.integration.conftest import start_server, stop_server
from tests.integration.ops_helpers import metric_samples, total

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[2]
MODEL = "gemma3:270m"
CHAT = {"route": "/v1/chat/completions", "method": "POST"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, corral_cache):
    live = start_server(tmp_path_factory.mktemp("guidellm"),
                        {"CORRAL_CACHE": str(corral_cache), "OLLAMA_KEEP_ALIVE": "-1"})
    yield live
    stop_server(live)


def _tail(done: subprocess.CompletedProcess, server) -> str:
    return (f"exit {done.returncode}; output tail:\n{(done.stdout + done.stderr)[-4000:]}\n"
            f"--- server log tail:\n{server.log()[-3000:]}")


@pytest.mark.timeout(900)
def test_guidellm_sweep_against_v1(server, tmp_path):
    warm_up(server.url, MODEL, timeout_s=600)
    tokenizer = tmp_path / "tokenizer"
    done = subprocess.run([sys.executable, "-m", "serve.cli", "tokenizer", MODEL, str(tokenizer)],
                          env=server.env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and (tokenizer / "tokenizer.json").is_file(), _tail(done, server)

    before = metric_samples(server.url)
    sweep = Sweep([1, 2], prompt_tokens=16, output_tokens=8, requests=[2, 4], max_seconds=120)
    out = tmp_path / "guidellm"
    done = run_guidellm(sweep, target=server.url, model=MODEL, tokenizer=str(tokenizer),
                        out_dir=out, timeout_s=600)
    evidence = _tail(done, server)
    assert done.returncode == 0, evidence
    assert (out / "report.html").is_file(), evidence
    rows = summary_rows(json.loads((out / "report.json").read_text()))

    assert [r["streams"] for r in rows] == [1, 2], evidence
    for row in rows:
        assert row["completed"] >= 1 and row["errored"] == 0, f"{row}\n{evidence}"
        # Token counts come from Corral's streamed usage chunk: none means usage got lost.
        assert row["output_tokens_mean"] > 0 and row["output_tok_per_s"] > 0, f"{row}\n{evidence}"
        # GuideLLM asks for its output length with ignore_eos: no reply ends before it.
        assert row["output_tokens_mean"] == sweep.output_tokens, f"{row}\n{evidence}"

    after = metric_samples(server.url)
    completed = sum(r["completed"] for r in rows)
    served = total(after, "corral_http_requests_total", status="200", **CHAT) - total(
        before, "corral_http_requests_total", status="200", **CHAT)
    finished = total(after, "vllm:request_success_total", model_name=MODEL) - total(
        before, "vllm:request_success_total", model_name=MODEL)
    failed = total(after, "corral_http_requests_total", **CHAT) - total(
        before, "corral_http_requests_total", **CHAT) - served
    assert served >= completed and finished >= completed and failed == 0, (
        f"completed {completed}, /metrics: {served} answered 200, {finished} finished, "
        f"{failed} other statuses\n{evidence}")
