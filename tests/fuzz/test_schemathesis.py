"""schemathesis (v4) against a live server over Corral's own OpenAPI description.

Bounded and seeded here (`make test`: one worker, 20 examples per operation, no coverage
phase); `make fuzz` runs every phase with FUZZ_EXAMPLES per operation. Zero
failures of: no 5xx, documented status codes and content types, response schemas (the final
NDJSON chunk included, an `{"error"}` line failing the stream), negative data rejected, and
unsupported methods answered 405.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,negative_data_rejection,unsupported_method")
ROOT = Path(__file__).parents[2]


def schemathesis_run(server_url: str, registry_host: str, out: Path, *, examples: int,
                     phases: str, seed: int = 11) -> subprocess.CompletedProcess:
    st = Path(sys.executable).parent / "st"
    argv = [str(st), "run", f"{server_url}/api/openapi.json", "--url", server_url,
            "--checks", CHECKS, "--phases", phases, "--max-examples", str(examples),
            "--seed", str(seed), "--workers", "1", "--request-timeout", "120",
            "--generation-database", "none", "--no-color", "--continue-on-failure",
            "--suppress-health-check", "all",
            "--report", "junit", "--report-dir", str(out)]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks", "FUZZ_REGISTRY": registry_host,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=int(os.environ.get("FUZZ_TIMEOUT", 1500)))


@pytest.mark.slow
def test_schemathesis_finds_nothing(fuzz_server, fuzz_registry, tmp_path):
    examples = int(os.environ.get("FUZZ_EXAMPLES", 20))
    # the coverage phase (hundreds of boundary cases per operation) is left to `make fuzz`
    phases = os.environ.get("FUZZ_PHASES", "examples,fuzzing,stateful")
    result = schemathesis_run(fuzz_server.url, fuzz_registry.host, tmp_path,
                              examples=examples, phases=phases)
    output = result.stdout + result.stderr
    (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "out" / "schemathesis.txt").write_text(output)
    assert result.returncode == 0, (
        f"schemathesis failed (exit {result.returncode}):\n{output[-12000:]}\n"
        f"--- server log tail ---\n{fuzz_server.log()[-4000:]}")
