"""Rendering Corral's chart with Helm's own engine (helm-python-sdk) and checking what comes out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "corral"
# The oldest and newest Kubernetes versions the chart claims (Chart.yaml kubeVersion, README).
KUBE_VERSIONS = ("1.25.0", "1.37.0")
# The optional APIs the chart's CRD-backed objects are gated on.
CRD_APIS = [
    "keda.sh/v1alpha1", "keda.sh/v1alpha1/ScaledObject",
    "monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PodMonitor",
    "gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1/HTTPRoute",
]
CRD_KINDS = {"ScaledObject", "ServiceMonitor", "PodMonitor", "HTTPRoute"}


def render(values: dict[str, Any] | None = None, *, kube_version: str = KUBE_VERSIONS[-1],
           api_versions: list[str] | None = None, name: str = "corral",
           namespace: str = "ai") -> dict[str, str]:
    """template path → text, as `helm template --kube-version --api-versions` gives it."""
    import helm_python
    from helm_python import _native

    options = {"name": name, "namespace": namespace, "is_install": True,
               "kube_version": f"v{kube_version}", "api_versions": api_versions or []}
    with helm_python.Chart.load(str(CHART)) as chart:
        # The wrapper's render() has no kube_version/api_versions; the native call takes them.
        return json.loads(_native.call_string("helm_render", chart._raw(), json.dumps(values or {}),
                                              json.dumps(options)))


def documents(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every YAML document of the manifests (NOTES.txt and empty templates left out)."""
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("__path__", path)
                docs.append(doc)
    return docs


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        out.setdefault(doc["kind"], []).append(doc)
    return out


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """name → value (or valueFrom) of a container's env."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def corral_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(docs)["Deployment"]
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "corral"]
    return container
