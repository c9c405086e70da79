"""Probes, the drain's refusals, the access log and the settings of issue 9, in-process."""

from __future__ import annotations

import asyncio
import json
import logging
import re

from serve.drain import SHUTTING_DOWN
from serve.logs import JSONFormatter
from serve.settings import Settings
from serve.startup import StartupWork


def test_settings_read_the_operability_variables():
    s = Settings.from_env({
        "CORRAL_PRELOAD": "gemma3:270m=-1, all-minilm ,x=5m",
        "CORRAL_PULL": "a,reg.local:5000/b/c:d",
        "CORRAL_CREATE": "mine=/etc/Modelfile",
        "CORRAL_INSECURE_REGISTRIES": "reg.local:5000",
        "CORRAL_DRAIN_TIMEOUT": "12.5", "CORRAL_STALL_TIMEOUT": "nonsense",
        "CORRAL_LOG_FORMAT": "JSON",
    })
    assert s.preload == (("gemma3:270m", "-1"), ("all-minilm", ""), ("x", "5m"))
    assert s.pull == ("a", "reg.local:5000/b/c:d")
    assert s.create == (("mine", "/etc/Modelfile"),)
    assert s.insecure_registries == ("reg.local:5000",)
    assert (s.drain_timeout, s.stall_timeout, s.log_format) == (12.5, 300.0, "json")
    d = Settings.from_env({})
    assert (d.preload, d.drain_timeout, d.log_format) == ((), 30.0, "text")


def test_a_listed_insecure_registry_is_reached_over_http_by_every_transfer():
    """CORRAL_INSECURE_REGISTRIES holds for /api/pull, /api/push and create's pulls too, not
    only start-up pulls: they all take their options from here."""
    from serve.services import Services

    settings = Settings.from_env({"CORRAL_INSECURE_REGISTRIES": "Reg.Local:5000"})
    services = Services(settings=settings, store=None)  # type: ignore[arg-type]
    assert services.registry_options("reg.local:5000/me/model:1").insecure
    assert not services.registry_options("other.local:5000/me/model").insecure
    assert not services.registry_options("gemma3:270m").insecure
    assert services.registry_options("gemma3:270m", insecure=True).insecure
    assert not services.registry_options("not a name!").insecure  # the transfer's own 400


def test_ready_and_health_follow_the_lifecycle(app_client):
    lifecycle = app_client.app.state.lifecycle
    assert app_client.get("/health").json() == {"status": "ok"}
    assert app_client.get("/ready").json() == {"status": "ready", "failed": {}}
    lifecycle.started, lifecycle.pending = False, ["preload x"]
    reply = app_client.get("/ready")
    assert reply.status_code == 503
    assert reply.json() == {"status": "starting", "pending": ["preload x"], "failed": {}}
    lifecycle.started, lifecycle.failed = True, {"preload x": "no such model"}
    assert app_client.get("/ready").json()["failed"] == {"preload x": "no such model"}
    lifecycle.draining = True
    reply = app_client.get("/ready")
    assert reply.status_code == 503 and reply.json()["status"] == "draining"
    assert app_client.get("/health").status_code == 200  # draining is not dying
    assert app_client.get("/").text == "Ollama is running"


def test_a_draining_server_refuses_new_work_in_each_api_shape(app_client):
    app_client.app.state.lifecycle.draining = True
    body = {"model": "m", "prompt": "hi"}
    native = app_client.post("/api/generate", json=body)
    assert native.status_code == 503 and native.json() == {"error": SHUTTING_DOWN}
    assert native.headers["connection"] == "close"
    assert app_client.post("/api/pull", json={"model": "m"}).status_code == 503
    openai = app_client.post("/v1/chat/completions", json=body)
    assert openai.status_code == 503 and openai.json()["error"]["message"] == SHUTTING_DOWN
    anthropic = app_client.post("/v1/messages", json=body)
    assert anthropic.status_code == 503 and anthropic.json()["type"] == "error"
    assert SHUTTING_DOWN in json.dumps(anthropic.json())
    # reads still answer while in-flight work drains
    assert app_client.get("/api/tags").status_code == 200
    assert app_client.post("/api/show", json={"model": "missing"}).status_code == 404


def test_request_ids_are_taken_or_made_and_logged_once(app_client, caplog):
    caplog.set_level(logging.INFO, logger="corral.access")
    given = app_client.get("/api/version", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    odd = app_client.get("/api/version", headers={"X-Request-ID": "has spaces\tand tabs"})
    made = odd.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    app_client.get("/nowhere", headers={"X-Request-ID": "lost-1"})
    records = [r for r in caplog.records if r.name == "corral.access"]
    by_id = {r.fields["request_id"]: r.fields for r in records}
    assert len(records) == 3 and set(by_id) == {"abc-123", made, "lost-1"}
    assert by_id["abc-123"]["route"] == "/api/version" and by_id["abc-123"]["status"] == 200
    assert by_id["lost-1"]["route"] == "unmatched" and by_id["lost-1"]["status"] == 404
    metrics = app_client.get("/metrics").text
    assert 'corral_http_requests_total{method="GET",route="/api/version",status="200"} 2.0' in metrics


def test_json_log_lines_carry_the_fields():
    record = logging.LogRecord("corral.access", logging.INFO, __file__, 1, '"GET /" %d', (200,), None)
    record.fields = {"request_id": "r1", "status": 200}
    line = json.loads(JSONFormatter().format(record))
    assert line["msg"] == '"GET /" 200' and line["level"] == "info"
    assert line["request_id"] == "r1" and line["logger"] == "corral.access"


class _Services:
    def __init__(self, settings):
        self.settings = settings
        self.store = None
        self.detect_template = None


def test_startup_runs_every_step_and_reports_failures(tmp_path):
    from serve.lifecycle import Lifecycle

    settings = Settings(cache_dir=tmp_path, default_models=False,
                        pull=("p1",), create=(("c1", str(tmp_path / "missing")),),
                        preload=(("m1", "banana"),))
    lifecycle = Lifecycle()
    work = StartupWork(_Services(settings), lifecycle)
    pulled = []

    async def fake_pull(name):
        pulled.append(name)

    work.ensure_pulled = fake_pull
    assert [label for label, _ in work.steps()] == ["pull p1", "create c1", "preload m1"]
    asyncio.run(work.run())
    assert pulled == ["p1"] and lifecycle.started and lifecycle.pending == []
    assert set(lifecycle.failed) == {"create c1", "preload m1"}
    assert "banana" in lifecycle.failed["preload m1"]


def test_a_deleted_model_leaves_the_metrics():
    from scheduler.stats import RequestStats
    from serve.metrics import ServerMetrics

    metrics = ServerMetrics()
    for model in ("kept", "gone"):
        metrics.request_finished(RequestStats(model, "stop", 3, 2, 3, 0, 0, 0.0, 0.1, 0.2, [0.1]))
        metrics.model_unloaded(model, "expired")
    metrics.forget("gone")
    text = metrics.render().decode()
    assert 'model_name="kept"' in text and 'model_name="gone"' not in text
