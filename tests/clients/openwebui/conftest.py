"""A live Corral and a live Open WebUI in front of it, shared by the Open WebUI browser tests.

Open WebUI runs from its own venv (`make install-test` builds `.venv-openwebui`: its pins clash
with ours), fully offline, with a temp DATA_DIR, and is pointed at Corral by its URL alone, plus
the settings a user of Ollama would set the same way (RAG embeddings through Ollama). The
browser is Debian's chromium driven by Playwright, headless, no browser download.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.procs import ManagedServer, free_port
from tests.integration.conftest import LiveServer, start_server, stop_server
from tests.registry.test_oci_helpers import start_registry

ROOT = Path(__file__).parents[3]
OPENWEBUI = ROOT / ".venv-openwebui" / "bin" / "open-webui"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Open WebUI's default "native" function calling sends its built-in tools with every chat, which a
# model without tools refuses (as Ollama does); "legacy" is its prompt-based path. That is the one
# setting a user of gemma3:270m must make (README, Open WebUI section). The other two are this
# test's, for CI time and a stable answer: greedy decoding, and replies capped (a 270M model at
# its default temperature 1 seldom stops by itself, and the default cap is the whole context).
MAX_TOKENS = 128  # over what a fast CPU decodes before the stop click lands
DEFAULT_MODEL_PARAMS = {"function_calling": "legacy", "temperature": 0, "max_tokens": MAX_TOKENS}
# Open WebUI's background tasks (a title, tags and follow-ups after each reply, search queries
# before a RAG answer) each ask the chat model for up to 1000 tokens, uncapped by the above: on a
# 2-core CI machine they queue behind the chat for minutes, which is why the earlier RAG test
# never finished. Off here; retrieval then searches with the question itself.
TASKS_OFF = {k: "False" for k in ("ENABLE_TITLE_GENERATION", "ENABLE_TAGS_GENERATION",
                                  "ENABLE_FOLLOW_UP_GENERATION", "ENABLE_RETRIEVAL_QUERY_GENERATION")}
ADMIN = {"name": "Admin", "email": "admin@example.com", "password": "corral-test-pw"}


@dataclass
class OpenWebUI:
    server: ManagedServer
    token: str

    @property
    def url(self) -> str:
        return self.server.url

    def api(self, method: str, path: str, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=60, **kw)


def openwebui_env(corral_url: str, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HOME": str(data_dir / "home"),
        "DATA_DIR": str(data_dir),
        "OLLAMA_BASE_URL": corral_url,
        "WEBUI_SECRET_KEY": "corral-test-secret-" + "0" * 32,
        # offline: no OpenAI connection, no Hugging Face, no telemetry or update checks
        "ENABLE_OPENAI_API": "False",
        "OFFLINE_MODE": "True",
        "HF_HUB_OFFLINE": "1",
        "ANONYMIZED_TELEMETRY": "False",
        "SCARF_NO_ANALYTICS": "true",
        "DO_NOT_TRACK": "true",
        # RAG embeddings through Corral's all-minilm, as through Ollama's
        "RAG_EMBEDDING_ENGINE": "ollama",
        "RAG_EMBEDDING_MODEL": "all-minilm",
        "DEFAULT_MODEL_PARAMS": json.dumps(DEFAULT_MODEL_PARAMS),
        **TASKS_OFF,
    }


@pytest.fixture(scope="package")
def registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("owui-registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="package")
def corral(tmp_path_factory, corral_cache: Path) -> LiveServer:
    """Corral with the two embedded models in a store of its own (pull/delete change it)."""
    server = start_server(tmp_path_factory.mktemp("owui-corral"), {"CORRAL_CACHE": str(corral_cache)})
    yield server
    stop_server(server)


@pytest.fixture(scope="package")
def openwebui(tmp_path_factory, corral: LiveServer) -> OpenWebUI:
    assert OPENWEBUI.exists(), f"{OPENWEBUI} is missing: run `make install-test`"
    data = tmp_path_factory.mktemp("owui-data")
    port = free_port()
    server = ManagedServer("open-webui", [str(OPENWEBUI), "serve", "--host", "127.0.0.1", "--port", str(port)],
                           openwebui_env(corral.url, data), port, data / "open-webui.log")
    server.start()
    try:
        server.wait_ready("/health", timeout_s=600)
        # the first account is the admin
        resp = httpx.post(server.url + "/api/v1/auths/signup", json=ADMIN, timeout=60)
        assert resp.status_code == 200, resp.text
        yield OpenWebUI(server, resp.json()["token"])
    finally:
        server.stop()


@pytest.fixture(scope="package")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `make install-test`"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="package")
def browser_context(browser, openwebui):
    """Signed in as the admin: Open WebUI's frontend keeps its session token in localStorage."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.add_init_script(f"localStorage.setItem('token', {json.dumps(openwebui.token)})")
    ctx.set_default_timeout(60_000)
    yield ctx
    ctx.close()


@pytest.fixture
def openwebui_page(browser_context, openwebui, corral, request, screenshot_dir):
    """open(path) -> a page at `path`, its first-run "What's new" dialog closed. On a failed test
    it saves a screenshot and prints both servers' log tails."""
    pages = []

    def open_page(path: str):
        page = browser_context.new_page()
        pages.append(page)
        page.goto(openwebui.url + path, wait_until="domcontentloaded", timeout=180_000)
        page.wait_for_selector("#chat-input, #model-selector-model-button, button:has-text('Actions')",
                               timeout=180_000)
        release_notes = page.get_by_text("Okay, Let's Go!")
        try:
            release_notes.wait_for(timeout=3_000)
            release_notes.click()
        except Exception:  # shown once per user only
            pass
        return page

    yield open_page
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for i, page in enumerate(pages):
            shot = screenshot_dir / f"{request.node.name}-{i}.png"
            page.screenshot(path=str(shot))
            print(f"screenshot: {shot}")
        print("--- Open WebUI log tail ---\n" + openwebui.server.log_tail(6000))
        print("--- Corral log tail ---\n" + corral.log()[-6000:])
    for page in pages:
        page.close()


@pytest.fixture
def chat_page(openwebui_page):
    return openwebui_page("/")


@pytest.fixture(scope="package")
def screenshot_dir(tmp_path_factory) -> Path:
    """Where the screenshots go: OPENWEBUI_SCREENSHOTS (docs/ to refresh the README's) or a temp dir."""
    out = Path(os.environ.get("OPENWEBUI_SCREENSHOTS") or tmp_path_factory.mktemp("owui-shots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the item, so a fixture can see that the test failed."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
