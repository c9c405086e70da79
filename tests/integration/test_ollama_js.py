"""ollama-js (npm `ollama`, installed by `make install-test` into tests/clients/js) against a
live Corral that requires a bearer key, with a loopback docker-registry for push and pull.

The cases are in tests/clients/js/ollama.test.mjs (`node --test`); this test starts what they
need and fails with Node's report and the server log's tail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import start_server, stop_server
from tests.registry.test_oci_helpers import start_registry

pytestmark = pytest.mark.slow

JS_DIR = Path(__file__).parents[1] / "clients" / "js"
KEY = "js-test-key"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory, live_server):
    server = start_server(tmp_path_factory.mktemp("js"), {
        "CORRAL_API_KEY": KEY, "CORRAL_CACHE": str(live_server.cache_dir)})
    yield server
    stop_server(server)


def test_ollama_js(keyed_server, tmp_path):
    node = shutil.which("node")
    assert node, "node is missing: `make install-test` installs Debian's nodejs and npm"
    assert (JS_DIR / "node_modules" / "ollama").is_dir(), \
        "ollama-js is missing: `make install-test` runs npm ci in tests/clients/js"
    registry = start_registry(tmp_path / "registry")
    try:
        env = {**os.environ, "OLLAMA_HOST": keyed_server.url.removeprefix("http://"),
               "CORRAL_KEY": KEY, "REGISTRY_HOST": registry.host}
        run = subprocess.run([node, "--test", "--test-reporter=spec", "ollama.test.mjs"],
                             cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=900)
    finally:
        registry.stop()
    print(run.stdout)
    assert run.returncode == 0, (f"node --test failed:\n{run.stdout[-8000:]}\n{run.stderr[-3000:]}"
                                 f"\n--- server log ---\n{keyed_server.log()[-3000:]}")
