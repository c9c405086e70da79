"""The chart's own pod, run by podman: the rendered Deployment's container (image, args, env,
ports, securityContext, volume mounts, probe paths) becomes one `podman run`, the way a kubelet
would run it, with host folders standing in for the volumes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.procs import free_port

REPO = Path(__file__).resolve().parents[2]


def load_build_module():
    """docker/build.py as a module (docker/ is not a package: a `docker` import would shadow
    the Docker SDK)."""
    spec = importlib.util.spec_from_file_location("corral_docker_build", REPO / "docker" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = load_build_module()


def podman(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], env=BUILD.podman_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])} failed ({done.returncode}):\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@dataclass
class ChartPod:
    """One container of a rendered Deployment, with its volumes as folders under root."""

    deployment: dict[str, Any]
    configmaps: dict[str, dict[str, str]]
    root: Path
    name: str = field(default_factory=lambda: f"corral-test-{os.getpid()}-{free_port()}")
    port: int = 0

    @property
    def pod(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        return next(c for c in self.pod["containers"] if c["name"] == "corral")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grace(self) -> int:
        return int(self.pod["terminationGracePeriodSeconds"])

    def _volume_dir(self, volume: dict[str, Any]) -> tuple[Path, bool]:
        """A host folder for a pod volume: emptyDir/PVC → a writable folder; ConfigMap → its files."""
        path = self.root / "volumes" / volume["name"]
        if "configMap" in volume:
            path.mkdir(parents=True, exist_ok=True)
            for key, text in self.configmaps[volume["configMap"]["name"]].items():
                (path / key).write_text(text)
            return path, True
        path.mkdir(parents=True, exist_ok=True)
        # fsGroup: the kubelet makes the volume writable by the pod's group; podman has no such step.
        ctx = self.pod.get("securityContext", {})
        os.chown(path, ctx.get("runAsUser", 0), ctx.get("fsGroup", ctx.get("runAsGroup", 0)))
        return path, False

    def run_args(self) -> list[str]:
        c, ctx = self.container, self.pod.get("securityContext", {})
        args = ["run", "-d", "--name", self.name, "--pull=never"]
        if "runAsUser" in ctx:
            args += ["--user", f"{ctx['runAsUser']}:{ctx.get('runAsGroup', 0)}"]
        sc = c.get("securityContext", {})
        for cap in sc.get("capabilities", {}).get("drop", []):
            args += ["--cap-drop", cap]
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        for env in c.get("env", []):
            assert "value" in env, f"the test pod takes plain env values only: {env}"
            args += ["-e", f"{env['name']}={env['value']}"]
        (port,) = c["ports"]
        self.port = self.port or free_port()
        args += ["-p", f"127.0.0.1:{self.port}:{port['containerPort']}"]
        volumes = {v["name"]: v for v in self.pod.get("volumes", [])}
        for mount in c.get("volumeMounts", []):
            host, read_only = self._volume_dir(volumes[mount["name"]])
            if mount.get("subPath"):
                host = host / mount["subPath"]
                host.mkdir(exist_ok=True)
            ro = read_only or mount.get("readOnly", False)
            args += ["-v", f"{host}:{mount['mountPath']}{':ro' if ro else ''}"]
        if c.get("command"):
            args += ["--entrypoint", json.dumps(c["command"])]
        return args + [c["image"], *c.get("args", [])]

    def start(self) -> "ChartPod":
        podman(*self.run_args())
        return self

    def probe(self, kind: str) -> int:
        """Status of one check of the container's <kind>Probe (startup, liveness, readiness)."""
        spec = self.container[f"{kind}Probe"]
        try:
            return httpx.get(self.url + spec["httpGet"]["path"], timeout=spec.get("timeoutSeconds", 3)).status_code
        except httpx.HTTPError:
            return 0

    def wait_probe(self, kind: str, timeout: float = 600) -> float:
        """Seconds until the probe answers 200; fails with the container's log tail."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.probe(kind) == 200:
                return time.monotonic() - start
            if self.state() not in ("running", "created", "configured"):
                raise AssertionError(f"container {self.state()} before its {kind} probe passed:\n{self.logs()}")
            time.sleep(1)
        raise AssertionError(f"{kind} probe not 200 after {timeout:.0f}s:\n{self.logs()}")

    def state(self) -> str:
        return podman("inspect", "-f", "{{.State.Status}}", self.name, check=False).stdout.strip()

    def exit_code(self) -> int:
        return int(podman("inspect", "-f", "{{.State.ExitCode}}", self.name).stdout.strip())

    def pid(self) -> int:
        return int(podman("inspect", "-f", "{{.State.Pid}}", self.name).stdout.strip())

    def logs(self, lines: int = 120) -> str:
        done = podman("logs", "--tail", str(lines), self.name, check=False)
        return done.stdout + done.stderr

    def exec(self, *cmd: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *cmd, check=False, timeout=timeout)

    def stop(self) -> None:
        """What the kubelet does: SIGTERM, then SIGKILL after the grace period."""
        podman("stop", "-t", str(self.grace), self.name, check=False, timeout=self.grace + 60)

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False)
